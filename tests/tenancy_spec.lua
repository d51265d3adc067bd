-- dhrun.tenancy against a real PostgreSQL: a fresh database per test, small
-- tables of our own (int, text and composite primary keys), real dhrun
-- subprocesses for the kill -9 and the lock-queue tests.
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"
local tenancy = require "dhrun.tenancy"
local cjson = require "cjson"
local testdb = require "testdb"
local sh = require "sh"

local format = string.format
local q = db.quote_ident

-- A log that records lines instead of printing them (no progress bars).
local function quiet_log()
  local log = { lines = {} }
  for _, level in ipairs { "debug", "info", "ok", "warn", "error" } do
    log[level] = function(fmt, ...)
      log.lines[#log.lines + 1] = level .. ": " .. (select("#", ...) > 0 and fmt:format(...) or fmt)
    end
  end
  return log
end

-- A fresh database; connections opened through env.connect are closed and
-- the database dropped when the test ends, whatever happens.
local function setup()
  local d = testdb.create()
  local cleanup = {}
  finally(function()
    for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
    testdb.drop(d.name)
  end)
  local env = { db = d, cleanup = cleanup }
  function env.connect()
    local c = d.connect()
    cleanup[#cleanup + 1] = function() c:close() end
    return c
  end
  env.conn = env.connect()
  return env
end

-- Three tables with the three kinds of primary key.  "Note" keys are chosen
-- to stress the text[] cursor: commas, quotes, braces, backslashes, the
-- word NULL, an empty string, non-ASCII.
local SCHEMA = [[
CREATE TABLE "Account" (id int PRIMARY KEY, name text NOT NULL, "workspaceId" text);
CREATE TABLE "Note" (key text PRIMARY KEY, "accountId" int NOT NULL, "workspaceId" text);
CREATE TABLE "Metric" ("accountId" int, day date, clicks int NOT NULL, "workspaceId" text,
                       PRIMARY KEY ("accountId", day));
]]

local function populate(conn, n)
  conn:exec_script(SCHEMA)
  conn:exec([[INSERT INTO "Account" (id, name) SELECT g, 'account ' || g FROM generate_series(1, $1) g]], n)
  conn:exec([[INSERT INTO "Note" (key, "accountId")
              SELECT (ARRAY['a,b', 'q"uote', '{brace}', 'back\slash', 'ü NULL', 'x y', 'plain'])[1 + g % 7] || g,
                     1 + g % $1
                FROM generate_series(1, $1) g]], n)
  conn:exec([[INSERT INTO "Note" (key, "accountId") VALUES ('NULL', 1), ('', 2), (',', 3), ('"', 4), ('{}', 5),
              ('\', 6)]])
  conn:exec([[INSERT INTO "Metric" ("accountId", day, clicks)
              SELECT a, date '2025-01-01' + d, a * d FROM generate_series(1, $1) a, generate_series(0, 3) d]], n)
end

local function spec(extra)
  local s = {
    column = "workspaceId",
    tables = { "Account", "Note", "Metric" },
    backfill = {
      Account = { value = [['ws-' || (t.id % 5)]] },
      Note = { value = [[a."workspaceId"]], from = [["Account" a]], where = [[a.id = t."accountId"]] },
      Metric = { value = [[a."workspaceId"]], from = [["Account" a]], where = [[a.id = t."accountId"]] },
    },
    batch_size = 10, min_batch_size = 10, max_batch_size = 10,
    lock_timeout = "1s", retries = 3, retry_base = 0.05,
    log = quiet_log(),
  }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

-- The expected result: copies of the tables in schema "ref", each filled by
-- ONE plain UPDATE with the same value expressions.
local function make_reference(env, s)
  local c = env.connect()
  c:exec("CREATE SCHEMA ref")
  for _, name in ipairs(s.tables) do
    c:exec(format("CREATE TABLE ref.%s AS SELECT * FROM public.%s", q(name), q(name)))
  end
  c:exec("SET search_path = ref")
  for _, name in ipairs(s.tables) do
    local b = s.backfill[name]
    c:exec(format('UPDATE %s AS t SET "workspaceId" = (%s)%s WHERE t."workspaceId" IS NULL%s', q(name), b.value,
      b.from and (" FROM " .. b.from) or "", b.where and (" AND " .. b.where) or ""))
  end
  c:close()
end

local function digest(conn, schema, name)
  return conn:query_value(format([[SELECT md5(coalesce(string_agg(x::text, E'\n' ORDER BY x::text), ''))
                                     FROM %s.%s x]], q(schema), q(name)))
end

local function count(conn, sql, ...)
  return conn:query_value("SELECT count(*) FROM " .. sql, ...)
end

local function fill_all(conn)
  for _, name in ipairs { "Account", "Note", "Metric" } do
    conn:exec(format([[UPDATE %s SET "workspaceId" = 'w']], q(name)))
  end
end

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- The first line of a quiet_log that contains `text`, or nil.
local function logged(log, text)
  for _, line in ipairs(log.lines) do
    if line:find(text, 1, true) then return line end
  end
end

local function wait_for(pred, seconds, what)
  local deadline = sys.now() + seconds
  while not pred() do
    if sys.now() > deadline then error("timed out waiting for " .. what) end
    sys.sleep(0.02)
  end
end

-- A backfill of "Account" in small batches, run by a real dhrun process;
-- prints the summary as JSON on its last line.
local BACKFILL_SCRIPT = [[
  local conn = require("dhrun.db").connect(os.getenv("TEN_DB"))
  local t = require("dhrun.tenancy").new(conn, {
    column = "workspaceId", tables = { "Account" },
    backfill = { Account = { value = [=['ws-' || (t.id % 5)]=] } },
    batch_size = 10, min_batch_size = 10, max_batch_size = 10, pause = tonumber(os.getenv("TEN_PAUSE")),
  })
  print(require("cjson").encode(t:backfill()))
]]

local function committed(conn, n)
  return function()
    local ok, v = pcall(conn.query_value, conn, "SELECT rows_updated FROM dhrun.backfill_progress")
    return ok and v ~= nil and v >= n
  end
end

local function sessions_gone(conn)
  return function()
    return count(conn, "pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()") == 0
  end
end

describe("dhrun.tenancy", function()
  it("rejects a missing table, column or primary key with a one-line exit-2 config error", function()
    local env = setup()
    env.conn:exec_script(SCHEMA .. [[CREATE TABLE "Loose" (x int, "workspaceId" text);]])

    -- Said in terms of the spec and the database; a caller that read the
    -- spec from a file adds the hint that names it.
    local err = catch(tenancy.new, env.conn, { column = "workspaceId", tables = { "Account", "Acount" } })
    assert.are.equal("config", err.kind)
    assert.are.equal(2, err.exit)
    assert.are.equal('tenancy: table "public"."Acount" does not exist', err.message)
    assert.are.equal("Acount", err.table)
    assert.is_nil(err.hint)

    err = catch(tenancy.new, env.conn, { column = "tenantId", tables = { "Account" } })
    assert.are.equal(2, err.exit)
    assert.are.equal('tenancy: column "tenantId" is not in table "public"."Account"', err.message)
    assert.are.same({ "Account", "tenantId" }, { err.table, err.column })

    err = catch(tenancy.new, env.conn, { column = "workspaceId", tables = {} })
    assert.are.equal("tenancy: spec.tables must be a non-empty list of table names", err.message)

    err = catch(tenancy.new, env.conn, { column = "workspaceId", tables = { "Loose" } })
    assert.are.equal(2, err.exit)
    assert.matches('"public"."Loose" has no primary key', err.message, 1, true)

    -- What the engineer sees: exit code 2, the problem and the hint, nothing else.
    local r = sh.dhrun({ "-e", [[
      local conn = require("dhrun.db").connect(os.getenv("TEN_DB"))
      require("dhrun.tenancy").new(conn, { column = "workspaceId", tables = { "Account", "Acount" } })
    ]] }, { env = { TEN_DB = env.db.conninfo } })
    assert.are.equal(2, r.code)
    assert.are.equal('dhrun: tenancy: table "public"."Acount" does not exist\n', r.stderr)
  end)

  it("null_check probes nullable tables and counts only the offenders", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 30)
    conn:exec([[UPDATE "Account" SET "workspaceId" = 'w' WHERE id > 3]])
    conn:exec([[UPDATE "Note" SET "workspaceId" = 'w']])
    local t = tenancy.new(conn, spec())

    local r = t:null_check()
    assert.is_false(r.ok)
    assert.are.same({ table = "Account", enforced = false, has_nulls = true, nulls = 3 }, r.tables[1])
    assert.are.same({ table = "Note", enforced = false, has_nulls = false }, r.tables[2])
    assert.are.same({ table = "Metric", enforced = false, has_nulls = true, nulls = 120 }, r.tables[3])
    assert.are.equal(123, r.offenders)
    assert.is_true(t:has_nulls())

    r = t:null_check { count = false }
    assert.is_nil(r.offenders)
    assert.are.same({ table = "Account", enforced = false, has_nulls = true }, r.tables[1])

    fill_all(conn)
    r = t:null_check()
    assert.is_true(r.ok)
    assert.are.equal(0, r.offenders)
    assert.is_false(t:has_nulls())
  end)

  it("null_check answers from the catalog once NOT NULL is enforced: no query touches the table", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    fill_all(conn)
    local t = tenancy.new(conn, spec())
    t:enforce_not_null()
    -- A role that may read the catalog but none of the tables.
    local role = "dhrun_t_noread_" .. sys.uuid4():sub(1, 8)
    conn:exec("CREATE ROLE " .. q(role))
    env.cleanup[#env.cleanup + 1] = function()
      conn:exec("RESET ROLE")
      conn:exec("DROP ROLE " .. q(role))
    end

    conn:exec("SET ROLE " .. q(role))
    local r = t:null_check()
    assert.is_true(r.ok)
    for _, e in ipairs(r.tables) do
      assert.are.same({ table = e.table, enforced = true, has_nulls = false }, e)
    end

    -- Control: with one table nullable again, the check does read it, and
    -- this role may not.
    conn:exec("RESET ROLE")
    conn:exec([[ALTER TABLE "Note" ALTER COLUMN "workspaceId" DROP NOT NULL]])
    conn:exec("SET ROLE " .. q(role))
    local err = catch(t.null_check, t)
    assert.are.equal("42501", err.sqlstate)
    assert.matches("Note", err.message, 1, true)
    conn:exec("RESET ROLE")
  end)

  it("backfills int, text and composite keys batch by batch, committing each, like one UPDATE would", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 40)
    local s = spec()
    make_reference(env, s)
    local observer = env.connect()
    local done, seen = {}, {}
    local t = tenancy.new(conn, s)
    local summary = t:backfill { on_batch = function(info)
      -- Another session sees each batch as soon as it returns: committed.
      done[info.table] = (done[info.table] or 0) + info.updated
      seen[#seen + 1] = { done[info.table], count(observer, q(info.table) .. ' WHERE "workspaceId" IS NOT NULL') }
    end }

    for _, name in ipairs(s.tables) do
      assert.are.equal(digest(conn, "ref", name), digest(conn, "public", name), name)
    end
    assert.are.equal(40 + 46 + 160, summary.updated)
    assert.are.same({ table = "Account", updated = 40, scanned = 40, batches = 5, passes = 1, remaining = 0 },
      { table = summary.tables[1].table, updated = summary.tables[1].updated, scanned = summary.tables[1].scanned,
        batches = summary.tables[1].batches, passes = summary.tables[1].passes,
        remaining = summary.tables[1].remaining })
    assert.are.equal(46, summary.tables[2].scanned)
    assert.are.equal(5, summary.tables[2].batches)
    assert.are.equal(17, summary.tables[3].batches)
    assert.are.equal(5 + 5 + 17, #seen)
    for _, pair in ipairs(seen) do assert.are.equal(pair[1], pair[2]) end
    assert.is_true(t:null_check().ok)

    local rows = conn:query([[SELECT task, pass, rows_updated, finished_at IS NOT NULL AS finished
                                FROM dhrun.backfill_progress ORDER BY task]])
    assert.are.equal(3, #rows)
    assert.are.same({ "workspaceId:public.Account", 1, 40, true },
      { rows[1].task, rows[1].pass, rows[1].rows_updated, rows[1].finished })
    assert.are.same({ "workspaceId:public.Note", 46, true }, { rows[3].task, rows[3].rows_updated, rows[3].finished })

    -- Nothing left: a second run only probes.
    summary = t:backfill()
    assert.are.equal(0, summary.updated)
    assert.is_true(summary.tables[1].skipped)
  end)

  it("a parent rule looks parents up by index in each batch, never by reading the whole parent table", function()
    local env = setup()
    local conn = env.conn
    -- each batch of children touches many parents; the planner, told only
    -- that a batch starts at its cursor, would hash all of "Account"
    conn:exec_script([[
      CREATE TABLE "Account" (id int PRIMARY KEY, "workspaceId" text NOT NULL);
      CREATE TABLE "Event" (id int PRIMARY KEY, "accountId" int NOT NULL REFERENCES "Account", "workspaceId" text);
      INSERT INTO "Account" SELECT g, 'ws' || (g % 7) FROM generate_series(1, 2000) g;
      INSERT INTO "Event" SELECT g, 1 + g % 2000 FROM generate_series(1, 120000) g;
      ANALYZE "Account"; ANALYZE "Event";]])
    local s = require("dhrun.rollout").tenancy_spec { column = "workspaceId", tables = {
      { name = "Event", hops = { { fk = "accountId", table = "Account", key = "id" } }, batch = {} } } }
    s.vacuum, s.log = false, quiet_log()
    local function scans()
      -- this session's counters reach the statistics views at its next flush
      conn:query("SELECT pg_stat_force_next_flush()")
      conn:query("SELECT 1")
      return conn:query_one([[SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relid = '"Account"'::regclass]])
    end
    local before = scans()
    local summary = tenancy.new(conn, s):backfill { batch_size = 6000 }
    local after = scans()
    assert.are.equal(120000, summary.updated)
    assert.are.equal(21, summary.tables[1].batches) -- 20 full, and the one that finds the end
    assert.are.equal(0, after.seq_scan - before.seq_scan)
    assert.is_true(after.idx_scan - before.idx_scan >= 20, "parents were not looked up by index")
    assert.are.equal(0, count(conn, [["Event" e JOIN "Account" a ON a.id = e."accountId"
                                       WHERE e."workspaceId" IS DISTINCT FROM a."workspaceId"]]))
  end)

  it("looks parents up by index only where an index can serve the join", function()
    local env = setup()
    env.conn:exec_script([[
      CREATE TABLE "P" (id int PRIMARY KEY, "workspaceId" text);
      CREATE TABLE "PBrin" (id int, "workspaceId" text); CREATE INDEX ON "PBrin" USING brin (id);
      CREATE TABLE "PHash" (id int, "workspaceId" text); CREATE INDEX ON "PHash" USING hash (id);
      CREATE TABLE "CInt" (id int PRIMARY KEY, pid int, "workspaceId" text);
      CREATE TABLE "CBig" (id int PRIMARY KEY, pid bigint, "workspaceId" text);
      CREATE TABLE "CNum" (id int PRIMARY KEY, pid numeric, "workspaceId" text);
      CREATE TABLE "CBrin" (id int PRIMARY KEY, pid int, "workspaceId" text);
      CREATE TABLE "CHash" (id int PRIMARY KEY, pid int, "workspaceId" text);]])
    local function rule(name, parent) return { name = name, hops = { { fk = "pid", table = parent, key = "id" } } } end
    local s = require("dhrun.rollout").tenancy_spec { column = "workspaceId", tables = {
      rule("CInt", "P"), rule("CBig", "P"), rule("CNum", "P"), rule("CBrin", "PBrin"), rule("CHash", "PHash") } }
    s.log = quiet_log()
    local t = tenancy.new(env.conn, s)
    local got = {}
    for _, name in ipairs { "CInt", "CBig", "CNum", "CBrin", "CHash" } do
      got[name] = t:_indexed_parents(t:_describe(name))
    end
    -- int8 = int4 is in the btree family; numeric = int4 is not; a BRIN index cannot look one key up
    assert.are.same({ CInt = true, CBig = true, CNum = false, CBrin = false, CHash = true }, got)
  end)

  it("adapts the batch size toward batch_target within min/max", function()
    local env = setup()
    populate(env.conn, 200)
    env.conn:exec([[UPDATE "Account" SET "workspaceId" = 'w']])
    local sizes = {}
    local t = tenancy.new(env.conn, spec { tables = { "Metric" }, batch_size = 20, min_batch_size = 10,
      max_batch_size = 100, batch_step = 20, batch_target = 10 })
    t:backfill { on_batch = function(info) sizes[#sizes + 1] = info.batch_size end }
    -- Fast batches grow by batch_step (additive increase) up to the maximum.
    assert.are.same({ 20, 40, 60, 80, 100 }, { sizes[1], sizes[2], sizes[3], sizes[4], sizes[5] })
    assert.are.equal(100, sizes[#sizes])
    assert.is_true(tenancy.new(env.conn, spec { tables = { "Metric" } }):null_check().ok)
  end)

  it("takes batch settings per table, and VACUUMs (ANALYZE) each table its backfill changed unless told not to",
    function()
    local env = setup()
    local conn = env.conn
    populate(conn, 40)
    conn:exec([[UPDATE "Note" SET "workspaceId" = 'w']]) -- nothing to fill
    local s = spec { tables = { "Account", "Metric", "Note" }, table_settings = {
      Account = { vacuum = false },
      Metric = { batch_size = 40, min_batch_size = 40, max_batch_size = 40 },
      Other = { pause = 1 }, -- a table of a later rollout: ignored, with a warning
    } }
    local t = tenancy.new(conn, s)
    assert.are.equal("warn: tenancy: spec.table_settings.Other: Other is not one of spec.tables: ignored",
      s.log.lines[1])
    local sizes = { Account = {}, Metric = {} }
    local summary = t:backfill { on_batch = function(info) table.insert(sizes[info.table], info.batch_size) end }
    assert.are.same({ 10, 10, 10, 10, 10 }, sizes.Account) -- the global settings
    assert.are.same({ 40, 40, 40, 40, 40 }, sizes.Metric)  -- 160 rows: 4 full batches and the one that finds the end
    assert.is_true(t:null_check().ok)

    -- Only Metric was vacuumed and analyzed (manually: autovacuum counts
    -- apart), once, after its backfill: Account was told not to be, and the
    -- backfill changed nothing in Note.
    local function stats(name)
      return conn:query_one([[SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relid = $1::regclass]],
        q(name))
    end
    assert.are.same({ 1, 1 }, { stats("Metric").vacuum_count, stats("Metric").analyze_count })
    assert.are.same({ 0, 0 }, { stats("Account").vacuum_count, stats("Account").analyze_count })
    assert.are.same({ 0, 0 }, { stats("Note").vacuum_count, stats("Note").analyze_count })
    assert.is_nil(summary.tables[1].vacuum_seconds)
    assert.are.equal("number", type(summary.tables[2].vacuum_seconds))
    assert.is_true(summary.tables[3].skipped)
    assert.matches("^info: backfill Metric: VACUUM %(ANALYZE%) in %d+%.%d%d s$", s.log.lines[#s.log.lines - 1])
    assert.are.equal("info: backfill Note: no NULL workspaceId, nothing to do", s.log.lines[#s.log.lines])

    -- A run's own batch size is kept for every table, over table_settings.
    conn:exec([[UPDATE "Metric" SET "workspaceId" = NULL]])
    sizes = { Account = {}, Metric = {} }
    local limits = {}
    t:backfill { batch_size = 100, on_batch = function(info)
      table.insert(sizes[info.table], info.batch_size)
      if info.limit then limits[#limits + 1] = info.limit end
    end }
    assert.are.same({ 100, 100 }, sizes.Metric)
    -- (the progress line names nothing that limits a fixed size)
    assert.are.same({}, limits)
    assert.are.same({ 2, 2 }, { stats("Metric").vacuum_count, stats("Metric").analyze_count })

    -- Checked like the global settings: exit 2, one line naming the setting.
    for _, case in ipairs {
      { { Metric = { batch_size = 0 } },
        "spec.table_settings.Metric.batch_size must be an integer number >= 1, got 0" },
      { { Metric = { min_batch_size = 50 } },
        "spec.table_settings.Metric: min_batch_size (50) is larger than max_batch_size (10)" },
      { { Metric = { pause = -1 } }, "spec.table_settings.Metric.pause must be a number >= 0, got -1" },
      { { Metric = { batch_target = "1s" } },
        "spec.table_settings.Metric.batch_target must be a number >= 0.001, got 1s" },
      { { Metric = { vacuum = "yes" } }, "spec.table_settings.Metric.vacuum must be true or false, got yes" },
      { { Metric = { batchsize = 5 } }, "spec.table_settings.Metric.batchsize is not a per-table setting "
        .. "(batch_size, min_batch_size, max_batch_size, batch_target, pause, batch_step, vacuum)" },
      { { ["Metric Daily"] = 5 }, 'spec.table_settings["Metric Daily"] must be a table, got number' },
      { "fast", "spec.table_settings must be a table of {table name = {batch_size=, ...}}" },
    } do
      local err = catch(tenancy.new, conn, spec { tables = { "Account", "Metric" }, table_settings = case[1] })
      assert.are.same({ "config", 2, "tenancy: " .. case[2] }, { err.kind, err.exit, err.message })
    end
    local err = catch(tenancy.new, conn, spec { vacuum = 1 })
    assert.are.equal("tenancy: spec.vacuum must be true or false, got 1", err.message)
    err = catch(tenancy.new, conn, spec { outwait_autovacuum = "no" })
    assert.are.equal("tenancy: spec.outwait_autovacuum must be true or false, got no", err.message)
  end)

  it("flushes the backfill session's writes as it goes when flush_after is set, then restores the setting", function()
    local env = setup()
    populate(env.conn, 60)
    env.conn:exec([[UPDATE "Account" SET "workspaceId" = 'w']])
    local before = env.conn:get("backend_flush_after")
    local during = {}
    local t = tenancy.new(env.conn, spec { tables = { "Metric" }, flush_after = "256kB" })
    t:backfill { on_batch = function() during[#during + 1] = env.conn:get("backend_flush_after") end }
    assert.are.equal("256kB", during[1])
    assert.are.equal(before, env.conn:get("backend_flush_after"))

    -- off by default: the server's setting stays
    env.conn:exec([[UPDATE "Metric" SET "workspaceId" = NULL]])
    during = {}
    t = tenancy.new(env.conn, spec { tables = { "Metric" } })
    t:backfill { on_batch = function() during[#during + 1] = env.conn:get("backend_flush_after") end }
    assert.are.equal(before, during[1])

    for _, bad in ipairs({ "lots", "4MB", 256 }) do
      local err = catch(tenancy.new, env.conn, spec { tables = { "Metric" }, flush_after = bad })
      assert.are.equal(2, err.exit)
      assert.matches('flush_after must be a size like "256kB" (at most 2MB), or false, got ' .. tostring(bad),
        err.message, 1, true)
    end
  end)

  it("leaves rows whose value expression yields NULL alone and reports them", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 40)
    local s = spec { tables = { "Account" } }
    s.backfill = { Account = { value = [[CASE WHEN t.id % 10 = 0 THEN NULL ELSE 'ws-' || t.id END]] } }
    local t = tenancy.new(conn, s)
    local summary = t:backfill()
    assert.are.equal(36, summary.updated)
    assert.are.equal(4, summary.remaining)
    assert.are.equal(4, summary.tables[1].remaining)
    assert.are.equal(2, summary.tables[1].passes) -- the second pass found nothing more to fill, so it stopped
    assert.matches("4 row%(s%) still have NULL workspaceId", s.log.lines[#s.log.lines - 1])
    assert.matches("^info: backfill Account: VACUUM %(ANALYZE%)", s.log.lines[#s.log.lines]) -- it changed 36 rows

    local r = t:null_check()
    assert.is_false(r.ok)
    assert.are.equal(4, r.tables[1].nulls)
    assert.are.equal(4, count(conn, [["Account" WHERE id % 10 = 0 AND "workspaceId" IS NULL]]))
    assert.are.equal(36, count(conn, [["Account" WHERE "workspaceId" = 'ws-' || id]]))
  end)

  it("gives rows written behind the cursor a second pass", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 40)
    local app = env.connect()
    local t = tenancy.new(conn, spec { tables = { "Account", "Note" } })
    local summary = t:backfill { on_batch = function(info)
      if info.batch == 2 and info.table == "Account" then
        -- The application writes rows without the column meanwhile: one
        -- behind the cursor, one ahead of it.
        app:exec([[INSERT INTO "Account" (id, name) VALUES (0, 'behind'), (1000, 'ahead')]])
        app:exec([[INSERT INTO "Note" (key, "accountId") VALUES ('  first', 1)]])
      end
    end }
    assert.are.equal(2, summary.tables[1].passes)
    assert.are.equal(42, summary.tables[1].updated)
    assert.are.equal(0, summary.remaining)
    assert.are.equal(1, summary.tables[2].passes) -- the Note row arrived before its pass began
    assert.are.equal("ws-0", conn:query_value([[SELECT "workspaceId" FROM "Account" WHERE id = 0]]))
    assert.is_true(t:null_check().ok)
    local row = conn:query_one([[SELECT pass, finished_at IS NOT NULL AS finished, rows_updated
                                  FROM dhrun.backfill_progress WHERE task = 'workspaceId:public.Account']])
    assert.are.same({ 2, true, 42 }, { row.pass, row.finished, row.rows_updated })
  end)

  -- A table like Data Hub's: an index on the tenant column.
  local function big(conn, rows)
    conn:exec_script([[
      CREATE TABLE "Big" (id int PRIMARY KEY, "workspaceId" text);
      CREATE INDEX "Big_workspaceId_idx" ON "Big" ("workspaceId");]])
    conn:exec([[INSERT INTO "Big" (id) SELECT g FROM generate_series(1, $1) g]], rows)
  end

  local function big_spec(extra)
    local s = spec { tables = { "Big" }, backfill = { Big = { value = [['ws-' || (t.id % 7)]] } },
                     batch_size = 5000, min_batch_size = 200, max_batch_size = 50000 }
    for k, v in pairs(extra or {}) do s[k] = v end
    return s
  end

  it("a rerun finds the NULLs left in a big table through the column's index, without walking the table", function()
    local env = setup()
    local conn = env.conn
    big(conn, 200000)
    local first = tenancy.new(conn, big_spec()):backfill()
    assert.are.equal(200000, first.tables[1].scanned)
    -- 50 rows lose their value again, at both ends of the key range
    conn:exec([[UPDATE "Big" SET "workspaceId" = NULL WHERE id <= 25 OR id > 199975]])

    local s = big_spec()
    local visited, passes = 0, {}
    local r = tenancy.new(conn, s):backfill { on_batch = function(info)
      visited = visited + info.scanned
      passes[info.pass] = true
    end }
    assert.are.same({ [2] = true }, passes)
    assert.are.same({ 50, 50, 50, 1, 0 }, { r.updated, r.tables[1].scanned, visited, r.tables[1].passes,
      r.remaining })
    assert.is_truthy(logged(s.log, 'info: backfill Big: pass 2 visits only the rows with NULL workspaceId (index '
      .. '"Big_workspaceId_idx")'))
    assert.are.equal(0, count(conn, [["Big" WHERE "workspaceId" IS DISTINCT FROM 'ws-' || (id % 7)]]))
    local row = conn:query_one([[SELECT pass, rows_updated, finished_at IS NOT NULL AS finished
                                  FROM dhrun.backfill_progress]])
    assert.are.same({ 2, 200050, true }, { row.pass, row.rows_updated, row.finished })
  end)

  it("a pass over the NULLs left commits with its cursor: it resumes after a crash, and a second run fails",
    function()
    local env = setup()
    local conn = env.conn
    big(conn, 2000)
    tenancy.new(conn, big_spec()):backfill()
    conn:exec([[UPDATE "Big" SET "workspaceId" = NULL WHERE id % 40 = 0]]) -- 50 rows
    local fixed = function(extra)
      local s = big_spec { batch_size = 10, min_batch_size = 10, max_batch_size = 10 }
      for k, v in pairs(extra or {}) do s[k] = v end
      return s
    end

    -- The process dies right after its second batch committed.
    local err = catch(tenancy.new(conn, fixed()).backfill, tenancy.new(conn, fixed()), { on_batch = function(info)
      if info.batch == 2 then error("killed") end
    end })
    assert.matches("killed", tostring(err))
    local row = conn:query_one([[SELECT pass, cursor[1]::int AS cursor, finished_at IS NULL AS open
                                  FROM dhrun.backfill_progress]])
    assert.are.same({ 2, 800, true }, { row.pass, row.cursor, row.open }) -- the 20th NULL row's key
    assert.are.equal(20, count(conn, [["Big" WHERE id % 40 = 0 AND "workspaceId" IS NOT NULL]]))
    assert.are.equal(0, count(conn, [["Big" WHERE id % 40 = 0 AND "workspaceId" IS NOT NULL AND id > 800]]))

    -- Another run takes over while this one is between batches: this one's
    -- next batch fails instead of writing too.
    local other = env.connect()
    local s = fixed()
    local t = tenancy.new(conn, s)
    err = catch(t.backfill, t, { on_batch = function(info)
      if info.batch == 1 then
        local r = tenancy.new(other, fixed()):backfill()
        assert.are.same({ 20, 20 }, { r.updated, r.tables[1].scanned }) -- the 2 batches after the first one
      end
    end })
    assert.are.equal("lock", err.kind)
    assert.matches("another backfill of this table is running", err.message, 1, true)
    assert.is_truthy(logged(s.log, "resuming pass 2 after key {800}"))
    assert.are.equal(0, count(conn, [["Big" WHERE "workspaceId" IS DISTINCT FROM 'ws-' || (id % 7)]]))
    row = conn:query_one([[SELECT rows_updated, finished_at IS NOT NULL AS finished FROM dhrun.backfill_progress]])
    assert.are.same({ 2050, true }, { row.rows_updated, row.finished })
  end)

  it("without an index on the column, a later pass starts at the first key that has a NULL", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20000)
    local s = spec { tables = { "Account" }, batch_size = 5000, min_batch_size = 200, max_batch_size = 50000 }
    tenancy.new(conn, s):backfill()
    conn:exec([[UPDATE "Account" SET "workspaceId" = NULL WHERE id > 19970]])
    s = spec { tables = { "Account" }, batch_size = 5000, min_batch_size = 200, max_batch_size = 50000 }
    local r = tenancy.new(conn, s):backfill()
    assert.are.same({ 30, 30, 1 }, { r.updated, r.tables[1].scanned, r.tables[1].passes })
    assert.is_truthy(logged(s.log, "backfill Account: pass 2 starts at key {19971}, the first with NULL workspaceId"))
    assert.is_true(tenancy.new(conn, spec { tables = { "Account" } }):null_check().ok)
  end)

  it("resumes from the stored cursor after kill -9 and ends with exactly the expected data", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 600)
    local s = spec { tables = { "Account" } }
    make_reference(env, s)
    local script = sh.tmpfile("backfill.lua", BACKFILL_SCRIPT)
    local proc = process.spawn({ sh.bin, script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0.02" } })
    wait_for(committed(conn, 100), 20, "the backfill to commit 100 rows")
    proc:kill("KILL")
    local killed = assert(proc:wait(5))
    assert.are.equal("SIGKILL", killed.signame)
    -- Let the server notice the dead client before looking (a COMMIT it had
    -- already sent may still land).
    wait_for(sessions_gone(conn), 10, "the killed backfill's session to end")

    local row = conn:query_one([[SELECT cursor[1]::int AS cursor, rows_updated, finished_at IS NULL AS open
                                  FROM dhrun.backfill_progress]])
    assert.is_true(row.open)
    assert.is_true(row.cursor < 600)
    -- Each batch and its cursor commit together: what is filled is exactly
    -- the keys up to the cursor.
    assert.are.equal(row.rows_updated, count(conn, [["Account" WHERE "workspaceId" IS NOT NULL]]))
    assert.are.equal(row.cursor, count(conn, [["Account" WHERE "workspaceId" IS NOT NULL AND id <= $1]], row.cursor))

    local r = sh.dhrun({ script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("backfill Account: resuming pass 1 after key {" .. row.cursor .. "}", r.stdout, 1, true)
    local summary = cjson.decode(r.stdout:match("[^\n]+\n$"))
    assert.are.equal(600 - row.cursor, summary.tables[1].scanned)
    assert.are.equal(600 - row.rows_updated, summary.updated)
    assert.are.equal(digest(conn, "ref", "Account"), digest(conn, "public", "Account"))
    assert.are.same({ 600, true }, { conn:query_value("SELECT rows_updated FROM dhrun.backfill_progress"),
      conn:query_value("SELECT finished_at IS NOT NULL FROM dhrun.backfill_progress") })
  end)

  it("stops cleanly on Ctrl-C: exit 130, the open batch rolled back, the cursor consistent", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 600)
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/backfill.lua", BACKFILL_SCRIPT)
    local proc = process.spawn({ sh.bin, script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0.02" },
      stderr = dir .. "/err" })
    wait_for(committed(conn, 50), 20, "the backfill to commit 50 rows")
    local t0 = sys.now()
    proc:kill("INT")
    local r = assert(proc:wait(5))
    assert.is_true(sys.now() - t0 < 2)
    assert.are.equal(130, r.code)
    assert.matches("dhrun: interrupted (Ctrl-C)", sh.read(dir .. "/err"), 1, true)
    wait_for(sessions_gone(conn), 10, "the interrupted backfill's session to end")
    local row = conn:query_one([[SELECT cursor[1]::int AS cursor, rows_updated, finished_at IS NULL AS open
                                  FROM dhrun.backfill_progress]])
    assert.is_true(row.open)
    assert.are.equal(row.rows_updated, count(conn, [["Account" WHERE "workspaceId" IS NOT NULL]]))
    assert.are.equal(row.cursor, row.rows_updated)
  end)

  it("runs backfill.prepare first, in its own transaction", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    local s = spec { tables = { "Account" } }
    s.backfill = {
      prepare = [[CREATE TABLE IF NOT EXISTS "Workspace" (n int PRIMARY KEY, id text NOT NULL);
                  INSERT INTO "Workspace" SELECT n, 'personal-' || n FROM generate_series(0, 4) n
                  ON CONFLICT DO NOTHING]],
      Account = { value = [[w.id]], from = [["Workspace" w]], where = [[w.n = t.id % 5]] },
    }
    local t = tenancy.new(conn, s)
    assert.are.equal(20, t:backfill().updated)
    assert.are.equal(4, count(conn, [["Account" WHERE "workspaceId" = 'personal-0']]))
    assert.are.equal(0, t:backfill().updated) -- prepare ran again, harmlessly

    -- A failing prepare leaves nothing behind and stops the backfill.
    conn:exec([[INSERT INTO "Account" (id, name) VALUES (100, 'new')]])
    s.backfill.prepare = [[CREATE TABLE "Other" (x int); SELECT 1/0]]
    local err = catch(t.backfill, tenancy.new(conn, s))
    assert.are.equal("22012", err.sqlstate)
    assert.are.equal(db.null, conn:query_value([[SELECT to_regclass('"Other"')::text]]))
    assert.are.equal(1, count(conn, [["Account" WHERE "workspaceId" IS NULL]]))
  end)

  it("retries a batch blocked by a row lock, then gives up with a clear error", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 30)
    local app = env.connect()
    app:exec("BEGIN")
    app:exec([[UPDATE "Account" SET name = 'busy' WHERE id = 5]])
    local t = tenancy.new(conn, spec { tables = { "Account" }, lock_timeout = "100ms", retries = 2 })
    local t0 = sys.now()
    local err = catch(t.backfill, t)
    assert.is_true(sys.now() - t0 < 3)
    assert.are.equal("lock", err.kind)
    assert.are.equal(1, err.exit)
    assert.are.equal(3, err.attempts)
    assert.matches('backfill batch on "public"."Account": gave up after 3 attempts', err.message, 1, true)
    assert.are.equal(0, count(conn, [["Account" WHERE "workspaceId" IS NOT NULL]]))
    app:exec("ROLLBACK")
    assert.are.equal(30, t:backfill().updated)
  end)

  it("enforces NOT NULL online step by step, continuing an interrupted run, idempotently", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    fill_all(conn)
    -- An earlier run stopped after step 1 on "Note", and after step 3 on "Metric".
    conn:exec([[ALTER TABLE "Note" ADD CONSTRAINT "Note_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL)
                NOT VALID]])
    conn:exec([[ALTER TABLE "Metric" ADD CONSTRAINT "Metric_workspaceId_not_null" CHECK ("workspaceId" IS NOT NULL),
                ALTER COLUMN "workspaceId" SET NOT NULL]])
    local t = tenancy.new(conn, spec())
    assert.are.same({
      { table = "Account", nullable = true, check_constraint = "none" },
      { table = "Note", nullable = true, check_constraint = "not_valid" },
      { table = "Metric", nullable = false, check_constraint = "valid" },
    }, t:state())

    local plan = t:enforce_not_null { dry_run = true }
    local function steps(entry)
      local out = {}
      for i, st in ipairs(entry.steps) do out[i] = st.step end
      return out
    end
    assert.are.same({ "add_check", "validate", "set_not_null", "drop_check" }, steps(plan.tables[1]))
    assert.are.equal('ALTER TABLE "public"."Account" ADD CONSTRAINT "Account_workspaceId_not_null" '
      .. 'CHECK ("workspaceId" IS NOT NULL) NOT VALID', plan.tables[1].steps[1].sql)
    assert.are.same({ "validate", "set_not_null", "drop_check" }, steps(plan.tables[2]))
    assert.are.same({ "drop_check" }, steps(plan.tables[3]))
    assert.are.equal("none", t:state()[1].check_constraint) -- the plan changed nothing

    local res = t:enforce_not_null()
    for i, name in ipairs { "Account", "Note", "Metric" } do
      assert.are.equal(name, res.tables[i].table)
      assert.are.equal("enforced", res.tables[i].action)
    end
    assert.are.same({ "validate", "set_not_null", "drop_check" }, steps(res.tables[2]))
    assert.are.equal(1, res.tables[1].steps[1].attempts)
    assert.are.equal(3, conn:query_value([[SELECT count(*) FROM pg_attribute WHERE attname = 'workspaceId'
                                            AND attnotnull AND attrelid::regclass::text IN
                                            ('"Account"', '"Note"', '"Metric"')]]))
    assert.are.equal(0, count(conn, [[pg_constraint WHERE conname LIKE '%not_null']]))
    for _, st in ipairs(t:state()) do
      assert.are.same({ nullable = false, check_constraint = "none" },
        { nullable = st.nullable, check_constraint = st.check_constraint })
    end

    res = t:enforce_not_null()
    for _, e in ipairs(res.tables) do
      assert.are.equal("already", e.action)
      assert.are.same({}, e.steps)
    end
  end)

  it("refuses while NULLs exist, also when VALIDATE finds one, and the table stays nullable", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    fill_all(conn)
    conn:exec([[UPDATE "Note" SET "workspaceId" = NULL WHERE key = 'NULL']])
    local t = tenancy.new(conn, spec())
    local ran = {}
    local err = catch(t.enforce_not_null, t, { on_step = function(name, step) ran[#ran + 1] = name .. ":" .. step end })
    -- Refused before any DDL on any table: no table is left half-enforced,
    -- and no NOT VALID CHECK makes the application's UPDATEs of NULL rows fail.
    assert.are.same({}, ran)
    assert.are.equal("check", err.kind)
    assert.are.equal(1, err.exit)
    assert.are.equal("Note has rows with NULL workspaceId: NOT NULL was not enforced on any table", err.message)
    local st = t:state()
    assert.is_true(st[1].nullable) -- earlier tables untouched too
    assert.are.same({ true, "none" }, { st[2].nullable, st[2].check_constraint })
    assert.is_true(st[3].nullable)

    -- A NULL row arriving between the probe and the constraint: VALIDATE
    -- finds it, and the CHECK is taken away again.
    conn:exec([[UPDATE "Note" SET "workspaceId" = 'w']])
    local app = env.connect()
    err = catch(t.enforce_not_null, t, { on_step = function(name, step)
      if name == "Metric" and step == "add_check" then
        app:exec([[INSERT INTO "Metric" ("accountId", day, clicks) VALUES (1, '2030-01-01', 0)]])
      end
    end })
    assert.are.equal("check", err.kind)
    assert.are.equal("Metric has rows with NULL workspaceId: run the backfill again", err.message)
    st = t:state()
    assert.are.same({ true, "none" }, { st[3].nullable, st[3].check_constraint })
    assert.are.same({ false, false }, { st[1].nullable, st[2].nullable })
    -- The application can still write the NULL row (no CHECK left behind).
    app:exec([[UPDATE "Metric" SET clicks = 1 WHERE day = '2030-01-01']])
  end)

  it("under a blocker, enforce retries then fails naming its pid, and other sessions never queue long", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    fill_all(conn)
    local blocker = env.connect()
    blocker:exec("BEGIN")
    blocker:query([[SELECT count(*) FROM "Account"]]) -- holds ACCESS SHARE until ROLLBACK
    local pid = blocker:backend_pid()

    -- A separate dhrun process plays the application: a SELECT and an
    -- INSERT in a loop, recording the slowest statement.
    local dir = sh.tmpdir()
    local out = dir .. "/probe.json"
    local script = sh.write(dir .. "/probe.lua", [[
      local sys = require "dhrun.core.sys"
      local conn = require("dhrun.db").connect(os.getenv("TEN_DB"))
      local out = os.getenv("TEN_OUT")
      local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
      conn:query('SELECT 1 FROM "Account" LIMIT 1')
      io.open(out .. ".ready", "w"):close()
      local worst, n, deadline = 0, 0, sys.now() + 15
      while not exists(out .. ".stop") and sys.now() < deadline do
        local t0 = sys.now()
        conn:query('SELECT "workspaceId" FROM "Account" WHERE id = 1')
        local t1 = sys.now()
        conn:exec([=[INSERT INTO "Account" (id, name, "workspaceId") VALUES ($1, 'probe', 'w')]=], 100000 + n)
        worst = math.max(worst, t1 - t0, sys.now() - t1)
        n = n + 1
        sys.sleep(0.005)
      end
      local f = io.open(out, "w")
      f:write(require("cjson").encode { max = worst, n = n })
      f:close()
    ]])
    local proc = process.spawn({ sh.bin, script }, { env = { TEN_DB = env.db.conninfo, TEN_OUT = out },
      stderr = dir .. "/probe.err" })
    env.cleanup[#env.cleanup + 1] = function() proc:stop(1) end
    wait_for(function() return exists(out .. ".ready") end, 10, "the probe to start")

    local t = tenancy.new(conn, spec { tables = { "Account" }, lock_timeout = "100ms", retries = 3,
      retry_base = 0.2 })
    local t0 = sys.now()
    local err = catch(t.enforce_not_null, t)
    local took = sys.now() - t0
    io.open(out .. ".stop", "w"):close()
    assert(proc:wait(10))

    assert.are.equal("lock", err.kind)
    assert.are.equal(1, err.exit)
    assert.are.equal(4, err.attempts)
    assert.matches('enforce NOT NULL on "public"."Account" (step add_check): gave up after 4 attempts', err.message,
      1, true)
    assert.matches("blocked by pid " .. pid .. " ", err.message, 1, true)
    local found
    for _, b in ipairs(err.blockers) do if b.pid == pid then found = b end end
    assert.are.equal("idle in transaction", assert(found).state)
    assert.is_nil(err.message:find("\n"))
    assert.is_true(took < 4, "gave up after " .. took .. " s")
    local probe = cjson.decode((assert(sh.read(out), sh.read(dir .. "/probe.err"))))
    assert.is_true(probe.n > 10)
    assert.is_true(probe.max < 0.1 + 0.2, format("a statement of the application waited %.3f s", probe.max))
    assert.are.same({ true, "none" }, { t:state()[1].nullable, t:state()[1].check_constraint })

    blocker:exec("ROLLBACK")
    assert.are.equal("enforced", t:enforce_not_null().tables[1].action)
  end)

  it("drop_not_null rolls back idempotently, per table or all in one transaction", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 10)
    fill_all(conn)
    conn:exec("CREATE TABLE bookkeeping (note text)")
    local t = tenancy.new(conn, spec())
    t:enforce_not_null()

    local plan = t:drop_not_null { dry_run = true }
    assert.are.equal("planned", plan.tables[1].action)
    assert.are.equal('ALTER TABLE "public"."Account" ALTER COLUMN "workspaceId" DROP NOT NULL, '
      .. 'DROP CONSTRAINT IF EXISTS "Account_workspaceId_not_null"', plan.tables[1].sql)
    assert.is_false(t:state()[1].nullable)

    local res = t:drop_not_null()
    for i, st in ipairs(t:state()) do
      assert.are.equal("dropped", res.tables[i].action)
      assert.is_true(st.nullable)
    end
    res = t:drop_not_null()
    for _, e in ipairs(res.tables) do assert.are.equal("already", e.action) end

    -- One transaction, bookkeeping included: all or nothing.
    t:enforce_not_null()
    local err = catch(t.drop_not_null, t, { transaction = true, also = function(c)
      c:exec("INSERT INTO bookkeeping VALUES ('rolled back')")
      error("bookkeeping failed")
    end })
    assert.matches("bookkeeping failed", tostring(err))
    for _, st in ipairs(t:state()) do assert.is_false(st.nullable) end
    assert.are.equal(0, count(conn, "bookkeeping"))

    res = t:drop_not_null { transaction = true, also = function(c)
      c:exec("INSERT INTO bookkeeping VALUES ('rolled back')")
    end }
    for i, st in ipairs(t:state()) do
      assert.are.equal("dropped", res.tables[i].action)
      assert.is_true(st.nullable)
    end
    assert.are.equal(1, count(conn, "bookkeeping"))
  end)

  it("dry-run backfill reports and changes nothing", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 20)
    local before = digest(conn, "public", "Note")
    local t = tenancy.new(conn, spec())
    local r = t:backfill { dry_run = true }
    assert.is_true(r.dry_run)
    assert.are.same({ 20, 26, 80 }, { r.tables[1].nulls, r.tables[2].nulls, r.tables[3].nulls })
    assert.are.equal(126, r.nulls)
    assert.matches('UPDATE "public"."Note" AS t SET "workspaceId"', r.tables[2].sql, 1, true)
    assert.are.equal(before, digest(conn, "public", "Note"))
    assert.are.equal(db.null, conn:query_value("SELECT to_regclass('dhrun.backfill_progress')::text"))
  end)

  it("ddl_retry runs DDL under lock_timeout and succeeds once the blocker is gone", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 5)
    local blocker = env.connect()
    blocker:exec("BEGIN")
    blocker:query([[SELECT 1 FROM "Account" LIMIT 1]])
    local retried = {}
    local n, attempts = tenancy.ddl_retry(conn, [[ALTER TABLE "Account" ADD COLUMN extra int]], {
      lock_timeout = "100ms", retries = 5, retry_base = 0.05,
      on_retry = function(attempt, err)
        retried[#retried + 1] = err.sqlstate
        if attempt == 2 then blocker:exec("COMMIT") end
      end,
    })
    assert.are.equal(0, n)
    assert.are.equal(3, attempts)
    assert.are.same({ "55P03", "55P03" }, retried)
    assert.are.equal(1, count(conn, [[pg_attribute WHERE attrelid = '"Account"'::regclass AND attname = 'extra']]))
    -- The timeout was LOCAL to the DDL's transaction.
    assert.are.equal("0", conn:get("lock_timeout"))
  end)
end)

describe("dhrun.tenancy health signals", function()
  local events = require "dhrun.events"

  -- Records dhrun.events for the length of fn.
  local function recording(fn)
    local got = {}
    events.record(function(e) got[#got + 1] = e end)
    local ok, err = pcall(fn)
    events.record(nil)
    if not ok then error(err, 0) end
    return got
  end

  it("shrinks the batch multiplicatively on slow batches, down to its floor, and says what limits it", function()
    local env = setup()
    populate(env.conn, 200)
    local s = spec { tables = { "Account" }, batch_size = 80, min_batch_size = 10, max_batch_size = 80,
      batch_target = 0.001, max_commit = false }
    -- every batch takes at least 5 ms (one sleep per statement): slower than 1.5 x batch_target
    s.backfill.Account = { value = [['ws-' || (t.id % 5) || (SELECT '' FROM pg_sleep(0.005))]] }
    make_reference(env, s)
    local seen = {}
    tenancy.new(env.conn, s):backfill { on_batch = function(info) seen[#seen + 1] = info end }
    assert.are.same({ 80, 40, 20, 10, 10 }, { seen[1].batch_size, seen[2].batch_size, seen[3].batch_size,
      seen[4].batch_size, seen[5].batch_size })
    assert.are.equal("batch time", seen[2].limit)
    assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
  end)

  it("pauses while the probe is slower than its limit, names it and its latency, and resumes when it clears",
    function()
      local env = setup()
      populate(env.conn, 300)
      env.conn:exec("CREATE SEQUENCE probe_calls")
      -- the probe's 3rd to 5th runs are slow (a 60 ms sleep): the app "suffers" for a while
      local s = spec { tables = { "Account" }, batch_size = 20, min_batch_size = 5, max_batch_size = 40,
        probe = { sql = [[SELECT CASE WHEN n BETWEEN 3 AND 5 THEN pg_sleep(0.06) END
                          FROM (SELECT nextval('probe_calls') AS n) x]],
                  max = "20ms" } }
      make_reference(env, s)
      local sizes, summary = {}, nil
      local got = recording(function()
        summary = tenancy.new(env.conn, s):backfill { on_batch = function(info) sizes[#sizes + 1] = info end }
      end)
      local line = logged(s.log, "paused: probe")
      assert.is_truthy(line, table.concat(s.log.lines, "\n"))
      local ms = assert(tonumber(line:match("probe (%d+) ms > 20 ms")), line)
      assert.is_true(ms >= 60, line)
      -- one pause: the probe ran slow three times in a row, then the backfill went on
      local throttles = {}
      for _, e in ipairs(got) do if e.kind == "throttle" then throttles[#throttles + 1] = e end end
      assert.are.equal(1, #throttles)
      assert.are.equal("probe", throttles[1].signal)
      assert.are.equal(0.02, throttles[1].limit)
      assert.is_true(throttles[1].seconds >= 0.12, tostring(throttles[1].seconds))
      assert.is_true(summary.tables[1].throttle.probe >= 0.12)
      -- the batch after the pause is smaller (multiplicative decrease), named by its limit
      local after
      for i, info in ipairs(sizes) do if info.limit == "probe" then after = after or sizes[i] end end
      assert.is_truthy(after)
      assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
    end)

  it("runs the probe's SQL with the session's own settings, not the batches' (async commit, jit, join methods, "
    .. "flush_after)",
    function()
      local env = setup()
      local conn = env.conn
      populate(conn, 40)
      conn:exec([[UPDATE "Account" SET "workspaceId" = 'ws-' || (id % 3)]])
      conn:exec("CREATE TABLE probe_seen (settings text)")
      local SETTINGS = [[SELECT concat_ws(' ', current_setting('synchronous_commit'), current_setting('jit'),
                           current_setting('enable_hashjoin'), current_setting('enable_mergejoin'),
                           current_setting('lock_timeout'), current_setting('backend_flush_after'))]]
      local before = conn:query_value(SETTINGS)
      -- a parent chain: the batches run with hash and merge joins off, and asynchronous commits
      local s = spec { tables = { "Note" }, async_commit = true, flush_after = "256kB",
        probe = { sql = "INSERT INTO probe_seen " .. SETTINGS, max = "10s" } }
      s.backfill.Note.parents = { { fk = "accountId", table = "Account", key = "id" } }
      local during = {}
      tenancy.new(conn, s):backfill { on_batch = function() during[#during + 1] = conn:query_value(SETTINGS) end }
      assert.are.equal("off off off off 1s 256kB", during[1])
      local seen = conn:query("SELECT settings FROM probe_seen")
      assert.is_true(#seen >= 3, tostring(#seen))
      for _, r in ipairs(seen) do assert.are.equal(before, r.settings) end
      assert.are.equal(before, conn:query_value(SETTINGS))
    end)

  it("stops with a clear error when a signal stays over its limit longer than max_pause, and resumes later",
    function()
      local env = setup()
      populate(env.conn, 100)
      local s = spec { tables = { "Account" }, probe = { sql = "SELECT pg_sleep(0.03)", max = "10ms" },
        max_pause = "300ms" }
      make_reference(env, s)
      local err = catch(tenancy.new(env.conn, s).backfill, tenancy.new(env.conn, s))
      assert.are.equal("state", err.kind)
      assert.matches("backfill of Account paused for %d+ ms and probe is still over its limit: probe %d+ ms > 10 ms",
        err.message)
      -- the batch before the pause was committed with its cursor: a second run resumes after it
      assert.are.equal(10, env.conn:query_value("SELECT rows_updated FROM dhrun.backfill_progress"))
      s.probe = nil
      local summary = tenancy.new(env.conn, s):backfill()
      assert.are.equal(90, summary.updated)
      assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
    end)

  it("commits the batches asynchronously, one a second synchronously, whose commit time is the max_commit signal",
    function()
      local env = setup()
      populate(env.conn, 600)
      env.conn:exec("SET synchronous_commit = on") -- the server's default (the test cluster's is off)
      local s = spec { tables = { "Account" }, batch_size = 80, min_batch_size = 10, max_batch_size = 200,
        batch_step = 40, batch_target = 10, max_commit = 0.000001 }
      make_reference(env, s)
      local seen = {}
      tenancy.new(env.conn, s):backfill { on_batch = function(info)
        info.setting = env.conn:get("synchronous_commit")
        seen[#seen + 1] = info
      end }
      assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
      assert.are.equal("on", env.conn:get("synchronous_commit")) -- restored
      assert.are.equal("off", seen[1].setting)
      -- the first batch commits synchronously: its commit is over the (tiny) limit, the next batch is halved
      assert.is_true(seen[1].synchronous)
      assert.are.same({ 40, false, "commit time" }, { seen[2].batch_size, seen[2].synchronous, seen[2].limit })
      -- the batches within the second after it do not wait for the flush: no commit signal, they grow again
      assert.are.same({ 80, false }, { seen[3].batch_size, seen[3].synchronous })

      -- async_commit = false: every batch commits synchronously, the setting untouched
      env.conn:exec([[UPDATE "Account" SET "workspaceId" = NULL]])
      s = spec { tables = { "Account" }, async_commit = false }
      seen = {}
      tenancy.new(env.conn, s):backfill { on_batch = function(info)
        info.setting = env.conn:get("synchronous_commit")
        seen[#seen + 1] = info
      end }
      assert.is_true(#seen > 2)
      for _, b in ipairs(seen) do assert.are.same({ true, "on" }, { b.synchronous, b.setting }) end
    end)

  it("paces the batches to max_wal_rate", function()
    local env = setup()
    populate(env.conn, 2000)
    -- vacuum off: the VACUUM after the table is not paced (and its WAL would count below)
    local s = spec { tables = { "Account" }, batch_size = 100, min_batch_size = 100, max_batch_size = 100,
      max_wal_rate = "512kB", vacuum = false }
    make_reference(env, s)
    -- the WAL position after each batch: the rate over the paced batches
    -- (not the progress table's creation before them, nor the pass's last
    -- synchronous commit after), read on a session of its own
    local observer = env.connect()
    local marks = {}
    tenancy.new(env.conn, s):backfill { on_batch = function()
      marks[#marks + 1] = { sys.now(), observer:query_value("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8") }
    end }
    local first, last = marks[1], marks[#marks]
    local wal, took = last[2] - first[2], last[1] - first[1]
    assert.is_truthy(logged(s.log, "paused: WAL rate"),
      table.concat(s.log.lines, "\n") .. format(" %d bytes in %.2f s", wal, took))
    -- cluster-wide WAL (autovacuum in other databases writes too: a margin)
    assert.is_true(wal / took < 1.5 * 512 * 1024, format("%.0f bytes/s over %.2f s", wal / took, took))
    assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
  end)

  -- A VACUUM as slow as a throttled autovacuum worker, in a real process of
  -- its own, running on `tbl` until the test ends.
  local function slow_vacuum(env, tbl)
    local vac = process.spawn({ sh.bin, "-e", [[
      local c = require("dhrun.db").connect(os.getenv("TEN_DB"))
      c:exec("SET vacuum_cost_delay = 100") c:exec("SET vacuum_cost_limit = 1")
      c:exec('VACUUM ]] .. q(tbl) .. [[')]] }, { env = { TEN_DB = env.db.conninfo } })
    env.cleanup[#env.cleanup + 1] = function()
      pcall(env.conn.query, env.conn, [[SELECT pg_cancel_backend(pid) FROM pg_stat_progress_vacuum]])
      vac:wait(10)
    end
    wait_for(function()
      return count(env.conn, "pg_stat_progress_vacuum WHERE relid = $1::regclass", q(tbl)) > 0
    end, 10, "the VACUUM to start")
  end

  it("with a VACUUM running, a batch shrunk by slow batches grows back to its largest size, and no further",
    function()
      local env = setup()
      populate(env.conn, 400)
      env.conn:exec([[UPDATE "Account" SET name = name]]) -- dead rows for the VACUUM to visit
      slow_vacuum(env, "Account")
      local s = spec { tables = { "Account" }, batch_size = 80, min_batch_size = 10, max_batch_size = 200,
        batch_step = 40, batch_target = 0.03, max_commit = false, vacuum = false }
      -- the batches with keys up to 160 sleep 50 ms once (slower than 1.5 x target), the others are fast
      s.backfill.Account = { value = [[CASE WHEN t.id <= 160 THEN 'ws-' || (t.id % 5) || (SELECT '' FROM pg_sleep(0.05))
                                           ELSE 'ws-' || (t.id % 5) END]] }
      make_reference(env, s)
      local seen = {}
      tenancy.new(env.conn, s):backfill { on_batch = function(info) seen[#seen + 1] = info.batch_size end }
      -- 80 (the largest), halved by the slow ones to the floor, then back up by 40 to 80 and held there
      assert.are.same({ 80, 40, 20, 10, 10, 10, 50, 80, 80 }, { table.unpack(seen, 1, 9) })
      assert.are.equal(digest(env.conn, "ref", "Account"), digest(env.conn, "public", "Account"))
    end)

  it("with a VACUUM running on the table, batches stop growing (autovacuum = \"slow\") and the data is exact",
    function()
      local env = setup()
      populate(env.conn, 400)
      env.conn:exec([[UPDATE "Metric" SET clicks = clicks + 1]]) -- dead rows for the VACUUM to visit
      slow_vacuum(env, "Metric")
      env.conn:exec([[UPDATE "Account" SET "workspaceId" = 'ws-' || (id % 3)]])
      local s = spec { tables = { "Metric" }, batch_size = 80, min_batch_size = 10, max_batch_size = 200,
        batch_step = 40, vacuum = false }
      make_reference(env, spec { tables = { "Account", "Metric" } })
      local seen = {}
      tenancy.new(env.conn, s):backfill { on_batch = function(info) seen[#seen + 1] = info end }
      -- fast batches would grow by 40 rows each (80, 120, 160, ...): held at 80 while the VACUUM runs
      assert.are.same({ 80, 80, 80, 80, 80 }, { seen[1].batch_size, seen[2].batch_size, seen[3].batch_size,
        seen[4].batch_size, seen[5].batch_size })
      assert.are.equal("vacuum", seen[2].limit)
      assert.are.equal(digest(env.conn, "ref", "Metric"), digest(env.conn, "public", "Metric"))
    end)
end)

describe("dhrun.tenancy with a streaming replica", function()
  local replica_helper = require "replica"
  local replica

  lazy_setup(function() replica = replica_helper.start() end)
  lazy_teardown(function() if replica then replica.stop() end end)

  -- A backfill of "Account" by a real dhrun process, its replica lag limit
  -- 300 ms; prints the summary as JSON on its last line.
  local REPLICA_SCRIPT = [[
    local conn = require("dhrun.db").connect(os.getenv("TEN_DB"))
    local t = require("dhrun.tenancy").new(conn, {
      column = "workspaceId", tables = { "Account" },
      backfill = { Account = { value = [=['ws-' || (t.id % 5)]=] } },
      batch_size = 50, min_batch_size = 50, max_batch_size = 50, pause = 0.02, max_replica_lag = "300ms",
      max_pause = "60s",
    })
    print(require("cjson").encode(t:backfill()))
  ]]

  it("pauses when replay on the replica stops, naming the replica lag, and finishes when it resumes", function()
    local env = setup()
    local conn = env.conn
    populate(conn, 3000)
    local s = spec { tables = { "Account" } }
    make_reference(env, s)
    local standby = db.connect(replica.conninfo("postgres"))
    env.cleanup[#env.cleanup + 1] = function()
      pcall(standby.query, standby, "SELECT pg_wal_replay_resume()")
      standby:close()
    end
    -- the replica has the test's database before its replay stops
    local lsn = conn:query_value("SELECT pg_current_wal_lsn()::text")
    wait_for(function()
      return standby:query_value("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn)
    end, 20, "the replica to replay the test's setup")
    standby:query("SELECT pg_wal_replay_pause()")
    wait_for(function() return standby:query_value("SELECT pg_get_wal_replay_pause_state()") == "paused" end, 10,
      "replay to pause")

    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/backfill.lua", REPLICA_SCRIPT)
    local proc = process.spawn({ sh.bin, script }, { env = { TEN_DB = env.db.conninfo }, stdout = dir .. "/out",
      stderr = dir .. "/err" })
    env.cleanup[#env.cleanup + 1] = function() if proc:running() then proc:kill("KILL") proc:wait(5) end end
    local line
    wait_for(function()
      line = (sh.read(dir .. "/out") or ""):match("[^\n]*paused: replica lag[^\n]*")
      return line ~= nil or not proc:running()
    end, 30, "the backfill to pause for the replica")
    assert.is_truthy(line, (sh.read(dir .. "/out") or "") .. (sh.read(dir .. "/err") or ""))
    -- named with its value, within a batch or two of crossing the limit (batches are 50 rows, 20 ms apart)
    local ms = tonumber(line:match("replica lag (%d+) ms > 300 ms"))
    assert.is_truthy(ms, line)
    assert.is_true(ms < 600, line)
    -- paused: nothing is committed while the replica stays a second or more behind
    local before = conn:query_value("SELECT rows_updated FROM dhrun.backfill_progress")
    assert.is_true(before < 3000)
    -- an observation window of one second on the server's clock (what must not happen cannot be waited for)
    local seen = conn:query_value("SELECT clock_timestamp()::text")
    wait_for(function()
      return conn:query_value("SELECT clock_timestamp() - $1::timestamptz > interval '1s'", seen)
    end, 20, "a second to pass")
    assert.are.equal(before, conn:query_value("SELECT rows_updated FROM dhrun.backfill_progress"))
    assert.is_true(proc:running())

    standby:query("SELECT pg_wal_replay_resume()")
    local r = assert(proc:wait(60))
    assert.are.equal(0, r.code, sh.read(dir .. "/err"))
    local summary = cjson.decode(sh.read(dir .. "/out"):match("[^\n]+\n$"))
    assert.are.equal(3000, summary.updated)
    assert.is_true(summary.tables[1].throttle["replica lag"] >= 1)
    assert.are.equal(digest(conn, "ref", "Account"), digest(conn, "public", "Account"))
    -- and the replica, once it has replayed everything, has exactly the same rows
    local rconn = db.connect(replica.conninfo(env.db.name))
    env.cleanup[#env.cleanup + 1] = function() rconn:close() end
    local final = conn:query_value("SELECT pg_current_wal_lsn()::text")
    wait_for(function() return standby:query_value("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", final) end, 30,
      "the replica to catch up")
    assert.are.equal(digest(conn, "ref", "Account"), digest(rconn, "public", "Account"))
  end)
end)

describe("dhrun.tenancy workers", function()
  -- A backfill of "Account" in TEN_WORKERS parallel ranges, by a real dhrun
  -- process; prints the summary as JSON on its last line.
  local WORKERS_SCRIPT = [[
    local conn = require("dhrun.db").connect(os.getenv("TEN_DB"))
    local t = require("dhrun.tenancy").new(conn, {
      column = "workspaceId", tables = { "Account" },
      backfill = { Account = { value = [=['ws-' || (t.id % 5)]=] } },
      batch_size = 10, min_batch_size = 10, max_batch_size = 10, pause = tonumber(os.getenv("TEN_PAUSE")),
      workers = tonumber(os.getenv("TEN_WORKERS")),
    })
    local seen = {}
    local s = t:backfill { connect = os.getenv("TEN_DB"), on_batch = function(info) seen[#seen + 1] = info end }
    s.seen = seen
    print(require("cjson").encode(s))
  ]]

  it("fills disjoint key ranges in N processes, each committing its own cursor, with exactly the expected data",
    function()
      local env = setup()
      local conn = env.conn
      populate(conn, 600)
      make_reference(env, spec { tables = { "Account" } })
      local script = sh.tmpfile("workers.lua", WORKERS_SCRIPT)
      local r = sh.dhrun({ script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0", TEN_WORKERS = "3" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("backfill Account: pass 1 in 3 workers", r.stdout, 1, true)
      local summary = cjson.decode(r.stdout:match("[^\n]+\n$"))
      assert.are.equal(600, summary.updated)
      assert.are.equal(digest(conn, "ref", "Account"), digest(conn, "public", "Account"))
      -- every worker's batches reach the run that started them (its report),
      -- in the order they happened, each naming its worker
      local per, updated, last_t = {}, 0, -1
      for _, b in ipairs(summary.seen) do
        per[b.worker] = (per[b.worker] or 0) + 1
        updated = updated + b.updated
        assert.is_true(b.t >= last_t)
        last_t = b.t
      end
      assert.are.same({ 3, 3, 3 }, { per["1/3"] and 3, per["2/3"] and 3, per["3/3"] and 3 })
      assert.are.equal(600, updated)
      assert.are.equal(#summary.seen, summary.tables[1].batches)
      local rows = conn:query([[SELECT task, rows_updated, finished_at IS NOT NULL AS finished
                                  FROM dhrun.backfill_progress ORDER BY task]])
      assert.are.equal(4, #rows)
      local sum = 0
      for i = 2, 4 do
        assert.matches("#%d/3$", rows[i].task)
        assert.is_true(rows[i].finished)
        assert.is_true(rows[i].rows_updated > 0)
        sum = sum + rows[i].rows_updated
      end
      assert.are.equal(600, sum)
      assert.are.same({ "workspaceId:public.Account", 600, true }, { rows[1].task, rows[1].rows_updated,
        rows[1].finished })
      -- the three sessions ran at the same time: each range was started before any finished
      local overlap = conn:query_value([[SELECT max(started_at) < min(finished_at) FROM dhrun.backfill_progress
                                          WHERE task LIKE '%#%']])
      assert.is_true(overlap)
    end)

  it("after kill -9 of the run, each range resumes after its own committed cursor and the data is exact",
    function()
      local env = setup()
      local conn = env.conn
      populate(conn, 900)
      make_reference(env, spec { tables = { "Account" } })
      local script = sh.tmpfile("workers.lua", WORKERS_SCRIPT)
      -- TMPDIR: where the workers' events directories go
      local tmp = sh.tmpdir()
      local function leftovers()
        local list = {}
        for name in require("lfs").dir(tmp) do
          if name:match("^dhrun%-workers") then list[#list + 1] = name:match("^dhrun%-workers%.(.+)%.%w+$") end
        end
        table.sort(list)
        return list
      end
      local lfs = require "lfs"
      local host = sys.hostname():gsub("[^%w%-]", "_")
      -- Never removed: a live run's directory, whose lock this process holds,
      -- named after a pid that does not exist here (a run in another pid
      -- namespace looks like this); one without a lock file (a file system
      -- without locks) whose pid is alive; another host's.  Removed: one
      -- without a lock file whose pid is gone.
      local function dir(name, files)
        assert(lfs.mkdir(tmp .. "/dhrun-workers." .. name))
        for _, f in ipairs(files) do assert(sh.write(tmp .. "/dhrun-workers." .. name .. "/" .. f, "{}\n")) end
        return tmp .. "/dhrun-workers." .. name
      end
      local live = dir(host .. ".999999.live01", { "1.jsonl", "lock" })
      local held <close> = assert(io.open(live .. "/lock", "r+"))
      assert(lfs.lock(held, "w"))
      local ended = process.spawn({ "true" })
      ended:wait(5)
      dir(host .. "." .. sys.pid() .. ".nolock", { "1.jsonl", ".lock" })
      dir(host .. "." .. ended:pid() .. ".nolock", { "1.jsonl", ".lock" })
      -- one being made by a live run in another pid namespace: its `.lock` is locked before it is renamed
      local making = dir(host .. ".999998.making", { ".lock" })
      local held2 <close> = assert(io.open(making .. "/.lock", "r+"))
      assert(lfs.lock(held2, "w"))
      dir("otherhost.999999.other1", { "1.jsonl" })
      local proc = process.spawn({ sh.bin, script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0.02",
        TEN_WORKERS = "2", TMPDIR = tmp } })
      wait_for(function()
        local ok, v = pcall(conn.query_value, conn, [[SELECT count(*) FROM dhrun.backfill_progress
                                                        WHERE task LIKE '%#%' AND rows_updated >= 50]])
        return ok and v == 2
      end, 20, "both workers to commit 50 rows")
      proc:kill("KILL")
      assert.are.equal("SIGKILL", assert(proc:wait(5)).signame)
      -- the killed run could not remove its workers' events directory
      local killed = host .. "." .. proc:pid()
      -- (the killed run's own sweep removed the one whose pid is gone)
      local expected = { host .. ".999998", host .. ".999999", host .. "." .. sys.pid(), "otherhost.999999", killed }
      table.sort(expected)
      assert.are.same(expected, leftovers())
      -- the workers notice that their run is gone and stop after their committed batch
      wait_for(sessions_gone(conn), 10, "the workers' sessions to end")
      local rows = conn:query([[SELECT cursor[1]::int AS cursor, range_end[1]::int AS range_end, rows_updated,
                                       finished_at IS NULL AS open
                                  FROM dhrun.backfill_progress WHERE task LIKE '%#%' ORDER BY task]])
      assert.are.equal(2, #rows)
      -- each range: exactly its keys up to its cursor are filled
      local lower = 0
      for _, r in ipairs(rows) do
        assert.is_true(r.open)
        local hi = r.range_end == db.null and 900 or r.range_end
        assert.are.equal(r.rows_updated, count(conn, [["Account" WHERE "workspaceId" IS NOT NULL AND id > $1
                                                      AND id <= $2]], lower, hi))
        assert.are.equal(r.cursor - lower, r.rows_updated)
        lower = hi
      end
      local r = sh.dhrun({ script }, { env = { TEN_DB = env.db.conninfo, TEN_PAUSE = "0", TEN_WORKERS = "1",
        TMPDIR = tmp } })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("backfill Account: resuming pass 1 in 2 workers", r.stdout, 1, true)
      -- the next run removed the killed run's directory (and its own), and left the live one whole
      expected = { host .. ".999998", host .. ".999999", host .. "." .. sys.pid(), "otherhost.999999" }
      table.sort(expected)
      assert.are.same(expected, leftovers())
      assert.are.equal("{}\n", sh.read(live .. "/1.jsonl"))
      assert.are.equal(digest(conn, "ref", "Account"), digest(conn, "public", "Account"))
      assert.are.equal(900, conn:query_value([[SELECT rows_updated FROM dhrun.backfill_progress
                                                WHERE task = 'workspaceId:public.Account']]))
    end)
end)
