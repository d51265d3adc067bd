-- dhrun project config for the Data Hub example.  The flows in scripts/
-- read this file; adapt it (not the flows) for your own project.
-- Paths are relative to this file.  Every setting is listed in the README
-- ("Project config").
return {
  project = "Data Hub",

  -- Where the database is: nil means $DATABASE_URL, then the PG* variables.
  -- (Keep passwords out of this file; dhrun masks them in all output.)
  database_url = nil,

  migrations = "prisma/migrations",
  schema = "prisma/schema.prisma",    -- hashed to decide whether `prisma generate` must run
  generated = "generated/prisma",     -- generate also runs when this is missing
  migrate_with = "dhrun",             -- "prisma" runs `npx prisma migrate deploy/resolve` instead
  lock_timeout = "2s",                -- per lock wait when applying a migration (retried with backoff)

  -- The tenancy rollout: workspaceId on four tables.
  rollouts = {
    {
      name = "workspace",
      label = "Data Hub workspaceId",
      column = "workspaceId",
      migrations = { "20251219170000_datahub_workspace_nullable" },   -- applied before the backfill
      not_null_migration = "20251219171000_datahub_workspace_not_null",
      lock_timeout = "300ms",           -- per DDL / batch attempt; retried with jittered backoff
      retries = 20,
      batch = { size = 5000 },

      -- The backfill rule: a row gets its owner's workspace (the workspace the
      -- user OWNS); users who own none get a personal workspace and an OWNER
      -- membership first; rows tied to a Connection take that connection's
      -- workspace.  Idempotent: only NULL values are ever written.
      prepare = [[
        INSERT INTO "Workspace" (id, name, slug, "createdAt")
        SELECT 'ws_personal_' || u.id, coalesce(u.name, u.email) || '''s workspace',
               'personal-' || lower(u.id), CURRENT_TIMESTAMP
        FROM "User" u
        WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u.id AND m.role = 'OWNER')
        ON CONFLICT DO NOTHING;
        INSERT INTO "WorkspaceMember" (id, "workspaceId", "userId", role, "createdAt")
        SELECT 'wm_personal_' || u.id, 'ws_personal_' || u.id, u.id, 'OWNER', CURRENT_TIMESTAMP
        FROM "User" u
        WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u.id AND m.role = 'OWNER')
        ON CONFLICT DO NOTHING;
        -- each user's own workspace (the oldest one they own), for the batches below
        CREATE TEMP TABLE IF NOT EXISTS datahub_owner_ws ("userId" text PRIMARY KEY, "workspaceId" text NOT NULL);
        TRUNCATE datahub_owner_ws;
        INSERT INTO datahub_owner_ws
        SELECT DISTINCT ON (m."userId") m."userId", m."workspaceId"
        FROM "WorkspaceMember" m WHERE m.role = 'OWNER'
        ORDER BY m."userId", m."createdAt", m.id;
        ANALYZE datahub_owner_ws;
      ]],
      tables = {                        -- backfill order
        { "Connection", value = [[o."workspaceId"]], from = [[datahub_owner_ws o]],
          where = [[o."userId" = t."userId"]] },
        { "MetricDaily", parent = "connectionId -> Connection" },
        { "Insight", parent = "connectionId -> Connection",
          fallback = [[(SELECT o."workspaceId" FROM datahub_owner_ws o WHERE o."userId" = t."userId")]] },
        { "ChatMessage", value = [[(SELECT o."workspaceId" FROM datahub_owner_ws o WHERE o."userId" = t."userId")]] },
      },
    },
  },

  -- Commands run in the app directory (argv lists, no shell).  The build does
  -- not run generate again: dhrun runs it when the schema changed.
  commands = {
    generate = { "npx", "prisma", "generate" },
    build = { "npm", "run", "build" },
  },
  -- What the build reads: it runs (and status checks it) only when these
  -- changed since the last successful build, or the client was regenerated.
  build_inputs = { "src", "public", "generated", "package.json", "package-lock.json", "tsconfig.json" },
  env = {
    -- lets `prisma generate` run offline
    PRISMA_SCHEMA_ENGINE_BINARY = "/bin/true",
  },

  -- The running app, for `dhrun release` and `dhrun smoke`.
  app = {
    -- release: a command that restarts the real service, e.g.
    --   restart = { "systemctl", "restart", "datahub" },
    -- or, as here (demo and CI), the app run in the background while the flow runs:
    start = { "npm", "run", "start" },
    url = os.getenv("DATAHUB_URL") or "http://127.0.0.1:3000",
    health = "/health",
    ready_timeout = 30,
    log = "logs/app.log",             -- the app's log file, read by the smoke test
    output = "logs/stdout.log",       -- where a started app's stdout/stderr go
    env = { PORT = os.getenv("DATAHUB_PORT") or "3000", APP_LOG = "logs/app.log" },
  },

  smoke = {
    -- the session the smoke test uses: --user EMAIL, `user = "..."`, or this query
    user_query = [[SELECT u.email FROM "User" u
      JOIN "WorkspaceMember" m ON m."userId" = u.id AND m.role = 'OWNER'
      ORDER BY u."createdAt", u.id LIMIT 1]],
    connect_provider = "google-ads",  -- flipped and restored by section 4
  },

  release = {
    on_smoke_failure = "report",      -- or "rollback": run the Emergency Rollback
  },
}
