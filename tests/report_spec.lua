-- --report-html: the release report a team attaches to its change ticket.
-- One self-contained page, checked in a real headless Chromium.
local sh = require "sh"
local dh = require "datahub"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"
local testdb = require "testdb"
local browser = require "browser"

local function eventually(seconds, fn)
  local deadline = sys.now() + seconds
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.02)
  until sys.now() > deadline
end

describe("--report-html", function()
  it("writes one page: steps, backfill charts, lock waits with their blocker, ACCESS EXCLUSIVE holds", function()
    -- after migration #1: the backfill runs, then the NOT NULL step meets the lock
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local cfg, dir = dh.config(nil, "cfg.rollouts[1].batch = { size = 500, max = 500 }")
    local out = dir .. "/report.html"
    -- another session holds Insight: the NOT NULL step's first attempts time out and retry
    local blocker = t.connect()
    blocker:exec("BEGIN")
    blocker:exec('LOCK TABLE "Insight" IN ACCESS SHARE MODE')
    local log = dir .. "/out"
    local proc = process.spawn({ sh.bin, "deploy", "--no-build", "--config", cfg, "--report-html", out },
      { cwd = sh.root, env = { DATABASE_URL = t.url }, stdout = log, stderr = dir .. "/err" })
    assert.is_truthy(eventually(60, function() return (sh.read(dir .. "/err") or ""):find("retry 2/", 1, true) end),
      "deploy did not retry against the lock:\n" .. tostring(sh.read(log)) .. tostring(sh.read(dir .. "/err")))
    blocker:exec("COMMIT")
    blocker:close()
    local r = proc:wait(120)
    assert.are.equal(0, r.code, tostring(sh.read(log)) .. tostring(sh.read(dir .. "/err")))

    local html = assert(sh.read(out))
    assert.is_nil(html:find(testdb.password(), 1, true), "no password in the report")
    assert.is_nil(html:find("<script", 1, true), "no script")
    for _, ref in ipairs({ 'src="http', 'href="http', "url(http", "@import" }) do
      assert.is_nil(html:find(ref, 1, true), "nothing loaded from the network: " .. ref)
    end
    local page = browser.browse("file://" .. out) -- no network: everything the page needs is in it
    assert.are.same({}, page.console, "no console messages")
    assert.matches("dhrun deploy — Normal Deployment", page.dom, 1, true)
    assert.matches("ok, exit code 0", page.dom, 1, true)
    assert.are.equal(8, sh.count(page.dom, 'data-series="steps"'), "one bar per step")
    assert.is_true(sh.count(page.dom, 'data-series="rate:MetricDaily"') >= 10, "the rate chart has its points")
    assert.is_true(sh.count(page.dom, 'data-series="batch:MetricDaily"') >= 10, "the batch-size chart has its points")
    assert.matches('enforce NOT NULL on "public"."Insight" (step add_check)', page.dom, 1, true)
    assert.matches('(client backend, application "dhrun", idle in transaction, holds AccessShareLock on "Insight"',
      page.dom, 1, true)
    assert.matches("ACCESS EXCLUSIVE holds", page.dom, 1, true)
    assert.matches("set_not_null", page.dom, 1, true)
  end)

  it("lists the backfill's pauses for health signals: when, which table and signal, why, how long", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/write.lua", [[
      require("dhrun.report").write_html(arg[1], { flow = "deploy", status = "ok", steps = {}, events = {
        { kind = "batch", t = 0.5, table = "Task", scanned = 100, seconds = 0.1, batch_size = 100 },
        { kind = "throttle", t = 1.25, table = "Task", signal = "replica lag", value = 1.4, limit = 1,
          text = "replica lag 1.40 s > 1.00 s (replica standby1, 12.0 MB behind)", seconds = 3.5 },
      } })
    ]])
    local r = sh.dhrun({ script, dir .. "/r.html" })
    assert.are.equal(0, r.code, r.stderr)
    local html = sh.read(dir .. "/r.html")
    assert.matches("Pauses for health signals", html, 1, true)
    assert.matches("<td>Task</td><td>replica lag</td><td>replica lag 1.40 s &gt; 1.00 s (replica standby1, 12.0 MB "
      .. "behind)</td><td>3.5", html, 1, true)
  end)
end)
