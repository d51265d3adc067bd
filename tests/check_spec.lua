-- dhrun.check and dhrun.report: recording results, errors and interrupts,
-- gates, the live lines and summary a user reads, and the JSON and JUnit
-- files CI reads (parsed back with cjson and expat).
local sh = require "sh"
local cjson = require "cjson"
local lxp = require "lxp"

local check = require "dhrun.check"
local log = require "dhrun.log"
local report = require "dhrun.report"
local sys = require "dhrun.core.sys"

-- Runs a script in a fresh dhrun; `check`, `log` and `sys` are in scope.
local function run(code, env)
  local e = { DHRUN_TTY = "0", DHRUN_LOG_LEVEL = "", DHRUN_COLOR = "", NO_COLOR = "" }
  for k, v in pairs(env or {}) do e[k] = v end
  local f = sh.tmpfile("script.lua", 'local check = require "dhrun.check"; local log = require "dhrun.log"; '
    .. 'local sys = require "dhrun.core.sys"\n' .. code)
  return sh.dhrun({ f }, { env = e })
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]*\n") do t[#t + 1] = l:sub(1, -2) end
  return t
end

-- Off a terminal: strips "<timestamp> " from each log line.
local function unstamped(s)
  local t = {}
  for _, l in ipairs(lines(s)) do
    t[#t + 1] = (l:gsub("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ ", ""))
  end
  return t
end

-- Parses XML with expat into {name=, attrs=, text=, children={...}};
-- fails the test if the document is not well-formed.
local function parse_xml(s)
  local root = { children = {} }
  local stack = { root }
  local parser = lxp.new({
    StartElement = function(_, name, attrs)
      local el = { name = name, attrs = attrs, text = "", children = {} }
      table.insert(stack[#stack].children, el)
      stack[#stack + 1] = el
    end,
    EndElement = function() stack[#stack] = nil end,
    CharacterData = function(_, text) stack[#stack].text = stack[#stack].text .. text end,
  })
  local ok, msg, line = parser:parse(s)
  if ok then ok, msg, line = parser:parse() end
  parser:close()
  assert(ok, "XML not well-formed: " .. tostring(msg) .. " at line " .. tostring(line) .. "\n" .. s)
  return root.children[1]
end

local function by_name(el, name)
  local t = {}
  for _, c in ipairs(el.children) do
    if c.name == name then t[#t + 1] = c end
  end
  return t
end

describe("dhrun.check", function()
  local level
  setup(function() level = log.set_level("quiet") end) -- in-process checks print nothing
  teardown(function() log.set_level(level) end)

  describe("recording", function()
    it("records pass, fail and skip from what the check returns, with durations", function()
      local s = check.suite("smoke")
      local ran = false
      assert.are.equal("pass", s:run("overview", function() sys.sleep(0.05) return true end))
      assert.are.equal("pass", s:run("with detail", function() return true, "3 rows" end))
      assert.are.equal("fail", s:run("insights", function() return false, "HTTP 500" end, { must = true }))
      assert.are.equal("fail", s:run("nil style", function() return nil, "no rows" end))
      assert.are.equal("skip", s:run("chat", function() ran = true return true end, { skip = "flag off" }))
      assert.is_false(ran)
      local r = s.results
      assert.are.equal(5, #r)
      assert.are.same({ "overview", "pass", false }, { r[1].name, r[1].status, r[1].must })
      assert.is_true(r[1].duration >= 0.05 and r[1].duration < 1, tostring(r[1].duration))
      assert.are.same({ "with detail", "pass", "3 rows" }, { r[2].name, r[2].status, r[2].detail })
      assert.are.same({ "insights", "fail", "HTTP 500", true }, { r[3].name, r[3].status, r[3].detail, r[3].must })
      assert.are.same({ "fail", "no rows" }, { r[4].status, r[4].detail })
      assert.are.same({ "chat", "skip", "flag off" }, { r[5].name, r[5].status, r[5].detail })
      assert.is_nil(r[5].duration)
      assert.are.same({ passed = 2, failed = 2, skipped = 1, total = 5 }, s:counts())
      assert.is_false(s:ok())
    end)

    it("fails a check that returns nothing or a non-boolean (a forgotten return never passes)", function()
      local s = check.suite("lazy")
      assert.are.equal("fail", s:run("no return", function() end))
      assert.are.equal("fail", s:run("a count", function() return 5 end))
      assert.matches("returned nothing", s.results[1].detail, 1, true)
      assert.matches("returned a number, not true or false", s.results[2].detail, 1, true)
    end)

    it("turns a raised error into a failure with the error's text", function()
      local s = check.suite("errors")
      assert.are.equal("fail", s:run("boom", function() error("boom") end))
      assert.matches("check_spec%.lua:%d+: boom$", s.results[1].detail)
      s:run("db", function() error(sys.error("db", 1, "relation \"Insight\" does not exist")) end)
      assert.are.equal('relation "Insight" does not exist', s.results[2].detail)
      s:run("table", function() error({ message = "plain table" }) end)
      assert.are.equal("plain table", s.results[3].detail)
      assert.are.equal(3, s:counts().failed)
    end)

    it("re-raises the interrupt error untouched and records nothing", function()
      local s = check.suite("int")
      local interrupt = sys.error("interrupted", 130, "interrupted (Ctrl-C)")
      local ok, err = pcall(s.run, s, "slow", function() error(interrupt) end)
      assert.is_false(ok)
      assert.are.equal(interrupt, err)
      assert.are.equal(0, #s.results)
    end)

    it("records directly with pass, fail and skip", function()
      local s = check.suite("direct")
      s:pass("a")
      s:pass("b", "fine")
      s:fail("c", "broken", { must = true })
      s:skip("d", "not today")
      assert.are.same({ passed = 2, failed = 1, skipped = 1, total = 4 }, s:counts())
      assert.are.same({ "c", "fail", "broken", true }, { s.results[3].name, s.results[3].status, s.results[3].detail,
        s.results[3].must })
      assert.are.same({ "d", "skip", "not today" }, { s.results[4].name, s.results[4].status, s.results[4].detail })
    end)

    it("rejects misuse with a clear message", function()
      local s = check.suite("misuse")
      assert.has_error(function() s:run(nil, function() return true end) end,
        "bad argument #1 to 'run' (non-empty string expected, got nil)")
      assert.has_error(function() s:run("x", "not a function") end,
        "bad argument #2 to 'run' (function expected, got string)")
      assert.has_error(function() check.exit_code(s, {}) end,
        "bad argument #2 to 'exit_code' (check suite expected, got table)")
    end)

    it("gives exit code 0 when every suite is ok (skips are ok), else 1", function()
      local a, b = check.suite("a"), check.suite("b")
      a:pass("x")
      a:skip("y", "later")
      assert.are.equal(0, check.exit_code(a, b))
      b:fail("z", "no")
      assert.are.equal(1, check.exit_code(a, b))
      assert.are.equal(0, check.exit_code())
    end)
  end)

  describe("gate", function()
    it("passes when only optional checks failed", function()
      local s = check.suite("preflight")
      s:pass("db reachable", nil, { must = true })
      s:fail("disk space", "80% used")
      assert.is_true(s:gate())
    end)

    it("raises a check error, exit 1, naming the first failed must-pass check", function()
      local s = check.suite("preflight")
      s:fail("optional", "meh")
      s:fail("no NULL workspaceId", "MetricDaily: 12 rows", { must = true })
      s:fail("lock free", "held by pid 42", { must = true })
      local ok, err = pcall(s.gate, s)
      assert.is_false(ok)
      assert.are.equal("check", err.kind)
      assert.are.equal(1, err.exit)
      assert.are.equal("stopping: must-pass check 'no NULL workspaceId' failed: MetricDaily: 12 rows", err.message)
      assert.matches("1 other must-pass check of 'preflight' failed too ('lock free')", err.hint, 1, true)
    end)

    it("stops a script with exit 1 and the message and hint on stderr", function()
      local r = run([[
        local s = check.suite("preflight")
        s:run("migrations applied", function() return false, "2 pending" end, { must = true })
        s:gate()
        print("not reached")
      ]])
      assert.are.equal(1, r.code)
      assert.is_nil(r.stdout:find("not reached", 1, true))
      local err = lines(r.stderr)
      assert.are.equal("dhrun: stopping: must-pass check 'migrations applied' failed: 2 pending", err[1])
      assert.are.equal("dhrun: hint: no other must-pass check of 'preflight' failed; "
        .. "fix what this one reports, then run again (nothing after the gate ran)", err[2])
    end)
  end)

  describe("output", function()
    local script = [[
      local s = check.suite("smoke")
      s:run("overview page loads", function() return true end)
      io.stdout:write("-- between\n")
      s:run("insights list", function() return false, "HTTP 500" end)
      s:skip("chat", "feature flag off")
      s:summary()
      return check.exit_code(s)
    ]]

    it("prints each result as it completes, then one line per check and the summary", function()
      local r = run(script)
      assert.are.equal(1, r.code, r.stderr)
      local out = unstamped(r.stdout)
      assert.are.equal(8, #out, r.stdout)
      assert.matches("^INFO    PASS  overview page loads %(0%.%d%d s%)$", out[1])
      assert.are.equal("-- between", out[2]) -- the first line came before it: live
      assert.matches("^ERROR   FAIL  insights list: HTTP 500 %(0%.%d%d s%)$", out[3])
      assert.are.equal("INFO    SKIP  chat: feature flag off", out[4])
      assert.are.same({ out[1], out[3], out[4] }, { out[5], out[6], out[7] })
      assert.matches("^ERROR smoke: 1 passed, 1 failed, 1 skipped %(%d+%.%d%d s%)$", out[8])
    end)

    it("on a terminal prints bare lines with the status word coloured", function()
      local r = run(script, { DHRUN_TTY = "1" })
      local out = lines(r.stdout)
      assert.matches("^  \27%[32mPASS\27%[0m  overview page loads %(0%.%d%d s%)$", out[1])
      assert.matches("^  \27%[31mFAIL\27%[0m  insights list: HTTP 500 %(0%.%d%d s%)$", out[3])
      assert.are.equal("  \27[33mSKIP\27[0m  chat: feature flag off", out[4])
      assert.matches("^\27%[31msmoke: 1 passed, 1 failed, 1 skipped %(%d+%.%d%d s%)\27%[0m$", out[8])
      r = run(script, { DHRUN_TTY = "1", NO_COLOR = "1" })
      assert.matches("^  PASS  overview page loads %(0%.%d%d s%)\n", r.stdout)
      assert.matches("\n  FAIL  insights list: HTTP 500 %(0%.%d%d s%)\n", r.stdout)
    end)

    it("marks the summary ok when nothing failed", function()
      local r = run([[
        local s = check.suite("smoke")
        s:pass("a")
        s:summary()
      ]], { DHRUN_TTY = "1", NO_COLOR = "1" })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("\n✓ smoke: 1 passed, 0 failed, 0 skipped %(%d+%.%d%d s%)\n$", r.stdout)
    end)

    it("stops at Ctrl-C inside a check: exit 130, the check not recorded as failed", function()
      local r = run([[
        local s = check.suite("release")
        s:run("first", function() return true end)
        s:run("slow", function()
          os.execute("(sleep 0.3; kill -INT " .. sys.pid() .. ") &")
          sys.sleep(10)
          return true
        end)
        print("not reached")
      ]])
      assert.are.equal(130, r.code)
      assert.are.equal("dhrun: interrupted (Ctrl-C)\n", r.stderr)
      local out = unstamped(r.stdout)
      assert.are.equal(1, #out, r.stdout)
      assert.matches("PASS  first", out[1], 1, true)
    end)
  end)
end)

describe("dhrun.report", function()
  local level
  setup(function() level = log.set_level("quiet") end)
  teardown(function() log.set_level(level) end)

  local function sample_suite()
    local s = check.suite("smoke")
    s:run("overview page loads", function() return true end)
    s:run("insights <list> & \"chat\" 'ok'", function() return false, "a < b & c > d \"q\" 'a'\1\2 end" end)
    s:skip("exports", "not on staging")
    return s
  end

  it("writes a JSON report that parses back with the results", function()
    local dir = sh.tmpdir()
    local s = sample_suite()
    assert.is_true(s:report_json(dir .. "/smoke.json"))
    assert.is_nil(sh.read(dir .. "/smoke.json.tmp"))
    local t = cjson.decode(sh.read(dir .. "/smoke.json"))
    assert.are.equal("smoke", t.suite)
    assert.is_false(t.ok)
    assert.are.same({ 1, 1, 1, 3 }, { t.passed, t.failed, t.skipped, t.total })
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", t.started_at)
    assert.are.equal(3, #t.results)
    assert.are.same({ "overview page loads", "pass", false },
      { t.results[1].name, t.results[1].status, t.results[1].must })
    assert.are.equal("number", type(t.results[1].duration))
    assert.are.same({ "fail", "a < b & c > d \"q\" 'a'\1\2 end" }, { t.results[2].status, t.results[2].detail })
    assert.are.same({ "exports", "skip", "not on staging" },
      { t.results[3].name, t.results[3].status, t.results[3].detail })
  end)

  it("writes an empty list of results as a JSON array", function()
    local path = sh.tmpdir() .. "/empty.json"
    check.suite("empty"):report_json(path)
    assert.matches('"results": []', sh.read(path), 1, true)
    assert.is_true(cjson.decode(sh.read(path)).ok)
  end)

  it("writes JUnit XML that expat parses, with JUnit counts and escaped text", function()
    local path = sh.tmpdir() .. "/junit.xml"
    assert.is_true(sample_suite():report_junit(path))
    local root = parse_xml(sh.read(path))
    assert.are.equal("testsuites", root.name)
    assert.are.same({ "3", "1", "0", "1" }, { root.attrs.tests, root.attrs.failures, root.attrs.errors,
      root.attrs.skipped })
    assert.matches("^%d+%.%d%d%d$", root.attrs.time)
    local suite = by_name(root, "testsuite")[1]
    assert.are.same({ "smoke", "3", "1", "1" }, { suite.attrs.name, suite.attrs.tests, suite.attrs.failures,
      suite.attrs.skipped })
    local cases = by_name(suite, "testcase")
    assert.are.equal(3, #cases)
    assert.are.equal("smoke", cases[1].attrs.classname)
    assert.are.equal(0, #cases[1].children)
    assert.are.equal("insights <list> & \"chat\" 'ok'", cases[2].attrs.name)
    local failure = by_name(cases[2], "failure")[1]
    -- Control characters cannot be in XML 1.0 at all: removed.
    assert.are.equal("a < b & c > d \"q\" 'a' end", failure.attrs.message)
    assert.are.equal("a < b & c > d \"q\" 'a' end", failure.text)
    assert.are.equal("not on staging", by_name(cases[3], "skipped")[1].attrs.message)
  end)

  it("builds JUnit for several suites, with errors, output and awkward bytes", function()
    local xml = report.junit({
      { name = "preflight", cases = {
        { name = "a", time = 0.5, status = "pass", output = "line 1\nline 2 ]]> <tag>" },
        { name = "b", time = 1.25, status = "error", message = "first line\nsecond\tline\r\n" },
      } },
      { name = "smoke", time = 3, cases = {
        { name = "bad utf-8 \255 here", classname = "smoke.pages", status = "fail", message = "x" },
      } },
    })
    local root = parse_xml(xml)
    assert.are.same({ "3", "1", "1", "0", "4.750" }, { root.attrs.tests, root.attrs.failures, root.attrs.errors,
      root.attrs.skipped, root.attrs.time })
    local suites = by_name(root, "testsuite")
    assert.are.equal("1.750", suites[1].attrs.time) -- the sum of its cases when not given
    local a, b = table.unpack(by_name(suites[1], "testcase"))
    assert.are.equal("line 1\nline 2 ]]> <tag>", by_name(a, "system-out")[1].text)
    local e = by_name(b, "error")[1]
    assert.are.equal("first line", e.attrs.message)
    assert.are.equal("first line\nsecond\tline\r\n", e.text)
    local c = by_name(suites[2], "testcase")[1]
    assert.are.equal("bad utf-8 \u{FFFD} here", c.attrs.name)
    assert.are.equal("smoke.pages", c.attrs.classname)
    assert.has_error(function() report.junit({ { name = "x", cases = { { name = "y", status = "ok" } } } }) end)
  end)

  it("keeps a registered secret out of both report files", function()
    local secret = "Sup3r/s3cret&pw"
    log.secret(secret)
    local s = check.suite("secrets")
    s:run("connect", function() return false, "auth failed for postgres://app:" .. secret .. "@db/app" end)
    s:fail("url " .. secret, "again " .. secret)
    local dir = sh.tmpdir()
    s:report_json(dir .. "/r.json")
    s:report_junit(dir .. "/r.xml")
    local json, xml = sh.read(dir .. "/r.json"), sh.read(dir .. "/r.xml")
    for _, text in ipairs({ json, xml }) do
      assert.is_nil(text:find("s3cret", 1, true), text)
      assert.matches("auth failed for postgres://app:***@db/app", text, 1, true)
    end
    assert.are.equal("again ***", cjson.decode(json).results[2].detail)
    assert.are.equal("url ***", by_name(by_name(parse_xml(xml), "testsuite")[1], "testcase")[2].attrs.name)
  end)

  it("raises an io error (exit 2) when the report cannot be written, leaving no file", function()
    local dir = sh.tmpdir()
    local ok, err = pcall(report.write_json, dir .. "/missing/r.json", { a = 1 })
    assert.is_false(ok)
    assert.are.same({ "io", 2 }, { err.kind, err.exit })
    assert.are.equal("cannot write report " .. dir .. "/missing/r.json: No such file or directory", err.message)
    local r = run(string.format("require('dhrun.report').write_junit(%q, {})", dir .. "/missing/j.xml"))
    assert.are.equal(2, r.code)
    assert.matches("^dhrun: cannot write report .*/missing/j%.xml: No such file or directory\ndhrun: hint: ", r.stderr)
  end)

  it("leaves the previous report whole when writing the new one fails", function()
    local path = sh.tmpfile("r.json", '{"previous": true}\n')
    -- a file size limit of 0: the new file is created, its write fails
    local r = sh.run({ "sh", "-c", "trap '' XFSZ; ulimit -f 0; exec " .. sh.quote(sh.bin) .. " -e "
      .. sh.quote(string.format("require('dhrun.report').write_json(%q, { previous = false })", path)) })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("^dhrun: cannot write report " .. path:gsub("%p", "%%%0") .. ": File too large\n", r.stderr)
    assert.are.equal('{"previous": true}\n', sh.read(path))
    local left = {}
    for f in require("lfs").dir(path:match("^(.*)/")) do
      if f ~= "." and f ~= ".." then left[#left + 1] = f end
    end
    assert.are.same({ "r.json" }, left, "no temporary file left behind")
  end)

  it("refuses a value JSON cannot hold", function()
    assert.has_error(function() report.write_json(sh.tmpdir() .. "/f.json", { f = print }) end)
  end)
end)
