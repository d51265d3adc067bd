-- dhrun smoke against the real example app (a Node process on a deployed,
-- seeded database): passes on a healthy app, and fails with a precise
-- message for each broken thing, each made real by the app's DATAHUB_FAULTS.
local sh = require "sh"
local dh = require "datahub"
local appproc = require "app"
local cjson = require "cjson"

local HAVE_CHROMIUM = sh.run({ "sh", "-c", "command -v chromium || command -v chromium-browser" }).code == 0

-- dhrun smoke against app `a`, with the test config; returns the result.
local function smoke(t, a, args, config)
  local argv = { "--url", a.base, "--log", a.log_path }
  for _, x in ipairs(args or {}) do argv[#argv + 1] = x end
  return dh.flow(t, "smoke", argv, { config = config })
end

-- Every connection's status (connect/disconnect must restore them).
local function connection_statuses(conn)
  return conn:query_value([[SELECT md5(string_agg(c.id || c.status, ',' ORDER BY c.id)) FROM "Connection" c]])
end

describe("smoke", function()
  local t, config
  setup(function()
    t = dh.create("done")
    appproc.ensure_built(t.url)
    config = dh.config(nil, [[cfg.smoke = { user_query = [=[SELECT u.email FROM "User" u
      JOIN "WorkspaceMember" m ON m."userId" = u.id AND m.role = 'OWNER'
      WHERE EXISTS (SELECT 1 FROM "Connection" c WHERE c."userId" = u.id AND c.provider = 'GOOGLE_ADS')
      ORDER BY u."createdAt", u.id LIMIT 1]=] }]])
  end)
  teardown(function() dh.drop(t) end)

  it("passes every check against a healthy app, leaves connections as it found them, and reports", function()
    local a = appproc.start(t.url)
    finally(function() appproc.stop(a) end)
    local before = connection_statuses(t.conn)
    local dir = sh.tmpdir()
    local r = smoke(t, a, { "--report-json", dir .. "/smoke.json", "--report-junit", dir .. "/smoke.xml" }, config)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    for _, line in ipairs({ "1. Overview: /data loads without errors", "6 cards", "2. Provider detail",
      "messages in workspace", "google-ads: Connected -> Not Connected, restored to", "no errors",
      "smoke: ok" }) do
      assert.matches(line, r.stdout, 1, true)
    end
    -- the browser step's own summary line (its title says the same words)
    if HAVE_CHROMIUM then assert.matches("Z OK%s+no console errors %(", r.stdout) end
    assert.are.equal(before, connection_statuses(t.conn), "the Connection table is as it was")
    local doc = cjson.decode(sh.read(dir .. "/smoke.json"))
    assert.are.equal("ok", doc.status)
    assert.is_true(#doc.steps >= 10)
    assert.matches([[<testcase name="3. Chat: &apos;Show me my data&apos; gets an assistant reply"]],
      sh.read(dir .. "/smoke.xml"), 1, true)
  end)

  it("skips the connect test with --no-connect-test and the browser with --no-browser", function()
    local a = appproc.start(t.url)
    finally(function() appproc.stop(a) end)
    local r = smoke(t, a, { "--no-connect-test", "--no-browser" }, config)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: --no-connect-test", r.stdout, 1, true)
    assert.matches("skipped: --no-browser", r.stdout, 1, true)
  end)

  local broken = {
    { faults = "overview_500", message = "GET /data returned 500 (server error: see the app log)" },
    { faults = "missing_card:meta-ads", message = "provider card(s) missing on /data: Meta Ads" },
    { faults = "no_chat_reply", message = "the chat returned no assistant reply" },
    { faults = "log_constraint_violation", message = "FAILED: %d+ problem line%(s%) in %S+app%.log %(%d+ database "
      .. "constraint violations?%); first: a database constraint violation: ", pattern = true },
  }
  for _, case in ipairs(broken) do
    it("fails precisely when the app has " .. case.faults, function()
      local a = appproc.start(t.url, case.faults)
      finally(function() appproc.stop(a) end)
      local r = smoke(t, a, { "--no-browser" }, config)
      assert.are.equal(1, r.code, r.stdout .. r.stderr)
      if case.pattern then
        assert.matches(case.message, r.stdout .. r.stderr)
      else
        assert.matches("FAILED: " .. case.message, r.stdout .. r.stderr, 1, true)
      end
      if case.faults == "log_constraint_violation" then
        assert.matches("database constraint violation", r.stdout .. r.stderr, 1, true)
        assert.matches("ChatMessage_workspaceId_f", r.stdout .. r.stderr, 1, true)
      end
      assert.matches("smoke: %d+ of %d+ step%(s%) failed", r.stdout .. r.stderr)
    end)
  end

  it("fails when a new ChatMessage is stored with a NULL workspaceId", function()
    -- only possible while the column is nullable: after the emergency rollback
    local rt = dh.create("rolled_back")
    finally(function() dh.drop(rt) end)
    local a = appproc.start(rt.url, "chat_null_workspace")
    finally(function() appproc.stop(a) end)
    local r = smoke(rt, a, { "--no-browser", "--no-connect-test" }, config)
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("FAILED: ChatMessage %S+ was stored with NULL workspaceId", r.stdout .. r.stderr)
  end)

  it("fails on a console error in the page (headless Chromium)", function()
    if not HAVE_CHROMIUM then
      pending("Chromium is not installed")
      return
    end
    local a = appproc.start(t.url, "console_error")
    finally(function() appproc.stop(a) end)
    local r = smoke(t, a, { "--no-connect-test" }, config)
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches('FAILED: 1 console error(s) on /data; first: "Uncaught Error: DATAHUB_FAULTS=console_error',
      r.stdout .. r.stderr, 1, true)
  end)

  it("fails at once, and clearly, when the app is not running", function()
    local a = appproc.start(t.url)
    appproc.stop(a) -- its port is now closed
    local r = smoke(t, a, {}, config)
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local out = r.stdout .. r.stderr
    assert.matches("FAILED: GET " .. a.base .. "/health: connection refused (is the app running?)", out, 1, true)
    assert.matches("skipped: the app is not reachable (first check failed)", r.stdout, 1, true)
    -- every check after the failed health check is skipped, as the README says: none passed
    local after = r.stdout:match("%[1/%d+%] App is up.-\n(.*)$") or ""
    assert.is_nil(after:find("OK     ", 1, true), "no check passed after the failed health check:\n" .. after)
    assert.matches("5%. Logs: no errors since the smoke test started\n[^\n]*skipped: the app is not reachable", after)
  end)
end)

describe("release", function()
  it("deploys, starts the app, smoke-tests it, and rolls back when configured and the smoke fails", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local port = tostring(20000 + math.random(0, 20000))
    local logs = sh.tmpdir()
    local cfg = dh.config(nil, string.format([[
cfg.app = { start = { "node", "dist/src/server.js" }, url = "http://127.0.0.1:%s", log = "%s/app.log",
  env = { PORT = "%s", HOST = "127.0.0.1", APP_LOG = "%s/app.log", DATAHUB_FAULTS = "no_chat_reply" } }
cfg.app_dir = %q
cfg.commands = { build = { "sh", "-c", "echo Compiled successfully" } }
cfg.release = { on_smoke_failure = "rollback" }]], port, logs, port, logs, appproc.dir))
    -- the app needs the generated client of a built tree
    appproc.ensure_built(t.url)
    local r = dh.flow(t, "release", { "--no-browser", "--no-connect-test" }, { config = cfg })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("up: GET http://127.0.0.1:" .. port .. "/health -> 200", r.stdout, 1, true)
    assert.matches("FAILED: the chat returned no assistant reply", r.stdout .. r.stderr, 1, true)
    assert.matches("running the Emergency Rollback", r.stdout .. r.stderr, 1, true)
    assert.are.equal(0, dh.not_null_columns(t.conn), "rolled back: workspaceId nullable again")
    assert.are.equal("failed", t.conn:query_value("SELECT status FROM dhrun.runs ORDER BY id DESC LIMIT 1"))
  end)
end)
