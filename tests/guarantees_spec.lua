-- Guarantees the rest of the suite relies on but could not tell apart from
-- near misses: each test here fails for a one-line mutation of the code that
-- the other tests let through (a review ran such mutations against the suite).
local sh = require "sh"
local dh = require "datahub"
local testdb = require "testdb"
local prisma = require "dhrun.prisma"
local sys = require "dhrun.core.sys"

local function migrations_dir(files)
  local dir = sh.tmpdir() .. "/migrations"
  for name, sql in pairs(files) do sh.write(dir .. "/" .. name .. "/migration.sql", sql) end
  return dir
end

describe("guarantees", function()
  it("a backfill batch and its cursor commit together: when the cursor cannot be written, the batch is undone",
    function()
    local t = dh.create("rolled_back") -- the progress table exists; every row has its value
    finally(function() dh.drop(t) end)
    t.conn:exec([[UPDATE "MetricDaily" SET "workspaceId" = NULL WHERE id IN
      (SELECT id FROM "MetricDaily" ORDER BY id LIMIT 100)]])
    -- the cursor write of a batch (it adds to rows_updated) fails; nothing else does
    t.conn:exec_script([[
      CREATE FUNCTION pg_temp_refuse_cursor() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.rows_updated <> OLD.rows_updated THEN RAISE EXCEPTION 'cursor write refused (test)'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_cursor BEFORE UPDATE ON dhrun.backfill_progress
        FOR EACH ROW EXECUTE FUNCTION pg_temp_refuse_cursor();]])
    local r = dh.flow(t, "backfill", {})
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cursor write refused (test)", r.stderr, 1, true)
    assert.are.equal(100, t.conn:query_value([[SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL]]),
      "the batch whose cursor could not be stored left no row filled")
  end)

  it("stores the checksum of a CRLF migration file as the sha256 of its raw bytes, as Prisma does", function()
    local crlf = "-- CreateTable\r\nCREATE TABLE \"Crlf\" (\r\n    \"id\" INTEGER NOT NULL\r\n);\r\n"
    assert.are.equal(sys.sha256(crlf), prisma.checksum(crlf))
    local t = testdb.create()
    local conn = t.connect()
    finally(function() conn:close(); testdb.drop(t.name) end)
    prisma.deploy(conn, migrations_dir({ ["1_crlf"] = crlf }))
    assert.are.equal(sys.sha256(crlf), conn:query_value("SELECT checksum FROM _prisma_migrations"))
  end)

  it("a migration that cannot run in a transaction and fails leaves Prisma's failed row: 0 steps, no finish",
    function()
    local t = testdb.create()
    local conn = t.connect()
    finally(function() conn:close(); testdb.drop(t.name) end)
    local dir = migrations_dir({
      ["1_init"] = 'CREATE TABLE "Item" ("id" INTEGER NOT NULL);\n',
      ["2_index"] = 'CREATE INDEX CONCURRENTLY "Nope_idx" ON "Nope" ("id");\n',
    })
    assert.is_false(pcall(prisma.deploy, conn, dir))
    local row = conn:query_one([[SELECT applied_steps_count, finished_at IS NULL AS unfinished,
      rolled_back_at IS NULL AS live, logs FROM _prisma_migrations WHERE migration_name = '2_index']])
    assert.are.same({ 0, true, true }, { row.applied_steps_count, row.unfinished, row.live })
    assert.matches('relation "Nope" does not exist', row.logs, 1, true)
    assert.are.equal("failed", prisma.status(conn, dir).state)
  end)
end)
