-- dhrun.db against the harness's real PostgreSQL: type conversions,
-- parameters, errors, transactions, locks, notices, timeouts, connection
-- failures (through a dhrun subprocess, as a user sees them) and Ctrl-C.
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local sh = require "sh"
local testdb = require "testdb"

-- Runs `code` with dhrun -e; returns {code=, stdout=, stderr=}.
local function dhrun_e(code, env)
  return sh.dhrun({ "-e", code }, { env = env })
end

-- Calls fn(...) expecting an error; returns the error object.
local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- Waits up to `secs` for fn() to return a true value; returns it (or nil).
local function eventually(secs, fn)
  local deadline = sys.now() + secs
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.05)
  until sys.now() > deadline
  return nil
end

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

describe("dhrun.db", function()
  local t, conn

  lazy_setup(function()
    t = testdb.create()
    conn = t.connect()
  end)

  lazy_teardown(function()
    if conn then conn:close() end
    if t then testdb.drop(t.name) end
  end)

  describe("result types", function()
    it("maps int2/int4/int8/oid to Lua integers, full int8 range included", function()
      local r = conn:query_one([[SELECT 32767::int2 AS a, (-2147483648)::int4 AS b,
        '-9223372036854775808'::int8 AS c, 9223372036854775807::int8 AS d, 4294967295::oid AS e]])
      assert.are.same({ 32767, -2147483648, math.mininteger, math.maxinteger, 4294967295 },
        { r.a, r.b, r.c, r.d, r.e })
      for i = 1, 5 do assert.are.equal("integer", math.type(r[i])) end
    end)

    it("maps float4/float8 to numbers, NaN and infinities included", function()
      local r = conn:query_one([[SELECT 0.1::float8 AS a, 'NaN'::float8 AS b, 'Infinity'::float8 AS c,
        '-Infinity'::float4 AS d, 1.5::float4 AS e]])
      assert.are.equal(0.1, r.a)
      assert.is_true(r.b ~= r.b)
      assert.are.equal(math.huge, r.c)
      assert.are.equal(-math.huge, r.d)
      assert.are.equal(1.5, r.e)
      assert.are.equal("float", math.type(r.a))
    end)

    it("keeps numeric exact as a string", function()
      local v = conn:query_value("SELECT 12345678901234567890.123456789012345678901::numeric")
      assert.are.equal("12345678901234567890.123456789012345678901", v)
    end)

    it("maps bool to booleans and NULL to db.null", function()
      local r = conn:query_one("SELECT true AS t, false AS f, NULL::int AS n, NULL AS u")
      assert.is_true(r.t)
      assert.is_false(r.f)
      assert.are.equal(db.null, r.n)
      assert.are.equal(db.null, r[4])
      assert.are.equal("NULL", tostring(db.null))
      assert.are.equal("userdata", type(db.null))
    end)

    it("returns bytea as raw bytes, zero and high bytes included", function()
      local v = conn:query_value([[SELECT '\x00ff41fe00'::bytea]])
      assert.are.equal("\0\255A\254\0", v)
      assert.are.equal(v, conn:query_value("SELECT decode($1, 'hex')", "00ff41fe00"))
    end)

    it("returns text (UTF-8), json, timestamptz and arrays in their text form", function()
      local r = conn:query_one([[SELECT 'héllo ✓ 日本'::text AS s, '{"a": [1, 2]}'::json AS j,
        '2024-02-29 12:34:56.5+00'::timestamptz AT TIME ZONE 'UTC' AS ts,
        '2024-02-29 12:34:56+00'::timestamptz AS tz, ARRAY[1, NULL, 3] AS arr, ARRAY['a b', 'c'] AS sarr]])
      assert.are.equal("héllo ✓ 日本", r.s)
      assert.are.equal('{"a": [1, 2]}', r.j)
      assert.are.equal("2024-02-29 12:34:56.5", r.ts)
      assert.matches("^2024%-02%-29 %d%d:34:56[+-]%d%d", r.tz)
      assert.are.equal("{1,NULL,3}", r.arr)
      assert.are.equal('{"a b",c}', r.sarr)
    end)

    it("gives rows by index and by name, with rows.columns", function()
      local rows = conn:query("SELECT g AS n, g * 2 AS double FROM generate_series(1, 3) g")
      assert.are.equal(3, #rows)
      assert.are.same({ "n", "double" }, rows.columns)
      assert.are.equal(2, rows[2].n)
      assert.are.equal(6, rows[3][2])
      local dup = conn:query_one("SELECT 1 AS x, 2 AS x")
      assert.are.equal(1, dup.x)         -- first column of a repeated name
      assert.are.equal(2, dup[2])
    end)

    it("returns empty rows, nil from query_one and query_value when nothing matches", function()
      local rows = conn:query("SELECT 1 AS a WHERE false")
      assert.are.equal(0, #rows)
      assert.are.same({ "a" }, rows.columns)
      assert.is_nil(conn:query_one("SELECT 1 WHERE false"))
      assert.is_nil(conn:query_value("SELECT 1 WHERE false"))
      assert.are.equal(db.null, conn:query_value("SELECT NULL"))
    end)
  end)

  describe("parameters", function()
    it("binds nil anywhere, db.null, booleans, integers and strings", function()
      local r = conn:query_one("SELECT $1::int IS NULL AS a, $2::text AS b, $3::int IS NULL AS c, $4::bool AS d, "
        .. "$5::int8 AS e, $6::text AS f", nil, "mid", db.null, false, math.mininteger, "")
      assert.are.same({ true, "mid", true, false, math.mininteger, "" }, { r.a, r.b, r.c, r.d, r.e, r.f })
      assert.is_true(conn:query_value("SELECT $1::int IS NULL AND $2::int = 7", nil, 7))
      assert.are.equal(db.null, conn:query_value("SELECT $1::text", nil))
    end)

    it("round-trips floats exactly, NaN and infinities included", function()
      for _, x in ipairs({ 0.1, 1 / 3, -2.5e-300, 1.7976931348623157e308, 5e-324, math.huge, -math.huge }) do
        assert.are.equal(x, conn:query_value("SELECT $1::float8", x))
      end
      local nan = conn:query_value("SELECT $1::float8", 0 / 0)
      assert.is_true(nan ~= nan)
    end)

    it("keeps SQL injection attempts as data", function()
      conn:exec("CREATE TABLE inj (s text)")
      local evil = "'); DROP TABLE inj; --"
      assert.are.equal(1, conn:exec("INSERT INTO inj VALUES ($1)", evil))
      assert.are.equal(evil, conn:query_value("SELECT s FROM inj"))
      assert.are.equal(1, conn:query_value("SELECT count(*) FROM inj WHERE s = $1", evil))
      assert.is_true(conn:query_value("SELECT to_regclass('inj') IS NOT NULL"))
    end)

    it("refuses parameters it cannot send, naming them", function()
      local err = catch(conn.query, conn, "SELECT $1, $2", 1, {})
      assert.matches("parameter $2 is a table", err, 1, true)
      err = catch(conn.query, conn, "SELECT $1", "a\0b")
      assert.matches("parameter $1 contains a zero byte", err, 1, true)
      err = catch(conn.exec, conn, "SELECT $1", print)
      assert.matches("parameter $1 is a function", err, 1, true)
    end)
  end)

  describe("exec and exec_script", function()
    it("returns affected row counts, 0 for DDL", function()
      assert.are.equal(0, conn:exec("CREATE TABLE counts (n int)"))
      assert.are.equal(5, conn:exec("INSERT INTO counts SELECT generate_series(1, 5)"))
      assert.are.equal(2, conn:exec("UPDATE counts SET n = n + 10 WHERE n > $1", 3))
      assert.are.equal(0, conn:exec("DELETE FROM counts WHERE n > 100"))
      assert.are.equal(5, conn:exec("DELETE FROM counts"))
    end)

    it("runs several statements as one implicit transaction", function()
      assert.is_nil(conn:exec_script([[
        CREATE TABLE script_t (n int UNIQUE);
        INSERT INTO script_t VALUES (1);
        INSERT INTO script_t VALUES (2);]]))
      assert.are.equal(2, conn:query_value("SELECT count(*) FROM script_t"))
      local err = catch(conn.exec_script, conn, [[
        INSERT INTO script_t VALUES (3);
        INSERT INTO script_t VALUES (1);
        INSERT INTO script_t VALUES (4);]])
      assert.are.equal("23505", err.sqlstate)
      assert.are.equal(2, conn:query_value("SELECT count(*) FROM script_t"))  -- 3 was undone too
      assert.are.equal("idle", conn:status())
    end)
  end)

  describe("SQL errors", function()
    it("raise kind=db, exit 1, [SQLSTATE] message, where = the calling line", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(conn.query, conn, "SELECT * FROM nope")
      assert.is_false(ok)
      assert.are.equal("db", err.kind)
      assert.are.equal(1, err.exit)
      assert.are.equal("42P01", err.sqlstate)
      assert.are.equal('[42P01] relation "nope" does not exist', err.message)
      assert.are.equal(debug.getinfo(1, "S").short_src .. ":" .. line .. ": ", err.where)
      assert.are.equal("ERROR", err.severity)
      assert.are.equal(15, err.position)
      assert.are.equal(err.where .. err.message, tostring(err))
    end)

    it("carry the constraint, table and detail of a unique violation", function()
      conn:exec("CREATE TABLE uniq (email text CONSTRAINT uniq_email UNIQUE)")
      conn:exec("INSERT INTO uniq VALUES ('a@example.com')")
      local err = catch(conn.exec, conn, "INSERT INTO uniq VALUES ($1)", "a@example.com")
      assert.are.equal("23505", err.sqlstate)
      assert.are.equal("uniq_email", err.constraint)
      assert.are.equal("uniq", err.table)
      assert.are.equal("public", err.schema)
      assert.matches("already exists", err.detail, 1, true)
      assert.matches("^%[23505%] duplicate key value violates unique constraint", err.message)
    end)

    it("report division by zero as 22012 on one line", function()
      local err = catch(conn.query_value, conn, "SELECT 1 / $1::int", 0)
      assert.are.equal("22012", err.sqlstate)
      assert.are.equal("[22012] division by zero", err.message)
      err = catch(conn.exec, conn, "DO $$ BEGIN RAISE EXCEPTION E'two\\nlines'; END $$")
      assert.are.equal("[P0001] two lines", err.message)
      assert.is_string(err.context)
    end)

    it("come back as nil, err from try_query/try_exec, which still raise on misuse", function()
      local rows, err = conn:try_query("SELECT * FROM nope")
      assert.is_nil(rows)
      assert.are.equal("42P01", err.sqlstate)
      assert.are.equal(debug.getinfo(1, "S").short_src .. ":" .. (debug.getinfo(1, "l").currentline - 3) .. ": ",
        err.where)
      assert.are.equal(1, conn:try_exec("SELECT 1"))
      assert.are.equal(1, conn:try_query("SELECT 1 AS one")[1].one)
      assert.has_error(function() conn:try_query("SELECT $1", {}) end)
    end)

    it("exit a dhrun script with code 1 and the script's line", function()
      local f = sh.tmpfile("sqlerr.lua", [[
local conn = require("dhrun.db").connect()
conn:query("SELECT * FROM nope")
]])
      local r = sh.dhrun({ f }, { env = { DATABASE_URL = t.url } })
      assert.are.equal(1, r.code)
      assert.are.equal("dhrun: " .. f .. ':2: [42P01] relation "nope" does not exist\n', r.stderr)
    end)
  end)

  describe("transaction()", function()
    lazy_setup(function() conn:exec("CREATE TABLE tx (n int)") end)
    before_each(function() conn:exec("DELETE FROM tx") end)

    it("commits and returns fn's results", function()
      local a, b = conn:transaction(function(c)
        assert.are.equal("in transaction", c:status())
        c:exec("INSERT INTO tx VALUES (1)")
        return "x", 2
      end)
      assert.are.same({ "x", 2 }, { a, b })
      assert.are.equal("idle", conn:status())
      assert.are.equal(1, conn:query_value("SELECT count(*) FROM tx"))
    end)

    it("rolls back on a Lua error and re-raises the same error object", function()
      local boom = setmetatable({}, { __tostring = function() return "boom" end })
      local err = catch(conn.transaction, conn, function(c)
        c:exec("INSERT INTO tx VALUES (1)")
        error(boom)
      end)
      assert.are.equal(boom, err)
      assert.are.equal(0, conn:query_value("SELECT count(*) FROM tx"))
      assert.are.equal("idle", conn:status())
    end)

    it("rolls back on an SQL error", function()
      local err = catch(conn.transaction, conn, function(c)
        c:exec("INSERT INTO tx VALUES (1)")
        c:exec("INSERT INTO tx VALUES ('not a number')")
      end)
      assert.are.equal("22P02", err.sqlstate)
      assert.are.equal(0, conn:query_value("SELECT count(*) FROM tx"))
    end)

    it("nests with savepoints", function()
      conn:transaction(function(c)
        c:exec("INSERT INTO tx VALUES (1)")
        local ok = pcall(c.transaction, c, function()
          c:exec("INSERT INTO tx VALUES (2)")
          c:exec("SELECT 1 / 0")
        end)
        assert.is_false(ok)
        c:transaction(function() c:exec("INSERT INTO tx VALUES (3)") end)
      end)
      local rows = conn:query("SELECT n FROM tx ORDER BY n")
      assert.are.same({ 1, 3 }, { rows[1].n, rows[2].n })
      assert.are.equal(2, #rows)
    end)

    it("refuses to report a commit when a caught SQL error aborted the transaction", function()
      local err = catch(conn.transaction, conn, function(c)
        c:exec("INSERT INTO tx VALUES (1)")
        assert.is_nil((c:try_exec("SELECT 1 / 0")))
      end)
      assert.are.equal("25P02", err.sqlstate)
      assert.are.equal(0, conn:query_value("SELECT count(*) FROM tx"))
      assert.are.equal("idle", conn:status())
    end)
  end)

  describe("session", function()
    it("sets and gets settings", function()
      assert.are.equal("3s", conn:set("lock_timeout", "3s"))
      assert.are.equal("3s", conn:get("lock_timeout"))
      conn:set("application_name", "dhrun-spec")
      assert.are.equal("dhrun-spec", conn:query_value("SELECT current_setting('application_name')"))
      conn:set("lock_timeout", 0)
      assert.are.equal("0", conn:get("lock_timeout"))
      assert.are.equal("42704", catch(conn.get, conn, "no_such.setting_x").sqlstate)
    end)

    it("with_setting sets a setting for a scope and puts the previous value back, also on error", function()
      local c <close> = t.connect()
      c:set("lock_timeout", "7s")
      do
        local _ <close> = c:with_setting("lock_timeout", "150ms")
        assert.are.equal("150ms", c:get("lock_timeout"))
        do
          local _ <close> = c:with_setting("lock_timeout", 250) -- milliseconds, PostgreSQL's unit for it
          assert.are.equal("250ms", c:get("lock_timeout"))
        end
        assert.are.equal("150ms", c:get("lock_timeout"))
      end
      assert.are.equal("7s", c:get("lock_timeout"))

      local err = catch(function()
        local _ <close> = c:with_setting("lock_timeout", "1s")
        c:query("SELECT 1 / 0")
      end)
      assert.are.equal("22012", err.sqlstate)
      assert.are.equal("7s", c:get("lock_timeout"))

      -- false: an opt-in setting that is off; nothing is set
      assert.is_nil(c:with_setting("lock_timeout", false))
      assert.are.equal("7s", c:get("lock_timeout"))
      -- a value the server refuses changes nothing
      assert.are.equal("22023", catch(c.with_setting, c, "lock_timeout", "banana").sqlstate)
      assert.are.equal("7s", c:get("lock_timeout"))
      assert.has_error(function() c:with_setting("lock_timeout", {}) end,
        "bad argument #2 to 'with_setting' (string, number, boolean or false expected, got table)")
    end)

    it("quotes identifiers and literals", function()
      assert.are.equal('"we""ird"', conn:quote_ident('we"ird'))
      assert.are.equal('"we""ird"', db.quote_ident('we"ird'))
      assert.are.equal("'it''s'", conn:quote_literal("it's"))
      assert.are.equal("it's", conn:query_value("SELECT " .. conn:quote_literal("it's")))
    end)

    it("builds text[] parameters that arrive as the same strings", function()
      local list = { 'a"b', "c\\d", "e,f", "{}", " ", "NULL", "" }
      local back = conn:query_value("SELECT array_to_json($1::text[])::text", db.text_array(list))
      assert.are.same(list, require("cjson").decode(back))
      assert.are.equal("{}", db.text_array({}))
      assert.has_error(function() db.text_array({ "a", 1 }) end,
        "bad argument #1 to 'text_array' (element 2 is a number, not a string)")
    end)

    it("reports backend pid, server version, status and info", function()
      assert.are.equal(conn:query_value("SELECT pg_backend_pid()"), conn:backend_pid())
      assert.are.equal(tonumber(conn:query_value("SHOW server_version_num")), conn:server_version())
      assert.are.equal(t.name, conn.info.dbname)
      assert.are.equal(os.getenv("PGHOST"), conn.info.host)
      assert.are.equal(tonumber(os.getenv("PGPORT")), conn.info.port)
      assert.are.equal("postgres", conn.info.user)
      assert.are.equal(conn.info, conn:info())
      -- a unix socket is shown in libpq's readable ?host= form
      assert.are.equal("postgresql://postgres@/" .. t.name .. "?host=" .. os.getenv("PGHOST") .. "&port="
        .. os.getenv("PGPORT"), conn.info.url)
      conn:exec("BEGIN")
      pcall(conn.exec, conn, "SELECT 1 / 0")
      assert.are.equal("in error", conn:status())
      conn:exec("ROLLBACK")
      assert.are.equal("idle", conn:status())
    end)

    it("uses application_name dhrun by default", function()
      local c <close> = t.connect()
      assert.are.equal("dhrun", c:get("application_name"))
      local c2 <close> = t.connect({ application_name = "other" })
      assert.are.equal("other", c2:get("application_name"))
    end)

    it("applies settings at connect time; a bad one is a config error (exit 2)", function()
      local c <close> = t.connect({ settings = { statement_timeout = "5s", lock_timeout = 1500 } })
      assert.are.same({ "5s", "1500ms" }, { c:get("statement_timeout"), c:get("lock_timeout") })
      local err = catch(t.connect, { settings = { lock_timeout = "banana" } })
      assert.are.same({ "config", 2, "22023" }, { err.kind, err.exit, err.sqlstate })
      assert.matches("^cannot apply the connection settings: %[22023%]", err.message)
    end)

    it("captures notices and clears them when read", function()
      conn:notices()
      conn:exec([[DO $$ BEGIN
        RAISE NOTICE 'hello %', 42;
        RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint';
      END $$]])
      local n = conn:notices()
      assert.are.equal(2, #n)
      assert.are.same({ severity = "NOTICE", message = "hello 42", sqlstate = "00000" }, n[1])
      assert.are.same({ severity = "WARNING", message = "careful", sqlstate = "01000", detail = "some detail",
        hint = "a hint" }, n[2])
      assert.are.same({}, conn:notices())
    end)
  end)

  describe("locks and timeouts", function()
    it("contends for advisory locks between two connections", function()
      local a <close> = t.connect()
      local b <close> = t.connect()
      assert.is_true(a:advisory_lock(4242))
      assert.is_false(b:try_advisory_lock(4242))
      assert.is_true(a:advisory_unlock(4242))
      assert.is_false(a:advisory_unlock(4242))
      assert.is_true(b:try_advisory_lock(4242))
      assert.is_false(a:try_advisory_lock(4242))
      b:set("lock_timeout", "100ms")
      assert.is_true(b:advisory_unlock(4242))
      assert.has_error(function() a:advisory_lock("4242") end)
    end)

    it("gives up waiting for an advisory lock after lock_timeout (55P03)", function()
      local a <close> = t.connect()
      local b <close> = t.connect({ settings = { lock_timeout = "150ms" } })
      a:advisory_lock(77)
      local t0 = sys.now()
      local err = catch(b.advisory_lock, b, 77)
      assert.are.equal("55P03", err.sqlstate)
      assert.is_true(sys.now() - t0 < 2)
    end)

    it("stops a statement after statement_timeout (57014)", function()
      local c <close> = t.connect({ settings = { statement_timeout = "100ms" } })
      local err = catch(c.query, c, "SELECT pg_sleep(5)")
      assert.are.equal("57014", err.sqlstate)
      assert.matches("statement timeout", err.message, 1, true)
      assert.are.equal(1, c:query_value("SELECT 1"))
    end)

    it("stops waiting for a table lock after lock_timeout (55P03)", function()
      conn:exec("CREATE TABLE locked (n int)")
      local holder <close> = t.connect()
      holder:exec("BEGIN")
      holder:exec("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
      local c <close> = t.connect({ settings = { lock_timeout = "150ms" } })
      assert.are.equal("150ms", c:get("lock_timeout"))
      local err = catch(c.query, c, "SELECT * FROM locked")
      assert.are.equal("55P03", err.sqlstate)
      holder:exec("ROLLBACK")
      assert.are.equal(0, #c:query("SELECT * FROM locked"))
    end)
  end)

  describe("lock waits: db.retry and db.blockers", function()
    -- A session of our own holding ACCESS SHARE on `tbl` (a SELECT in an open
    -- transaction), as an application's forgotten transaction does.
    local function hold(tbl, opts)
      local c = t.connect(opts)
      c:exec("BEGIN")
      c:query("SELECT count(*)\n\tFROM " .. tbl .. " -- \1 a control character in a comment")
      return c
    end

    -- A role that may not see other roles' sessions in pg_stat_activity.
    -- It is dropped when the test ends, or by cleanup (a list of functions
    -- the test's own finally runs: busted keeps only a test's last finally).
    local function unprivileged(c, cleanup)
      local role = "dhrun_t_lowpriv_" .. sys.uuid4():sub(1, 8)
      c:exec("CREATE ROLE " .. db.quote_ident(role))
      local function drop()
        local admin <close> = testdb.admin()
        admin:exec("DROP ROLE IF EXISTS " .. db.quote_ident(role))
      end
      if cleanup then cleanup[#cleanup + 1] = drop else finally(drop) end
      return role
    end

    it("gives DDL 55P03 after lock_timeout, retries, then fails (kind lock, exit 1) naming the blocker", function()
      conn:exec("CREATE TABLE r_locked (n int)")
      local holder <close> = hold("r_locked", { application_name = "the app" })
      local c <close> = t.connect()
      local seen, t0, warned = {}, sys.now(), {}
      local err = catch(db.retry, c, "ALTER TABLE r_locked ADD COLUMN x int", {
        lock_timeout = "300ms", retries = 2, retry_base = 0.05, retry_max = 0.05,
        relations = { "r_locked" }, lockmode = "AccessExclusiveLock",
        on_retry = function(attempt, e, delay, blockers)
          seen[#seen + 1] = { attempt, e.sqlstate, sys.now() - t0, delay, blockers }
        end,
        log = { warn = function(line) warned[#warned + 1] = line end },
      })
      -- the first wait ended after lock_timeout, with 55P03, well within a second
      assert.are.same({ 1, "55P03" }, { seen[1][1], seen[1][2] })
      assert.is_true(seen[1][3] >= 0.29 and seen[1][3] < 1, "first attempt took " .. seen[1][3] .. " s")
      assert.are.equal(2, #seen)
      for _, s in ipairs(seen) do assert.is_true(s[4] >= 0.025 and s[4] <= 0.05, "delay " .. s[4]) end

      local pid = holder:backend_pid()
      -- Each retry says who held the lock: on_retry gets db.blockers' list, the log line its text.
      assert.are.same({ pid, "client backend" }, { seen[1][5][1].pid, seen[1][5][1].kind })
      assert.are.equal(2, #warned)
      assert.matches("^ALTER TABLE r_locked ADD COLUMN x int: %[55P03%] canceling statement due to lock timeout; "
        .. "blocked by pid " .. pid .. ' %(client backend, application "the app", idle in transaction, holds '
        .. "AccessShareLock on r_locked, .*; retry 1/2 in 0%.0%d s$", warned[1])
      assert.are.same({ "lock", 1, 3, "55P03", "300ms" }, { err.kind, err.exit, err.attempts, err.sqlstate,
        err.lock_timeout })
      assert.are.equal("ALTER TABLE r_locked ADD COLUMN x int: gave up after 3 attempts (lock_timeout 300ms, last "
        .. "error: [55P03] canceling statement due to lock timeout); blocked by pid " .. pid .. " (client backend, "
        .. 'application "the app", idle in transaction, holds AccessShareLock on r_locked, in a transaction for N s, '
        .. 'last query "SELECT count(*) FROM r_locked -- \\x01 a control character in a comment")',
        (err.message:gsub("for %d+ s,", "for N s,")))
      assert.are.equal(1, #err.blockers)
      assert.are.same({ pid, "client backend", "idle in transaction" },
        { err.blockers[1].pid, err.blockers[1].kind, err.blockers[1].state })
      assert.matches("wait for the sessions named above", err.hint, 1, true)
      -- nothing of it happened, and the session's own lock_timeout is untouched
      assert.are.equal(0, c:query_value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'r_locked'::regclass "
        .. "AND attname = 'x'"))
      assert.are.equal("0", c:get("lock_timeout"))

      -- What the engineer sees from a script: exit 1, the message and the hint.
      local r = dhrun_e([[
        local db = require "dhrun.db"
        db.retry(db.connect(), "ALTER TABLE r_locked ADD COLUMN x int",
          { lock_timeout = 300, retries = 0, relations = { "r_locked" } })
      ]], { DATABASE_URL = t.url })
      assert.are.equal(1, r.code)
      local out = lines(r.stderr)
      assert.are.equal(2, #out, r.stderr)
      assert.matches("^dhrun: ALTER TABLE r_locked ADD COLUMN x int: gave up after 1 attempt %(lock_timeout 300ms",
        out[1])
      assert.matches("; blocked by pid " .. pid .. " (client backend, ", out[1], 1, true)
      assert.matches("^dhrun: hint: ", out[2])

      holder:exec("ROLLBACK")
      assert.are.equal(0, db.retry(c, "ALTER TABLE r_locked ADD COLUMN x int", { lock_timeout = "300ms" }))
    end)

    it("retries deadlocks and serialization failures, runs a function, returns its result and the attempts", function()
      conn:exec("CREATE SEQUENCE r_attempts")
      local retried = {}
      local res, attempts = db.retry(conn, function(c)
        assert.are.equal("150ms", c:get("lock_timeout")) -- SET LOCAL for this transaction
        local n = c:query_value("SELECT nextval('r_attempts')")
        if n == 1 then c:exec("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$") end
        if n == 2 then c:exec("DO $$ BEGIN RAISE EXCEPTION 'serialization' USING ERRCODE = '40001'; END $$") end
        return "done after " .. n
      end, { lock_timeout = "150ms", retry_base = 0.01,
             on_retry = function(_, e) retried[#retried + 1] = e.sqlstate end })
      assert.are.same({ "done after 3", 3 }, { res, attempts })
      assert.are.same({ "40P01", "40001" }, retried)
      assert.are.equal("0", conn:get("lock_timeout"))

      -- any other error: no retry, the error as it was
      local calls = 0
      local err = catch(db.retry, conn, function(c) calls = calls + 1; c:query("SELECT 1 / 0") end,
        { on_retry = function() error("not retried") end })
      assert.are.same({ 1, "db", "22012" }, { calls, err.kind, err.sqlstate })
      assert.has_error(function() db.retry(conn, 42) end,
        "bad argument #2 to 'retry' (SQL string or function expected, got number)")
    end)

    it("autocommit: runs one statement on its own under the session's lock_timeout, and retries it", function()
      conn:exec("CREATE TABLE r_auto (n int)")
      conn:exec("CREATE SEQUENCE r_auto_attempts")
      local holder <close> = hold("r_auto")
      holder:exec("LOCK TABLE r_auto IN EXCLUSIVE MODE") -- no INSERT until it commits
      local _ <close> = conn:with_setting("lock_timeout", "100ms")
      local statuses = {}
      local ok, err = pcall(db.retry, conn, function(c)
        statuses[#statuses + 1] = c:status() -- no BEGIN around it
        c:query("SELECT nextval('r_auto_attempts')")
        return c:exec("INSERT INTO r_auto VALUES (1)")
      end, { autocommit = true, retries = 1, retry_base = 0.01 })
      assert.is_false(ok)
      assert.are.same({ "lock", 2 }, { err.kind, err.attempts })
      assert.are.same({ "idle", "idle" }, statuses)
      -- each attempt's own statements committed on their own: the sequence moved twice
      assert.are.equal(2, conn:query_value("SELECT last_value FROM r_auto_attempts"))
      holder:exec("ROLLBACK")
      assert.are.same({ 1, 1 }, { db.retry(conn, "INSERT INTO r_auto VALUES (2)", { autocommit = true }) })
      assert.has_error(function()
        conn:transaction(function(c) db.retry(c, "SELECT 1", { autocommit = true }) end)
      end, "bad argument #3 to 'retry' (autocommit: not with outwait_autovacuum, nor inside a transaction)")
    end)

    it("blockers names each session holding a conflicting lock, also for a role that sees few details", function()
      conn:exec("CREATE TABLE r_blk (n int)")
      conn:exec("CREATE TABLE r_other (n int)")
      local holder <close> = hold("r_blk", { application_name = "the app" })
      local other <close> = hold("r_other")
      local pid = holder:backend_pid()

      local list, text = db.blockers(conn, { "r_blk" }, "AccessExclusiveLock")
      assert.are.equal(1, #list)
      local b = list[1]
      assert.are.same({ pid, "client backend", "client backend", "the app", "idle in transaction", "AccessShareLock",
        "r_blk" }, { b.pid, b.kind, b.backend_type, b.application_name, b.state, b.modes, b.relations })
      assert.are.equal("SELECT count(*) FROM r_blk -- \\x01 a control character in a comment", b.query)
      assert.is_nil(b.guessed)
      assert.matches('^pid ' .. pid .. ' %(client backend, application "the app", idle in transaction, holds '
        .. 'AccessShareLock on r_blk, in a transaction for %d+ s, last query "SELECT count%(%*%) FROM r_blk', text)
      assert.is_nil(text:find("\n"))

      -- ACCESS SHARE does not conflict with SHARE UPDATE EXCLUSIVE (VALIDATE's lock)
      assert.are.same({}, (db.blockers(conn, { "r_blk" }, "ShareUpdateExclusiveLock")))
      -- no relations: every table of this database
      local all = db.blockers(conn)
      local pids = {}
      for _, x in ipairs(all) do pids[#pids + 1] = x.pid end
      table.sort(pids)
      local want = { pid, other:backend_pid() }
      table.sort(want)
      assert.are.same(want, pids)

      -- A role without pg_read_all_stats: pg_stat_activity hides the
      -- session's details, pg_locks still has its pid.
      local viewer <close> = t.connect()
      viewer:exec("SET ROLE " .. db.quote_ident(unprivileged(conn)))
      list, text = db.blockers(viewer, { "r_blk" })
      assert.are.same({ pid, 'session of role "postgres"', "not visible to this role", true, "the app" },
        { list[1].pid, list[1].kind, list[1].note, list[1].guessed, list[1].application_name })
      assert.is_nil(list[1].query)
      assert.are.equal('pid ' .. pid .. ' (session of role "postgres" (not visible to this role), application '
        .. '"the app", holds AccessShareLock on r_blk)', text)
      assert.has_error(function() db.blockers(conn, { "r_blk" }, "Exclusive") end,
        'bad argument #3 to \'blockers\' (a table lock mode like "AccessExclusiveLock" expected, got Exclusive)')
    end)

    it("names an autovacuum worker as one, also to a role that cannot see it, says why DDL cannot pass it, and "
      .. "outwaits it without keeping the application waiting", function()
      -- A database of its own, and autovacuum looking at it every second
      -- (the server's setting, put back afterwards).
      local d = testdb.create()
      local function naptime(v)
        local admin <close> = testdb.admin()
        admin:exec(v and "ALTER SYSTEM SET autovacuum_naptime = '1s'" or "ALTER SYSTEM RESET autovacuum_naptime")
        admin:query("SELECT pg_reload_conf()")
      end
      local cleanup = {} -- after the database: roles, which own nothing once it is gone
      local proc
      finally(function()
        naptime(false)
        if proc then proc:stop(1) end
        testdb.drop(d.name) -- WITH (FORCE): ends the worker too
        for _, fn in ipairs(cleanup) do fn() end
      end)
      local c <close> = d.connect()
      -- dead tuples for autovacuum to clean, and a cost limit that makes it slow
      c:exec_script([[
        CREATE TABLE av (id int PRIMARY KEY, v text) WITH (autovacuum_vacuum_threshold = 0,
          autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1);
        INSERT INTO av SELECT g, 'x' FROM generate_series(1, 20000) g;
        UPDATE av SET v = 'y';]])
      -- the table's owner, not a superuser, as a production deployment's role
      local owner = unprivileged(c, cleanup)
      c:exec("ALTER TABLE av OWNER TO " .. db.quote_ident(owner))
      naptime(true)
      local worker = eventually(30, function()
        return c:query_value([[SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.relation = 'av'::regclass AND a.backend_type = 'autovacuum worker' LIMIT 1]])
      end)
      assert.is_truthy(worker, "autovacuum did not start on the table within 30 s")

      local list, text = db.blockers(c, { "av" }, "AccessExclusiveLock")
      assert.are.same({ worker, "autovacuum worker" }, { list[1].pid, list[1].kind })
      assert.matches("^autovacuum: VACUUM", list[1].query)
      assert.matches("pid " .. worker .. " (autovacuum worker, active, holds ShareUpdateExclusiveLock on av, ", text,
        1, true)

      local viewer <close> = d.connect()
      viewer:exec("SET ROLE " .. db.quote_ident(unprivileged(c, cleanup)))
      list, text = db.blockers(viewer, { "av" }, "AccessExclusiveLock")
      assert.are.same({ worker, "autovacuum worker", true }, { list[1].pid, list[1].kind, list[1].guessed })
      assert.are.equal("pid " .. worker .. " (autovacuum worker (probably; not visible to this role), holds "
        .. "ShareUpdateExclusiveLock on av)", text)

      -- A DDL's 300 ms wait ends before the deadlock check (deadlock_timeout,
      -- 1 s) would make autovacuum give way: the hint says so.
      local err = catch(db.retry, c, "ALTER TABLE av ADD COLUMN w int", { lock_timeout = "300ms", retries = 0,
        relations = { "av" } })
      assert.are.equal("lock", err.kind)
      assert.matches("blocked by pid " .. worker .. " (autovacuum worker, ", err.message, 1, true)
      assert.matches("autovacuum (pid " .. worker .. ") gives way to a waiting lock only after deadlock_timeout (1s), "
        .. "and lock_timeout 300ms gives up before that", err.hint, 1, true)

      -- With outwait_autovacuum the attempt first waits for SHARE UPDATE
      -- EXCLUSIVE past deadlock_timeout: PostgreSQL cancels the worker, and
      -- the DDL gets its lock at the first attempt.  Meanwhile a dhrun
      -- process plays the application, reading and writing the table.
      local dir = sh.tmpdir()
      local out = dir .. "/probe.json"
      local script = sh.write(dir .. "/probe.lua", [[
        local sys = require "dhrun.core.sys"
        local conn = require("dhrun.db").connect(os.getenv("AV_DB"))
        local out = os.getenv("AV_OUT")
        local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
        io.open(out .. ".ready", "w"):close()
        local worst, n, waits, deadline = 0, 0, {}, sys.now() + 15
        while not exists(out .. ".stop") and sys.now() < deadline do
          local t0 = sys.now()
          conn:query("SELECT v FROM av WHERE id = $1", 1 + n % 100)
          conn:exec("UPDATE av SET v = 'p' WHERE id = $1", 1 + n % 100)
          worst = math.max(worst, sys.now() - t0)
          for _, r in ipairs(conn:query("SELECT mode FROM pg_locks WHERE relation = 'av'::regclass AND NOT granted")) do
            waits[r.mode] = true
          end
          n = n + 1
          sys.sleep(0.005)
        end
        local f = io.open(out, "w")
        f:write(require("cjson").encode { max = worst, n = n, waits = waits })
        f:close()
      ]])
      proc = require("dhrun.process").spawn({ sh.bin, script },
        { env = { AV_DB = d.conninfo, AV_OUT = out }, stderr = dir .. "/probe.err" })
      assert.is_truthy(eventually(10, function() return sh.read(out .. ".ready") end), "the probe did not start")
      worker = eventually(30, function()
        return c:query_value([[SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.relation = 'av'::regclass AND a.backend_type = 'autovacuum worker' LIMIT 1]])
      end)
      assert.is_truthy(worker, "autovacuum is not on the table")
      local ddl <close> = d.connect()
      ddl:exec("SET ROLE " .. db.quote_ident(owner))
      local said, t0 = {}, sys.now()
      local _, attempts = db.retry(ddl, "ALTER TABLE av ADD COLUMN w int", { lock_timeout = "300ms", retries = 0,
        relations = { "av" }, lockmode = "AccessExclusiveLock", outwait_autovacuum = true,
        log = { info = function(line) said[#said + 1] = line end, warn = function(line) said[#said + 1] = line end } })
      local took = sys.now() - t0
      io.open(out .. ".stop", "w"):close()
      assert(proc:wait(10))
      assert.are.equal(1, attempts)
      assert.is_true(took >= 0.9 and took < 1.3, "took " .. took .. " s")
      assert.are.same({ "ALTER TABLE av ADD COLUMN w int: waiting up to 1300ms for SHARE UPDATE EXCLUSIVE, held by pid "
        .. worker .. " (autovacuum worker (probably; not visible to this role), holds ShareUpdateExclusiveLock on av); "
        .. "PostgreSQL cancels an autovacuum that keeps a lock request waiting for deadlock_timeout, and the "
        .. "application's queries do not queue behind this wait" }, said)
      assert.are.equal(1, c:query_value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'av'::regclass "
        .. "AND attname = 'w'"))
      -- The application's statements never waited on it: its wait was for
      -- SHARE UPDATE EXCLUSIVE, which their locks do not conflict with.
      local probe = require("cjson").decode((assert(sh.read(out), sh.read(dir .. "/probe.err"))))
      assert.is_true(probe.n > 20, "the probe ran " .. probe.n .. " times")
      assert.is_true(probe.waits.ShareUpdateExclusiveLock, "the probe did not run during the wait")
      assert.is_nil(probe.waits.AccessExclusiveLock)
      assert.is_true(probe.max < 0.2, string.format("a statement of the application waited %.3f s", probe.max))
    end)
  end)

  describe("connection lifetime", function()
    local function backend_alive(pid)
      return conn:query_value("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) > 0
    end

    it("raises on any method of a closed connection; close twice says so", function()
      local c = t.connect()
      assert.is_true(c:close())
      local ok, msg = c:close()
      assert.are.same({ false, "connection is already closed" }, { ok, msg })
      for _, m in ipairs({ "query", "exec", "exec_script", "query_value", "status", "backend_pid", "notices" }) do
        assert.matches("connection is closed", catch(c[m], c, "SELECT 1"), 1, true)
      end
      assert.matches("connection is closed", catch(c.transaction, c, function() end), 1, true)
      assert.are.equal("dhrun.db connection (closed)", tostring(c))
    end)

    it("closes with <close> and when collected", function()
      local pid
      do
        local c <close> = t.connect()
        pid = c:backend_pid()
        assert.is_true(backend_alive(pid))
      end
      assert.is_truthy(eventually(3, function() return not backend_alive(pid) end))
      pid = t.connect():backend_pid()
      collectgarbage()
      collectgarbage()
      assert.is_truthy(eventually(3, function() return not backend_alive(pid) end))
    end)

    it("turns a terminated backend into a db error, not a crash", function()
      local c <close> = t.connect()
      local pid = c:backend_pid()
      assert.is_true(conn:query_value("SELECT pg_terminate_backend($1)", pid))
      assert.is_truthy(eventually(10, function() return not backend_alive(pid) end), "the backend ended")
      local err = catch(c.query, c, "SELECT 1")
      assert.are.equal("db", err.kind)
      assert.are.equal(1, err.exit)
      assert.is_truthy(err.sqlstate == "57P01" or err.sqlstate == "08006", err.sqlstate)
      assert.are.equal("08006", catch(c.exec, c, "SELECT 1").sqlstate)
      assert.are.equal("unknown", c:status())
    end)
  end)

  describe("connecting", function()
    it("uses $DATABASE_URL, else the PG* variables", function()
      local r = dhrun_e("local c = require('dhrun.db').connect() print(c:query_value('SELECT current_database()'))",
        { DATABASE_URL = t.url })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(t.name .. "\n", r.stdout)
      -- The harness exports PGHOST, PGPORT, PGUSER and PGDATABASE but not the
      -- password, which its server wants on every connection (tests/run.sh).
      local code = "print(require('dhrun.db').connect():query_value('SELECT current_database()'))"
      r = dhrun_e(code)
      assert.are.equal(4, r.code, r.stdout)
      assert.matches("no password supplied", r.stderr, 1, true)
      r = dhrun_e(code, { PGPASSWORD = testdb.password() })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal((os.getenv("PGDATABASE") or "postgres") .. "\n", r.stdout)
    end)

    it("fails with exit 4 and one clear line when nothing listens", function()
      local r = dhrun_e("require('dhrun.db').connect('postgresql://someone@127.0.0.1:1/appdb')")
      assert.are.equal(4, r.code)
      local l = lines(r.stderr)
      assert.are.equal(2, #l, r.stderr)
      assert.matches("^dhrun: cannot connect to postgresql://someone@127%.0%.0%.1:1/appdb: "
        .. "connection to server at \"127%.0%.0%.1\", port 1 failed: Connection refused$", l[1])
      assert.matches("^dhrun: hint: check that the PostgreSQL server is running", l[2])
    end)

    it("fails with exit 4 on a wrong password and never shows it", function()
      local wrong = "WRONG" .. sys.uuid4():sub(1, 8)
      local r = dhrun_e(string.format("require('dhrun.db').connect(%q)", testdb.tcp_url(t.name, wrong)))
      assert.are.equal(4, r.code)
      assert.matches('password authentication failed for user "dhrun_pw"', r.stderr, 1, true)
      assert.matches("cannot connect to postgresql://dhrun_pw@127.0.0.1:", r.stderr, 1, true)
      assert.matches("hint: check the password", r.stderr, 1, true)
      assert.is_nil(r.stderr:find(wrong, 1, true))
      assert.is_nil(r.stdout:find(wrong, 1, true))
    end)

    it("connects with the right password over TCP and masks it in output", function()
      local pw = testdb.password()
      local url = testdb.tcp_url(t.name)
      -- The URL reaches the chunk through the environment, not the command line.
      local r = dhrun_e([[
        local url = os.getenv("DHRUN_TEST_URL")
        local c = require('dhrun.db').connect(url)
        print(url)
        print(c.info.url, c:query_value('SELECT current_user'))
        print(require('dhrun.db').display_url(url))]], { DHRUN_TEST_URL = url })
      assert.are.equal(0, r.code, r.stderr)
      local l = lines(r.stdout)
      assert.are.equal(url:gsub("dhrun_pw:[^@]*@", "dhrun_pw:***@"), l[1])
      local want = "postgresql://dhrun_pw@127.0.0.1:" .. os.getenv("PGPORT") .. "/" .. t.name
      assert.are.equal(want .. "\tdhrun_pw", l[2])
      assert.are.equal(want, l[3])
      assert.is_nil(r.stdout:find(pw, 1, true))
    end)

    it("masks the password as written in a quoted key=value string too", function()
      local pw = testdb.password()
      assert.truthy(pw:find("[\\']"), "the harness's password has a quote or backslash")
      local info = testdb.conninfo(t.name)
      local r = dhrun_e([[
        local info = os.getenv("DHRUN_TEST_CONNINFO")
        local c = require('dhrun.db').connect(info)
        print(info, c:query_value('SELECT 1'))]], { DHRUN_TEST_CONNINFO = info })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("password='***'", r.stdout, 1, true)
      local quoted = pw:gsub("[\\']", "\\%0")
      assert.is_nil(r.stdout:find(quoted, 1, true))
      for piece in pw:gmatch("%w%w%w%w%w%w+") do assert.is_nil(r.stdout:find(piece, 1, true)) end
    end)

    it("refuses a malformed URL with exit 2 and one line", function()
      local r = dhrun_e("require('dhrun.db').connect()", { DATABASE_URL = "postgresql://u@[::1/db" })
      assert.are.equal(2, r.code)
      local l = lines(r.stderr)
      assert.matches("^dhrun: DATABASE_URL is not a valid connection string: end of string reached", l[1])
      assert.matches("^dhrun: hint: ", l[2])
      assert.are.equal(2, #l)
      r = dhrun_e("require('dhrun.db').connect('postgresql://u@h/db?sslmod=require')")
      assert.are.equal(2, r.code)
      assert.matches("a parameter in the URL's query is not a connection parameter (did you mean 'sslmode'?)",
        r.stderr, 1, true)
    end)

    it("accepts Prisma URLs: drops Prisma-only parameters, ?schema= sets search_path", function()
      conn:exec('CREATE SCHEMA "Release Ops"')
      conn:exec('CREATE TABLE "Release Ops".only_here (n int)')
      local c <close> = db.connect(t.url .. "?schema=Release%20Ops&connection_limit=1&pool_timeout=0"
        .. "&pgbouncer=false&statement_cache_size=0&socket_timeout=5&sslmode=prefer")
      assert.are.equal('"Release Ops"', c:get("search_path"))
      assert.are.equal(0, #c:query("SELECT * FROM only_here"))
      local d <close> = db.connect(t.url .. "?schema=public")
      assert.are.equal("public", d:get("search_path"))
      assert.are.equal("42P01", catch(d.query, d, "SELECT * FROM only_here").sqlstate)
    end)

    it("refuses a pgbouncer=true URL: releases need a direct connection", function()
      local err = catch(db.connect, t.url .. "?pgbouncer=true")
      assert.are.equal("config", err.kind)
      assert.are.equal(2, err.exit)
      assert.matches("pgbouncer=true", err.message, 1, true)
      assert.matches("directUrl", err.hint, 1, true)
    end)

    it("reports a bad option value as a config error (exit 2), not an unreachable server", function()
      local err = catch(db.connect, t.url .. "?sslmode=bogus")
      assert.are.equal(2, err.exit)
      assert.matches("invalid sslmode value", err.message, 1, true)
    end)

    it("shows connection strings without passwords", function()
      assert.are.equal("postgresql://u@h:5/d?sslmode=disable",
        db.display_url("postgresql://u:p%40ss@h:5/d?sslmode=disable&password=x"))
      assert.are.equal("host=h port=5 user='a b'", db.display_url("user='a b' password=secret host=h port=5"))
      assert.are.equal("<invalid connection string>", db.display_url("nonsense"))
    end)
  end)

  describe("Ctrl-C", function()
    it("cancels the running query on the server and exits 130 within 2 s", function()
      local dir = sh.tmpdir()
      local tag = "dhrun-sigint-" .. sys.uuid4():sub(1, 8)
      local script = sh.write(dir .. "/sleep.lua", string.format([[
local c = require("dhrun.db").connect(nil, { application_name = %q })
c:query("SELECT pg_sleep(30)")
]], tag))
      -- Background run; the inner sh writes its pid, then becomes dhrun.  It
      -- inherits DATABASE_URL (the password stays out of files and argv).
      sys.setenv("DATABASE_URL", t.url)
      os.execute(string.format("( sh -c 'echo $$ >\"$1\"; shift; exec \"$@\"' sh %s %s %s >%s 2>%s; echo $? >%s )"
        .. " </dev/null >/dev/null 2>&1 &", sh.quote(dir .. "/pid"), sh.quote(sh.bin), sh.quote(script),
        sh.quote(dir .. "/out"), sh.quote(dir .. "/err"), sh.quote(dir .. "/rc")))
      sys.setenv("DATABASE_URL", nil)
      local pid = eventually(5, function() return tonumber(sh.read(dir .. "/pid") or "") end)
      finally(function() if not sh.read(dir .. "/rc") then os.execute("kill -9 " .. pid .. " 2>/dev/null") end end)
      local backend = eventually(5, function()
        return conn:query_value("SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' "
          .. "AND query LIKE '%pg_sleep%'", tag)
      end)
      assert.is_truthy(backend, "the query never started")
      local t0 = sys.now()
      os.execute("kill -INT " .. pid)
      local rc = eventually(5, function() return sh.read(dir .. "/rc") end)
      assert.is_true(sys.now() - t0 < 2, "took " .. (sys.now() - t0) .. " s")
      assert.are.equal("130\n", rc)
      assert.are.equal("dhrun: interrupted (Ctrl-C)\n", sh.read(dir .. "/err"))
      -- Without the cancel, the backend would go on sleeping for 30 s.
      assert.is_truthy(eventually(1, function()
        return conn:query_value("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
          backend) == 0
      end))
    end)
  end)
end)

describe("db.connect without DATABASE_URL", function()
  it("says that DATABASE_URL is not set and that libpq's defaults were tried (exit 4)", function()
    local r = sh.dhrun({ "-e", "require('dhrun.db').connect()" },
      { cwd = sh.root, env = { DATABASE_URL = false, PGHOST = "/nonexistent-dhrun-socket-dir", PGPORT = "1" } })
    assert.are.equal(4, r.code, r.stderr)
    assert.matches("DATABASE_URL is not set, so this is libpq's default", r.stderr, 1, true)
    assert.matches("hint: set DATABASE_URL", r.stderr, 1, true)
    -- with no host at all: the local socket's form, not "user@:1"
    r = sh.dhrun({ "-e", "require('dhrun.db').connect()" },
      { cwd = sh.root, env = { DATABASE_URL = false, PGHOST = false, PGPORT = "1", PGUSER = "u", PGDATABASE = "d" } })
    assert.are.equal(4, r.code, r.stderr)
    assert.matches("cannot connect to postgresql://u@/d?port=1: ", r.stderr, 1, true)
  end)

  it("shows a Prisma URL's schema in the connection's display URL", function()
    local t = testdb.create()
    finally(function() testdb.drop(t.name) end)
    local c <close> = require("dhrun.db").connect(t.url .. "?schema=tracker")
    assert.matches("[?&]schema=tracker$", c:info().url)
  end)
end)
