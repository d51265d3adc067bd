-- dhrun project config for the Task Hub example: a project tracker that rolls
-- out the tenant column "organizationId" on Project, Task, Comment and
-- AuditEvent.  Only data: the generic flows (deploy, recover, rollback,
-- status) read it.  Paths are relative to this file.
return {
  project = "Task Hub",

  -- database_url: nil means $DATABASE_URL, then the PG* variables.
  migrations = "prisma/migrations",
  schema = "prisma/schema.prisma",
  lock_timeout = "2s",                  -- per lock wait when applying a migration (retried with backoff)

  rollouts = {
    {
      name = "org-scope",               -- dhrun deploy --rollout org-scope
      label = "Task Hub organizationId",
      column = "organizationId",
      -- applied in this order before the backfill
      migrations = { "20260203100000_org_nullable", "20260203101500_org_indexes" },
      not_null_migration = "20260210090000_org_not_null",

      -- Run once before the backfill; idempotent.  Users who own no organization
      -- get a personal one (org_personal_<userId>) with an OWNER membership; then
      -- each user's own organization (the oldest OWNER membership by "createdAt",
      -- id) goes into a temp table for the batches below.
      prepare = [[
        INSERT INTO "Organization" (id, name, slug, "createdAt")
        SELECT 'org_personal_' || u.id, u.name || '''s organization', 'personal-' || lower(u.id), CURRENT_TIMESTAMP
        FROM "User" u
        WHERE NOT EXISTS (SELECT 1 FROM "Membership" m WHERE m."userId" = u.id AND m.role = 'OWNER')
        ON CONFLICT DO NOTHING;
        INSERT INTO "Membership" (id, "organizationId", "userId", role, "createdAt")
        SELECT 'mbr_personal_' || u.id, 'org_personal_' || u.id, u.id, 'OWNER', CURRENT_TIMESTAMP
        FROM "User" u
        WHERE NOT EXISTS (SELECT 1 FROM "Membership" m WHERE m."userId" = u.id AND m.role = 'OWNER')
        ON CONFLICT DO NOTHING;
        CREATE TEMP TABLE IF NOT EXISTS taskhub_owner_org ("userId" text PRIMARY KEY, "organizationId" text NOT NULL);
        TRUNCATE taskhub_owner_org;
        INSERT INTO taskhub_owner_org ("userId", "organizationId")
        SELECT DISTINCT ON (m."userId") m."userId", m."organizationId"
        FROM "Membership" m
        WHERE m.role = 'OWNER'
        ORDER BY m."userId", m."createdAt", m.id;
        ANALYZE taskhub_owner_org;
      ]],

      lock_timeout = "300ms",           -- per DDL / batch attempt; retried with jittered backoff
      retries = 20,
      batch = { size = 5000, min = 200, max = 50000, target = 0.1, pause = 0 },

      -- Backfill order: parents first.  Only NULL values are ever written.
      tables = {
        -- the organization the project's owner owns
        { "Project", value = [[o."organizationId"]],
          from = [[taskhub_owner_org o]], where = [[o."userId" = t."ownerId"]] },
        -- the project's
        { "Task", parent = "projectId -> Project" },
        -- its task's project's, two foreign keys away: Comment -> Task -> Project
        { "Comment", parent = { "taskId -> Task", "projectId -> Project" } },
        -- the task's; events without a task: the organization the actor owns
        { "AuditEvent", parent = "taskId -> Task",
          fallback = [[(SELECT o."organizationId" FROM taskhub_owner_org o WHERE o."userId" = t."actorId")]],
          batch = { size = 2000 } },
      },
    },
  },
}
