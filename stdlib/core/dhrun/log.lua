-- dhrun.log: levelled log lines for the person at the terminal and for CI
-- logs and log files.
--
--   log.debug/info/ok/warn/error(fmt, ...)   string.format semantics; one
--                                            argument is printed verbatim
--   log.set_level(name) -> previous name;  log.level() -> name
--   log.secret(value) -> value               mask value in everything printed
--   log.to_file(path) -> true | nil, err;  log.close_file()
--   log.progress{label=, total=, unit=, interval=} -> p
--       p:update(done)  p:add([n])  p:finish([message])  p:fail([message])
--       p:note(text)    a detail shown at the end of the line ("batch 5,000"), nil to drop it
--   log.indented(prefix) -> a look-alike whose lines (and progress labels)
--                           start with prefix (under a flow's step); .prefix
--
-- debug/info/ok/progress go to stdout, warn/error to stderr.  On a terminal
-- lines are bare and coloured; anywhere else (a pipe, a CI log, the log file)
-- every line starts with an ISO-8601 UTC timestamp and the level, so a log
-- read after the fact says when each thing happened.  Every line passes
-- through the secret redactor, whatever its destination.
local sys = require "dhrun.core.sys"

local log = {}

local redact = sys.redact
local format = string.format

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40, quiet = 100 }
local LEVEL_NAMES = "debug, info, warn, error, quiet"

local COLORS = { dim = "2", red = "31", green = "32", yellow = "33" }
local CLEAR_LINE = "\r\27[K" -- back to column 0, erase to the end of the line

-- An empty variable counts as unset (`VAR= dhrun ...` is how people unset).
local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- ------------------------------------------------------------------
-- Destinations

-- DHRUN_TTY=1/0 lets tests (and odd setups such as `script`) decide.
local function is_tty(name)
  local forced = env("DHRUN_TTY")
  if forced == "1" then return true end
  if forced == "0" then return false end
  return sys.isatty(name)
end

-- DHRUN_COLOR=always beats NO_COLOR (a tool's own setting may override it,
-- https://no-color.org); NO_COLOR, when set and not empty, beats the tty.
local function wants_color(tty)
  local mode = env("DHRUN_COLOR")
  if mode == "always" then return true end
  if mode == "never" or env("NO_COLOR") then return false end
  return tty
end

local streams = {}
for _, name in ipairs({ "stdout", "stderr" }) do
  local tty = is_tty(name)
  streams[name] = { fh = io[name], tty = tty, color = wants_color(tty) }
end

local logfile       -- file handle from log.to_file, or nil
local shown         -- progress text drawn on the terminal without a newline
local shown_by      -- the progress object that drew it

-- ------------------------------------------------------------------
-- Level

local current = "info"
local bad_level = env("DHRUN_LOG_LEVEL")
if bad_level and LEVELS[bad_level:lower()] then
  current, bad_level = bad_level:lower(), nil
elseif sys.options().verbose then
  current = "debug"
end

local function enabled(severity)
  return LEVELS[severity] >= LEVELS[current]
end

-- ------------------------------------------------------------------
-- Formatting

local function paint(s, color, on)
  if not on or not color then return s end
  -- Per line, so a timestamp prefix added later is never inside the colour.
  return (s:gsub("[^\n]+", "\27[" .. COLORS[color] .. "m%0\27[0m"))
end

local function timestamp()
  local t = sys.time()
  local secs = math.floor(t)
  local ms = math.min(999, math.floor((t - secs) * 1000))
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. format(".%03dZ", ms)
end

-- "2026-11-25T00:43:47.123Z INFO  text", every line of text prefixed.
local function stamped(label, text)
  local prefix = timestamp() .. " " .. format("%-5s", label) .. " "
  return prefix .. text:gsub("\n", "\n" .. prefix) .. "\n"
end

-- A style says how one kind of line looks:
--   severity   level name used for filtering
--   stream     "stdout" (default) or "stderr"
--   label      level column off a terminal ("INFO", "WARN", ...)
--   mark       text before the message ("warning:", "✓", "PASS")
--   tty_only   the mark is shown on a terminal only (the label says it elsewhere)
--   color      colour of the mark, and of the whole line when `whole`
--   indent, sep  text before the mark / between mark and message
local function body(style, text, color_on, tty)
  if not (style.mark and (tty or not style.tty_only)) then
    return style.whole and paint(text, style.color, color_on) or text
  end
  local sep = style.sep or " "
  if style.whole then
    return (style.indent or "") .. paint(style.mark .. sep .. text, style.color, color_on)
  end
  return (style.indent or "") .. paint(style.mark, style.color, color_on) .. sep .. text
end

local write_file

-- Erases a progress line drawn on the terminal, writes, then redraws it, so
-- log lines and the progress line never end up on the same row.
local function to_stream(stream, s)
  local out = streams.stdout
  if stream ~= out then out.fh:flush() end -- keep stdout/stderr in order
  local redraw = shown and stream.tty
  if redraw then
    out.fh:write(CLEAR_LINE)
    out.fh:flush()
  end
  stream.fh:write(s)
  stream.fh:flush()
  if redraw then
    out.fh:write(shown)
    out.fh:flush()
  end
end

-- Writes one message (already formatted) in the given style.
local function emit(style, text)
  if not enabled(style.severity) then return end
  text = redact(text):gsub("\n+$", "")
  if logfile then write_file(style.label, body(style, text, false, false)) end
  local stream = streams[style.stream or "stdout"]
  if stream.tty then
    to_stream(stream, body(style, text, stream.color, true) .. "\n")
  else
    to_stream(stream, stamped(style.label, body(style, text, stream.color, false)))
  end
end

local STYLES = {
  debug = { severity = "debug", label = "DEBUG", mark = "debug:", tty_only = true, color = "dim", whole = true },
  info = { severity = "info", label = "INFO" },
  ok = { severity = "info", label = "OK", mark = "✓", tty_only = true, color = "green", whole = true },
  warn = { severity = "warn", stream = "stderr", label = "WARN", mark = "warning:", tty_only = true,
           color = "yellow", whole = true },
  error = { severity = "error", stream = "stderr", label = "ERROR", mark = "error:", tty_only = true,
            color = "red", whole = true },
}

function write_file(label, text)
  local ok, err = logfile:write(stamped(label, text))
  if not ok then
    -- A full disk must not stop a release; say so once and stop writing.
    logfile:close()
    logfile = nil
    emit(STYLES.warn, "log file: " .. tostring(err) .. "; no longer writing to it")
  end
end

-- log.escape(s [, keep_newlines]): control bytes as visible escapes
-- ("\x1b", "\u{9b}"), so text dhrun did not write itself (a database
-- error, a migration's directory name, a child's output) cannot set the
-- terminal's title, clear the screen, or start a line that looks like one
-- of dhrun's.  Tabs stay; newlines too with keep_newlines.
local CONTROL_NL = "[%z\1-\8\10-\31\127]"
local CONTROL = "[%z\1-\8\11-\31\127]"
local function hex(c) return format("\\x%02x", c:byte()) end
local function c1(c) return format("\\u{%x}", c:byte()) end
function log.escape(s, keep_newlines)
  s = tostring(s):gsub(keep_newlines and CONTROL or CONTROL_NL, hex)
  return (s:gsub("\194([\128-\159])", c1)) -- C1 controls, as UTF-8
end
local escape = log.escape

-- One argument: verbatim, control bytes escaped but for newlines (a plan
-- spans lines).  More: string.format, whose errors are the caller's (a bad
-- format in a debug call fails with or without -v); each string argument is
-- escaped whole, newlines too, so a value stays on its line.
local function message(fname, ...)
  local n = select("#", ...)
  if n == 0 then return "" end
  if n == 1 then return escape((...), true) end
  local args = table.pack(...)
  for i = 2, n do
    if type(args[i]) == "string" then args[i] = escape(args[i]) end
  end
  local ok, s = pcall(format, table.unpack(args, 1, n))
  if not ok then error(format("log.%s: %s", fname, s), 3) end
  return s
end

function log.debug(...) emit(STYLES.debug, message("debug", ...)) end
function log.info(...) emit(STYLES.info, message("info", ...)) end
function log.ok(...) emit(STYLES.ok, message("ok", ...)) end
function log.warn(...) emit(STYLES.warn, message("warn", ...)) end
function log.error(...) emit(STYLES.error, message("error", ...)) end

-- For dhrun.check: a line in a caller-made style (see `body` above).
function log._line(style, text)
  emit(style, text)
end

-- ------------------------------------------------------------------
-- Level, secrets, log file

function log.level()
  return current
end

function log.set_level(name)
  if LEVELS[name] == nil then
    error(format("bad argument #1 to 'set_level' (one of %s expected, got %s)", LEVEL_NAMES, tostring(name)), 2)
  end
  local previous = current
  current = name
  return previous
end

-- Returns the value, so `local pw = log.secret(os.getenv("PW"))` works;
-- nil (an unset variable) has nothing to hide.
function log.secret(value)
  if value ~= nil then sys.add_secret(tostring(value)) end
  return value
end

function log.to_file(path)
  if type(path) ~= "string" then
    error(format("bad argument #1 to 'to_file' (string expected, got %s)", type(path)), 2)
  end
  local f, err = io.open(path, "a")
  if not f then return nil, "cannot open log file " .. err end
  f:setvbuf("line") -- each line reaches the file at once, even if we crash
  if logfile then logfile:close() end
  logfile = f
  return true
end

function log.close_file()
  if logfile then
    logfile:close()
    logfile = nil
  end
end

if bad_level then
  log.warn("DHRUN_LOG_LEVEL=%s is not a log level (%s); using %s", bad_level, LEVEL_NAMES, current)
end

-- ------------------------------------------------------------------
-- Progress

local REDRAW_EVERY = 0.2 -- seconds between two redraws on a terminal

-- 1234567 -> "1,234,567"
local function count(n)
  local s = format("%d", math.floor(n + 0.5))
  local sign, digits = s:match("^(-?)(%d+)$")
  return sign .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

local function rate_text(r)
  if r < 10 then return format("%.1f", r) end
  return count(r)
end

local function duration(s)
  if s < 10 then return format("%.1fs", s) end
  if s < 60 then return format("%ds", math.floor(s)) end
  if s < 3600 then return format("%dm%02ds", math.floor(s / 60), math.floor(s % 60)) end
  return format("%dh%02dm", math.floor(s / 3600), math.floor(s % 3600 / 60))
end

local Progress = {}
Progress.__index = Progress

-- "1,234/10,000 rows (12.3%)" or "1,234 rows" without a total.
function Progress:amount()
  local s = count(self.done)
  if self.total then s = s .. "/" .. count(self.total) end
  s = s .. " " .. self.unit
  if self.total then
    local pct = self.total > 0 and self.done / self.total * 100 or 100
    s = s .. format(" (%.1f%%)", pct)
  end
  return s
end

-- The rate shown and the ETA come from a moving average weighted toward
-- recent updates (each sample weighs 1 - 2^(-dt/RATE_HALF_LIFE)), so a slow
-- start (a backfill's first small batches, a busy machine) does not keep
-- the ETA several times too high; before the first update after the start
-- there is no rate yet.
local RATE_HALF_LIFE = 3

function Progress:sample(now)
  local dt = now - self.last_t
  if dt <= 0 then return end
  local inst = (self.done - self.last_done) / dt
  if self.rate == nil then
    self.rate = inst
  else
    local w = 1 - 2 ^ (-dt / RATE_HALF_LIFE)
    self.rate = w * inst + (1 - w) * self.rate
  end
  self.last_t, self.last_done = now, self.done
end

-- Seconds left, or nil while unknown.
function Progress:eta()
  if not self.total then return nil end
  if self.done >= self.total then return 0 end
  if self.rate and self.rate > 0 then return (self.total - self.done) / self.rate end
  return nil
end

-- "label: 1,234/10,000 rows (12.3%), 456 rows/s, ETA 19s"
function Progress:text(now)
  local elapsed = now - self.started
  local rate = self.rate or (elapsed > 0 and self.done / elapsed or 0)
  local s = self.label .. ": " .. self:amount() .. ", " .. rate_text(rate) .. " " .. self.unit .. "/s"
  if self.total then
    if self.done >= self.total then
      s = s .. ", ETA 0s"
    elseif self:eta() then
      s = s .. ", ETA " .. duration(self:eta())
    else
      s = s .. ", ETA unknown"
    end
  end
  if self.detail then s = s .. ", " .. self.detail end
  return s
end

function Progress:note(text)
  if text ~= nil and type(text) ~= "string" then
    error("bad argument #1 to 'note' (string or nil expected, got " .. type(text) .. ")", 2)
  end
  self.detail = text
end

local function draw(p, text)
  shown, shown_by = CLEAR_LINE .. redact(text), p
  streams.stdout.fh:write(shown)
  streams.stdout.fh:flush()
end

local function erase()
  if shown then
    streams.stdout.fh:write(CLEAR_LINE)
    streams.stdout.fh:flush()
    shown, shown_by = nil, nil
  end
end

-- Shows the state if it is time: on a terminal a redraw at most every 0.2 s
-- (and the log file, if any, a line per interval); elsewhere a line per
-- interval.
function Progress:tick()
  if not enabled("info") then return end
  local now = self.clock()
  if streams.stdout.tty then
    if now - self.last_draw >= REDRAW_EVERY then
      self.last_draw = now
      draw(self, self:text(now))
    end
    if logfile and now - self.last_line >= self.interval then
      self.last_line = now
      write_file("INFO", redact(self:text(now)))
    end
  elseif now - self.last_line >= self.interval then
    self.last_line = now
    emit(STYLES.info, self:text(now))
  end
end

local function check_running(self, fname)
  if self.state ~= "running" then
    error(format("bad self to '%s' (progress '%s' already %s)", fname, self.label, self.state), 3)
  end
end

local function check_number(v, fname)
  if type(v) ~= "number" then
    error(format("bad argument #1 to '%s' (number expected, got %s)", fname, type(v)), 3)
  end
end

function Progress:update(done)
  check_running(self, "update")
  check_number(done, "update")
  self.done = done
  self:sample(self.clock())
  self:tick()
end

function Progress:add(n)
  check_running(self, "add")
  if n == nil then n = 1 end
  check_number(n, "add")
  self.done = self.done + n
  self:sample(self.clock())
  self:tick()
end

-- Finishing twice (or after fail) does nothing, so cleanup paths may call
-- it unconditionally.
function Progress:finish(msg)
  if self.state ~= "running" then return end
  self.state = "finished"
  local elapsed = self.clock() - self.started
  -- at the end the count is the truth; the total was the estimate to show
  -- progress against ("99/88 rows" helps nobody)
  local amount = count(self.done)
  local rate = elapsed > 0 and self.done / elapsed or 0
  if self == shown_by then erase() end
  emit(STYLES.ok, format("%s: %s, %s %s in %s (%s %s/s)", self.label, msg or "done", amount, self.unit,
    duration(elapsed), rate_text(rate), self.unit))
end

function Progress:fail(msg)
  if self.state ~= "running" then return end
  self.state = "failed"
  local elapsed = self.clock() - self.started
  if self == shown_by then erase() end
  local s = format("%s: failed after %s in %s", self.label, self:amount(), duration(elapsed))
  if msg ~= nil then s = s .. ": " .. tostring(msg) end
  emit(STYLES.error, s)
end

-- `local p <close> = log.progress{...}`: leaving the scope by an error marks
-- the progress failed with that error; leaving it normally finishes it.
function Progress:__close(err)
  if err ~= nil then self:fail(err) else self:finish() end
end

function log.progress(opts)
  if type(opts) ~= "table" or type(opts.label) ~= "string" then
    error("bad argument #1 to 'progress' (table with a string label expected)", 2)
  end
  if opts.total ~= nil and (type(opts.total) ~= "number" or opts.total < 0) then
    error("bad argument #1 to 'progress' (total must be a number >= 0)", 2)
  end
  local interval = opts.interval or 10
  if type(interval) ~= "number" or interval <= 0 then
    error("bad argument #1 to 'progress' (interval must be a number of seconds > 0)", 2)
  end
  -- opts.clock: a function returning seconds, for tests (sys.now)
  local clock = opts.clock or sys.now
  local now = clock()
  local p = setmetatable({
    label = opts.label, total = opts.total, unit = opts.unit or "items", interval = interval,
    done = 0, started = now, last_draw = -math.huge, last_line = now, state = "running",
    clock = clock, last_t = now, last_done = 0,
  }, Progress)
  p:tick() -- on a terminal, show it at once
  return p
end

-- A look-alike of this module whose lines sit under a flow's step.
function log.indented(prefix)
  local proxy = { prefix = prefix }
  for _, name in ipairs({ "debug", "info", "ok", "warn", "error" }) do
    proxy[name] = function(fmt, ...)
      if select("#", ...) == 0 then return log[name](prefix .. tostring(fmt)) end
      return log[name](prefix .. fmt, ...)
    end
  end
  proxy.progress = function(o)
    local copy = {}
    for k, v in pairs(o) do copy[k] = v end
    copy.label = prefix .. (o.label or "")
    return log.progress(copy)
  end
  return setmetatable(proxy, { __index = log })
end

return log
