-- dhrun.check: named suites of checks, printed live as they complete, with
-- gates (must-pass checks stop the run), a summary and JSON/JUnit reports.
--
--   local s = check.suite("smoke")
--   s:run(name, fn [, {must = true} | {skip = "reason"}]) -> "pass"|"fail"|"skip"
--       fn() returns true [, detail] to pass, false|nil, detail to fail; an
--       error counts as a failure (the interrupt error is re-raised)
--   s:pass(name [, detail])  s:fail(name, detail [, {must = true}])  s:skip(name, reason)
--   s:gate()  s:ok()  s:counts()  s:summary()  s:duration()  s.results
--   s:report_json(path)  s:report_junit(path)
--   check.exit_code(suite, ...) -> 0 | 1
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"
local log = require "dhrun.log"
local report = require "dhrun.report"

local check = {}

local format = string.format

local Suite = {}
Suite.__index = Suite

-- How each status is printed (see dhrun.log's styles): "  PASS  name (0.12 s)".
local STYLES = {
  pass = { severity = "info", label = "INFO", indent = "  ", mark = "PASS", sep = "  ", color = "green" },
  fail = { severity = "error", label = "ERROR", indent = "  ", mark = "FAIL", sep = "  ", color = "red" },
  skip = { severity = "info", label = "INFO", indent = "  ", mark = "SKIP", sep = "  ", color = "yellow" },
}
local SUMMARY_FAILED = { severity = "error", label = "ERROR", color = "red", whole = true }

local function line_text(r)
  local s = r.name
  if r.detail ~= nil and r.detail ~= "" then
    -- Continuation lines of a long detail (an SQL error) line up under the name.
    s = s .. ": " .. r.detail:gsub("\n", "\n        ")
  end
  if r.duration then s = s .. format(" (%.2f s)", r.duration) end
  return s
end

local function print_result(r)
  log._line(STYLES[r.status], line_text(r))
end

local function check_name(name, fname)
  if type(name) ~= "string" or name == "" then
    error(format("bad argument #1 to '%s' (non-empty string expected, got %s)", fname, type(name)), 3)
  end
end

local function record(self, name, status, detail, duration, must)
  local r = {
    name = name,
    status = status,
    detail = detail ~= nil and tostring(detail) or nil,
    duration = duration,
    must = must and true or false,
  }
  self.results[#self.results + 1] = r
  self.finished = sys.now()
  print_result(r)
  return status
end

function check.suite(name)
  check_name(name, "suite")
  local now = sys.now()
  return setmetatable({ name = name, results = {}, started = now, finished = now, started_at = sys.time() }, Suite)
end

local function is_interrupt(e)
  return type(e) == "table" and e.kind == "interrupted"
end

-- The text a raised error stands for: a plain table's message, anything else
-- through tostring (a dhrun.Error's __tostring gives where + message).
local function error_text(e)
  if type(e) == "table" and type(e.message) == "string" and getmetatable(e) == nil then return e.message end
  return tostring(e)
end

function Suite:run(name, fn, opts)
  check_name(name, "run")
  if opts ~= nil and type(opts) ~= "table" then
    error(format("bad argument #3 to 'run' (table expected, got %s)", type(opts)), 2)
  end
  opts = opts or {}
  if opts.skip then
    return record(self, name, "skip", opts.skip ~= true and opts.skip or nil, nil, opts.must)
  end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error(format("bad argument #2 to 'run' (function expected, got %s)", type(fn)), 2)
  end

  local traceback
  local started = sys.now()
  local res = table.pack(xpcall(fn, function(e)
    if not is_interrupt(e) then traceback = debug.traceback(nil, 2) end
    return e
  end))
  local duration = sys.now() - started

  if not res[1] then
    local e = res[2]
    if is_interrupt(e) then error(e, 0) end -- Ctrl-C stops the run, not just this check
    log.debug("check '%s' raised an error; %s", name, traceback or "")
    return record(self, name, "fail", error_text(e), duration, opts.must)
  end
  local ok, detail = res[2], res[3]
  if ok == true then return record(self, name, "pass", detail, duration, opts.must) end
  if ok == false or (ok == nil and res.n >= 2) then
    return record(self, name, "fail", detail, duration, opts.must)
  end
  -- Returning nothing, or a value that is not a boolean, is a mistake in
  -- the check; a release gate must not read it as a pass.
  local why = res.n == 1 and "the check returned nothing (return true to pass, or false, detail to fail)"
    or format("the check returned a %s, not true or false", type(ok))
  return record(self, name, "fail", why, duration, opts.must)
end

function Suite:pass(name, detail, opts)
  check_name(name, "pass")
  return record(self, name, "pass", detail, nil, opts and opts.must)
end

function Suite:fail(name, detail, opts)
  check_name(name, "fail")
  return record(self, name, "fail", detail, nil, opts and opts.must)
end

function Suite:skip(name, reason)
  check_name(name, "skip")
  return record(self, name, "skip", reason, nil, false)
end

function Suite:counts()
  local c = { passed = 0, failed = 0, skipped = 0, total = #self.results }
  local key = { pass = "passed", fail = "failed", skip = "skipped" }
  for _, r in ipairs(self.results) do
    c[key[r.status]] = c[key[r.status]] + 1
  end
  return c
end

function Suite:ok()
  return self:counts().failed == 0
end

-- Seconds from the suite's creation to its last recorded check.
function Suite:duration()
  return self.finished - self.started
end

-- Raises if a must-pass check failed; returns true otherwise.
function Suite:gate()
  local failed = {}
  for _, r in ipairs(self.results) do
    if r.status == "fail" and r.must then failed[#failed + 1] = r end
  end
  if #failed == 0 then return true end
  local first = failed[1]
  local msg = format("stopping: must-pass check '%s' failed", first.name)
  if first.detail ~= nil and first.detail ~= "" then msg = msg .. ": " .. first.detail end
  local names, hint = {}
  for i = 2, #failed do names[#names + 1] = "'" .. failed[i].name .. "'" end
  if #names == 0 then
    hint = format("no other must-pass check of '%s' failed; fix what this one reports, then run again "
      .. "(nothing after the gate ran)", self.name)
  else
    hint = format("%d other must-pass check%s of '%s' failed too (%s); the check list above has each detail",
      #names, #names == 1 and "" or "s", self.name, table.concat(names, ", "))
  end
  errors.raise("check", msg, { hint = hint, suite = self.name, check = first.name })
end

function Suite:summary()
  for _, r in ipairs(self.results) do print_result(r) end
  local c = self:counts()
  local line = format("%s: %d passed, %d failed, %d skipped (%.2f s)", self.name, c.passed, c.failed, c.skipped,
    self:duration())
  if c.failed == 0 then log.ok(line) else log._line(SUMMARY_FAILED, line) end
  return c.failed == 0
end

-- Durations in reports: milliseconds are plenty, and "0.12" diffs better
-- than "0.12000000476837".
local function rounded(seconds)
  return seconds and math.floor(seconds * 1000 + 0.5) / 1000
end

function Suite:report_json(path)
  local c = self:counts()
  local results = report.array()
  for i, r in ipairs(self.results) do
    results[i] = { name = r.name, status = r.status, detail = r.detail, duration = rounded(r.duration), must = r.must }
  end
  return report.write_json(path, {
    suite = self.name,
    ok = c.failed == 0,
    passed = c.passed, failed = c.failed, skipped = c.skipped, total = c.total,
    duration = rounded(self:duration()),
    started_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(self.started_at)),
    results = results,
  })
end

function Suite:report_junit(path)
  local cases = {}
  for i, r in ipairs(self.results) do
    cases[i] = { name = r.name, classname = self.name, time = r.duration, status = r.status, message = r.detail }
  end
  return report.write_junit(path, { { name = self.name, time = self:duration(), cases = cases } })
end

-- 0 when every suite is ok (skips are fine), else 1: `return check.exit_code(a, b)`.
function check.exit_code(...)
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    if getmetatable(s) ~= Suite then
      error(format("bad argument #%d to 'exit_code' (check suite expected, got %s)", i, type(s)), 2)
    end
    if not s:ok() then return 1 end
  end
  return 0
end

return check
