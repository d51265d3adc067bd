-- dhrun.report: machine-readable reports (JSON, JUnit XML) for CI and for
-- the release record.
--
--   report.write_json(path, value)     -> true
--   report.junit(suites)               -> XML string
--   report.write_junit(path, suites)   -> true
--   report.array([t])                  -> t, marked to encode as a JSON array
--                                         even when empty
--
-- Every string goes through the secret redactor before it is encoded, and
-- files are written to a new file (random name, mode 0600, created
-- exclusively) and renamed, so a reader (or a crash) never sees half a
-- report and a planted symlink is never followed.  A file that cannot be written raises a dhrun.Error
-- (kind "io", exit 2).
local cjson = require "cjson"
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"

local report = {}

local redact = sys.redact
local format = string.format
local concat = table.concat

-- ------------------------------------------------------------------
-- Files

-- The report goes to a new file with a random name in the same directory,
-- created exclusively with mode 0600 (a symlink planted there beforehand is
-- never followed), then renamed over PATH.
local function write_atomic(path, text)
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", path end
  local tmp
  local function fail(err)
    if tmp then os.remove(tmp) end
    -- io's messages start with the file name; name the report instead.
    err = tostring(err)
    if tmp and err:sub(1, #tmp + 2) == tmp .. ": " then err = err:sub(#tmp + 3) end
    err = err:gsub("^.-XXXXXX: ", "")
    errors.io(format("cannot write report %s: %s", path, err), "check that the directory exists and is writable")
  end
  local f, err = sys.mkstemp((dir == "" and "/" or dir .. "/") .. "." .. base .. ".XXXXXX")
  if not f then fail(err) end
  tmp = err
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not ok then fail(werr) end
  if not closed then fail(cerr) end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then fail(rerr) end
  return true
end

-- ------------------------------------------------------------------
-- JSON
--
-- cjson encodes every scalar and string; this walk only adds what cjson
-- 2.1 lacks: sorted keys and indentation (reports diff cleanly), empty
-- arrays (report.array), redaction of each string before it is escaped (a
-- secret containing "/" would no longer match once cjson writes "\/"), and
-- integers beyond 2^53 written exactly.

local ARRAY_MT = { __name = "dhrun.report.array" }

function report.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

local function is_array(t)
  if getmetatable(t) == ARRAY_MT then return true end
  local n = #t
  if n == 0 then return false end
  local keys = 0
  for _ in pairs(t) do keys = keys + 1 end
  return keys == n
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  return a < b
end

-- cjson writes "/" as "\/"; undo that for readable paths.  Safe: a "\/"
-- in cjson's output is always an escaped slash, never the end of "\\".
local function string_json(s)
  return (cjson.encode(redact(s)):gsub("\\/", "/"))
end

local function encode(v, indent, seen)
  local t = type(v)
  if t == "string" then return string_json(v) end
  if math.type(v) == "integer" then return format("%d", v) end
  if t ~= "table" then return cjson.encode(v) end -- numbers, booleans, nil; cjson refuses the rest
  if seen[v] then error("report: cannot encode a table that contains itself", 0) end
  seen[v] = true
  local inner = indent .. "  "
  local parts, open, close = {}, "{", "}"
  if is_array(v) then
    open, close = "[", "]"
    for i = 1, #v do parts[i] = inner .. encode(v[i], inner, seen) end
  else
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" and type(k) ~= "number" then
        error(format("report: cannot encode a table key of type %s", type(k)), 0)
      end
      keys[#keys + 1] = k
    end
    table.sort(keys, key_order)
    for i, k in ipairs(keys) do
      parts[i] = inner .. string_json(tostring(k)) .. ": " .. encode(v[k], inner, seen)
    end
  end
  seen[v] = nil
  if #parts == 0 then return open .. close end
  return open .. "\n" .. concat(parts, ",\n") .. "\n" .. indent .. close
end

-- report.encode(value) -> JSON text with every string redacted first (cjson
-- escapes "/" and quotes, so redacting the encoded text could miss a secret).
function report.encode(value)
  return encode(value, "", {})
end

function report.write_json(path, value)
  if type(path) ~= "string" then
    error(format("bad argument #1 to 'write_json' (string expected, got %s)", type(path)), 2)
  end
  local ok, text = pcall(encode, value, "", {})
  if not ok then error("write_json: " .. tostring(text), 2) end
  return write_atomic(path, text .. "\n")
end

-- ------------------------------------------------------------------
-- JUnit XML

-- Replaces each byte that is not part of valid UTF-8 by U+FFFD, so the
-- document stays well-formed whatever a command printed.
local function valid_utf8(s)
  local parts, pos = {}, 1
  while true do
    local ok, bad = utf8.len(s, pos)
    if ok then
      parts[#parts + 1] = s:sub(pos)
      return concat(parts)
    end
    parts[#parts + 1] = s:sub(pos, bad - 1) .. "\u{FFFD}"
    pos = bad + 1
  end
end

local ESCAPES = {
  ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;",
  ["\r"] = "&#13;", -- a parser would turn a raw CR into LF
}
local ATTR_ESCAPES = { ["\t"] = "&#9;", ["\n"] = "&#10;" } -- attribute values are whitespace-normalised

-- Text content: redacted, valid UTF-8, without the control characters and
-- non-characters XML 1.0 forbids (they cannot even be written as &#n;).
local function xml_text(v)
  local s = valid_utf8(redact(tostring(v)))
  s = s:gsub("[\0-\8\11\12\14-\31]", ""):gsub("\239\191[\190\191]", "")
  return (s:gsub("[&<>\"'\r]", ESCAPES))
end

local function xml_attr(v)
  return (xml_text(v):gsub("[\t\n]", ATTR_ESCAPES))
end

local function seconds(t)
  return format("%.3f", tonumber(t) or 0)
end

local CASE_STATUS = { pass = true, fail = true, skip = true, error = true }

-- suites: { {name=, time=, cases = { {name=, classname=, time=, status=,
-- message=, output=} } } }; status is "pass", "fail", "skip" or "error".
function report.junit(suites)
  if type(suites) ~= "table" then
    error(format("bad argument #1 to 'junit' (table expected, got %s)", type(suites)), 2)
  end
  local total = { tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
  local out = {}
  for _, suite in ipairs(suites) do
    local n = { tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
    local cases = {}
    for _, c in ipairs(suite.cases or {}) do
      if not CASE_STATUS[c.status] then
        error(format("bad argument #1 to 'junit' (case '%s': status must be pass, fail, skip or error, got %s)",
          tostring(c.name), tostring(c.status)), 2)
      end
      n.tests = n.tests + 1
      n.time = n.time + (tonumber(c.time) or 0)
      local head = format('    <testcase name="%s" classname="%s" time="%s"', xml_attr(c.name or ""),
        xml_attr(c.classname or suite.name or ""), seconds(c.time))
      local inner = {}
      local message = c.message ~= nil and tostring(c.message) or nil
      if c.status == "fail" or c.status == "error" then
        local tag = c.status == "fail" and "failure" or "error"
        if c.status == "fail" then n.failures = n.failures + 1 else n.errors = n.errors + 1 end
        -- The attribute is the one-line summary CI shows; the body has it all.
        inner[#inner + 1] = format('      <%s message="%s" type="%s">%s</%s>', tag,
          xml_attr((message or ""):match("^[^\n]*")), tag, xml_text(message or ""), tag)
      elseif c.status == "skip" then
        n.skipped = n.skipped + 1
        inner[#inner + 1] = message and format('      <skipped message="%s"/>', xml_attr(message))
          or "      <skipped/>"
      end
      if c.output ~= nil then
        inner[#inner + 1] = "      <system-out>" .. xml_text(c.output) .. "</system-out>"
      end
      if #inner == 0 then
        cases[#cases + 1] = head .. "/>"
      else
        cases[#cases + 1] = head .. ">\n" .. concat(inner, "\n") .. "\n    </testcase>"
      end
    end
    local time = tonumber(suite.time) or n.time
    out[#out + 1] = format('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%s">',
      xml_attr(suite.name or ""), n.tests, n.failures, n.errors, n.skipped, seconds(time))
    for _, c in ipairs(cases) do out[#out + 1] = c end
    out[#out + 1] = "  </testsuite>"
    for k in pairs(total) do total[k] = total[k] + (k == "time" and time or n[k]) end
  end
  table.insert(out, 1, format('<testsuites tests="%d" failures="%d" errors="%d" skipped="%d" time="%s">',
    total.tests, total.failures, total.errors, total.skipped, seconds(total.time)))
  table.insert(out, 1, '<?xml version="1.0" encoding="UTF-8"?>')
  out[#out + 1] = "</testsuites>\n"
  return concat(out, "\n")
end

function report.write_junit(path, suites)
  if type(path) ~= "string" then
    error(format("bad argument #1 to 'write_junit' (string expected, got %s)", type(path)), 2)
  end
  return write_atomic(path, report.junit(suites))
end

return report
