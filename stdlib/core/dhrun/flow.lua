-- dhrun.flow: the step runner every flow script uses.
--
--   local flow = require("dhrun.flow").new{ name = "deploy", title = "Normal Deployment" }
--   flow:step{ title = "Deploy migration #1", skip = function(ctx) ... end, run = function(ctx) ... end }
--   return flow:run(...)
--
-- What every flow gets:
--   * named steps with guards: skip(ctx) returns a reason and the step is
--     skipped with that reason printed;
--   * --dry-run: prints the plan (what would run or be skipped and why, and
--     each step's plan(ctx) text such as the SQL of pending migrations) and
--     changes nothing: only steps marked readonly run;
--   * a release lock (a PostgreSQL advisory lock held for the whole run): a
--     second flow exits with code 3 and says who holds it and since when;
--   * a journal in the database (dhrun.runs / dhrun.steps) and --resume,
--     which continues after the last step that completed;
--   * per-step timing, a final summary with what to do next, and JSON and
--     JUnit reports (--report-json PATH, --report-junit PATH);
--   * exit codes: 0 ok, 1 a step failed, 2 usage/config error, 3 lock busy,
--     4 database unreachable, 130 interrupted.
local sys = require "dhrun.core.sys"
local log = require "dhrun.log"
local config = require "dhrun.config"
local journal = require "dhrun.journal"
local errors = require "dhrun.errors"
local db = require "dhrun.db"
local report = require "dhrun.report"

local M = {}
M.RELEASE_LOCK = 1684566645 -- "dhru"

local Flow = {}
Flow.__index = Flow

local COMMON_OPTIONS = {
  { name = "config", arg = "PATH", help = "project config (default: dhrun.config.lua here or in a parent directory)" },
  { name = "dry-run", short = "n", help = "print the plan and change nothing" },
  { name = "resume", help = "continue the last unfinished run of this flow after its last completed step" },
  { name = "wait", arg = "SECONDS", help = "wait up to SECONDS for the release lock instead of exiting with code 3" },
  { name = "report-json", arg = "PATH", help = "write a JSON report of the run" },
  { name = "report-junit", arg = "PATH", help = "write a JUnit XML report of the run" },
  { name = "report-html", arg = "PATH", help = "write the release report: one self-contained HTML page" },
  { name = "verbose", short = "v", help = "debug output" },
  { name = "help", short = "h", help = "show this help" },
}

-- flow.new{name=, title=, description=, options={...},
--   config = "optional" (default: the project config is loaded when there
--     is one, else the flow runs without: ctx.cfg is nil) | "required" | false,
--   db = true (default: connect before the first step) | false,
--   preflight = {fn(ctx), ...} (after connecting, before the lock, the
--     journal or any step: raise to refuse; nothing has changed yet),
--   lock = true, journal = true, keep_going = false, confirm = fn(ctx),
--   next_ok = text|fn(ctx), next_fail = text|fn(ctx, step, err),
--   on_failure = fn(ctx, result), check_args = fn(args), setup = fn(ctx)}
function M.new(def)
  assert(type(def) == "table" and type(def.name) == "string", "flow.new{name=, title=}")
  local needs_config = def.config
  if needs_config == nil then
    needs_config = def.needs_config == false and false or "optional" -- needs_config: the old spelling
  end
  assert(needs_config == false or needs_config == "optional" or needs_config == "required",
    "flow.new: config must be \"optional\", \"required\" or false")
  local needs_db = def.db
  if needs_db == nil then needs_db = def.needs_db ~= false end
  local f = setmetatable({
    name = def.name, title = def.title or def.name, description = def.description,
    lock = def.lock ~= false, journal = def.journal ~= false, confirm = def.confirm,
    next_ok = def.next_ok, next_fail = def.next_fail, setup = def.setup, steps = {},
    keep_going = def.keep_going or false, on_failure = def.on_failure, check_args = def.check_args,
    options = {}, needs_config = needs_config, needs_db = needs_db, preflights = {},
  }, Flow)
  for _, p in ipairs(def.preflight or {}) do f:preflight(p) end
  for _, o in ipairs(COMMON_OPTIONS) do f.options[#f.options + 1] = o end
  for _, o in ipairs(def.options or {}) do f.options[#f.options + 1] = o end
  return f
end

-- Adds a step: {title=, skip=fn(ctx)->reason|nil, run=fn(ctx)->detail,
-- plan=fn(ctx)->text, readonly=bool, keep_going=bool (a failure is
-- counted but the next steps still run), hint=string|fn(ctx, err)->string}.
-- title may be a function(ctx) -> string (e.g. to name the rollout's
-- column); then `name` is the title --help shows.
function Flow:step(def)
  assert(type(def) == "table", "flow:step{title=, run=}")
  local shown = type(def.title) == "string" and def.title or def.name
  assert(type(def.title) == "string" or (type(def.title) == "function" and type(def.name) == "string"),
    "step needs a title (a string, or a function with a name = for --help)")
  assert(type(def.run) == "function", "step '" .. tostring(shown) .. "' needs a run function")
  self.steps[#self.steps + 1] = def
  return def
end

-- Adds a preflight: fn(ctx), run after connecting and before the release
-- lock, the journal or any step.  It raises to refuse the run (a config
-- error is exit 2: nothing was changed).  Preflights run in a dry run too.
function Flow:preflight(fn)
  assert(type(fn) == "function", "flow:preflight(fn)")
  self.preflights[#self.preflights + 1] = fn
  return self
end

-- While a script is loaded by Flow:include, flow:run(...) only hands back
-- the flow it defined.
local including = 0

-- The scripts being loaded, innermost last (the running script first).
local loading = {}

local function real(path)
  return sys.realpath(path) or path
end

-- The directories flow scripts are looked up in: the host's search path
-- (./scripts, $DHRUN_PATH, the installed scripts), as `dhrun --list` shows.
function M.search_path()
  return require("dhrun.searchpath").dirs()
end

-- Where flow `name` is: the including script's directory first, then the
-- search path.  With `after` (a real path), only the directories after the
-- one holding that file count: "the next one on the search path".
local function script_path(name, after)
  local dirs = {}
  if not after then
    local here = loading[#loading] and loading[#loading]:match("^(.*)/[^/]*$")
    if here then dirs[#dirs + 1] = here end
  end
  for _, d in ipairs(M.search_path()) do dirs[#dirs + 1] = d end
  local passed = after == nil
  for _, d in ipairs(dirs) do
    local p = d .. "/" .. name .. ".lua"
    local is_file = require("lfs").attributes(p, "mode") == "file"
    if is_file and passed and real(p) ~= after then return p end
    if is_file and not passed and real(p) == after then passed = true end
  end
  if after and not passed then
    -- the including script is not on the search path: the first other one
    for _, d in ipairs(dirs) do
      local p = d .. "/" .. name .. ".lua"
      if require("lfs").attributes(p, "mode") == "file" and real(p) ~= after then return p end
    end
  end
  return nil, "no " .. name .. ".lua in " .. table.concat(dirs, ", ")
end

local function load_flow(path)
  local chunk, lerr = loadfile(path, "t")
  if not chunk then errors.script(lerr) end
  including = including + 1
  loading[#loading + 1] = real(path)
  local ok, other = pcall(chunk)
  loading[#loading] = nil
  including = including - 1
  if not ok then error(other, 0) end
  if getmetatable(other) ~= Flow then
    errors.script(path .. " does not end with `return flow:run(...)`")
  end
  return other
end

-- Appends the steps of another flow script (e.g. "deploy"), so one run
-- (one lock, one journal) can chain flows.  Returns the included flow.
-- A script that finds itself (a project's scripts/deploy.lua including
-- "deploy") is an error: flow:include_next("deploy") is the way to wrap the
-- installed flow of the same name.
function Flow:include(name, opts)
  opts = opts or {}
  if loading[1] == nil then
    local script = sys.options().script
    if script and script ~= "-" then loading[1] = real(script) end
  end
  local path, err
  if opts.next then
    path, err = script_path(name, loading[#loading])
  else
    path, err = script_path(name)
  end
  if not path then
    if opts.optional then return nil end
    errors.usage("cannot include flow '" .. name .. "': " .. err)
  end
  for _, p in ipairs(loading) do
    if p == real(path) then
      errors.script(string.format("%s includes itself (flow:include(%q)); to wrap the installed %s flow under the "
        .. "same name use flow:include_next(%q)", path, name, name, name))
    end
  end
  local other = load_flow(path)
  for _, o in ipairs(other.options) do
    local known = false
    for _, mine in ipairs(self.options) do if mine.name == o.name then known = true end end
    if not known then self.options[#self.options + 1] = o end
  end
  for _, s in ipairs(other.steps) do
    local copy = setmetatable({}, { __index = s })
    if other.keep_going and s.keep_going == nil then copy.keep_going = true end
    copy.from = other.name
    self.steps[#self.steps + 1] = copy
  end
  if other.setup then
    local mine = self.setup
    self.setup = function(ctx)
      if mine then mine(ctx) end
      other.setup(ctx)
    end
  end
  for _, p in ipairs(other.preflights) do
    local known = false
    for _, mine in ipairs(self.preflights) do if mine == p then known = true end end
    if not known then self.preflights[#self.preflights + 1] = p end
  end
  if other.needs_config == "required" then self.needs_config = "required" end
  return other
end

-- Like include, but takes the next flow of that name on the search path
-- after the running script: a project's scripts/deploy.lua can wrap the
-- installed deploy with flow:include_next("deploy").
function Flow:include_next(name)
  return self:include(name, { next = true })
end

local function usage_error(msg, hint)
  errors.usage(msg, hint)
end

function Flow:help()
  local lines = { string.format("usage: dhrun %s [options]", self.name), "", self.title }
  if self.description then lines[#lines + 1] = self.description end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "steps:"
  for i, s in ipairs(self.steps) do
    lines[#lines + 1] = string.format("  %d. %s", i, type(s.title) == "string" and s.title or s.name)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  for _, o in ipairs(self.options) do
    local flag = "--" .. o.name .. (o.arg and ("=" .. o.arg) or "")
    if o.short then flag = "-" .. o.short .. ", " .. flag end
    lines[#lines + 1] = string.format("  %-26s %s", flag, o.help or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit codes: 0 ok, 1 a step or check failed, 2 usage/config error, 3 another run holds the"
  lines[#lines + 1] = "release lock, 4 database unreachable, 130 interrupted (--resume continues)"
  return table.concat(lines, "\n")
end

-- A resumed run goes on as the run it resumes was going: the values that
-- run was given (its throttling: --batch-size 2000, --pause 0.3; its
-- --rollout) are carried into `args` unless given again.  Not carried: on/off
-- flags (one could not be turned off again: --no-build would skip the build
-- for good), what concerns this invocation only (--wait, the reports,
-- --config, which was loaded already) and a value the journal holds masked.
-- Returns the carried options as argv words, or nil and why none could be.
local NOT_CARRIED = { ["report-json"] = true, ["report-junit"] = true, ["report-html"] = true, wait = true,
                      config = true }

function Flow:_carry_options(args, last)
  local ok, list = pcall(require("cjson").decode, last.args_json or "null")
  if not ok or type(list) ~= "table" then return {} end
  local parsed_ok, before = pcall(self.parse, self, list)
  if not parsed_ok then return nil, tostring(type(before) == "table" and before.message or before) end
  local carried = {}
  for _, o in ipairs(self.options) do
    local v = before[o.name]
    if o.arg and type(v) == "string" and args[o.name] == nil and not NOT_CARRIED[o.name]
        and not v:find("***", 1, true) then
      args[o.name] = v
      carried[#carried + 1], carried[#carried + 2] = "--" .. o.name, v
    end
  end
  return carried
end

-- Parses flow arguments; unknown flags are an error (never ignored).
function Flow:parse(argv)
  local by_name, by_short, args = {}, {}, {}
  for _, o in ipairs(self.options) do
    by_name[o.name] = o
    if o.short then by_short[o.short] = o end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, value
    if a:match("^%-%-[^=]+=") then
      name, value = a:match("^%-%-([^=]+)=(.*)$")
    elseif a:match("^%-%-.") then
      name = a:sub(3)
    elseif a:match("^%-%a$") then
      local o = by_short[a:sub(2)]
      if not o then usage_error(string.format("unknown option '%s' (see dhrun %s --help)", a, self.name)) end
      name = o.name
    else
      usage_error(string.format("unexpected argument '%s' (see dhrun %s --help)", a, self.name))
    end
    local o = by_name[name]
    if not o then
      local known = {}
      for k in pairs(by_name) do known[k] = true end
      local s = config.suggest(name, known)
      usage_error(string.format("unknown option '--%s'%s (see dhrun %s --help)", name,
        s and (" (did you mean '--" .. s .. "'?)") or "", self.name))
    end
    if o.arg then
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage_error(string.format("option --%s needs a value (%s)", name, o.arg)) end
      end
      -- checked now, not when first used (--wait only when the lock is busy)
      local n = o.arg == "SECONDS" and tonumber(value)
      if o.arg == "SECONDS" and not (n and n >= 0 and n < math.huge) then
        usage_error(string.format("--%s needs a number of seconds, not '%s'", name, value))
      end
      args[name] = value
    else
      if value ~= nil then usage_error(string.format("option --%s takes no value", name)) end
      args[name] = true
    end
    i = i + 1
  end
  return args
end

-- A short description of an error object, one line.
local function describe(err)
  if type(err) == "table" then return tostring(err.message or err) end
  return tostring(err)
end

local fmt_duration = report.duration
M.fmt_duration = fmt_duration

local function detail_summary(detail)
  if detail == nil then return nil end
  if type(detail) == "string" then return detail end
  if type(detail) == "table" then return detail.summary end
end

local function indent(text, prefix)
  return prefix .. tostring(text):gsub("\n", "\n" .. prefix)
end

-- Takes the release lock; returns true, or raises exit 3 saying who holds it.
local function take_release_lock(ctx, wait)
  local conn = ctx.conn
  if conn:try_advisory_lock(M.RELEASE_LOCK) then return true end
  if wait then
    local secs = tonumber(wait)
    if not secs or secs < 0 then usage_error("--wait needs a number of seconds, not '" .. tostring(wait) .. "'") end
    log.info("waiting up to %s for the release lock ...", fmt_duration(secs))
    local deadline = sys.now() + secs
    repeat
      sys.sleep(0.2)
      if conn:try_advisory_lock(M.RELEASE_LOCK) then return true end
    until sys.now() >= deadline
  end
  local who = journal.holder(conn, M.RELEASE_LOCK)
  local msg
  if who then
    msg = string.format("another dhrun run holds the release lock: %s (run #%s) by %s@%s, pid %s, since %s",
      who.flow, who.id, tostring(who.user_name), tostring(who.host), tostring(who.pid), who.started)
  else
    local h = conn:query_one([[SELECT a.pid, a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC',
        'YYYY-MM-DD HH24:MI:SS "UTC"') AS since FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objid = $1 AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1]], M.RELEASE_LOCK)
    msg = "another dhrun run holds the release lock"
    if h then msg = msg .. string.format(" (backend pid %s, %s, since %s)", h.pid, h.application_name, h.since) end
  end
  errors.raise("busy", msg, {
    hint = wait and "it was still running after --wait; nothing was changed by this run"
      or "wait for it to finish (or pass --wait SECONDS); nothing was changed by this run" })
end

local function git_revision(dir)
  local rev = os.getenv("DHRUN_GIT_REVISION")
  if rev and rev ~= "" then return rev end
  local ok, process = pcall(require, "dhrun.process")
  if not ok then return nil end
  local r = process.run({ "git", "-C", dir, "rev-parse", "--short=12", "HEAD" }, { capture = true })
  if r.ok then return (r.stdout:gsub("%s+$", "")) end
  return nil
end

-- TEST HOOK (fault injection, tests/faults_spec.lua), not a feature:
-- DHRUN_FAULT_KILL_AT="<flow>:<step number>" makes the runner SIGKILL itself
-- right before that step starts, i.e. after the previous step is journaled,
-- to reproduce `kill -9` at a step boundary.  Unset, it costs one getenv.
local function fault_kill_at(flow_name, seq)
  if os.getenv("DHRUN_FAULT_KILL_AT") ~= flow_name .. ":" .. seq then return end
  io.stdout:flush()
  require("dhrun.process").run({ "kill", "-KILL", tostring(sys.pid()) })
end

local function confirm(ctx, prompt)
  if ctx.args.yes then return true end
  if not sys.isatty("stdin") then
    errors.usage("refusing to " .. prompt.action .. " without confirmation: standard input is not a terminal",
      "pass --yes to confirm (nothing was changed)")
  end
  io.stdout:write(sys.redact(prompt.text), "\nType '", prompt.word, "' to continue, anything else to stop: ")
  io.stdout:flush()
  local answer = io.stdin:read("l")
  if answer ~= prompt.word then
    errors.usage("not confirmed: nothing was changed")
  end
  return true
end

-- Runs the flow with the script's arguments; returns the exit code.
function Flow:run(...)
  if including > 0 then return self end
  local argv = table.pack(...)
  -- a password inside an argument (--url https://user:pw@host) is masked in
  -- everything printed or journaled from here on
  for i = 1, argv.n do require("dhrun.secret").register_text(argv[i]) end
  local args = self:parse({ table.unpack(argv, 1, argv.n) })
  if args.help then
    print(self:help())
    return 0
  end
  if args.verbose then log.set_level("debug") end
  -- argument problems are reported before anything connects or locks
  if self.check_args then self.check_args(args) end
  for _, opt in ipairs({ "report-json", "report-junit", "report-html" }) do
    local path = args[opt]
    if path then
      local dir = path:match("^(.*)/[^/]*$") or "."
      local lfs = require "lfs"
      if lfs.attributes(dir, "mode") ~= "directory" then
        usage_error(string.format("--%s %s: directory %s does not exist", opt, path, dir))
      end
      if lfs.attributes(path, "mode") == "directory" then
        usage_error(string.format("--%s %s: that is a directory; give a file name", opt, path))
      end
    end
  end
  local started = sys.now()
  local ctx = { flow = self, args = args, dry_run = args["dry-run"] or false, log = log, results = {} }
  if self.needs_config then ctx.cfg = config.load(args.config, self.needs_config == "optional") end
  if self.needs_db then
    ctx.conn = db.connect(ctx.cfg and ctx.cfg.database_url, { application_name = "dhrun" })
  end
  local _conn <close> = ctx.conn -- luacheck: ignore 211 (closed on every way out of run())
  -- --resume: the resumed run's values, before anything reads the options
  local carried, carry_problem = {}, nil
  if args.resume and ctx.conn and not args.help then
    local last = journal.last_run(ctx.conn, self.name)
    if last and last.status ~= "ok" then
      carried, carry_problem = self:_carry_options(args, last)
      if carried and #carried > 0 and self.check_args then self.check_args(args) end
    end
  end
  -- Preflights refuse before anything is locked, journaled or changed.
  for _, p in ipairs(self.preflights) do p(ctx) end
  -- Titles that name the project's settings (the rollout's column) are
  -- rendered once, now that the config and the database are known.
  local titles = {}
  for i, s in ipairs(self.steps) do
    titles[i] = type(s.title) == "function" and s.title(ctx) or s.title
  end
  local result = { flow = self.name, title = self.title, project = ctx.cfg and ctx.cfg.project,
    dry_run = ctx.dry_run, steps = report.array(), events = report.array(),
    database = ctx.conn and ctx.conn:info().url, started_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    user = sys.user(), host = sys.hostname(), version = sys.options().version }
  -- what happens inside the steps (batches, lock waits, DDL), for the reports
  local events = require "dhrun.events"
  -- bounded: a long backfill's batches are merged as they pile up
  local kept = events.collector()
  events.record(function(e) kept:add(e) end)

  local header = "dhrun " .. self.name .. " — " .. self.title
  if ctx.cfg then header = header .. " · " .. ctx.cfg.project end
  if ctx.conn then header = header .. " · " .. ctx.conn:info().url end
  if ctx.dry_run then header = header .. "  [dry run: nothing will be changed]" end
  log.info(header)

  -- Confirmation comes before the lock and the journal: a run that is not
  -- confirmed leaves no trace (and creates no journal schema).
  if self.confirm and not ctx.dry_run then
    local prompt = self.confirm(ctx)
    if prompt then confirm(ctx, prompt) end
  end

  local locked = false
  if ctx.conn and self.lock and not ctx.dry_run then
    take_release_lock(ctx, args.wait)
    locked = true
  end

  -- journal and resume
  local resume_done, resume_from = {}, nil
  if args.resume then
    local last = ctx.conn and journal.last_run(ctx.conn, self.name)
    if not last then
      usage_error("nothing to resume: the journal has no earlier run of " .. self.name
        .. " (run it without --resume)")
    end
    if last.status == "ok" then
      log.info("nothing to resume: run #%s of %s finished ok (%s)", last.id, self.name, last.started)
      return 0
    end
    resume_from = last.id
    for _, s in ipairs(last.steps) do
      local step = self.steps[s.seq]
      -- only work that was done is skipped; checks and preflights run again
      local done = s.status == "ok" or (s.status == "skipped" and (s.reason or ""):match("^done in run #"))
      if done and step and titles[s.seq] == s.name and not step.readonly then
        resume_done[s.seq] = s.reason and s.reason:match("^done in run #(%d+)$") or last.id
      end
    end
    log.info("resuming run #%s (%s, started %s by %s@%s)", last.id, last.status, last.started,
      tostring(last.user_name), tostring(last.host))
    if carried and #carried > 0 then
      log.info("with its options: %s (give one again to change it)", table.concat(carried, " "))
    elseif not carried then
      log.warn("the options of run #%s cannot be read (%s): this run goes on with its own only", last.id,
        tostring(carry_problem))
    end
  end
  if ctx.conn and self.journal and not ctx.dry_run then
    journal.ensure(ctx.conn)
    journal.close_abandoned(ctx.conn)
    ctx.run_id = journal.begin_run(ctx.conn, {
      flow = self.name, project = ctx.cfg and ctx.cfg.project, args = (function()
        local out = {}
        for i = 1, argv.n do out[i] = sys.redact(tostring(argv[i])) end
        -- with what --resume carried, so that a further resume finds them
        for _, w in ipairs(carried or {}) do out[#out + 1] = sys.redact(w) end
        return out
      end)(),
      git_revision = ctx.cfg and git_revision(ctx.cfg.app_dir), resumed_from = resume_from,
    })
    log.info("run #%s by %s@%s", ctx.run_id, sys.user(), sys.hostname())
  end
  result.run_id = ctx.run_id

  local function finish(status, code, message)
    events.record(nil)
    for _, e in ipairs(kept:list()) do result.events[#result.events + 1] = e end
    if kept:dropped() > 0 then result.events_dropped = kept:dropped() end
    result.status, result.exit_code, result.message = status, code, message
    result.duration = sys.now() - started
    if ctx.run_id then pcall(journal.end_run, ctx.conn, ctx.run_id, status, code, message) end
    if locked then pcall(ctx.conn.advisory_unlock, ctx.conn, M.RELEASE_LOCK) end
    local ok, err = pcall(self.write_reports, self, args, result)
    if not ok then
      -- a report that was asked for and not written is a failure (1: the
      -- flow's steps did run)
      log.error("could not write the report: %s", describe(err))
      if code == 0 then code = 1 end
    end
    return code
  end

  if self.setup then self.setup(ctx) end


  local n = #self.steps
  local counts = { ok = 0, skipped = 0, failed = 0, planned = 0 }
  for i, step in ipairs(self.steps) do
    fault_kill_at(self.name, i)
    local title = titles[i]
    local rec = { seq = i, title = title, start = sys.now() - started }
    result.steps[i] = rec
    log.info("[%d/%d] %s", i, n, title)
    local t0 = sys.now()
    local skip_reason
    if resume_done[i] then
      skip_reason = "done in run #" .. resume_done[i]
    elseif step.skip then
      local ok, reason = pcall(step.skip, ctx)
      if not ok then
        rec.status, rec.reason = "failed", describe(reason)
        counts.failed = counts.failed + 1
        return self:fail_step(ctx, rec, i, n, reason, finish, started)
      end
      skip_reason = reason or nil
    end
    if skip_reason then
      rec.status, rec.reason = "skipped", skip_reason
      counts.skipped = counts.skipped + 1
      log.info("      skipped: %s", skip_reason)
      if ctx.run_id then
        journal.step_start(ctx.conn, ctx.run_id, i, title)
        journal.step_end(ctx.conn, ctx.run_id, i, "skipped", skip_reason, nil, 0)
      end
    elseif ctx.dry_run and not step.readonly then
      rec.status = "planned"
      counts.planned = counts.planned + 1
      local plan = step.plan and step.plan(ctx)
      log.info("      would run%s", plan and ":" or "")
      if plan then log.info(indent(plan, "        ")) end
      rec.plan = plan
    else
      if ctx.run_id then journal.step_start(ctx.conn, ctx.run_id, i, title) end
      local ok, detail = pcall(step.run, ctx)
      local dt = sys.now() - t0
      rec.duration = dt
      if not ok then
        local interrupted = type(detail) == "table" and detail.kind == "interrupted"
        local keep_going = step.keep_going
        if keep_going == nil then keep_going = self.keep_going end
        if not keep_going or interrupted then
          return self:fail_step(ctx, rec, i, n, detail, finish, started)
        end
        rec.status, rec.reason = "failed", describe(detail)
        counts.failed = counts.failed + 1
        counts.first_error = counts.first_error or detail
        if ctx.run_id then
          pcall(journal.step_end, ctx.conn, ctx.run_id, i, "failed", rec.reason, type(detail) == "table" and {
            sqlstate = detail.sqlstate, code = detail.code, kind = detail.kind } or nil, dt)
        end
        log.error("      FAILED: %s", describe(detail))
        if type(detail) == "table" and detail.hint then log.error("      hint: %s", detail.hint) end
        goto continue
      end
      rec.status, rec.detail = "ok", detail
      counts.ok = counts.ok + 1
      ctx.results[i] = detail
      local summary = detail_summary(detail)
      log.ok("      %s (%s)", summary or "done", fmt_duration(dt))
      if ctx.run_id then journal.step_end(ctx.conn, ctx.run_id, i, "ok", summary, detail, dt) end
    end
    ::continue::
  end

  if counts.failed > 0 then
    local err = counts.first_error
    local code = type(err) == "table" and tonumber(err.exit) or 1
    log.error("%s: %d of %d step(s) failed (%s)", self.name, counts.failed, n, fmt_duration(sys.now() - started))
    if self.on_failure and not ctx.dry_run then self.on_failure(ctx, result) end
    local nxt = type(self.next_fail) == "function" and self.next_fail(ctx, nil, err) or self.next_fail
    if nxt then log.info("next: %s", nxt) end
    return finish("failed", code == 0 and 1 or code, describe(err))
  end

  local total = sys.now() - started
  if ctx.dry_run then
    log.info("%s: dry run — %d would run, %d skipped, nothing changed (%s)", self.name, counts.planned,
      counts.skipped, fmt_duration(total))
  else
    log.ok("%s: ok — %d done, %d skipped, 0 failed in %s", self.name, counts.ok, counts.skipped, fmt_duration(total))
    local nxt = type(self.next_ok) == "function" and self.next_ok(ctx) or self.next_ok
    if nxt then log.info("next: %s", nxt) end
  end
  return finish("ok", 0)
end

-- Records and reports a failed step; returns the exit code.
function Flow:fail_step(ctx, rec, i, n, err, finish, started)
  local step = self.steps[i]
  local interrupted = type(err) == "table" and err.kind == "interrupted"
  local code = type(err) == "table" and tonumber(err.exit) or 1
  local msg = describe(err)
  rec.status, rec.reason = interrupted and "interrupted" or "failed", msg
  if ctx.run_id then
    pcall(journal.step_end, ctx.conn, ctx.run_id, i, rec.status, msg, type(err) == "table" and {
      sqlstate = err.sqlstate, code = err.code, kind = err.kind } or nil, rec.duration)
  end
  local total = fmt_duration(sys.now() - started)
  if interrupted then
    log.error("      %s", msg:find("^interrupted") and msg or ("interrupted (" .. msg .. ")"))
    log.error("%s: stopped at step %d/%d (%s) after %s; the steps before it are complete", self.name, i, n,
      rec.title, total)
    log.info("next: dhrun %s --resume  (continues from step %d)", self.name, i)
    return finish("interrupted", code, msg)
  end
  log.error("      FAILED: %s", msg)
  if type(err) == "table" and err.detail then log.error("      detail: %s", err.detail) end
  local hint = type(step.hint) == "function" and step.hint(ctx, err) or step.hint
  if type(err) == "table" and err.hint then hint = hint and (err.hint .. "; " .. hint) or err.hint end
  if not hint and ctx.conn and ctx.conn:status() == "unknown" then
    hint = "the database connection was lost (server restart, or the session was terminated); once the server is "
      .. "back, run dhrun " .. self.name .. " again: completed steps and backfill batches are kept"
  end
  if hint then log.error("      hint: %s", hint) end
  if type(err) ~= "table" and sys.options().verbose then log.error(debug.traceback()) end
  log.error("%s: FAILED at step %d/%d (%s) after %s; the steps after it did not run", self.name, i, n,
    rec.title, total)
  local nxt = type(self.next_fail) == "function" and self.next_fail(ctx, i, err) or self.next_fail
  if nxt then log.info("next: %s", nxt) end
  return finish("failed", code == 0 and 1 or code, msg)
end

function Flow.write_reports(_, args, result)
  local path_json, path_junit, path_html = args["report-json"], args["report-junit"], args["report-html"]
  if not path_json and not path_junit and not path_html then return end
  if path_json then report.write_json(path_json, result) end
  if path_html then report.write_html(path_html, result) end
  if path_junit then
    local cases = {}
    for _, s in ipairs(result.steps) do
      local status = ({ ok = "pass", skipped = "skip", planned = "skip", failed = "fail", interrupted = "error" })[
        s.status] or "skip"
      cases[#cases + 1] = { name = s.title, classname = "dhrun." .. result.flow,
        time = s.duration or 0, status = status, message = s.reason }
    end
    report.write_junit(path_junit, { { name = result.flow, time = result.duration or 0, cases = cases } })
  end
end

return M
