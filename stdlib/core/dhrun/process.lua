--- dhrun.process: run programs (no shell unless asked), with timeouts that
-- take the whole process group down, bounded capture, live streaming of
-- redacted lines, and Ctrl-C forwarded to the child.
--
--   process.run(argv [, opts])      -> result  never raises for a failed child
--   process.shell(cmdline [, opts]) -> result  {"/bin/sh", "-c", cmdline}
--   process.must(argv [, opts])     -> result  raises a dhrun.Error (kind "process", exit 1) unless ok
--   process.spawn(argv [, opts])    -> proc    background child: pid, running, wait, kill, stop
--   process.which(name, ...)        -> path | nil  the first name found as a file on PATH
--   process.INHERIT, process.NULL              sentinels for stdin/stdout/stderr
--
-- opts: cwd, env = {NAME = "value" | false}, stdin = string | INHERIT | NULL (nil: /dev/null),
--   timeout (s), grace (s between SIGTERM and SIGKILL, default 3; also after Ctrl-C),
--   capture (default true), max_capture (bytes per stream, default 16 MiB; the last bytes are kept),
--   stream (echo lines, redacted, to dhrun's stdout/stderr), prefix, on_line(stream_name, line),
--   stdout / stderr = INHERIT | NULL | file path (appended) | nil (pipe).
-- result: ok, code, signal, signame, stdout, stderr, duration, timed_out, truncated, pid, argv, error.
--   ok is false after a timeout even if the child then exited 0.  stdout/stderr are "" when not
--   captured; they are the child's raw bytes (only streamed lines and error messages are redacted).
--   on_line gets raw lines too, and the final unterminated line at the end.
--
-- The C core (dhrun.core.process) forks and polls; lines, capture limits
-- and timeouts are handled here.
local core = require "dhrun.core.process"
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"

local concat = table.concat
local now, redact = sys.now, sys.redact

local process = {}

local function sentinel(name)
  return setmetatable({}, { __name = name, __tostring = function() return name end })
end
process.INHERIT = sentinel("process.INHERIT")
process.NULL = sentinel("process.NULL")

local DEFAULT_GRACE = 3
local DEFAULT_MAX_CAPTURE = 16 * 1024 * 1024
local TAIL_LINES = 20

---------------------------------------------------------------------------
-- Argument checking: misuse raises a string error at the caller's line.

local function is_sentinel(v) return v == process.INHERIT or v == process.NULL end

local checks = {
  cwd = function(v) return type(v) == "string" end,
  env = function(v) return type(v) == "table" end,
  stdin = function(v) return type(v) == "string" or is_sentinel(v) end,
  timeout = function(v) return type(v) == "number" and v >= 0 end,
  grace = function(v) return type(v) == "number" and v >= 0 end,
  capture = function(v) return type(v) == "boolean" end,
  max_capture = function(v) return math.type(v) == "integer" and v >= 0 end,
  stream = function(v) return type(v) == "boolean" end,
  prefix = function(v) return type(v) == "string" end,
  on_line = function(v) return type(v) == "function" end,
  stdout = function(v) return type(v) == "string" or is_sentinel(v) end,
  stderr = function(v) return type(v) == "string" or is_sentinel(v) end,
}
local expected = {
  cwd = "a string", env = "a table", stdin = "a string, process.INHERIT or process.NULL",
  timeout = "a number >= 0", grace = "a number >= 0", capture = "a boolean",
  max_capture = "an integer >= 0", stream = "a boolean", prefix = "a string", on_line = "a function",
  stdout = "a file path, process.INHERIT or process.NULL", stderr = "a file path, process.INHERIT or process.NULL",
}
local not_for_spawn = { capture = true, max_capture = true, timeout = true }

-- Raises `fname: msg` pointing at the caller's line (errors.misuse).
local misuse = errors.misuse

local function check_args(fname, argv, opts, background)
  if type(argv) ~= "table" then misuse(fname, "argv must be an array of strings, got " .. type(argv)) end
  if #argv == 0 then misuse(fname, "argv is empty (give at least the program name)") end
  local copy = {}
  for i = 1, #argv do
    local a = argv[i]
    if math.type(a) == "integer" then a = tostring(a) end
    if type(a) ~= "string" then
      misuse(fname, ("argv[%d] must be a string, got %s"):format(i, type(a)))
    elseif a:find("\0", 1, true) then
      misuse(fname, ("argv[%d] contains a NUL byte"):format(i))
    end
    copy[i] = a
  end
  if opts == nil then return copy, {} end
  if type(opts) ~= "table" then misuse(fname, "opts must be a table, got " .. type(opts)) end
  for k, v in pairs(opts) do
    if not checks[k] or (background and not_for_spawn[k]) then
      misuse(fname, ("unknown option '%s'"):format(tostring(k)))
    end
    if not checks[k](v) then
      misuse(fname, ("option '%s' must be %s, got %s"):format(k, expected[k], type(v)))
    end
  end
  for name, value in pairs(opts.env or {}) do
    if type(name) ~= "string" or name == "" or name:find("=", 1, true) then
      misuse(fname, ("env: bad variable name %q"):format(tostring(name)))
    end
    if type(value) ~= "string" and value ~= false then
      misuse(fname, ("env.%s must be a string or false, got %s"):format(name, type(value)))
    elseif value and value:find("\0", 1, true) then
      misuse(fname, ("env.%s contains a NUL byte"):format(name))
    end
  end
  return copy, opts
end

---------------------------------------------------------------------------
-- One output stream of a child: bounded capture, line splitting, streaming.

local Sink = {}
Sink.__index = Sink

local function new_sink(name, opts, capture)
  return setmetatable({
    name = name,
    capture = capture,
    max = opts.max_capture or DEFAULT_MAX_CAPTURE,
    parts = {}, head = 1, n = 0, size = 0, truncated = false,
    -- line mode: only when someone wants lines
    lines = opts.stream or opts.on_line ~= nil,
    stream = opts.stream and (name == "stdout" and io.stdout or io.stderr),
    prefix = opts.prefix or "",
    on_line = opts.on_line,
    pending = {}, pending_size = 0,
  }, Sink)
end

local escape -- dhrun.log's, loaded when a child's output is first streamed

function Sink:emit(line)
  if self.stream then
    escape = escape or require("dhrun.log").escape
    self.stream:write(self.prefix, escape(redact(line)), "\n")
  end
  if self.on_line then self.on_line(self.name, line) end
end

-- Splits a chunk into complete lines; keeps the unfinished end pending.
-- Memory stays bounded whatever the child writes:
--   * a carriage return starts the line over, as on a terminal, so a
--     progress bar ("\r 45%\r 46%...") keeps only what would be visible;
--   * a line longer than MAX_LINE is passed on in pieces of MAX_LINE bytes.
process.MAX_LINE = 65536

function Sink:add_pending(piece)
  -- a "\r" right before "\n" ends the line (CRLF); known only once the
  -- next byte is here
  if self.cr and #piece > 0 then self.pending, self.pending_size = {}, 0 end
  self.cr = false
  if piece:sub(-1) == "\r" then
    self.cr = true
    piece = piece:sub(1, -2)
  end
  local cr = piece:match("^.*()\r")
  if cr then
    self.pending, self.pending_size = {}, 0
    piece = piece:sub(cr + 1)
  end
  local max = process.MAX_LINE
  while self.pending_size + #piece > max do
    local take = max - self.pending_size
    self.pending[#self.pending + 1] = piece:sub(1, take)
    self:emit(concat(self.pending))
    self.pending, self.pending_size = {}, 0
    piece = piece:sub(take + 1)
  end
  if #piece > 0 then
    self.pending[#self.pending + 1] = piece
    self.pending_size = self.pending_size + #piece
  end
end

function Sink:split(chunk)
  local pos = 1
  while true do
    local nl = chunk:find("\n", pos, true)
    if not nl then break end
    self:add_pending(chunk:sub(pos, nl - 1))
    local line = concat(self.pending)
    self.pending, self.pending_size, self.cr = {}, 0, false
    self:emit(line)
    pos = nl + 1
  end
  if pos <= #chunk then self:add_pending(chunk:sub(pos)) end
end

function Sink:feed(chunk)
  if self.capture then
    -- keep the last `max` bytes: drop whole leading chunks that fall out
    self.n = self.n + 1
    self.parts[self.n] = chunk
    self.size = self.size + #chunk
    while self.head <= self.n and self.size - #self.parts[self.head] >= self.max do
      self.size = self.size - #self.parts[self.head]
      self.parts[self.head] = nil
      self.head = self.head + 1
      self.truncated = true
    end
  end
  if self.lines then self:split(chunk) end
  if self.stream then self.stream:flush() end
end

-- Flushes a final partial line; returns the captured text.
function Sink:finish()
  if #self.pending > 0 then
    local line = concat(self.pending)
    self.pending, self.pending_size = {}, 0
    self:emit(line)
    if self.stream then self.stream:flush() end
  end
  local s = concat(self.parts, "", self.head, self.n)
  if #s > self.max then
    s = s:sub(-self.max)
    self.truncated = true
  end
  if self.max == 0 then s = "" end
  return s
end

---------------------------------------------------------------------------
-- A running child: the core handle plus its two sinks.

local Job = {}
Job.__index = Job

-- Starts argv; returns a Job, or nil and a "could not start" result.
local function start(argv, opts, background)
  local copts = { cwd = opts.cwd, env = opts.env, grace = opts.grace or DEFAULT_GRACE }
  if opts.stdin == nil or opts.stdin == process.NULL then
    copts.stdin = "null"
  elseif opts.stdin == process.INHERIT then
    copts.stdin = "inherit"
  else
    copts.stdin, copts.input = "pipe", opts.stdin
  end
  local wants_lines = opts.stream or opts.on_line ~= nil
  for _, name in ipairs({ "stdout", "stderr" }) do
    local v = opts[name]
    if v == nil then
      -- a background child's pipe is only drained when its proc is used
      copts[name] = (background and not wants_lines) and "null" or "pipe"
    elseif v == process.INHERIT then
      copts[name] = "inherit"
    elseif v == process.NULL then
      copts[name] = "null"
    else
      copts[name], copts[name .. "_file"] = "file", v
    end
  end
  local started = now()
  local h, code, message = core.spawn(argv, copts)
  if not h then
    return nil, {
      ok = false, code = code, signal = nil, signame = nil, stdout = "", stderr = "",
      duration = now() - started, timed_out = false, truncated = false, pid = nil,
      error = redact(message),
    }
  end
  local capture = not background and opts.capture ~= false
  return setmetatable({
    h = h,
    grace = copts.grace,
    out = new_sink("stdout", opts, capture),
    err = new_sink("stderr", opts, capture),
    timed_out = false,
  }, Job)
end

-- Feeds the child's output to the sinks until it is finished (true) or
-- `deadline` (a sys.now() time; nil = no limit) passes (false).
function Job:pump(deadline)
  while true do
    local wait = deadline and math.max(deadline - now(), 0) or 3600
    local out, err, finished = self.h:step(wait)
    if out then self.out:feed(out) end
    if err then self.err:feed(err) end
    if finished then return true end
    if deadline and now() >= deadline then return false end
  end
end

-- SIGTERM to the group, `grace` seconds, then SIGKILL; the rest of the
-- group is SIGKILLed as soon as the child is gone.
function Job:terminate(grace)
  self.h:kill("TERM", true)
  if not self:pump(now() + grace) then
    self.h:kill("KILL", true)
    self:pump()
  end
end

function Job:result(argv)
  local code, signal, signame, duration = self.h:status()
  local stdout, stderr = self.out:finish(), self.err:finish()
  self.h:close()
  return {
    ok = code == 0 and not self.timed_out,
    code = code, signal = signal, signame = signame,
    stdout = stdout, stderr = stderr,
    duration = duration, timed_out = self.timed_out,
    truncated = self.out.truncated or self.err.truncated,
    pid = self.h:pid(), argv = argv,
    error = (code == nil and signal == nil) and "exit status lost (the child was reaped elsewhere)" or nil,
  }
end

local function run(fname, argv, opts)
  local args
  args, opts = check_args(fname, argv, opts, false)
  local job, failed = start(args, opts, false)
  if not job then
    failed.argv = argv
    return failed
  end
  -- only closed, never read: an error raised by on_line still stops the child
  local handle <close> = job.h -- luacheck: ignore 211
  local deadline = opts.timeout and now() + opts.timeout
  if not job:pump(deadline) then
    job.timed_out = true
    job:terminate(job.grace)
  end
  return job:result(argv)
end

---------------------------------------------------------------------------
-- Public API

--- process.run(argv [, opts]) -> result.  See the header of this file and
-- docs: opts cwd, env, stdin, timeout, grace, capture, max_capture, stream,
-- prefix, on_line, stdout, stderr.
function process.run(argv, opts)
  return run("process.run", argv, opts)
end

--- process.which(name, ...) -> the path of the first of the names found as a
-- file in a directory of PATH (PATH's order within each name), or nil.
function process.which(...)
  local lfs = require "lfs"
  for i = 1, select("#", ...) do
    local name = select(i, ...)
    if type(name) ~= "string" then
      error("process.which: names must be strings, got " .. type(name), 2)
    end
    for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
      if lfs.attributes(dir .. "/" .. name, "mode") == "file" then return dir .. "/" .. name end
    end
  end
  return nil
end

--- process.shell(cmdline [, opts]) -> result: runs cmdline with /bin/sh -c.
function process.shell(cmdline, opts)
  if type(cmdline) ~= "string" then
    error("process.shell: cmdline must be a string, got " .. type(cmdline), 2)
  end
  return run("process.shell", { "/bin/sh", "-c", cmdline }, opts)
end

local function last_lines(s, n)
  local lines = {}
  for line in s:gmatch("[^\n]*") do lines[#lines + 1] = line end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return concat(lines, "\n", math.max(#lines - n + 1, 1), #lines)
end

--- process.must(argv [, opts]) -> result, or raises a dhrun.Error
-- {kind = "process", exit = 1, message, output_tail, result}.
function process.must(argv, opts)
  local r = run("process.must", argv, opts)
  if r.ok then return r end
  local what = "'" .. concat(r.argv, " ", 1, #r.argv) .. "'"
  local message
  if r.error then
    message = r.error
  elseif r.timed_out then
    message = ("%s timed out after %gs"):format(what, opts.timeout)
  elseif r.signal then
    message = ("%s was killed by %s"):format(what, r.signame)
  else
    message = ("%s exited with code %d"):format(what, r.code)
  end
  local tail = r.stderr:find("%S") and r.stderr or r.stdout
  errors.raise("process", redact(message), {
    output_tail = redact(last_lines(tail, TAIL_LINES)),
    result = r,
  })
end

-- A background child.
local Proc = {}
Proc.__index = Proc

--- process.spawn(argv [, opts]) -> proc.  opts as run, minus capture,
-- max_capture and timeout.  stdout/stderr default to process.NULL unless a
-- file, stream or on_line is given; piped output is only read (streamed,
-- passed to on_line) while a proc method runs.
function process.spawn(argv, opts)
  local args
  args, opts = check_args("process.spawn", argv, opts, true)
  local job, failed = start(args, opts, true)
  if not job then
    failed.argv = argv
    errors.raise("process", failed.error, { result = failed })
  end
  return setmetatable({ job = job, argv = argv }, Proc)
end

function Proc:pid() return self.job.h:pid() end

--- proc:running() -> boolean (reads pending output first)
function Proc:running()
  if self.done then return false end
  self.job:pump(now())
  return self.job.h:running()
end

function Proc:_finish()
  self.done = self.done or self.job:result(self.argv)
  return self.done
end

--- proc:wait([timeout]) -> result, or nil, "timeout"
function Proc:wait(timeout)
  if self.done then return self.done end
  if not self.job:pump(timeout and now() + timeout) then return nil, "timeout" end
  return self:_finish()
end

--- proc:kill([sig = "TERM"]) -> boolean: signals the child's whole group
function Proc:kill(sig)
  if self.done then return false end
  return self.job.h:kill(sig or "TERM")
end

--- proc:stop([grace = 3]) -> result: SIGTERM, `grace` seconds, SIGKILL
function Proc:stop(grace)
  if self.done then return self.done end
  if grace ~= nil and (type(grace) ~= "number" or grace < 0) then
    error("proc:stop: grace must be a number >= 0, got " .. type(grace), 2)
  end
  if not self.job:pump(now()) then self.job:terminate(grace or self.job.grace) end
  return self:_finish()
end

function Proc:__close()
  self:stop()
end

-- __gc: the core handle's own finalizer stops a child still running
-- (SIGTERM, grace, SIGKILL) without calling back into Lua.

function Proc:__tostring()
  return ("process %d (%s)"):format(self:pid(), self.done and "exited" or "running")
end

return process
