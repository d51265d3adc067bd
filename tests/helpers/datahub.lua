-- Test helper: the example Data Hub database in any starting state of the
-- release, a fingerprint of a whole database, and the backfill rule checked
-- row by row.
local prisma = require "dhrun.prisma"
local testdb = require "testdb"
local sh = require "sh"
local assert = require "luassert"

-- The example's config with commands that need no Node (and so no
-- build_inputs: the example's are its Node sources, not in the test's dir);
-- its own flows (smoke, check-workspace, ...) live with it.
local M = require("example").project("datahub", {
  seed = { 60, 5000 },
  config = [[
cfg.generated = nil
cfg.build_inputs = nil
cfg.env = {}
cfg.commands = {
  generate = { "sh", "-c", "echo generated >> generate.log" },
  build = { "sh", "-c", "echo 'Compiled successfully'" },
}]],
  env = { DHRUN_PATH = sh.root .. "/examples/datahub/scripts" },
})
M.INIT = "20251201090000_init"
M.NULLABLE = "20251219170000_datahub_workspace_nullable"
M.NOT_NULL = "20251219171000_datahub_workspace_not_null"
M.TABLES = { "Connection", "MetricDaily", "Insight", "ChatMessage" }

-- Creates a database in one of the release's states:
--   "pre"         init migration + seed (before the tenancy release)
--   "nullable"    + migration #1 (all workspaceId NULL)
--   "half"        + a backfill that got half way (some rows still NULL)
--   "failed"      migration #2 failed on NULLs, as Prisma leaves it
--   "done"        fully deployed
--   "rolled_back" deployed, then the emergency rollback
function M.create(state)
  local t = testdb.create()
  local conn = t.connect()
  prisma.deploy(conn, M.migrations, { until_name = M.INIT })
  M.seed(conn)
  if state ~= "pre" then prisma.deploy(conn, M.migrations, { until_name = M.NULLABLE }) end
  if state == "half" then
    local r = M.flow(t, "backfill-workspace")
    assert(r.code == 0, r.stdout .. r.stderr)
    conn:exec([[UPDATE "MetricDaily" SET "workspaceId" = NULL WHERE id % 2 = 0]])
    conn:exec([[UPDATE "ChatMessage" SET "workspaceId" = NULL]])
    M.seed(conn, 10, 300) -- new users and data without a workspace
  elseif state == "failed" then
    assert(not pcall(prisma.deploy, conn, M.migrations))
  elseif state == "done" or state == "rolled_back" then
    local r = M.flow(t, "deploy", { "--no-build" })
    assert(r.code == 0, r.stdout .. r.stderr)
    if state == "rolled_back" then
      r = M.flow(t, "rollback", { "--yes" })
      assert(r.code == 0, r.stdout .. r.stderr)
    end
  end
  t.conn = conn
  return t
end

-- md5 over the schema (columns, constraints) and every row of every table
-- in public and dhrun, plus whether the dhrun schema exists.
function M.fingerprint(conn, only_public)
  local parts = {}
  local schemas = only_public and "('public')" or "('public', 'dhrun')"
  parts[#parts + 1] = conn:query_value([[SELECT md5(string_agg(table_schema || '.' || table_name || '.' ||
      column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY table_schema, table_name, column_name))
    FROM information_schema.columns WHERE table_schema IN ]] .. schemas)
  parts[#parts + 1] = conn:query_value([[SELECT md5(coalesce(string_agg(conrelid::regclass::text || conname ||
      convalidated::text, ',' ORDER BY conrelid::regclass::text, conname), ''))
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ]] .. schemas)
  local tables = conn:query([[SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS q
    FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema IN ]] .. schemas
    .. " ORDER BY 1")
  for _, r in ipairs(tables) do
    parts[#parts + 1] = r.q .. "=" .. conn:query_value(
      "SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM " .. r.q .. " x")
  end
  return table.concat(parts, "\n")
end

function M.counts(conn)
  local c = {}
  for _, name in ipairs(M.TABLES) do
    c[name] = conn:query_value('SELECT count(*) FROM "' .. name .. '"')
  end
  return c
end

-- Rows whose workspaceId is not what the backfill rule says (0 = correct).
function M.rule_violations(conn)
  local owner = [[(SELECT m."workspaceId" FROM "WorkspaceMember" m WHERE m."userId" = t."userId"
    AND m.role = 'OWNER' ORDER BY m."createdAt", m.id LIMIT 1)]]
  return conn:query_value(string.format([[SELECT
      (SELECT count(*) FROM "Connection" t WHERE t."workspaceId" IS DISTINCT FROM %s)
    + (SELECT count(*) FROM "MetricDaily" t WHERE t."workspaceId" IS DISTINCT FROM
        (SELECT c."workspaceId" FROM "Connection" c WHERE c.id = t."connectionId"))
    + (SELECT count(*) FROM "Insight" t WHERE t."workspaceId" IS DISTINCT FROM
        coalesce((SELECT c."workspaceId" FROM "Connection" c WHERE c.id = t."connectionId"), %s))
    + (SELECT count(*) FROM "ChatMessage" t WHERE t."workspaceId" IS DISTINCT FROM %s)]], owner, owner, owner))
end

function M.not_null_columns(conn)
  return conn:query_value([[SELECT count(*) FROM information_schema.columns
    WHERE table_schema = current_schema() AND column_name = 'workspaceId' AND is_nullable = 'NO'
      AND table_name IN ('Connection', 'MetricDaily', 'Insight', 'ChatMessage')]])
end

-- Asserts the release's final state.
function M.assert_final(conn, counts)
  assert.are.equal(4, M.not_null_columns(conn), "workspaceId NOT NULL on the four tables")
  assert.are.equal("up_to_date", prisma.status(conn, M.migrations).state)
  assert.are.equal(0, M.rule_violations(conn), "every row has the workspace the rule gives it")
  if counts then assert.are.same(counts, M.counts(conn), "no row lost or added") end
  assert.are.equal(0, conn:query_value(
    [[SELECT count(*) FROM pg_constraint WHERE conname LIKE '%workspaceId_not_null']]),
    "no helper CHECK constraint left behind")
end

return M
