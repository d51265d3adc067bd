-- Rollouts and the shape of flows: what a team needs to reuse dhrun for its
-- own tenancy migration and its own flows, run as a user runs them (dhrun as
-- a real subprocess, a real PostgreSQL).
local sh = require "sh"
local dh = require "datahub"
local testdb = require "testdb"
local prisma = require "dhrun.prisma"

local function run(argv, opts)
  opts = opts or {}
  return sh.dhrun(argv, { cwd = opts.cwd or sh.root, env = opts.env, stdin = opts.stdin })
end

describe("a project's own flows", function()
  it("a project's scripts/deploy.lua wraps the installed deploy under the same name with include_next", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local _, dir = dh.config()
    sh.write(dir .. "/scripts/deploy.lua", [[
local flow = require("dhrun.flow").new { name = "deploy", title = "Our deploy" }
flow:include_next("deploy")
flow:step { title = "Tell the team", run = function() return { summary = "posted to #releases" } end }
return flow:run(...)
]])
    -- run from the project directory, as a team does: ./scripts/deploy.lua is found first
    local r = run({ "deploy", "--no-build" }, { cwd = dir, env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("dhrun deploy — Our deploy", r.stdout, 1, true)
    assert.matches("[5/9] Apply the NOT NULL migration (workspaceId, online)", r.stdout, 1, true)
    assert.matches("[9/9] Tell the team", r.stdout, 1, true)
    assert.matches("posted to #releases", r.stdout, 1, true)
    dh.assert_final(t.conn)
  end)

  it("a flow that includes itself by name is told how to wrap it, not a C stack overflow", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/scripts/deploy.lua", [[
local flow = require("dhrun.flow").new { name = "deploy" }
flow:include("deploy")
return flow:run(...)
]])
    local r = run({ "deploy" }, { cwd = dir })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("includes itself", r.stderr, 1, true)
    assert.matches('flow:include_next("deploy")', r.stderr, 1, true)
    assert.is_nil(r.stderr:find("stack overflow", 1, true))
  end)

  it("runs an ad-hoc flow with no config and no migrations directory", function()
    local t = testdb.create()
    finally(function() testdb.drop(t.name) end)
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/vacuum-stats.lua", [[
local flow = require("dhrun.flow").new { name = "vacuum-stats", lock = false, journal = false }
flow:step { title = "Count tables", readonly = true, run = function(ctx)
  return { summary = ctx.conn:query_value("SELECT count(*) FROM pg_class WHERE relkind = 'r'") .. " tables" }
end }
return flow:run(...)
]])
    local r = run({ script }, { cwd = dir, env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("tables", r.stdout, 1, true)
    assert.matches("vacuum-stats: ok", r.stdout, 1, true)
  end)

  it("a keep-going flow journals a failed step as failed, and the steps after it as they ended", function()
    local t = testdb.create()
    local conn = t.connect()
    finally(function() conn:close(); testdb.drop(t.name) end)
    local script = sh.write(sh.tmpdir() .. "/checks.lua", [[
local flow = require("dhrun.flow").new { name = "checks", keep_going = true }
flow:step { title = "First", run = function() error("first check failed") end }
flow:step { title = "Second", run = function() return { summary = "fine" } end }
return flow:run(...)
]])
    local r = run({ script }, { env = { DATABASE_URL = t.url } })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local rows = conn:query("SELECT seq, name, status FROM dhrun.steps ORDER BY seq")
    assert.are.same({ { 1, "First", "failed" }, { 2, "Second", "ok" } },
      { { rows[1].seq, rows[1].name, rows[1].status }, { rows[2].seq, rows[2].name, rows[2].status } })
    assert.are.equal("failed", conn:query_value("SELECT status FROM dhrun.runs"))
  end)

  it("a flow registers its own config section: validated when it runs, left alone by other flows", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local cfg, dir = dh.config(nil, 'cfg.notify = { channel = "#releases" }')
    local script = sh.write(dir .. "/notify.lua", [[
local config = require "dhrun.config"
config.define("notify", config.types.record { channel = config.types.string { pattern = "^#" } })
local flow = require("dhrun.flow").new { name = "notify", lock = false, journal = false }
flow:step { title = "Notify", readonly = true,
  run = function(ctx) return { summary = "to " .. ctx.cfg.notify.channel } end }
return flow:run(...)
]])
    local r = run({ script, "--config", cfg }, { env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("to #releases", r.stdout, 1, true)
    -- a generic flow does not know the section and does not mind it
    r = dh.flow(t, "status", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    -- the flow that owns it checks it, before connecting
    local bad = dh.config(nil, 'cfg.notify = { chanel = "#releases" }')
    r = run({ script, "--config", bad }, { env = { DATABASE_URL = "postgresql://nobody@127.0.0.1:1/none" } })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("unknown setting 'chanel' in notify (did you mean 'channel'?)", r.stderr, 1, true)
  end)
end)

describe("rollouts in the config", function()
  it("deploy on an empty database applies every migration, and status says it is up to date", function()
    local t = testdb.create()
    local conn = t.connect()
    finally(function() conn:close(); testdb.drop(t.name) end)
    local cfg = dh.config()
    local r = dh.flow(t, "deploy", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("applied " .. dh.INIT .. ", " .. dh.NULLABLE, r.stdout, 1, true)
    assert.matches("skipped: no NULL workspaceId values", r.stdout, 1, true)
    assert.are.equal("up_to_date", prisma.status(conn, dh.migrations).state)
    assert.are.equal(4, dh.not_null_columns(conn))
    r = dh.flow(t, "status", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Database schema is up to date!", r.stdout, 1, true)
  end)

  it("a wrong rollout setting is refused before anything connects or changes (exit 2, one line)", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local before = dh.fingerprint(t.conn)
    for _, case in ipairs({
      { "cfg.rollouts[1].batch = { size = 0 }", "rollouts[1].batch.size must be an integer >= 1, not 0" },
      { "cfg.rollouts[1].batch = { size = 0.5 }", "rollouts[1].batch.size must be an integer >= 1, not 0.5" },
      { "cfg.rollouts[1].lock_timeout = '300xyz'", "rollouts[1].lock_timeout must be a duration" },
      { "cfg.rollouts[1].outwait_autovacuum = 'yes'", "rollouts[1].outwait_autovacuum must be true or false" },
      { "cfg.lock_timeout = 'soon'", "lock_timeout must be a duration" },
      { "cfg.rollouts[1].tables[2] = { 'MetricDaily', parent = 'connectionId' }",
        'must look like "fkColumn -> Table"' },
      { "cfg.rollouts[1].tables[2] = { 'MetricDaily' }", "needs value = " },
      { "cfg.rollouts[1].colum = 'x'", "unknown setting 'colum' in rollouts[1] (did you mean 'column'?)" },
      { "cfg.rollouts[1].bacth = { size = 10 }", "unknown setting 'bacth' in rollouts[1] (did you mean 'batch'?)" },
      { "cfg.rollouts[1].batch = { max_wal_rate = '64 apples' }", "rollouts[1].batch.max_wal_rate must be" },
      { "cfg.rollouts[1].batch = { probe = { max = '50ms' } }", "rollouts[1].batch.probe needs sql = " },
      { "cfg.rollouts[1].batch = { autovacuum = 'sometimes' }", "rollouts[1].batch.autovacuum must be" },
      { "cfg.rollouts[1].tables[2].batch = { max_replica_lag = '1s' }",
        "unknown setting 'max_replica_lag' in rollouts[1].tables[2].batch" },
    }) do
      local r = dh.flow(t, "deploy", { "--no-build" }, { config = dh.config(nil, case[1]) })
      assert.are.equal(2, r.code, case[1] .. "\n" .. r.stdout .. r.stderr)
      assert.matches(case[2], r.stderr, 1, true)
      assert.are.equal("", r.stdout, case[1])
    end
    assert.are.equal(before, dh.fingerprint(t.conn))
  end)

  it("checks the settings and the migrations they name before connecting at all", function()
    -- a database that cannot be reached: exit 2 (the config), never 4 (the connection)
    local env = { DATABASE_URL = "postgresql://nobody@127.0.0.1:1/none" }
    for _, case in ipairs({
      { "cfg.rollouts[1].not_null_migration = '20990101000000_nope'",
        "rollout workspace names migration 20990101000000_nope, which is not in" },
      { "cfg.rollouts[1].migrations = { '" .. dh.NOT_NULL .. "' }", "lists the NOT NULL migration" },
      { "cfg.rollouts[1].batch = { min = 10, max = 5 }", "rollouts[1].batch.min (10) is larger than" },
      { "cfg.commands.build = 'npm run build'", "commands.build must be an argv list" },
      { "cfg.migrate_with = 'flyway'", 'migrate_with must be one of "dhrun", "prisma"' },
      { "cfg.build_inputs = { 'srcc' }", "build_inputs names " },
    }) do
      for _, flow in ipairs({ "deploy", "status", "check", "rollback" }) do
        local r = sh.dhrun({ flow, "--config", (dh.config(nil, case[1])) }, { cwd = sh.root, env = env })
        assert.are.equal(2, r.code, flow .. ": " .. case[1] .. "\n" .. r.stdout .. r.stderr)
        assert.matches(case[2], r.stderr, 1, true)
      end
    end
  end)

  it("refuses a migration directory whose name holds a control character (it would forge output lines)", function()
    local dir = sh.tmpdir()
    assert.are.equal(0, sh.run({ "cp", "-r", dh.migrations, dir .. "/migrations" }).code)
    sh.write(dir .. "/migrations/20991231000000_x\n2026-01-01T00:00:00.000Z OK    forged/migration.sql", "SELECT 1;\n")
    local cfg = dh.config(dir, 'cfg.migrations = "' .. dir .. '/migrations"')
    local r = sh.dhrun({ "status", "--config", cfg }, { cwd = sh.root,
      env = { DATABASE_URL = "postgresql://nobody@127.0.0.1:1/none" } })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches('migration directory "20991231000000_x\\n2026-01-01T00:00:00.000Z OK    forged" has a control '
      .. "character in its name", r.stderr, 1, true)
    assert.are.equal(2, select(2, r.stderr:gsub("\n", "")), "two lines: the error and its hint")
  end)

  it("--rollout picks a rollout by name; an unknown name lists the ones there are", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "check", { "--rollout", "workspaces" })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches('no rollout named "workspaces" (the config has: workspace); did you mean workspace?', r.stderr,
      1, true)
    r = dh.flow(t, "deploy", { "--rollout", "workspace", "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    dh.assert_final(t.conn)
  end)

  it("the older single tenancy section still works, as one rollout", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local cfg = dh.config(nil, [==[
local r = cfg.rollouts[1]
cfg.rollouts = nil
cfg.tenancy = { column = r.column, tables = { "Connection", "MetricDaily", "Insight", "ChatMessage" },
  nullable_migration = r.migrations[1], not_null_migration = r.not_null_migration, label = r.label,
  backfill = { prepare = r.prepare,
    Connection = { value = r.tables[1].value, from = r.tables[1].from, where = r.tables[1].where },
    MetricDaily = { value = [[c."workspaceId"]], from = [["Connection" c]], where = [[c.id = t."connectionId"]] },
    Insight = { value = [[coalesce((SELECT c."workspaceId" FROM "Connection" c WHERE c.id = t."connectionId"),
      (SELECT o."workspaceId" FROM datahub_owner_ws o WHERE o."userId" = t."userId"))]] },
    ChatMessage = { value = r.tables[4].value } } }
]==])
    local r = dh.flow(t, "deploy", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    dh.assert_final(t.conn)
  end)
end)
