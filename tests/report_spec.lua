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
  it("keeps a long backfill's batches bounded: merged neighbours, the same totals and rates", function()
    local dir = sh.tmpdir()
    -- 20,000 batches of two tables and a worker, as a long run emits them
    local script = sh.write(dir .. "/long.lua", [[
      local events = require "dhrun.events"
      local kept = events.collector()
      events.record(function(e) kept:add(e) end)
      for i = 1, 10000 do
        events.emit("batch", { t = i, table = "Task", pass = 1, batch = i, scanned = 100, updated = 90,
          seconds = 0.1, batch_size = i <= 5000 and 100 or 300, cursor = tostring(i) })
        events.emit("batch", { t = i + 0.5, table = "Log", pass = 1, worker = "2/2", batch = i, scanned = 50,
          updated = 50, seconds = 0.05, batch_size = 50 })
      end
      for i = 1, 2500 do events.emit("lock_wait", { t = 20000 + i, what = "x", attempt = i }) end
      -- past the cap: a wait that gave up and a DDL statement are still kept
      events.emit("lock_wait", { t = 30000, what = "x", attempt = 21, gave_up = true })
      events.emit("ddl", { t = 30001, table = "Task", step = "set_not_null", lockmode = "AccessExclusiveLock",
        seconds = 0.004, attempts = 3, sql = "ALTER TABLE ..." })
      events.record(nil)
      local list = kept:list()
      local n, sums, ordered = {}, {}, true
      for i, e in ipairs(list) do
        if e.kind == "batch" then
          n[e.table] = (n[e.table] or 0) + 1
          sums[e.table] = (sums[e.table] or 0) + e.batches
          sums[e.table .. ".scanned"] = (sums[e.table .. ".scanned"] or 0) + e.scanned
          sums[e.table .. ".rate"] = e.scanned / e.seconds
          sums[e.table .. ".last"] = e.cursor
          sums[e.table .. ".max"] = e.batch_size_max
        end
        if i > 1 and list[i - 1].t > e.t then ordered = false end
      end
      print(n.Task, n.Log, sums.Task, sums.Log, sums["Task.scanned"], sums["Log.scanned"],
        string.format("%.0f", sums["Task.rate"]), sums["Task.last"], sums["Task.max"], kept:dropped(), ordered)
      require("dhrun.report").write_html(arg[1], { flow = "deploy", status = "ok", steps = {}, events = list,
        events_dropped = kept:dropped() })
    ]])
    local r = sh.dhrun({ script, dir .. "/r.html" })
    assert.are.equal(0, r.code, r.stderr)
    local f = {}
    for w in r.stdout:gmatch("%S+") do f[#f + 1] = w end
    -- each table keeps between 100 and 200 entries, and they add up to every batch
    local kept_task, kept_log = tonumber(f[1]), tonumber(f[2])
    assert.is_true(kept_task >= 100 and kept_task < 200, r.stdout)
    assert.is_true(kept_log >= 100 and kept_log < 200, r.stdout)
    assert.are.same({ "10000", "10000", "1000000", "500000", "1000", "10000", "300", "1500", "true" },
      { table.unpack(f, 3) })
    local html = sh.read(dir .. "/r.html")
    assert.truthy(html:find("10000 batch(es), 1000000 row(s) visited", 1, true), "no totals in the report")
    assert.truthy(html:find("1500 later lock wait(s) or pause(s) not kept", 1, true),
      "no count of the events not kept")
    assert.truthy(html:find("(gave up)", 1, true), "the wait that gave up is not in the report")
    assert.truthy(html:find("set_not_null", 1, true), "the DDL statement is not in the report")
  end)
end)
