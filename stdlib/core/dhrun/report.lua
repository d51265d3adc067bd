-- dhrun.report: machine-readable reports (JSON, JUnit XML) for CI and for
-- the release record.
--
--   report.write_json(path, value)     -> true
--   report.junit(suites)               -> XML string
--   report.write_junit(path, suites)   -> true
--   report.write_html(path, result)    -> true   the release report (a flow's result)
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

-- ------------------------------------------------------------------
-- HTML: the release report a team attaches to its change ticket.  One
-- self-contained page (inline CSS and SVG, no script, no network): the
-- steps on a timeline, the backfill's rate and batch size over time per
-- table, every lock wait with its blocker, the ACCESS EXCLUSIVE holds, and
-- the summary.  Built from the run's result (report.write_json's value).

local function h(v)
  return (redact(tostring(v == nil and "" or v)):gsub("[&<>\"']", {
    ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function num(x, digits)
  return format("%." .. (digits or 1) .. "f", x)
end

-- "12 ms", "3.4 s", "2m05s" ("" for nil): how runs and steps state durations.
function report.duration(sec)
  if not sec then return "" end
  if sec < 1 then return format("%d ms", math.floor(sec * 1000 + 0.5)) end
  if sec < 120 then return format("%.1f s", sec) end
  return format("%dm%02ds", math.floor(sec / 60), math.floor(sec % 60))
end
local dur = report.duration

local STATUS_COLOR = { ok = "#2e7d32", skipped = "#9e9e9e", planned = "#1565c0", failed = "#c62828",
  interrupted = "#ef6c00" }

-- A gantt of the steps: one row each, a bar from its start for its duration.
local function timeline_svg(steps, total)
  total = math.max(total or 0, 0.001)
  local W, row, left = 760, 22, 250
  local parts = { format('<svg class="chart" role="img" aria-label="steps timeline" width="%d" height="%d" '
    .. 'viewBox="0 0 %d %d">', W, row * #steps + 30, W, row * #steps + 30) }
  for i, st in ipairs(steps) do
    local y = (i - 1) * row + 4
    local x0 = left + (st.start or 0) / total * (W - left - 10)
    local w = math.max(2, (st.duration or 0) / total * (W - left - 10))
    parts[#parts + 1] = format('<text x="4" y="%d" class="label">%d. %s</text>', y + 13, st.seq,
      h(#st.title > 34 and st.title:sub(1, 33) .. "…" or st.title))
    parts[#parts + 1] = format('<rect class="bar point" data-series="steps" x="%.1f" y="%d" width="%.1f" '
      .. 'height="14" fill="%s"><title>%s: %s %s</title></rect>', x0, y, w,
      STATUS_COLOR[st.status] or "#555", h(st.title), h(st.status), h(dur(st.duration)))
  end
  parts[#parts + 1] = format('<text x="%d" y="%d" class="axis">0</text><text x="%d" y="%d" class="axis" '
    .. 'text-anchor="end">%s</text>', left, row * #steps + 24, W - 10, row * #steps + 24, h(dur(total)))
  parts[#parts + 1] = "</svg>"
  return table.concat(parts)
end

-- A line chart of points {x, y} with its axes' ranges.
local function line_svg(label, series, points, unit)
  local W, H, pad = 360, 160, 40
  if #points == 0 then return "" end
  -- x: seconds into the run, from this series' first point to its last
  local minx, maxx, maxy = math.huge, -math.huge, 0.001
  for _, p in ipairs(points) do
    minx, maxx, maxy = math.min(minx, p[1]), math.max(maxx, p[1]), math.max(maxy, p[2])
  end
  local span = math.max(maxx - minx, 0.001)
  local function X(x) return pad + (x - minx) / span * (W - pad - 10) end
  local function Y(y) return H - 20 - y / maxy * (H - 40) end
  local path, dots = {}, {}
  for i, p in ipairs(points) do
    path[#path + 1] = format("%s%.1f,%.1f", i == 1 and "M" or "L", X(p[1]), Y(p[2]))
    dots[#dots + 1] = format('<circle class="point" data-series="%s" cx="%.1f" cy="%.1f" r="2"><title>%s s: %s %s'
      .. '</title></circle>', h(series), X(p[1]), Y(p[2]), num(p[1]), num(p[2], 0), h(unit))
  end
  return format('<figure><figcaption>%s</figcaption><svg class="chart" role="img" aria-label="%s" width="%d" '
    .. 'height="%d" viewBox="0 0 %d %d"><line x1="%d" y1="%d" x2="%d" y2="%d" class="axisline"/>'
    .. '<line x1="%d" y1="10" x2="%d" y2="%d" class="axisline"/><text x="2" y="16" class="axis">%s</text>'
    .. '<text x="%d" y="%d" class="axis">%s s</text>'
    .. '<text x="%d" y="%d" class="axis" text-anchor="end">%s s</text><path d="%s" class="line"/>%s</svg></figure>',
    h(label), h(label), W, H, W, H, pad, H - 20, W - 10, H - 20, pad, pad, H - 20, h(num(maxy, 0)),
    pad, H - 6, h(num(minx)), W - 10, H - 6, h(num(maxx)), table.concat(path, " "), table.concat(dots))
end

local CSS = [[
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#212121;max-width:1100px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;
vertical-align:top}td:first-child{white-space:nowrap}th{background:#fafafa}.ok{color:#2e7d32}
.failed,.interrupted{color:#c62828;font-weight:600}
.skipped{color:#757575}.planned{color:#1565c0}.muted{color:#757575}code{font-size:12px;word-break:break-all}
.chart{background:#fcfcfc;border:1px solid #eee}.label,.axis{font-size:11px;fill:#424242}
.axisline{stroke:#bbb}.line{fill:none;stroke:#1565c0;stroke-width:1.5}.point{fill:#1565c0}
figure{display:inline-block;margin:0 16px 16px 0}figcaption{font-size:12px;color:#424242}
.verdict{font-size:16px;padding:8px 12px;border-radius:4px;display:inline-block;margin:8px 0}
.verdict.ok{background:#e8f5e9}.verdict.bad{background:#ffebee;color:#b71c1c}
]]

function report.html(result)
  local out = {}
  local function add(...) for _, x in ipairs({ ... }) do out[#out + 1] = x end end
  local ok = result.status == "ok"
  add("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    "<title>dhrun ", h(result.flow), " — ", h(result.project or ""), "</title><style>", CSS, "</style></head><body>")
  add("<h1>dhrun ", h(result.flow), " — ", h(result.title), result.dry_run and " (dry run)" or "", "</h1>")
  add("<div class=\"verdict ", ok and "ok" or "bad", "\">", ok and "✓ " or "✗ ", h(result.status or "?"),
    ", exit code ", h(result.exit_code), result.message and (": " .. h(result.message)) or "", "</div>")
  add("<table class=\"meta\"><tr><th>project</th><td>", h(result.project or "—"), "</td></tr>",
    "<tr><th>database</th><td><code>", h(result.database or "—"), "</code></td></tr>",
    "<tr><th>started</th><td>", h(result.started_at), " by ", h(result.user), "@", h(result.host), "</td></tr>",
    "<tr><th>duration</th><td>", h(dur(result.duration)), "</td></tr>",
    "<tr><th>run</th><td>", result.run_id and ("#" .. h(result.run_id) .. " in the journal (dhrun.runs)")
      or "<span class=\"muted\">not journaled</span>", "</td></tr>",
    "<tr><th>dhrun</th><td>", h(result.version), "</td></tr></table>")

  -- steps
  local steps = result.steps or {}
  add("<h2>Steps</h2>", timeline_svg(steps, result.duration))
  add("<table><tr><th>#</th><th>step</th><th>result</th><th>duration</th><th>detail</th></tr>")
  for _, st in ipairs(steps) do
    local detail = st.reason or (type(st.detail) == "table" and st.detail.summary) or st.plan or ""
    add("<tr><td>", h(st.seq), "</td><td>", h(st.title), "</td><td class=\"", h(st.status), "\">", h(st.status),
      "</td><td>", h(dur(st.duration)), "</td><td>", h(detail), "</td></tr>")
  end
  add("</table>")

  -- backfill
  local by_table, order = {}, {}
  local waits, ddl, throttles = {}, {}, {}
  for _, e in ipairs(result.events or {}) do
    if e.kind == "batch" then
      local name = tostring(e.table)
      if not by_table[name] then
        by_table[name] = { rate = {}, size = {}, rows = 0, n = 0 }
        order[#order + 1] = name
      end
      local tb = by_table[name]
      -- a long run's record merges neighbouring batches (dhrun.events.collector)
      tb.n, tb.rows = tb.n + (e.batches or 1), tb.rows + (e.scanned or 0)
      -- the last batch of a pass finds the end of the table: not a rate
      if (e.seconds or 0) > 0 and (e.scanned or 0) > 0 then
        tb.rate[#tb.rate + 1] = { e.t or 0, e.scanned / e.seconds }
        tb.size[#tb.size + 1] = { e.t or 0, e.batch_size or 0 }
      end
    elseif e.kind == "lock_wait" then
      waits[#waits + 1] = e
    elseif e.kind == "ddl" then
      ddl[#ddl + 1] = e
    elseif e.kind == "throttle" then
      throttles[#throttles + 1] = e
    end
  end
  add("<h2>Backfill</h2>")
  if #order == 0 then add("<p class=\"muted\">no backfill batch ran in this run</p>") end
  for _, name in ipairs(order) do
    local tb = by_table[name]
    add("<h3>", h(name), " <span class=\"muted\">", h(tb.n), " batch(es), ", h(tb.rows), " row(s) visited</span></h3>",
      line_svg(name .. ": rows/s per batch", "rate:" .. name, tb.rate, "rows/s"),
      line_svg(name .. ": batch size", "batch:" .. name, tb.size, "rows"))
  end

  if #throttles > 0 then
    add("<h3>Pauses for health signals</h3><table><tr><th>at</th><th>table</th><th>signal</th><th>why</th>",
      "<th>paused</th></tr>")
    for _, e in ipairs(throttles) do
      add("<tr><td>", h(num(e.t or 0)), " s</td><td>", h(e.table), "</td><td>", h(e.signal), "</td><td>", h(e.text),
        "</td><td>", h(num(e.seconds or 0)), " s</td></tr>")
    end
    add("</table>")
  end

  if (result.events_dropped or 0) > 0 then
    add("<p class=\"muted\">", h(result.events_dropped), " later lock wait(s) or pause(s) not kept (the report "
      .. "keeps the first 1,000 of each kind, and every DDL statement and every wait that gave up)</p>")
  end

  -- lock waits
  add("<h2>Lock waits and retries</h2>")
  if #waits == 0 then
    add("<p class=\"muted\">none: no statement waited out its lock_timeout</p>")
  else
    add("<table><tr><th>at</th><th>statement</th><th>attempt</th><th>lock_timeout</th><th>error</th>",
      "<th>blocked by</th></tr>")
    for _, w in ipairs(waits) do
      add("<tr><td>", h(num(w.t or 0)), " s</td><td><code>", h(w.what), "</code></td><td", w.gave_up and
        " class=\"failed\"" or "", ">", h(w.attempt), "/", h((w.retries or 0) + 1), w.gave_up and " (gave up)" or "",
        "</td><td>", h(w.lock_timeout), "</td><td>", h(w.error), "</td><td>", h(w.blockers or "—"), "</td></tr>")
    end
    add("</table>")
  end

  -- ACCESS EXCLUSIVE holds
  add("<h2>ACCESS EXCLUSIVE holds</h2>")
  local longest = 0
  local held = {}
  for _, d in ipairs(ddl) do
    if d.lockmode == "AccessExclusiveLock" then
      held[#held + 1] = d
      longest = math.max(longest, d.seconds or 0)
    end
  end
  if #held == 0 then
    add("<p class=\"muted\">none: no statement of this run took an ACCESS EXCLUSIVE lock through dhrun's online "
      .. "DDL</p>")
  else
    add("<p>", h(#held), " statement(s). The longest took ", h(dur(longest)), " including its lock waits and "
      .. "retries; it held the lock only in its last attempt, and no query queued behind one of its waits for "
      .. "longer than that wait's lock_timeout.</p>")
    add("<table><tr><th>at</th><th>table</th><th>step</th><th>took</th><th>attempts</th><th>statement</th></tr>")
    for _, d in ipairs(ddl) do
      add("<tr><td>", h(num(d.t or 0)), " s</td><td>", h(d.table), "</td><td>", h(d.step), "</td><td>",
        h(dur(d.seconds)), d.lockmode ~= "AccessExclusiveLock" and " <span class=\"muted\">(" .. h(d.lockmode)
        .. ", reads and writes go on)</span>" or "", "</td><td>", h(d.attempts), "</td><td><code>", h(d.sql),
        "</code></td></tr>")
    end
    add("</table>")
  end
  add("<p class=\"muted\">written by dhrun ", h(result.version), "</p></body></html>\n")
  return table.concat(out)
end

function report.write_html(path, result)
  return write_atomic(path, report.html(result))
end

return report
