-- Real Prisma Migrate (the 6.19 CLI, tests/helpers/prisma6.lua) against
-- dhrun on real PostgreSQL: each check runs both tools and compares what they
-- say and what they write, both ways.
--
-- Known differences of the oracle, which these tests work around rather than
-- assert: its WASM engine and driver adapter write timestamps with
-- millisecond precision (native Prisma and dhrun: microseconds); a failed
-- script is reported as "external connector error" (native: P3018 with the
-- DbError dump, which dhrun writes); its P1002 names no host:port (native
-- and dhrun do).  tests/prisma_spec.lua checks dhrun's side of those texts.
local prisma = require "dhrun.prisma"
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local lfs = require "lfs"
local testdb = require "testdb"
local datahub = require "datahub"
local prisma6 = require "prisma6"
local sh = require "sh"

local INIT = 'CREATE TABLE "Item" (\n    "id" SERIAL NOT NULL,\n    "name" TEXT,\n\n'
  .. '    CONSTRAINT "Item_pkey" PRIMARY KEY ("id")\n);\n'
-- a DO block: Prisma sends the whole file as one query, and so must the oracle
local ADD = 'ALTER TABLE "Item" ADD COLUMN "note" TEXT;\nDO $$ BEGIN PERFORM 1; END $$;\n'
local MORE = 'CREATE INDEX "Item_name_idx" ON "Item"("name");\n'
local BAD = 'ALTER TABLE "Item" ADD COLUMN "extra" INTEGER;\nSELECT 1/0;\n'
local MODELS = 'model Item {\n  id   Int     @id @default(autoincrement())\n  name String?\n  note String?\n\n'
  .. '  @@index([name])\n}\n'

local p -- the Prisma project of this file

local function mdir(files)
  local dir = sh.tmpdir() .. "/migrations"
  lfs.mkdir(dir)
  for name, sql in pairs(files) do sh.write(dir .. "/" .. name .. "/migration.sql", sql) end
  return dir
end

-- A database for both tools: {name=, url= (TCP, as Prisma gets it), conn=}.
local dbs = {}
local function newdb()
  local t = testdb.create()
  t.tcp = testdb.tcp_url(t.name)
  t.conn = t.connect()
  dbs[#dbs + 1] = t
  return t
end

-- A dhrun config for a synthetic migrations directory.
local function config(dir, extra)
  return sh.write(sh.tmpdir() .. "/dhrun.config.lua", string.format("return { project = 'oracle', migrations = %q%s }",
    dir, extra or ""))
end

local function dhrun(t, cfg, args)
  local argv = { args[1], "--config", cfg }
  for i = 2, #args do argv[#argv + 1] = args[i] end
  return sh.dhrun(argv, { cwd = sh.root, env = { DATABASE_URL = t.url } })
end

-- The rows as Prisma's bookkeeping defines them, without what differs per
-- run (ids, times): name, checksum, logs (nil, "" or "text"),
-- applied_steps_count, and which timestamps are set.
local function shape(conn, name)
  local rows = conn:query([[SELECT migration_name, checksum, logs, applied_steps_count,
      finished_at IS NOT NULL AS finished, rolled_back_at IS NOT NULL AS rolled_back,
      started_at <= coalesce(finished_at, started_at) AS ordered, length(id) AS id_len
    FROM _prisma_migrations WHERE $1::text IS NULL OR migration_name = $1 ORDER BY started_at]], name or db.null)
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = table.concat({ r.migration_name, r.checksum,
      r.logs == db.null and "logs=NULL" or r.logs == "" and "logs=''" or "logs=text",
      "steps=" .. r.applied_steps_count, r.finished and "finished" or "-", r.rolled_back and "rolled_back" or "-",
      r.ordered and "ordered" or "UNORDERED", "id" .. r.id_len }, " ")
  end
  return out
end

-- Both tools' status of databases against directories: the same text and
-- exit code.  `checks` is a list of {t, dir}; Prisma's runs go in parallel.
-- Returns dhrun's statuses.
local function same_status(checks)
  local runs, sts = {}, {}
  for i, c in ipairs(checks) do runs[i] = p:start(c[1].tcp, { "migrate", "status" }, { migrations = c[2] }) end
  for i, c in ipairs(checks) do sts[i] = prisma.status(c[1].conn, c[2]) end
  for i, run in ipairs(runs) do
    local r = run:wait()
    assert.are.equal(r.text, sts[i].text, "prisma migrate status:\n" .. r.stdout .. r.stderr)
    assert.are.equal(r.code, sts[i].exit)
  end
  return table.unpack(sts)
end

-- Waits for a list of background Prisma runs; returns their results.
local function wait_all(runs)
  local res = {}
  for i, run in ipairs(runs) do res[i] = run:wait() end
  return table.unpack(res)
end

-- A copy of a database (CREATE DATABASE ... TEMPLATE): the same rows,
-- timestamps and ids included.
local function clone(t)
  t.conn:close()
  local c = testdb.create()
  local admin <close> = testdb.admin()
  admin:exec("DROP DATABASE " .. db.quote_ident(c.name))
  admin:exec("CREATE DATABASE " .. db.quote_ident(c.name) .. " TEMPLATE " .. db.quote_ident(t.name))
  t.conn = t.connect()
  c.conn = c.connect()
  c.tcp = testdb.tcp_url(c.name)
  dbs[#dbs + 1] = c
  return c
end

local function wait_for(what, fn, seconds)
  local deadline = sys.now() + (seconds or 10)
  while sys.now() < deadline do
    if fn() then return end
    sys.sleep(0.05)
  end
  error("timed out waiting for " .. what)
end

local function lock_holder(conn)
  return conn:query_value([[SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 0
    AND objid = 72707369 AND objsubid = 1 AND granted AND database = (SELECT oid FROM pg_database
    WHERE datname = current_database())]])
end

describe("interop with real Prisma Migrate (6.19 CLI)", function()
  setup(function()
    p = prisma6.project()
  end)
  after_each(function()
    for _, t in ipairs(dbs) do
      t.conn:close()
      testdb.drop(t.name)
    end
    dbs = {}
  end)

  it("agrees on status after a partial deploy by either tool, a failure, diverged histories and no table", function()
    local full = mdir({ ["1_init"] = INIT, ["2_add"] = ADD, ["3_more"] = MORE })
    local first = mdir({ ["1_init"] = INIT })

    -- dhrun applied the first migration, Prisma the first one elsewhere
    local a, b = newdb(), newdb()
    local res = prisma.deploy(a.conn, full, { until_name = "1_init" })
    local r = p:deploy(b.tcp, first)
    assert.are.equal(0, r.code, r.stderr)
    -- what each says it did
    assert.are.equal((r.text:gsub("^1 migration found in prisma/migrations\n+", "")), res.text)
    for _, st in ipairs({ same_status({ { a, full }, { b, full } }) }) do
      assert.are.equal("pending", st.state)
      assert.are.same({ "2_add", "3_more" }, st.pending)
      assert.are.equal(1, st.exit)
    end
    assert.are.same(shape(a.conn), shape(b.conn))

    -- a failed migration, written by dhrun, then by Prisma
    local bad = mdir({ ["1_init"] = INIT, ["2_bad"] = BAD })
    assert.is_false(pcall(prisma.deploy, a.conn, bad))
    r = p:deploy(b.tcp, bad)
    assert.are.equal(1, r.code)
    local sa, sb = same_status({ { a, bad }, { b, bad } })
    assert.are.equal("failed", sa.state)
    assert.are.equal("failed", sb.state)
    -- its row is the same but for the text of its logs (see the top)
    assert.are.same(shape(a.conn), shape(b.conn))

    -- diverged: rows the directory does not have, with and without a common
    -- migration; no _prisma_migrations table and no migrations; and Prisma
    -- refusing to deploy on top of the failed migration, as dhrun does
    local c = newdb()
    local p3009 = p:start(b.tcp, { "migrate", "deploy" }, { migrations = bad })
    local other = mdir({ ["1_init"] = INIT, ["2_other"] = MORE })
    local none = mdir({ ["0_first"] = "SELECT 1;\n", ["1_init"] = INIT })
    local st_other, st_none, st_c = same_status({ { a, other }, { a, none }, { c, mdir({}) } })
    assert.are.equal("diverged", st_other.state)
    assert.matches("The last common migration is: 1_init", st_other.text, 1, true)
    assert.matches("The last common migration is: null", st_none.text, 1, true)
    assert.are.equal("not_managed", st_c.state)
    r = p3009:wait()
    assert.are.equal("P3009", r.error_code, r.stderr)
    local ok, err = pcall(prisma.deploy, b.conn, bad)
    assert.is_false(ok)
    assert.are.equal("P3009", err.code)
    -- the same text: the row's started_at has Prisma's milliseconds here
    assert.are.equal(r.stderr:match("\nError: P3009\n\n(.-)\n*$"), (err.prisma_message:gsub("\n+$", "")))
  end)

  it("leaves the rows Prisma leaves: dhrun deploy of an empty database, then Prisma has nothing to do", function()
    local a, b = newdb(), newdb()
    -- Prisma on one empty database, dhrun's deploy flow (the Data Hub
    -- config) on another
    local run = p:start(b.tcp, { "migrate", "deploy" }, { migrations = datahub.migrations })
    local r = datahub.flow(a, "deploy", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    r = run:wait()
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("All migrations have been successfully applied.", r.stdout, 1, true)
    assert.are.same(shape(b.conn), shape(a.conn))
    assert.are.equal(3, #shape(a.conn))
    assert.matches(" logs=NULL steps=1 finished %- ordered id36$", shape(a.conn)[3])

    -- each tool's status of the other's database, and deploy with nothing to do
    local status, deploy = wait_all({ p:start(a.tcp, { "migrate", "status" }, { migrations = datahub.migrations }),
      p:start(a.tcp, { "migrate", "deploy" }, { migrations = datahub.migrations }) })
    assert.are.equal(0, status.code, status.stdout .. status.stderr)
    assert.matches("\n\nDatabase schema is up to date!$", status.text)
    assert.are.equal(prisma.status(a.conn, datahub.migrations).text, status.text)
    assert.are.equal(0, deploy.code, deploy.stderr)
    assert.matches("No pending migrations to apply.", deploy.stdout, 1, true)
    r = datahub.flow(b, "status", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Database schema is up to date!", r.stdout, 1, true)
    assert.are.equal("No pending migrations to apply.", prisma.deploy(b.conn, datahub.migrations).text)
  end)

  it("recovers from the NOT NULL migration Prisma failed on NULLs, and Prisma then sees nothing to do", function()
    local t = datahub.create("nullable")
    t.tcp = testdb.tcp_url(t.name)
    dbs[#dbs + 1] = t
    local r = p:deploy(t.tcp, datahub.migrations)
    assert.are.equal(1, r.code, r.stdout)
    local failed = shape(t.conn, datahub.NOT_NULL)
    assert.are.equal(1, #failed)
    assert.matches(" logs=text steps=0 %- %- ordered id36$", failed[1])
    assert.are.equal("failed", prisma.status(t.conn, datahub.migrations).state)

    r = datahub.flow(t, "deploy", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("dhrun recover", r.stdout .. r.stderr, 1, true)
    r = datahub.flow(t, "recover", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    datahub.assert_final(t.conn)

    local status, deploy = wait_all({ p:start(t.tcp, { "migrate", "status" }, { migrations = datahub.migrations }),
      p:start(t.tcp, { "migrate", "deploy" }, { migrations = datahub.migrations }) })
    assert.are.equal(0, status.code, status.text)
    assert.matches("Database schema is up to date!$", status.text)
    assert.are.equal(0, deploy.code, deploy.stderr)
    assert.matches("No pending migrations to apply.", deploy.stdout, 1, true)
    -- Prisma's failed row, rolled back by recover, then dhrun's applied row
    local rows = shape(t.conn, datahub.NOT_NULL)
    assert.are.equal(2, #rows)
    assert.matches(" logs=text steps=0 %- rolled_back ordered id36$", rows[1])
    assert.matches(" logs=NULL steps=1 finished %- ordered id36$", rows[2])
  end)

  it("re-applies the NOT NULL migration after dhrun rollback exactly as dhrun deploy does", function()
    local a = datahub.create("rolled_back")
    a.tcp = testdb.tcp_url(a.name)
    dbs[#dbs + 1] = a
    local b = clone(a)
    local run = p:start(a.tcp, { "migrate", "deploy" }, { migrations = datahub.migrations })
    local r = datahub.flow(b, "deploy", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    r = run:wait()
    assert.are.equal(0, r.code, r.stderr)
    assert.matches(datahub.NOT_NULL, r.stdout, 1, true)
    assert.are.same(shape(b.conn), shape(a.conn))
    assert.are.equal(2, #shape(a.conn, datahub.NOT_NULL))
    assert.are.equal(4, datahub.not_null_columns(a.conn))
  end)

  it("resolves like prisma migrate resolve: the same rows and the same P-codes", function()
    local dir = mdir({ ["1_init"] = INIT, ["2_bad"] = BAD })
    local cfg = config(dir)
    local a, b = newdb(), newdb()
    for _, t in ipairs({ a, b }) do assert.is_false(pcall(prisma.deploy, t.conn, dir)) end

    -- each call on both, Prisma's in parallel when they change nothing
    local function both(calls)
      local runs = {}
      for i, c in ipairs(calls) do
        runs[i] = p:start(a.tcp, { "migrate", "resolve", c[1], c[2] }, { migrations = dir })
      end
      for i, c in ipairs(calls) do
        local d = dhrun(b, cfg, { "resolve", c[1], c[2] })
        local r = runs[i]:wait()
        local code = c[3]
        if code then
          assert.are.equal(code, r.error_code, r.stderr)
          assert.are.equal(1, r.code)
          assert.are.equal(1, d.code, d.stdout .. d.stderr)
          assert.matches("(Prisma " .. code .. ")", d.stdout .. d.stderr, 1, true)
        else
          assert.are.equal(0, r.code, r.stderr)
          assert.are.equal(0, d.code, d.stdout .. d.stderr)
        end
      end
      assert.are.same(shape(a.conn), shape(b.conn))
    end
    both({ { "--rolled-back", "1_init", "P3012" }, { "--rolled-back", "9_nope", "P3011" },
      { "--applied", "9_nope", "P3017" } })
    both({ { "--rolled-back", "2_bad" } })
    both({ { "--applied", "2_bad" } })
    both({ { "--applied", "2_bad", "P3008" } })
    assert.matches("^2_bad %x+ logs='' steps=0 finished %- ordered id36$", shape(a.conn, "2_bad")[2])
    for _, t in ipairs({ a, b }) do
      assert.is_true(t.conn:query_value([[SELECT started_at = finished_at FROM _prisma_migrations
        WHERE migration_name = '2_bad' AND logs = '']]), "resolve --applied: started_at = finished_at")
    end
    same_status({ { a, dir } })
  end)

  it("matches checksums both ways: CRLF checkouts and legacy checksums match, edits do not", function()
    local lf = { ["1_init"] = INIT, ["2_add"] = ADD, ["3_more"] = MORE }
    local crlf = {}
    for k, v in pairs(lf) do crlf[k] = v:gsub("\n", "\r\n") end
    local lf_dir, crlf_dir = mdir(lf), mdir(crlf)
    local a, b = newdb(), newdb()
    -- dhrun wrote LF checksums, Prisma CRLF ones; each tool reads the
    -- other's against the other checkout: no edit
    prisma.deploy(a.conn, lf_dir)
    local deploy = p:start(b.tcp, { "migrate", "deploy" }, { migrations = crlf_dir })
    local r = p:dev(a.tcp, crlf_dir, MODELS)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Already in sync", r.stdout, 1, true)
    assert.are.equal(0, deploy:wait().code)
    assert.are.same(prisma.checksum(crlf["1_init"]), b.conn:query_value(
      "SELECT checksum FROM _prisma_migrations WHERE migration_name = '1_init'"))
    assert.are.same({}, prisma.status(b.conn, lf_dir).edited)

    -- a legacy (unpadded) checksum of the LF file, read against the CRLF
    -- checkout, matches; an edited file does not
    local legacy = prisma.checksum(lf["2_add"]):gsub("%x%x",
      function(x) return string.format("%x", tonumber(x, 16)) end)
    assert.is_true(#legacy < 64)
    a.conn:exec("UPDATE _prisma_migrations SET checksum = $1 WHERE migration_name = '2_add'", legacy)
    sh.write(crlf_dir .. "/3_more/migration.sql", MORE .. "-- edited\n")
    r = p:dev(a.tcp, crlf_dir, MODELS)
    assert.matches("The migration `3_more` was modified after it was applied.", r.stdout .. r.stderr, 1, true)
    assert.is_nil((r.stdout .. r.stderr):find("`2_add`", 1, true), "the legacy checksum matched")
    assert.are.same({ "3_more" }, prisma.status(a.conn, crlf_dir).edited)
  end)

  it("shares advisory lock 72707369: each tool waits for the other, and Prisma gives up with P1002", function()
    local slow = mdir({ ["1_slow"] = "SELECT pg_sleep(3);\n" })
    local cfg = config(slow)

    -- dhrun holds it for longer than Prisma's 10 s: P1002 (in the background)
    local c = newdb()
    local holder = c.connect()
    holder:advisory_lock(prisma.LOCK_KEY)
    local p1002 = p:start(c.tcp, { "migrate", "deploy" }, { migrations = slow })

    -- Prisma holds it: dhrun's native deploy gives up (P1002) or waits
    local a = newdb()
    local run = p:start(a.tcp, { "migrate", "deploy" }, { migrations = slow })
    wait_for("Prisma's lock", function() return lock_holder(a.conn) end, 15)
    local saved = prisma.LOCK_TIMEOUT
    prisma.LOCK_TIMEOUT = "200ms"
    local ok, err = pcall(prisma.deploy, a.conn, slow)
    prisma.LOCK_TIMEOUT = saved
    assert.is_false(ok)
    assert.are.equal("P1002", err.code)
    -- the flow waits, and does not take Prisma's row in progress for a failed one
    local r = dhrun(a, cfg, { "deploy" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("no pending migrations", r.stdout, 1, true)
    r = run:wait()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(1, #shape(a.conn))

    -- dhrun holds it (long enough for Prisma to start): Prisma waits for
    -- dhrun's deploy, then has nothing to do
    local b = newdb()
    local slower = mdir({ ["1_slow"] = "SELECT pg_sleep(5);\n" })
    local d = require("dhrun.process").spawn({ sh.bin, "deploy", "--config", config(slower) },
      { cwd = sh.root, env = { DATABASE_URL = b.url } })
    wait_for("dhrun's lock", function() return lock_holder(b.conn) end, 15)
    run = p:start(b.tcp, { "migrate", "deploy" }, { migrations = slower })
    wait_for("Prisma waiting for the lock", function()
      return b.conn:query_value([[SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369
        AND NOT granted]]) > 0
    end, 15)
    r = run:wait()
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("No pending migrations to apply.", r.stdout, 1, true)
    assert.are.equal(0, d:wait(30).code)
    assert.are.equal(1, #shape(b.conn))

    r = p1002:wait()
    holder:close()
    assert.are.equal(1, r.code)
    assert.are.equal("P1002", r.error_code, r.stderr)
    assert.matches("Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369)). "
      .. "Timeout: 10000ms.", r.stderr, 1, true)
    assert.is_false(prisma.table_exists(c.conn))
  end)

  it("runs Prisma's CLI itself with migrate_with = \"prisma\" and commands from prisma_command", function()
    local env = {}
    for k, v in pairs(p.env) do env[#env + 1] = string.format("%s = %q", k, v) end
    local extra = string.format([[
cfg.migrate_with = "prisma"
cfg.prisma_command = { %q, %q }
cfg.app_dir = %q
cfg.env = { DHRUN_ORACLE_MIGRATIONS = %q, %s }
cfg.commands = {}]], prisma6.argv[1], prisma6.argv[2], p.dir, datahub.migrations, table.concat(env, ", "))
    local cfg = datahub.config(nil, extra)
    local t = datahub.create("failed")
    dbs[#dbs + 1] = t
    -- recover: resolve --rolled-back, backfill, NOT NULL online, then the
    -- migration through `prisma migrate deploy`, while dhrun holds its
    -- release lock and lets go of Prisma's
    local r = datahub.flow(t, "recover", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("migrate resolve --rolled-back " .. datahub.NOT_NULL, r.stdout, 1, true)
    assert.matches("Migration " .. datahub.NOT_NULL .. " marked as rolled back.", r.stdout, 1, true)
    assert.matches("migrate deploy", r.stdout, 1, true)
    assert.matches("All migrations have been successfully applied.", r.stdout, 1, true)
    datahub.assert_final(t.conn)
    -- resolve through the CLI: Prisma's own P3011
    r = datahub.flow(t, "resolve", { "--rolled-back", "20990101000000_nope" }, { config = cfg })
    assert.are.equal(1, r.code)
    assert.matches("P3011", r.stdout .. r.stderr, 1, true)

    -- without a rollout, deploy hands every pending migration to one CLI run
    local dir = mdir({ ["1_init"] = INIT, ["2_add"] = ADD, ["3_more"] = MORE })
    local e = newdb()
    r = dhrun(e, config(dir, string.format([[, migrate_with = "prisma", prisma_command = { %q, %q },
      app_dir = %q, env = { DHRUN_ORACLE_MIGRATIONS = %q, %s }]], prisma6.argv[1], prisma6.argv[2], p.dir, dir,
      table.concat(env, ", "))), { "deploy" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local _, runs = r.stdout:gsub("migrate deploy\n", "")
    assert.are.equal(1, runs, r.stdout)
    assert.matches("applied 1_init, 2_add, 3_more", r.stdout, 1, true)
    assert.are.equal("up_to_date", prisma.status(e.conn, dir).state)
  end)
end)
