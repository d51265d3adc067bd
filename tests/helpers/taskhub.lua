-- Test helper: the second example project, Task Hub (examples/taskhub), whose
-- rollout adds "organizationId" to Project, Task, Comment and AuditEvent with
-- the declarative `rollouts` config.  A database in a starting state of that
-- rollout, in public or in another schema (Prisma's ?schema=), and the
-- backfill rule checked row by row.
local db = require "dhrun.db"
local prisma = require "dhrun.prisma"
local testdb = require "testdb"

local USERS, TASKS = 50, 2000                                -- the default seed scale
local M = require("example").project("taskhub", { seed = { USERS, TASKS } })
M.INIT = "20260112090000_init"
M.NULLABLE = "20260203100000_org_nullable"
M.INDEXES = "20260203101500_org_indexes"
M.NOT_NULL = "20260210090000_org_not_null"
M.MIGRATIONS = { M.INIT, M.NULLABLE, M.INDEXES, M.NOT_NULL }
M.ROLLOUT = "org-scope"
M.LABEL = "Task Hub organizationId"
M.COLUMN = "organizationId"
M.TABLES = { "Project", "Task", "Comment", "AuditEvent" }   -- backfill order
M.USERS, M.TASKS = USERS, TASKS

local function pct_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Creates a database in one of the rollout's states:
--   "empty"     nothing at all (no _prisma_migrations either)
--   "pre"       the init migration + seed (before the rollout)
--   "nullable"  + the rollout's migrations up to and including org_indexes
--               (organizationId present, indexed, all NULL)
-- opts: schema   a schema other than public: it is created (empty) unless
--                opts.create_schema == false, t.url gets ?schema=NAME, and
--                t.conn (and every flow) works in it
--       users, tasks   the seed's scale
-- Returns t = testdb's {name, url, conninfo, connect} plus conn, schema.
function M.create(state, opts)
  opts = opts or {}
  assert(state == "empty" or state == "pre" or state == "nullable", "unknown state " .. tostring(state))
  local t = testdb.create()
  t.schema = opts.schema or "public"
  if opts.schema then
    if opts.create_schema ~= false then
      -- dhrun's migrator, unlike `prisma migrate deploy`, does not create a
      -- missing ?schema= schema; an empty one is an empty database to Prisma
      local admin <close> = t.connect()
      admin:exec("CREATE SCHEMA IF NOT EXISTS " .. db.quote_ident(opts.schema))
    end
    t.url = t.url .. "?schema=" .. pct_encode(opts.schema)
  end
  local conn = db.connect(t.url)
  if state ~= "empty" then
    prisma.deploy(conn, M.migrations, { until_name = M.INIT })
    M.seed(conn, opts.users, opts.tasks)
    if state == "nullable" then prisma.deploy(conn, M.migrations, { until_name = M.INDEXES }) end
  end
  t.conn = conn
  return t
end

function M.counts(conn)
  local c = {}
  for _, name in ipairs({ "User", "Organization", "Membership", "Project", "Task", "Comment", "AuditEvent" }) do
    c[name] = conn:query_value('SELECT count(*) FROM "' .. name .. '"')
  end
  return c
end

-- The backfill rule, computed from scratch (not from other tables' stored
-- organizationId): a user's organization is the one they OWN (the oldest
-- OWNER membership by "createdAt", then id); a Project gets its owner's; a
-- Task its Project's owner's; a Comment its Task's; an AuditEvent its Task's,
-- or, without a task, its actor's.  A row counts as a violation when its
-- organizationId is NULL or differs from that, including when the rule has no
-- organization for it (an owner that got no personal organization).
-- Returns the total and the count per table.
M.RULE_SQL = [[
WITH owner_org AS (
  SELECT DISTINCT ON (m."userId") m."userId" AS user_id, m."organizationId" AS org_id
  FROM "Membership" m WHERE m.role = 'OWNER'
  ORDER BY m."userId", m."createdAt", m.id
), task_org AS (
  SELECT k.id AS task_id, o.org_id
  FROM "Task" k JOIN "Project" p ON p.id = k."projectId" LEFT JOIN owner_org o ON o.user_id = p."ownerId"
)
SELECT
  (SELECT count(*) FROM "Project" t LEFT JOIN owner_org o ON o.user_id = t."ownerId"
   WHERE t."organizationId" IS NULL OR t."organizationId" IS DISTINCT FROM o.org_id) AS "Project",
  (SELECT count(*) FROM "Task" t LEFT JOIN task_org x ON x.task_id = t.id
   WHERE t."organizationId" IS NULL OR t."organizationId" IS DISTINCT FROM x.org_id) AS "Task",
  (SELECT count(*) FROM "Comment" t LEFT JOIN task_org x ON x.task_id = t."taskId"
   WHERE t."organizationId" IS NULL OR t."organizationId" IS DISTINCT FROM x.org_id) AS "Comment",
  (SELECT count(*) FROM "AuditEvent" t LEFT JOIN task_org x ON x.task_id = t."taskId"
     LEFT JOIN owner_org o ON o.user_id = t."actorId"
   WHERE t."organizationId" IS NULL OR t."organizationId" IS DISTINCT FROM coalesce(x.org_id, o.org_id))
     AS "AuditEvent"]]

function M.rule_violations(conn)
  local row = conn:query_one(M.RULE_SQL)
  local total, per = 0, {}
  for _, name in ipairs(M.TABLES) do
    per[name] = row[name]
    total = total + row[name]
  end
  return total, per
end

-- Personal organizations made by the rollout's prepare SQL, and users who
-- own no organization (0 once prepare has run).
function M.personal_orgs(conn)
  return conn:query_value([[SELECT count(*) FROM "Organization" WHERE id LIKE 'org\_personal\_%']])
end

function M.users_without_org(conn)
  return conn:query_value([[SELECT count(*) FROM "User" u WHERE NOT EXISTS
    (SELECT 1 FROM "Membership" m WHERE m."userId" = u.id AND m.role = 'OWNER')]])
end

-- How many of the four organizationId columns are NOT NULL, in the
-- connection's schema.
function M.not_null_columns(conn)
  return conn:query_value([[SELECT count(*) FROM information_schema.columns
    WHERE table_schema = current_schema() AND column_name = 'organizationId' AND is_nullable = 'NO'
      AND table_name = ANY ($1::text[])]], db.text_array(M.TABLES))
end

return M
