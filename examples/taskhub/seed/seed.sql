-- Task Hub seed generator: deterministic demo/test data for the tables before
-- the organization rollout.
--
-- Usage (the function lives in pg_temp: nothing is left in the app schema, and
-- it must be called schema-qualified in the same session that loaded it):
--
--   psql -X -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -f seed/seed.sql \
--        -c 'SELECT pg_temp.taskhub_seed(50, 2000)'
--
-- (psql does not understand Prisma's ?schema= parameter: for another schema,
-- drop it from the URL and run SET search_path first.)  From Lua:
-- conn:exec_script(<this file>), then conn:query_value("SELECT pg_temp.taskhub_seed($1, $2)", 50, 2000).
--
-- pg_temp.taskhub_seed(p_users int, p_tasks int) RETURNS text
--   adds p_users users and exactly p_tasks tasks, plus the organizations,
--   memberships, projects, comments and audit events below, and returns a
--   one-line summary of what it added.
--
-- Shape of the data (per call; user number n = 1, 2, ... continuing after earlier calls):
--   no organization  the users with n % 4 = 2 (25%) own none; half of them (n % 8 = 2) are
--                    still a MEMBER elsewhere.  Their rows need the personal organization
--                    the rollout's prepare SQL creates.
--   organizations    one per other user, who is its OWNER; users with n % 7 = 0 own a second
--                    one.  Their OWNER memberships differ in "createdAt": the oldest one wins,
--                    and for n % 14 = 0 that is the SECOND organization (the one with the higher
--                    membership id), so the order is "createdAt", then id.
--   MEMBER rows      users with n % 3 = 0 or n % 8 = 2 are also a MEMBER of another user's
--                    organization, with a membership OLDER than their OWNER one(s): "the
--                    organization the user owns" is not "the user's oldest membership".
--   projects         1-3 per user (every user, with or without an organization)
--   tasks            exactly p_tasks, spread evenly over this call's projects (the first
--                    p_tasks % projects get one more); explicit ids after max("id") and the
--                    sequence, which is advanced
--   comments         0-3 per task, by any user of this call (often not the project's owner)
--   audit events     per task a 'task.created' by the project's owner; for 1 task in 3 also a
--                    'task.status_changed' by another user; per user 1-2 events with NULL
--                    "taskId" ('user.signed_in', 'user.settings_changed')
--
-- Deterministic: every value is derived from md5() of a row number and from fixed dates
-- (never random() or now()), so the same calls on the same starting data give identical rows.
-- Ids: usr_0000001, org_0000001, mbr_0000001, prj_0000001, cmt_00000001; Task and AuditEvent
-- ids are integers.  Organizations of other origins (e.g. the rollout's org_personal_<userId>)
-- do not match these patterns and are left alone.
--
-- The seed never names "organizationId": it works before the rollout and after
-- 20260203100000_org_nullable (new rows with NULL "organizationId", for the backfill to
-- fill).  After 20260210090000_org_not_null it fails, as the app would without an organization.
--
-- Speed: set-based INSERT ... SELECT over generate_series, no row-by-row loops
-- (50 users and 2000 tasks take about 0.25 s; most of it is the foreign-key checks).

CREATE OR REPLACE FUNCTION pg_temp.taskhub_seed(p_users int, p_tasks int)
RETURNS text
LANGUAGE plpgsql
AS $fn$
DECLARE
  first_names constant text[] := ARRAY['Alma', 'Bruno', 'Carla', 'Dario', 'Edith', 'Felix', 'Greta', 'Henrik',
                                        'Irene', 'Jakob', 'Kira', 'Lars', 'Mina', 'Nils', 'Oskar', 'Petra'];
  last_names constant text[] := ARRAY['Albers', 'Berg', 'Conti', 'Dahl', 'Engel', 'Fuchs', 'Gruber', 'Holm',
                                       'Iversen', 'Jung', 'Keller', 'Lund', 'Marino', 'Nygaard', 'Ortiz', 'Pohl'];
  org_words constant text[] := ARRAY['Atlas', 'Beacon', 'Compass', 'Delta', 'Ember', 'Fjord', 'Glacier', 'Horizon',
                                      'Island', 'Jetty', 'Kestrel', 'Lighthouse'];
  project_words constant text[] := ARRAY['Website relaunch', 'Mobile app', 'Billing revamp', 'Onboarding',
                                          'Data export', 'Search', 'Reporting', 'Infrastructure'];
  task_verbs constant text[] := ARRAY['Design', 'Implement', 'Review', 'Test', 'Document', 'Fix', 'Refactor',
                                       'Deploy'];
  task_objects constant text[] := ARRAY['the login form', 'the settings page', 'the invoice PDF', 'the API client',
                                         'the import job', 'the email templates', 'the dashboard', 'the audit view',
                                         'the permissions check', 'the search index'];
  comment_texts constant text[] := ARRAY['Looks good to me.', 'Can we split this into two tasks?',
                                          'Blocked on the API change.', 'Done, please review.',
                                          'I added screenshots to the description.', 'Moving this to next week.'];
  statuses constant text[] := ARRAY['TODO', 'IN_PROGRESS', 'DONE'];
  u0 bigint; o0 bigint; m0 bigint; p0 bigint; c0 bigint; k0 bigint; e0 bigint;
  task_seq text; event_seq text;
  n_orgs bigint; n_no_org bigint; n_members bigint; n_projects bigint; per_proj bigint; extra bigint;
  n_comments bigint; n_events bigint; n_untasked bigint;
BEGIN
  IF p_users IS NULL OR p_users < 1 THEN
    RAISE EXCEPTION 'taskhub_seed: p_users must be at least 1 (got %)', p_users;
  END IF;
  IF p_tasks IS NULL OR p_tasks < 0 THEN
    RAISE EXCEPTION 'taskhub_seed: p_tasks must be 0 or more (got %)', p_tasks;
  END IF;

  -- Continue after the highest seeded number of each kind.
  SELECT coalesce(max(substr(id, 5)::bigint), 0) INTO u0 FROM "User" WHERE id ~ '^usr_[0-9]{7}$';
  SELECT coalesce(max(substr(id, 5)::bigint), 0) INTO o0 FROM "Organization" WHERE id ~ '^org_[0-9]{7}$';
  SELECT coalesce(max(substr(id, 5)::bigint), 0) INTO m0 FROM "Membership" WHERE id ~ '^mbr_[0-9]{7}$';
  SELECT coalesce(max(substr(id, 5)::bigint), 0) INTO p0 FROM "Project" WHERE id ~ '^prj_[0-9]{7}$';
  SELECT coalesce(max(substr(id, 5)::bigint), 0) INTO c0 FROM "Comment" WHERE id ~ '^cmt_[0-9]{8}$';
  -- Task and AuditEvent ids are explicit (independent of insert order) and start
  -- after both the table's max and the sequence; the sequences are advanced below.
  task_seq := pg_get_serial_sequence('"Task"', 'id');
  EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s', task_seq) INTO k0;
  SELECT greatest(coalesce(max(id), 0), k0) INTO k0 FROM "Task";
  event_seq := pg_get_serial_sequence('"AuditEvent"', 'id');
  EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s', event_seq) INTO e0;
  SELECT greatest(coalesce(max(id), 0), e0) INTO e0 FROM "AuditEvent";

  -- Users of this call; h holds 16 hash bytes to derive the user's attributes.
  CREATE TEMP TABLE _taskhub_seed_user AS
  SELECT n, 'usr_' || lpad(n::text, 7, '0') AS id, h,
         CASE WHEN n % 4 = 2 THEN 0 WHEN n % 7 = 0 THEN 2 ELSE 1 END AS n_owned,
         n % 3 = 0 OR n % 8 = 2 AS is_member,
         1 + get_byte(h, 0) % 3 AS n_projects,
         first_names[1 + get_byte(h, 1) % 16] AS first_name,
         last_names[1 + get_byte(h, 2) % 16] AS last_name,
         timestamp '2025-01-06 08:00' + make_interval(days => (get_byte(h, 3) * 256 + get_byte(h, 4)) % 300,
                                                      secs => (get_byte(h, 5) * 256 + get_byte(h, 6)) % 36000)
           AS created_at
  FROM generate_series(u0 + 1, u0 + p_users) AS n,
       LATERAL (SELECT decode(md5('taskhub-user:' || n), 'hex') AS h) AS hh;
  SELECT count(*) FILTER (WHERE n_owned = 0) INTO n_no_org FROM _taskhub_seed_user;

  INSERT INTO "User" (id, email, name, "createdAt")
  SELECT id, lower(first_name) || '.' || lower(last_name) || '.' || n || '@example.org',
         first_name || ' ' || last_name, created_at
  FROM _taskhub_seed_user ORDER BY n;

  -- Organizations in (user, s) order; k is the organization number.
  CREATE TEMP TABLE _taskhub_seed_org AS
  SELECT o0 + row_number() OVER (ORDER BY u.n, s) AS k, u.n, u.id AS user_id, u.h, u.created_at, s
  FROM _taskhub_seed_user u, generate_series(1, u.n_owned) AS s;
  SELECT count(*) INTO n_orgs FROM _taskhub_seed_org;

  INSERT INTO "Organization" (id, name, slug, "createdAt")
  SELECT 'org_' || lpad(k::text, 7, '0'), org_words[1 + (get_byte(h, 7) + s) % 12] || ' ' || k,
         'team-' || k, created_at + make_interval(days => 40 * (s - 1))
  FROM _taskhub_seed_org ORDER BY k;

  -- Memberships: MEMBER rows first (the oldest membership of their user), then OWNER rows.
  -- The MEMBER row goes to an organization picked from the user's hash, never one of
  -- their own.  OWNER of organization 1: created_at + 1 hour; of organization 2:
  -- + 60 days, but + 10 minutes (older than the first) when n % 14 = 0.
  INSERT INTO "Membership" (id, "organizationId", "userId", role, "createdAt")
  SELECT 'mbr_' || lpad((m0 + row_number() OVER (ORDER BY kind, n, s))::text, 7, '0'),
         org_id, user_id, role::"OrgRole", created_at
  FROM (
    SELECT 0 AS kind, u.n, 0 AS s, 'org_' || lpad(o.k::text, 7, '0') AS org_id, u.id AS user_id,
           'MEMBER' AS role, u.created_at
    FROM _taskhub_seed_user u
    JOIN _taskhub_seed_org o
      ON o.k = o0 + 1 + (get_byte(u.h, 8) * 256 + get_byte(u.h, 9)) % nullif(n_orgs, 0)
    WHERE u.is_member AND o.user_id <> u.id
    UNION ALL
    SELECT 1, o.n, o.s, 'org_' || lpad(o.k::text, 7, '0'), o.user_id, 'OWNER',
           o.created_at + CASE WHEN o.s = 1 THEN interval '1 hour'
                               WHEN o.n % 14 = 0 THEN interval '10 minutes'
                               ELSE interval '60 days' END
    FROM _taskhub_seed_org o
  ) AS m;
  GET DIAGNOSTICS n_members = ROW_COUNT;

  -- Projects of this call, numbered in (user, s) order.
  CREATE TEMP TABLE _taskhub_seed_project AS
  SELECT r, 'prj_' || lpad((p0 + r)::text, 7, '0') AS id, owner_id, created_at, h
  FROM (
    SELECT row_number() OVER (ORDER BY u.n, s) AS r, u.id AS owner_id, u.h,
           u.created_at + make_interval(days => 5 * s) AS created_at
    FROM _taskhub_seed_user u, generate_series(1, u.n_projects) AS s
  ) AS p;
  SELECT count(*) INTO n_projects FROM _taskhub_seed_project;

  INSERT INTO "Project" (id, "ownerId", name, "createdAt")
  SELECT id, owner_id, project_words[1 + (get_byte(h, 10) + r) % 8] || ' ' || r, created_at
  FROM _taskhub_seed_project ORDER BY r;

  -- Tasks: project r gets per_proj (+1 for the first `extra`), ids k0+1 .. k0+p_tasks.
  per_proj := p_tasks / n_projects;
  extra := p_tasks % n_projects;
  CREATE TEMP TABLE _taskhub_seed_task AS
  SELECT p.first_id + j AS id, p.id AS project_id, p.owner_id,
         p.created_at + make_interval(hours => 3 * j::int) AS created_at,
         decode(md5('taskhub-task:' || (p.first_id + j)), 'hex') AS h
  FROM (SELECT pr.*, per_proj + (pr.r <= extra)::int AS ntasks,
               k0 + (pr.r - 1) * per_proj + least(pr.r - 1, extra) + 1 AS first_id
        FROM _taskhub_seed_project pr) AS p,
       generate_series(0, p.ntasks - 1) AS j;

  INSERT INTO "Task" (id, "projectId", title, status, "createdAt")
  SELECT id, project_id,
         task_verbs[1 + get_byte(h, 0) % 8] || ' ' || task_objects[1 + get_byte(h, 1) % 10],
         statuses[1 + get_byte(h, 2) % 3]::"TaskStatus", created_at
  FROM _taskhub_seed_task ORDER BY id;
  IF p_tasks > 0 THEN
    PERFORM setval(task_seq, k0 + p_tasks, true);
  END IF;

  -- Comments: 0-3 per task, each by a user of this call picked from the task's hash.
  INSERT INTO "Comment" (id, "taskId", "authorId", body, "createdAt")
  SELECT 'cmt_' || lpad((c0 + row_number() OVER (ORDER BY t.id, s))::text, 8, '0'), t.id,
         'usr_' || lpad((u0 + 1 + get_byte(t.h, 4 + s) % p_users)::text, 7, '0'),
         comment_texts[1 + (get_byte(t.h, 8) + s) % 6],
         t.created_at + make_interval(hours => 1 + 7 * s)
  FROM _taskhub_seed_task t, generate_series(0, get_byte(t.h, 3) % 4 - 1) AS s;
  GET DIAGNOSTICS n_comments = ROW_COUNT;

  -- Audit events: per task 'task.created' (project owner) and for 1 in 3 tasks
  -- 'task.status_changed' (another user); then 1-2 per user with no task.
  INSERT INTO "AuditEvent" (id, "actorId", "taskId", action, "createdAt")
  SELECT e0 + row_number() OVER (ORDER BY kind, key, s), actor_id, task_id, action, created_at
  FROM (
    SELECT 0 AS kind, t.id AS key, 0 AS s, t.owner_id AS actor_id, t.id::int AS task_id,
           'task.created' AS action, t.created_at
    FROM _taskhub_seed_task t
    UNION ALL
    SELECT 0, t.id, 1, 'usr_' || lpad((u0 + 1 + get_byte(t.h, 10) % p_users)::text, 7, '0'), t.id::int,
           'task.status_changed', t.created_at + interval '2 days'
    FROM _taskhub_seed_task t WHERE get_byte(t.h, 9) % 3 = 0
    UNION ALL
    SELECT 1, u.n, s, u.id, NULL::int,
           CASE WHEN s = 0 THEN 'user.signed_in' ELSE 'user.settings_changed' END,
           u.created_at + make_interval(days => 1 + s)
    FROM _taskhub_seed_user u, generate_series(0, get_byte(u.h, 11) % 2) AS s
  ) AS e;
  GET DIAGNOSTICS n_events = ROW_COUNT;
  IF n_events > 0 THEN
    PERFORM setval(event_seq, e0 + n_events, true);
  END IF;
  SELECT count(*) INTO n_untasked FROM "AuditEvent" WHERE id > e0 AND "taskId" IS NULL;

  DROP TABLE _taskhub_seed_user, _taskhub_seed_org, _taskhub_seed_project, _taskhub_seed_task;

  RETURN format('taskhub_seed: added %s users (%s owning no organization), %s organizations, %s memberships, '
                '%s projects, %s tasks, %s comments, %s audit events (%s without a task)',
                p_users, n_no_org, n_orgs, n_members, n_projects, p_tasks, n_comments, n_events, n_untasked);
END
$fn$;
