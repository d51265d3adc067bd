-- dhrun.config: finds, loads and validates a project's dhrun.config.lua.
--
-- The config is a Lua file returning a table: trusted code, like a Makefile.
-- Core knows only its own keys (project, database_url, app_dir, env,
-- commands).  Recipes and flows register theirs, each with a schema:
--
--   local config = require "dhrun.config"
--   local T = config.types
--   config.define("smoke", T.record { user = T.string(), timeout = T.duration { default = "5s" } })
--
-- config.load validates every registered key once, before anything
-- connects: a wrong value is a config error (exit 2) naming the key, e.g.
-- "rollouts[1].batch.size must be an integer >= 1, not 0".  Unknown keys are
-- errors when they look like a typo of a registered key ("did you mean");
-- any other key is taken as one of a module or flow not loaded in this run
-- (an ad-hoc script reads a config written for the release flows), and it is
-- validated when that module runs.
--
-- Paths in the config are relative to the config file's directory.
local lfs = require "lfs"
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"

local M = {}

M.FILE = "dhrun.config.lua"

local function config_error(msg, hint)
  errors.raise("config", msg, { hint = hint })
end

---------------------------------------------------------------------------
-- Types: each is a table {check = function(v, ctx, path) -> value, doc =,
-- default =}.  check raises a config error naming `path`; it returns the
-- normalised value.  ctx = {dir = the config's directory, file = its path}.

local T = {}
M.types = T

local function bad(ctx, path, want, v)
  local shown = type(v) == "string" and string.format("%q", v) or tostring(v)
  if type(v) == "table" then shown = "a table" end
  config_error(string.format("%s: %s must be %s, not %s", ctx.file, path, want, shown))
end

local function make(doc, check, opts)
  opts = opts or {}
  return { doc = doc, check = check, default = opts.default, required = opts.required }
end

function T.any(opts)
  return make("any value", function(v) return v end, opts)
end

function T.string(opts)
  opts = opts or {}
  return make("a string", function(v, ctx, path)
    if type(v) ~= "string" then bad(ctx, path, "a string", v) end
    if opts.nonempty ~= false and v == "" then bad(ctx, path, "a non-empty string", v) end
    if opts.pattern and not v:match(opts.pattern) then bad(ctx, path, opts.what or "a valid value", v) end
    return v
  end, opts)
end

function T.boolean(opts)
  return make("true or false", function(v, ctx, path)
    if type(v) ~= "boolean" then bad(ctx, path, "true or false", v) end
    return v
  end, opts)
end

-- A number in [min, max]; integer = true for whole numbers.
function T.number(opts)
  opts = opts or {}
  local want = (opts.integer and "an integer" or "a number")
    .. (opts.min and (" >= " .. opts.min) or "") .. (opts.max and (" and <= " .. opts.max) or "")
  return make(want, function(v, ctx, path)
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then bad(ctx, path, want, v) end
    if opts.integer and math.type(v) ~= "integer" then
      if v % 1 ~= 0 then bad(ctx, path, want, v) end
      v = math.tointeger(v)
    end
    if (opts.min and v < opts.min) or (opts.max and v > opts.max) then bad(ctx, path, want, v) end
    return v
  end, opts)
end

function T.integer(opts)
  local o = { integer = true }
  for k, x in pairs(opts or {}) do o[k] = x end
  return T.number(o)
end

-- A duration: "300ms", "2s", "1.5s", "5min", or a whole number of
-- milliseconds.  Returned as PostgreSQL accepts it for lock_timeout
-- ("300ms").  seconds = true returns a number of seconds instead.
local UNIT_MS = { ms = 1, s = 1000, min = 60000 }
function M.parse_duration(v)
  if math.type(v) == "integer" and v >= 0 then return v end
  if type(v) ~= "string" then return nil end
  local n, unit = v:match("^%s*(%d+%.?%d*)%s*(%a+)%s*$")
  local f = unit and UNIT_MS[unit]
  if not f then return nil end
  local ms = tonumber(n) * f
  if ms ~= ms or ms == math.huge then return nil end
  return ms
end

function T.duration(opts)
  opts = opts or {}
  local want = "a duration such as \"300ms\", \"2s\" or \"1min\" (or a whole number of milliseconds)"
  return make(want, function(v, ctx, path)
    local ms = M.parse_duration(v)
    if not ms then bad(ctx, path, want, v) end
    if opts.seconds then return ms / 1000 end
    local whole = math.floor(ms)
    if whole ~= ms then bad(ctx, path, "a duration in whole milliseconds", v) end
    return string.format("%dms", whole)
  end, opts)
end

function T.enum(values, opts)
  local want = "one of " .. table.concat((function()
    local q = {}
    for i, x in ipairs(values) do q[i] = string.format("%q", x) end
    return q
  end)(), ", ")
  return make(want, function(v, ctx, path)
    for _, x in ipairs(values) do if v == x then return v end end
    bad(ctx, path, want, v)
  end, opts)
end

-- A file or directory path, made absolute against the config's directory.
function T.path(opts)
  return make("a path", function(v, ctx, path)
    if type(v) ~= "string" or v == "" then bad(ctx, path, "a path (string)", v) end
    if v:sub(1, 1) == "/" then return v end
    if v == "." then return ctx.dir end
    return ctx.dir .. "/" .. v
  end, opts)
end

-- An argv list: {"npm", "run", "build"}.
function T.argv(opts)
  local want = "an argv list such as {\"npm\", \"run\", \"build\"}"
  return make(want, function(v, ctx, path)
    if type(v) ~= "table" or #v == 0 then bad(ctx, path, want, v) end
    for k, x in pairs(v) do
      if math.type(k) ~= "integer" or type(x) ~= "string" then bad(ctx, path, want, v) end
    end
    return v
  end, opts)
end

-- A list of `item`s.
function T.list(item, opts)
  opts = opts or {}
  return make("a list", function(v, ctx, path)
    if type(v) ~= "table" then bad(ctx, path, "a list", v) end
    local n = #v
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > n then
        bad(ctx, path .. "[" .. tostring(k) .. "]", "an entry of a list (no named keys)", v[k])
      end
    end
    if opts.min and n < opts.min then
      config_error(string.format("%s: %s must list at least %d entr%s", ctx.file, path, opts.min,
        opts.min == 1 and "y" or "ies"))
    end
    local out = {}
    for i = 1, n do out[i] = item.check(v[i], ctx, path .. "[" .. i .. "]") end
    return out
  end, opts)
end

-- A table with string keys, each an `item`.
function T.map(item, opts)
  return make("a table", function(v, ctx, path)
    if type(v) ~= "table" then bad(ctx, path, "a table", v) end
    local out = {}
    for k, x in pairs(v) do
      if type(k) ~= "string" then bad(ctx, path, "a table with names as keys", v) end
      out[k] = item.check(x, ctx, path .. "." .. k)
    end
    return out
  end, opts)
end

-- Closest name in `known` (a set) to `name`, for "did you mean".
local function suggest(name, known)
  local best, best_d
  for k in pairs(known) do
    -- edits, with two swapped letters counted as one ("bacth")
    local a, b = name:lower(), k:lower()
    local la, lb = #a, #b
    local prev, older = {}, nil
    for j = 0, lb do prev[j] = j end
    for i = 1, la do
      local cur = { [0] = i }
      for j = 1, lb do
        local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        if older and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
          cur[j] = math.min(cur[j], older[j - 2] + 1)
        end
      end
      prev, older = cur, prev
    end
    local d = prev[lb]
    if not best_d or d < best_d or (d == best_d and k < best) then best, best_d = k, d end
  end
  if best_d and best_d <= math.max(1, math.min(3, #name // 3)) then return best end
end
M.suggest = suggest

local function unknown_key(ctx, where, key, fields)
  local s = type(key) == "string" and suggest(key, fields)
  config_error(string.format("%s: unknown setting '%s' in %s%s", ctx.file, tostring(key), where,
    s and (" (did you mean '" .. s .. "'?)") or ""),
    "the README's \"Project config\" section lists every setting")
end

-- A table with known fields; unknown keys are errors.  A field may be
-- required = true; defaults are filled in.  `validate(out, ctx, path)` runs
-- after the fields (cross-field rules).
function T.record(fields, opts)
  opts = opts or {}
  return make("a table", function(v, ctx, path)
    if type(v) ~= "table" then bad(ctx, path, "a table", v) end
    for k in pairs(v) do
      if not fields[k] then unknown_key(ctx, path, k, fields) end
    end
    local out = {}
    for k, f in pairs(fields) do
      local x = v[k]
      if x == nil then
        if f.required then config_error(string.format("%s: %s.%s is required (%s)", ctx.file, path, k, f.doc)) end
        if f.default ~= nil then x = f.check(f.default, ctx, path .. "." .. k) end
      else
        x = f.check(x, ctx, path .. "." .. k)
      end
      out[k] = x
    end
    if opts.validate then out = opts.validate(out, ctx, path) or out end
    return out
  end, opts)
end

-- Makes a type required (record fields).
function T.required(t)
  local c = {}
  for k, x in pairs(t) do c[k] = x end
  c.required = true
  return c
end

-- One of several shapes, tried in order (the first that accepts wins).
function T.either(a, b, opts)
  return make(a.doc .. " or " .. b.doc, function(v, ctx, path)
    local ok, out = pcall(a.check, v, ctx, path)
    if ok then return out end
    return b.check(v, ctx, path)
  end, opts)
end

---------------------------------------------------------------------------
-- The registry of top-level keys.

local KEYS = {}
local ORDER = {}

-- config.define(key, type [, {after = function(cfg, ctx)}]): registers a
-- top-level key.  Registering the same key twice with another type is an
-- error (two modules disagreeing); the same type again is fine.
function M.define(key, t, opts)
  assert(type(key) == "string" and type(t) == "table" and t.check, "config.define(key, type)")
  local old = KEYS[key]
  if old then
    if old.type ~= t then error("dhrun.config: key '" .. key .. "' is defined twice", 2) end
    return
  end
  KEYS[key] = { type = t, after = opts and opts.after }
  ORDER[#ORDER + 1] = key
end

-- Core's own keys.
M.define("project", T.string())
M.define("database_url", T.string())
M.define("app_dir", T.path { default = "." })
M.define("env", T.map(T.string()))
M.define("commands", T.map(T.argv()))

---------------------------------------------------------------------------
-- Finding and loading

-- Locates the config: explicit path, $DHRUN_CONFIG, or dhrun.config.lua in
-- the current directory or the nearest parent.  Returns nil when
-- `optional` and there is none.
function M.find(path, optional)
  path = path or os.getenv("DHRUN_CONFIG")
  if path and path ~= "" then
    if lfs.attributes(path, "mode") ~= "file" then
      config_error("config file " .. path .. " does not exist", "pass --config PATH to an existing " .. M.FILE)
    end
    return path
  end
  local dir = lfs.currentdir()
  while dir and dir ~= "" do
    local p = dir .. "/" .. M.FILE
    if lfs.attributes(p, "mode") == "file" then return p end
    if dir == "/" then break end
    dir = dir:match("^(.*)/[^/]*$")
    if dir == "" then dir = "/" end
  end
  if optional then return nil end
  config_error("no " .. M.FILE .. " in " .. lfs.currentdir() .. " or its parents",
    "run dhrun from your project directory, or pass --config PATH (the README's \"Project config\" shows one)")
end

-- Validates a config table (as a config file returns it) against the
-- registered keys.  Returns the normalised config.
function M.validate(raw, file, dir)
  local ctx = { file = file, dir = dir }
  if type(raw) ~= "table" then config_error(file .. " must return a table (got " .. type(raw) .. ")") end
  local known = {}
  for k in pairs(KEYS) do known[k] = true end
  local cfg = {}
  for k, v in pairs(raw) do
    if not KEYS[k] then
      local s = type(k) == "string" and suggest(k, known)
      if type(k) ~= "string" or s then unknown_key(ctx, "the config", k, known) end
      cfg[k] = v -- a key of a module or flow not loaded in this run
    end
  end
  for _, k in ipairs(ORDER) do
    local t = KEYS[k].type
    local v = raw[k]
    if v == nil then
      if t.required then config_error(string.format("%s: %s is required (%s)", file, k, t.doc)) end
      if t.default ~= nil then v = t.check(t.default, ctx, k) end
    else
      v = t.check(v, ctx, k)
    end
    cfg[k] = v
  end
  cfg.file, cfg.dir = file, dir
  cfg.project = cfg.project or dir:match("([^/]+)$")
  cfg.env = cfg.env or {}
  cfg.commands = cfg.commands or {}
  for _, k in ipairs(ORDER) do
    if KEYS[k].after then KEYS[k].after(cfg, ctx) end
  end
  return cfg
end

-- Loads and validates the config; returns a table with absolute paths and
-- defaults filled in, plus cfg.file and cfg.dir.  With `optional`, returns
-- nil when there is no config file at all.
function M.load(path, optional)
  local file = M.find(path, optional)
  if not file then return nil end
  local abs = sys.realpath(file) or file
  local dir = abs:match("^(.*)/[^/]*$") or "."
  -- The config is code that runs with the caller's rights (like a Makefile):
  -- refused when another user could have written it, as modules are.
  local trusted, why = sys.trusted(abs)
  if not trusted then
    config_error(why, "the config is code: make it and the directories above it writable by root or you only "
      .. "(chmod go-w)")
  end
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(file, "t", env)
  if not chunk then config_error(err, "fix the syntax error in " .. file) end
  local ok, raw = pcall(chunk)
  if not ok then
    config_error(errors.describe(raw), "fix the error in " .. file)
  end
  return M.validate(raw, abs, dir)
end

return M
