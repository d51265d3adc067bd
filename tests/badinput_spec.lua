-- Bad input, as an on-call engineer would meet it: each case gets exactly one
-- clear line on stderr (plus an optional "hint:" line), the exit code the
-- README documents, and leaves the database exactly as it was (journal
-- included).  Cases covered elsewhere are not repeated here: an unknown flag
-- (host_spec, flows_spec), an unknown script (host_spec), rollback without
-- --yes (flows_spec), --resume on deploy with no journal (flows_spec), and
-- the connect errors at the module level (db_spec).  Here they go through
-- the flows, as a user runs them.
local sh = require "sh"
local dh = require "datahub"
local testdb = require "testdb"
local sys = require "dhrun.core.sys"

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- Asserts the contract: exit code, "dhrun: <message>" as the one line on
-- stderr, then at most a hint line; nothing on stdout (or, with `header`,
-- only the flow's header line: no step began).
local function assert_one_line(r, code, message, hint, header)
  local all = "stdout:\n" .. r.stdout .. "stderr:\n" .. r.stderr
  assert.are.equal(code, r.code, all)
  if header then
    assert.are.equal(1, #lines(r.stdout), all)
    assert.matches(" INFO  dhrun " .. header .. " — ", r.stdout, 1, true)
  else
    assert.are.equal("", r.stdout, all)
  end
  local l = lines(r.stderr)
  assert.is_true(#l == 1 or (#l == 2 and l[2]:find("^dhrun: hint: ") ~= nil), "one line (and a hint):\n" .. all)
  assert.are.equal("dhrun: ", l[1]:sub(1, 7), all)
  assert.matches(message, l[1], 1, true)
  if hint then assert.matches(hint, l[2] or "", 1, true) end
  assert.is_nil(r.stderr:find("traceback", 1, true), all)
end

-- A copy of the example's migrations directory, changed by `edit(dir)`.
local function migrations_copy(edit)
  local dir = sh.tmpdir() .. "/migrations"
  local r = sh.run({ "cp", "-R", dh.migrations, dir })
  assert(r.code == 0, r.stderr)
  if edit then edit(dir) end
  return dir
end

-- A config whose migrations directory is `dir`.
local function config_with_migrations(dir)
  return (dh.config(nil, string.format("cfg.migrations = %q", dir)))
end

describe("bad input", function()
  -- One database before the release for most cases: from there deploy has
  -- the most to change, so "nothing changed" means the most.
  local t, before
  lazy_setup(function()
    t = dh.create("pre")
    before = dh.fingerprint(t.conn)
  end)
  lazy_teardown(function() dh.drop(t) end)
  after_each(function()
    assert.are.equal(before, dh.fingerprint(t.conn), "the database changed")
  end)

  local function deploy(env_or_url, args, config)
    local env = type(env_or_url) == "table" and env_or_url or { DATABASE_URL = env_or_url or t.url }
    local argv = { "deploy", "--config", config or (dh.config()) }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    return sh.dhrun(argv, { cwd = sh.root, env = env })
  end

  describe("the database", function()
    it("a malformed DATABASE_URL: exit 2", function()
      assert_one_line(deploy("postgresql://u@[::1/db"), 2, "DATABASE_URL is not a valid connection string: ",
        "hint: use postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    end)

    it("a URL password with an unencoded '/' or '@' (libpq misreads it): exit 2, no piece of it printed", function()
      for _, password in ipairs({ "Zk9/q2Xv+w1=", "p@ssW0rd-x" }) do
        local r = deploy("postgresql://release:" .. password .. "@db.example.com:5432/datahub")
        assert_one_line(r, 2, "DATABASE_URL is not a valid connection string: an unencoded '/' or '@' before the host",
          "hint: use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode special characters)")
        for piece in password:gmatch("[^/@][^/@][^/@]+") do
          assert.is_nil((r.stdout .. r.stderr):find(piece, 1, true), "printed: " .. piece)
        end
      end
    end)

    it("a raw password with '?', '#', '%', '&', quotes or spaces: exit 2, one line, no piece printed", function()
      for _, case in ipairs({
        { "postgresql://app:aaaaaaaaaa@/%:bbbbbbbbbb#?+ cccccccccc@127.0.0.1:1/db", "an unencoded '/' or '@'",
          { "aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc" } },
        { "postgresql://app:aaaaaaaaaa%zzbbbbbbbbbb@127.0.0.1:1/db", "invalid percent-encoded token",
          { "aaaaaaaaaa", "bbbbbbbbbb" } },
        { "host=127.0.0.1 port=1 dbname=db password=aaaaaaaaaa bbbbbbbbbb", 'missing "=" after "***"',
          { "aaaaaaaaaa", "bbbbbbbbbb" } },
        { "postgresql://app:AB?x=y@SECRETHOST@127.0.0.1:1/db", "an unencoded '/' or '@'", { "SECRETHOST" } },
        { "postgresql://u:ab/cd?efghij=klmnop@127.0.0.1:1/db", "an unencoded '/' or '@'", { "efghij", "klmnop" } },
        { "postgresql://app:QWJ'%zzRZY?a=b&\"UXO\\VKB@127.0.0.1:1/db", "invalid percent-encoded token: \"***\"",
          { "QWJ", "RZY", "UXO", "VKB" } },
        { "password='QWJ%2FRZY,'UXO:\"VKB'", 'missing "=" after "***"', { "UXO", "VKB" } },
        { "postgresql://u@127.0.0.1:1/db?password=QWJ@RZY,UXO&VKB", "a parameter in the URL's query is not a "
          .. "connection parameter (percent-encode a '&' in a password as %26)", { "RZY", "UXO", "VKB" } },
        -- a '?' in the password, then what looks like a known parameter
        { "postgresql://app:QWJ?host=x@RZY@127.0.0.1:1/db", "an unencoded '/' or '@'", { "QWJ", "RZY" } },
        { "postgresql://app:UXO/GHP/RZY?sslmode=disable@127.0.0.1:1/db", "an unencoded '/' or '@'",
          { "UXO", "GHP", "RZY" } },
      }) do
        local r = deploy(case[1])
        assert_one_line(r, 2, "DATABASE_URL is not a valid connection string: ", "hint: use postgresql://")
        assert.matches(case[2], r.stderr, 1, true)
        for _, piece in ipairs(case[3]) do
          assert.is_nil((r.stdout .. r.stderr):find(piece, 1, true), case[1] .. " printed " .. piece)
        end
      end
    end)

    it("an '@' in a query value, after known parameters, is not taken for a password's: exit 4, not 2", function()
      for _, url in ipairs({ "postgresql://u:pw@127.0.0.1:1/db?host=/nonexistent-dir&application_name=a@b",
                             "postgresql://u:pw@127.0.0.1:1/db?sslrootcert=/etc/x@y/root.crt" }) do
        local r = deploy(url)
        assert.are.equal(4, r.code, url .. "\n" .. r.stdout .. r.stderr)
        -- and shown whole, without its password
        r = sh.dhrun({ "-e", "print(require('dhrun.db').display_url())" }, { env = { DATABASE_URL = url } })
        assert.are.equal(url:gsub(":pw@", "@", 1) .. "\n", r.stdout)
      end
    end)

    it("an unknown host: exit 4", function()
      assert_one_line(deploy("postgresql://release:pw@no-such-host.invalid:5432/datahub"), 4,
        "cannot connect to postgresql://release@no-such-host.invalid:5432/datahub: could not translate host name",
        "hint: check that the PostgreSQL server is running")
    end)

    it("a wrong password: exit 4, and the password is not printed", function()
      local wrong = "Wr0ng-" .. sys.uuid4():sub(1, 8)
      local r = deploy(testdb.tcp_url(t.name, wrong))
      assert_one_line(r, 4, 'password authentication failed for user "dhrun_pw"', "hint: check the password")
      assert.is_nil((r.stdout .. r.stderr):find(wrong, 1, true), "the password was printed")
    end)

    it("a database that is down (nothing listens on the port): exit 4", function()
      assert_one_line(deploy("postgresql://release:pw@127.0.0.1:1/datahub"), 4,
        'cannot connect to postgresql://release@127.0.0.1:1/datahub: connection to server at "127.0.0.1", port 1 '
          .. "failed: Connection refused", "hint: check that the PostgreSQL server is running")
    end)
  end)

  describe("the migrations directory", function()
    it("missing: exit 2", function()
      local dir = sh.tmpdir() .. "/nowhere"
      assert_one_line(deploy(nil, {}, config_with_migrations(dir)), 2,
        "migrations directory " .. dir .. " does not exist", "hint: check `migrations`")
    end)

    it("empty: exit 2", function()
      local dir = sh.tmpdir()
      assert_one_line(deploy(nil, {}, config_with_migrations(dir)), 2,
        "rollout workspace names migration " .. dh.NOT_NULL .. ", which is not in " .. dir .. " (0 migration(s))",
        "hint: check rollouts.workspace and `migrations` in ")
    end)

    it("a migration directory without migration.sql: exit 2 before anything is applied", function()
      local dir = migrations_copy(function(d) require("lfs").mkdir(d .. "/20251220090000_next") end)
      assert_one_line(deploy(nil, {}, config_with_migrations(dir)), 2,
        "migration 20251220090000_next has no migration.sql (Prisma P3015)",
        "hint: restore " .. dir .. "/20251220090000_next/migration.sql or delete the directory")
    end)

    it("migration_lock.toml naming another provider: exit 2", function()
      local dir = migrations_copy(function(d)
        sh.write(d .. "/migration_lock.toml", (sh.read(d .. "/migration_lock.toml"):gsub("postgresql", "mysql")))
      end)
      assert_one_line(deploy(nil, {}, config_with_migrations(dir)), 2,
        "migration_lock.toml in " .. dir .. " names provider `mysql`, not postgresql (Prisma P3019)",
        "hint: this migrations directory belongs to another database")
    end)
  end)

  describe("scripts and config", function()
    -- A project directory with its own flow in ./scripts, run by name.
    local function run_flow(source)
      local cfg, dir = dh.config()
      sh.write(dir .. "/scripts/my-flow.lua", source)
      return sh.dhrun({ "my-flow", "--config", cfg }, { cwd = dir, env = { DATABASE_URL = t.url } })
    end

    it("a Lua syntax error in a flow: exit 2, file and line", function()
      assert_one_line(run_flow('local flow = require("dhrun.flow").new { name = "my-flow"\nreturn flow:run(...)\n'),
        2, "./scripts/my-flow.lua:2: '}' expected (to close '{' at line 1) near 'return'")
    end)

    it("a Lua runtime error in a flow: exit 2, file and line", function()
      assert_one_line(run_flow('local flow = require("dhrun.flow").new { name = "my-flow" }\n'
        .. 'flow:stepp { title = "typo", run = function() end }\nreturn flow:run(...)\n'),
        2, "./scripts/my-flow.lua:2: attempt to call a nil value (method 'stepp')")
    end)

    it("a Lua syntax error in the config: exit 2", function()
      local cfg = sh.tmpfile("dhrun.config.lua", 'return {\n  project = "Data Hub",\n  rollouts = {\n')
      -- (Lua shortens a long chunk name from the left; the hint has the whole path)
      assert_one_line(deploy(nil, {}, cfg), 2, "dhrun.config.lua:4: unexpected symbol near <eof>",
        "hint: fix the syntax error in " .. cfg)
    end)

    it("a Lua runtime error in the config: exit 2", function()
      local cfg = sh.tmpfile("dhrun.config.lua", 'local base = dofile("nope.lua")\nreturn base\n')
      assert_one_line(deploy(nil, {}, cfg), 2, "cannot open nope.lua", "hint: fix the error in " .. cfg)
    end)

    it("a config naming a column that does not exist: exit 2 before migration #1 is applied", function()
      local cfg = dh.config(nil, 'cfg.rollouts[1].column = "workspaceID"')
      assert_one_line(deploy(nil, {}, cfg), 2, 'rollout workspace: column "workspaceID" is not a column of '
        .. "Connection, MetricDaily, Insight, ChatMessage, and no migration of the rollout (" .. dh.NULLABLE
        .. ") adds it", "hint: check rollouts.workspace.column in ")
    end)

    it("a --wait or --pause that is not a number of seconds: exit 2 at once, lock free or not", function()
      for _, case in ipairs({ { "deploy", "--wait", "5m" }, { "deploy", "--wait", "-1" },
                              { "backfill", "--pause", "soon" } }) do
        local r = sh.dhrun({ case[1], case[2], case[3], "--config", (dh.config()) },
          { cwd = sh.root, env = { DATABASE_URL = t.url } })
        assert_one_line(r, 2, case[2] .. " needs a number of seconds, not '" .. case[3] .. "'")
      end
    end)

    it("--resume with no journal, on another flow: exit 2", function()
      local r = sh.dhrun({ "backfill", "--resume", "--config", (dh.config()) },
        { cwd = sh.root, env = { DATABASE_URL = t.url } })
      assert_one_line(r, 2, "nothing to resume: the journal has no earlier run of backfill", nil, "backfill")
    end)
  end)
end)

-- On a database of its own (a run that changes it must not spoil the shared
-- one of the cases above), with the same "nothing changed" check.
describe("bad input before migration #1", function()
  it("a config naming a table that does not exist: exit 2 before migration #1 is applied", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local before = dh.fingerprint(t.conn)
    local cfg = dh.config(nil, 'cfg.rollouts[1].tables[3] = { "Insights", parent = "connectionId -> Connection" }')
    local r = dh.flow(t, "deploy", {}, { config = cfg })
    assert_one_line(r, 2, "rollout workspace names Insights, which is not a table in schema public",
      "hint: check rollouts.workspace.tables in ")
    assert.are.equal(before, dh.fingerprint(t.conn), "the database changed")
  end)
end)

describe("bad input after migration #1", function()
  it("a config naming a column that does not exist: exit 2 from check, not 'run deploy'", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local before = dh.fingerprint(t.conn)
    local r = dh.flow(t, "check", {}, { config = dh.config(nil, 'cfg.rollouts[1].column = "workspace_id"') })
    assert_one_line(r, 2, 'rollout workspace: column "workspace_id" is not a column of Connection, MetricDaily, '
      .. "Insight, ChatMessage, although the migrations before the backfill are applied",
      "hint: check rollouts.workspace.column in ")
    assert.are.equal(before, dh.fingerprint(t.conn))
  end)

  it("an applied migration edited afterwards: deploy still works as Prisma's does, status notes the edit", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local dir = migrations_copy(function(d)
      local f = d .. "/" .. dh.NULLABLE .. "/migration.sql"
      sh.write(f, sh.read(f) .. "\n-- reviewed afterwards\n")
    end)
    local cfg = config_with_migrations(dir)
    local r = dh.flow(t, "deploy", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal("", r.stderr)
    assert.matches("applied " .. dh.NOT_NULL, r.stdout, 1, true)
    dh.assert_final(t.conn, counts)

    local before = dh.fingerprint(t.conn)
    r = dh.flow(t, "status", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Database schema is up to date!", r.stdout, 1, true)
    local l = lines(r.stderr)
    assert.are.equal(1, #l, r.stderr)
    assert.matches("note: migration " .. dh.NULLABLE .. " was modified after it was applied", l[1], 1, true)
    assert.are.equal(before, dh.fingerprint(t.conn))
  end)
end)
