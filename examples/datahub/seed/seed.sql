-- Data Hub seed generator: deterministic demo/test data for the PRE-tenancy tables.
--
-- Usage (the function lives in pg_temp: nothing is left in the app schema, and
-- it must be called schema-qualified in the same session that loaded it):
--
--   psql -X -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -f seed/seed.sql \
--        -c 'SELECT pg_temp.datahub_seed(60, 5000)'
--
-- pg_temp.datahub_seed(p_users int, p_metric_rows bigint) RETURNS text
--   adds p_users users and exactly p_metric_rows MetricDaily rows, plus the
--   workspaces, memberships, connections, insights and chat messages below, and
--   returns a one-line summary of what it added.  The default scale for the demo
--   and the tests is (60, 5000); 10M metric rows is the production-like scale.
--
-- Shape of the data (per call):
--   users            p_users; user number n (1, 2, ... continuing after earlier calls)
--   no workspace     exactly the users with n % 5 = 3, i.e. 20%: no membership at all
--                    (the backfill must create a personal workspace for them)
--   workspaces       one per remaining user (80%), who is its OWNER
--   extra membership ~30% of the owners are also MEMBER (2/3) or ADMIN (1/3) of
--                    another owner's workspace, so "the owner's workspace" is not
--                    "any membership"
--   connections      1-6 per user (avg 3.5), distinct providers; 75% CONNECTED,
--                    25% NOT_CONNECTED
--   MetricDaily      exactly p_metric_rows, split evenly over this call's connections
--                    (the first p_metric_rows % connections get one more), one row
--                    per consecutive day going back from 2025-12-01
--   Insight          1-3 per connection (avg 2); 1 in 6 has NULL connectionId and
--                    NULL provider (a cross-channel insight owned by the user)
--   ChatMessage      2, 4 or 6 per user (avg 4), alternating USER / ASSISTANT
--
-- Deterministic: every value is derived from md5() of a row number and from fixed
-- dates (never random() or now()), so the same calls on the same starting data give
-- byte-identical rows.  Ids look like cuids (25 characters): 'c', a kind letter
-- (u user, w workspace, b membership, c connection, i insight, m chat message),
-- the 9-digit row number, 14 hex digits of md5.  Each call continues numbering
-- after the highest seeded number already present (MetricDaily: after max("id") and
-- the sequence), so calling it again adds rows and never collides.
--
-- The seed never names "workspaceId": it works before the tenancy migrations and
-- after 20251219170000_datahub_workspace_nullable, where it adds rows with NULL
-- "workspaceId" (new data the backfill has to handle).  After the NOT NULL
-- migration it fails, as the app would without a workspace.
--
-- Speed: set-based INSERT ... SELECT over generate_series, no row-by-row loops.

CREATE OR REPLACE FUNCTION pg_temp.datahub_seed(p_users int, p_metric_rows bigint)
RETURNS text
LANGUAGE plpgsql
AS $fn$
DECLARE
  providers constant text[] := ARRAY['GOOGLE_ADS', 'META_ADS', 'LINKEDIN_ADS', 'TIKTOK_ADS',
                                      'GOOGLE_ANALYTICS', 'SHOPIFY'];
  labels constant text[] := ARRAY['Google Ads', 'Meta Ads', 'LinkedIn Ads', 'TikTok Ads',
                                   'Google Analytics', 'Shopify'];
  first_names constant text[] := ARRAY['Ada', 'Ben', 'Chloe', 'Dev', 'Elena', 'Farid', 'Grace', 'Hugo',
                                        'Ines', 'Jonas', 'Keiko', 'Liam', 'Maya', 'Noah', 'Olga', 'Pablo',
                                        'Quinn', 'Rosa', 'Sami', 'Tara'];
  last_names constant text[] := ARRAY['Adams', 'Brown', 'Costa', 'Dubois', 'Eriksen', 'Fischer', 'Garcia',
                                       'Haddad', 'Ito', 'Jensen', 'Kowalski', 'Lopez', 'Moreau', 'Novak',
                                       'Okafor', 'Patel', 'Rossi', 'Schmidt', 'Tanaka', 'Weber'];
  companies constant text[] := ARRAY['Acme', 'Bluebird', 'Cobalt', 'Driftwood', 'Evergreen', 'Foxglove',
                                      'Granite', 'Harbor', 'Ironwood', 'Juniper', 'Keystone', 'Lumen',
                                      'Meridian', 'Northwind', 'Orchard', 'Pinnacle'];
  insight_titles constant text[] := ARRAY['CTR up week over week', 'Spend pacing ahead of budget',
                                           'Cost per conversion improved', 'Top campaign changed',
                                           'Weekend traffic dip', 'Conversion rate below average'];
  questions constant text[] := ARRAY['Show me my data', 'How did my ads do last week?',
                                      'Which channel has the best ROAS?', 'Why did spend go up yesterday?',
                                      'Compare Google Ads and Meta Ads', 'What should I change this week?'];
  answers constant text[] := ARRAY['Here is an overview of your connected channels for the last 30 days.',
                                    'Impressions were up 12% and cost per click down 4% versus the week before.',
                                    'Google Ads leads on return on ad spend, followed by Meta Ads.',
                                    'Two campaigns raised their daily budget; spend rose accordingly.',
                                    'Meta Ads reaches more people; Google Ads converts a larger share of clicks.',
                                    'Shift budget from the weakest campaign to the one with the best CPA.'];
  u0 bigint; w0 bigint; b0 bigint; c0 bigint; i0 bigint; m0 bigint; d0 bigint;
  seq text;
  old_role text;
  skip_fk boolean;
  n_owners bigint; n_conns bigint; per_conn bigint; extra bigint;
  n_members bigint; n_insights bigint; n_messages bigint;
BEGIN
  IF p_users IS NULL OR p_users < 1 THEN
    RAISE EXCEPTION 'datahub_seed: p_users must be at least 1 (got %)', p_users;
  END IF;
  IF p_metric_rows IS NULL OR p_metric_rows < 0 THEN
    RAISE EXCEPTION 'datahub_seed: p_metric_rows must be 0 or more (got %)', p_metric_rows;
  END IF;

  -- Continue after the highest seeded number of each kind (ids of other origins,
  -- e.g. real cuids or backfill-created workspaces, do not match the pattern).
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO u0 FROM "User" WHERE id ~ '^cu[0-9]{9}[0-9a-f]{14}$';
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO w0 FROM "Workspace"
    WHERE id ~ '^cw[0-9]{9}[0-9a-f]{14}$';
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO b0 FROM "WorkspaceMember"
    WHERE id ~ '^cb[0-9]{9}[0-9a-f]{14}$';
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO c0 FROM "Connection"
    WHERE id ~ '^cc[0-9]{9}[0-9a-f]{14}$';
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO i0 FROM "Insight" WHERE id ~ '^ci[0-9]{9}[0-9a-f]{14}$';
  SELECT coalesce(max(substr(id, 3, 9)::bigint), 0) INTO m0 FROM "ChatMessage"
    WHERE id ~ '^cm[0-9]{9}[0-9a-f]{14}$';
  -- MetricDaily ids are explicit (so they do not depend on insert order) and
  -- start after both the table's max and the sequence, which is advanced below.
  seq := pg_get_serial_sequence('"MetricDaily"', 'id');
  EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s', seq) INTO d0;
  SELECT greatest(coalesce(max(id), 0), d0) INTO d0 FROM "MetricDaily";

  -- Scratch tables, dropped at the end (or rolled back with the call on error).
  -- Users of this call; h holds 16 hash bytes to derive the user's attributes.
  CREATE TEMP TABLE _datahub_seed_user AS
  SELECT n,
         'cu' || lpad(n::text, 9, '0') || left(md5('user:' || n), 14) AS id,
         h,
         n % 5 <> 3 AS owns_workspace,
         1 + get_byte(h, 0) % 6 AS n_conn,             -- 1..6 connections
         get_byte(h, 1) % 6 AS first_provider,          -- providers rotate from here
         first_names[1 + get_byte(h, 2) % 20] AS first_name,
         last_names[1 + get_byte(h, 3) % 20] AS last_name,
         companies[1 + get_byte(h, 4) % 16] AS company,
         timestamp '2024-01-01' + make_interval(days => (get_byte(h, 5) * 256 + get_byte(h, 6)) % 640,
                                                secs => (get_byte(h, 7) * 256 + get_byte(h, 8)) % 86400)
           AS created_at
  FROM generate_series(u0 + 1, u0 + p_users) AS n,
       LATERAL (SELECT decode(md5('user-attrs:' || n), 'hex') AS h) AS hh;

  INSERT INTO "User" (id, email, name, "createdAt")
  SELECT id, lower(first_name) || '.' || lower(last_name) || '.' || n || '@example.com',
         first_name || ' ' || last_name, created_at
  FROM _datahub_seed_user ORDER BY n;

  -- Owners get workspace numbers in user order; k is the owner's rank in this call.
  CREATE TEMP TABLE _datahub_seed_owner AS
  SELECT u.*, w0 + k AS wn, 'cw' || lpad((w0 + k)::text, 9, '0') || left(md5('workspace:' || (w0 + k)), 14) AS ws_id
  FROM (SELECT u.*, row_number() OVER (ORDER BY u.n) AS k FROM _datahub_seed_user u WHERE u.owns_workspace) AS u;
  SELECT count(*) INTO n_owners FROM _datahub_seed_owner;

  INSERT INTO "Workspace" (id, name, slug, "createdAt")
  SELECT ws_id, company || ' (' || first_name || ' ' || last_name || ')', lower(company) || '-' || wn, created_at
  FROM _datahub_seed_owner ORDER BY k;

  -- Memberships: every owner's OWNER row, then for ~30% of owners a MEMBER or
  -- ADMIN row in another owner's workspace (offset 1..n_owners-1: never their own).
  INSERT INTO "WorkspaceMember" (id, "workspaceId", "userId", role, "createdAt")
  SELECT 'cb' || lpad((b0 + r)::text, 9, '0') || left(md5('member:' || (b0 + r)), 14),
         ws_id, user_id, role::"WorkspaceRole", created_at
  FROM (
    SELECT row_number() OVER (ORDER BY kind, k) AS r, ws_id, user_id, role, created_at
    FROM (
      SELECT 0 AS kind, o.k, o.ws_id, o.id AS user_id, 'OWNER' AS role, o.created_at
      FROM _datahub_seed_owner o
      UNION ALL
      SELECT 1, o.k, t.ws_id, o.id,
             CASE WHEN get_byte(o.h, 10) % 3 = 0 THEN 'ADMIN' ELSE 'MEMBER' END,
             o.created_at + interval '3 days'
      FROM _datahub_seed_owner o
      JOIN _datahub_seed_owner t ON t.k = 1 + (o.k + get_byte(o.h, 11) % nullif(n_owners - 1, 0)) % n_owners
      WHERE get_byte(o.h, 9) % 10 < 3
    ) AS m
  ) AS numbered;
  GET DIAGNOSTICS n_members = ROW_COUNT;

  -- Connections of this call, numbered in (user, slot) order; r is 1-based.
  CREATE TEMP TABLE _datahub_seed_conn AS
  SELECT r, 'cc' || lpad((c0 + r)::text, 9, '0') || left(md5('connection:' || (c0 + r)), 14) AS id,
         user_id, company, provider_ix, created_at, decode(md5('connection-attrs:' || (c0 + r)), 'hex') AS h
  FROM (
    SELECT row_number() OVER (ORDER BY u.n, s) AS r, u.id AS user_id, u.company,
           1 + (u.first_provider + s) % 6 AS provider_ix,
           u.created_at + make_interval(days => s * 9) AS created_at
    FROM _datahub_seed_user u, generate_series(0, u.n_conn - 1) AS s
  ) AS c;
  SELECT count(*) INTO n_conns FROM _datahub_seed_conn;

  INSERT INTO "Connection" (id, "userId", provider, status, "accountName", "createdAt", "updatedAt")
  SELECT id, user_id, providers[provider_ix]::"Provider",
         CASE WHEN get_byte(h, 0) % 4 = 0 THEN 'NOT_CONNECTED' ELSE 'CONNECTED' END::"ConnectionStatus",
         company || ' - ' || labels[provider_ix],
         created_at, created_at + make_interval(hours => 1 + get_byte(h, 1))
  FROM _datahub_seed_conn ORDER BY r;

  -- MetricDaily: connection r gets per_conn rows (+1 for the first `extra`), one
  -- per day going back from 2025-12-01; ids d0+1 .. d0+p_metric_rows.  Rows are
  -- produced in (connection, date ascending) order with ascending ids, i.e. in the
  -- order of both the primary key and the ("connectionId", "date") unique index,
  -- so every index insert appends at the right edge (PostgreSQL's fast path).
  -- One md5 per row (evaluated once: OFFSET 0 keeps it from being inlined into
  -- every reference) feeds all the metrics.
  per_conn := p_metric_rows / n_conns;
  extra := p_metric_rows % n_conns;
  -- The foreign-key checks cost about as much as the insert itself.  These rows
  -- only reference connections inserted above in this same transaction (and
  -- "workspaceId" stays NULL), so the checks cannot fail: when the role may
  -- (superusers, e.g. the demo and test clusters), skip them for this one
  -- statement with session_replication_role = replica; otherwise keep them.
  old_role := current_setting('session_replication_role');
  BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    skip_fk := true;
  EXCEPTION WHEN insufficient_privilege THEN
    skip_fk := false;
  END;
  INSERT INTO "MetricDaily" (id, "connectionId", provider, date, impressions, clicks, spend, conversions)
  SELECT m.id, m.connection_id, m.provider, date '2025-12-01' - m.day, m.impressions, m.clicks,
         round(m.clicks * (20 + get_byte(m.h, 3)) / 100.0, 2),           -- CPC 0.20 .. 2.75
         m.clicks * (get_byte(m.h, 4) % 9) / 100                          -- CVR 0 .. 8%
  FROM (
    SELECT x.id, x.connection_id, x.provider, x.day, x.h, x.impressions,
           x.impressions * (5 + get_byte(x.h, 2) % 30) / 1000 AS clicks    -- CTR 0.5 .. 3.4%
    FROM (
      SELECT c.first_id + k AS id, c.id AS connection_id, c.provider, (c.nrows - 1 - k)::int AS day, hb.h,
             200 + (get_byte(hb.h, 0) * 256 + get_byte(hb.h, 1)) % 20000 AS impressions
      FROM (SELECT cn.id, providers[cn.provider_ix]::"Provider" AS provider,
                   per_conn + (cn.r <= extra)::int AS nrows,
                   d0 + (cn.r - 1) * per_conn + least(cn.r - 1, extra) + 1 AS first_id
            FROM _datahub_seed_conn cn ORDER BY cn.r) AS c,
           generate_series(0, c.nrows - 1) AS k,
           LATERAL (SELECT decode(md5((c.first_id + k)::text), 'hex') AS h OFFSET 0) AS hb
    ) AS x
  ) AS m;
  IF skip_fk THEN
    PERFORM set_config('session_replication_role', old_role, true);
  END IF;
  IF p_metric_rows > 0 THEN
    PERFORM setval(seq, d0 + p_metric_rows, true);
  END IF;

  -- Insights: 1..3 per connection; 1 in 6 is cross-channel (no connection, no provider).
  INSERT INTO "Insight" (id, "userId", "connectionId", provider, title, body, "createdAt")
  SELECT 'ci' || lpad((i0 + r)::text, 9, '0') || left(md5('insight:' || (i0 + r)), 14),
         user_id,
         CASE WHEN cross_channel THEN NULL ELSE connection_id END,
         CASE WHEN cross_channel THEN NULL ELSE providers[provider_ix]::"Provider" END,
         insight_titles[1 + (r + provider_ix) % 6] || CASE WHEN cross_channel THEN ' across all channels'
                                                           ELSE ' on ' || labels[provider_ix] END,
         format('Over the last 7 days this moved by %s%% compared with the previous 7 days.',
                1 + (get_byte(h, 2 + s) % 40)),
         created_at + make_interval(days => 7 * (s + 1))
  FROM (
    SELECT row_number() OVER (ORDER BY c.r, s) AS r, c.user_id, c.id AS connection_id, c.provider_ix, c.created_at,
           c.h, s, get_byte(c.h, 5 + s) % 6 = 0 AS cross_channel
    FROM _datahub_seed_conn c, generate_series(0, get_byte(c.h, 4) % 3) AS s
  ) AS i;
  GET DIAGNOSTICS n_insights = ROW_COUNT;

  -- Chat: 2, 4 or 6 messages per user, USER first, then alternating.
  INSERT INTO "ChatMessage" (id, "userId", role, content, "createdAt")
  SELECT 'cm' || lpad((m0 + r)::text, 9, '0') || left(md5('chat:' || (m0 + r)), 14),
         user_id,
         CASE WHEN s % 2 = 0 THEN 'USER' ELSE 'ASSISTANT' END::"ChatRole",
         CASE WHEN s % 2 = 0 THEN questions[1 + (get_byte(h, 12) + s / 2) % 6]
              ELSE answers[1 + (get_byte(h, 12) + s / 2) % 6] END,
         created_at + interval '30 days' + make_interval(mins => s)
  FROM (
    SELECT row_number() OVER (ORDER BY u.n, s) AS r, u.id AS user_id, u.h, u.created_at, s
    FROM _datahub_seed_user u, generate_series(0, 2 * (1 + get_byte(u.h, 13) % 3) - 1) AS s
  ) AS c;
  GET DIAGNOSTICS n_messages = ROW_COUNT;

  DROP TABLE _datahub_seed_user, _datahub_seed_owner, _datahub_seed_conn;

  RETURN format('datahub_seed: added %s users (%s without a workspace), %s workspaces, %s memberships, '
                '%s connections, %s metric rows, %s insights, %s chat messages',
                p_users, p_users - n_owners, n_owners, n_members, n_conns, p_metric_rows, n_insights, n_messages);
END
$fn$;
