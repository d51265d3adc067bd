-- dhrun.config: finds, loads and checks a project's dhrun.config.lua.
--
-- The config is a Lua file returning a table.  Flows read it; a team adapts
-- the config, not the flows.  Paths in it are relative to the file's own
-- directory.  Unknown settings are an error (a typo must not silently fall
-- back to a default).
local lfs = require "lfs"
local sys = require "dhrun.core.sys"

local M = {}

M.FILE = "dhrun.config.lua"

local function config_error(msg, hint)
  error(sys.error("config", 2, msg, { hint = hint }), 0)
end

-- Known settings: name -> expected Lua type(s).
local KNOWN = {
  project = "string",
  database_url = "string",
  migrations = "string",
  schema = "string",
  app_dir = "string",
  migrate_with = "string",
  lock_timeout = "string",
  tenancy = "table",
  commands = "table",
  env = "table",
  generated = "string",
  app = "table",
  smoke = "table",
  release = "table",
}

local TENANCY_KNOWN = {
  column = "string", tables = "table", nullable_migration = "string", not_null_migration = "string",
  backfill = "table", batch_size = "number", max_batch_size = "number", min_batch_size = "number",
  batch_target = "number", pause = "number", lock_timeout = "string", retries = "number",
  retry_base = "number", retry_max = "number", schema = "string", label = "string", flush_after = "string|false",
}

local function is_abs(p) return p:sub(1, 1) == "/" end

local function join(dir, p)
  if is_abs(p) then return p end
  if p == "." then return dir end
  return dir .. "/" .. p
end

-- Closest name in `known` to `name` (for "did you mean").
local function suggest(name, known)
  local best, best_d
  for k in pairs(known) do
    local la, lb = #name, #k
    -- cheap distance: Levenshtein over short names
    local prev = {}
    for j = 0, lb do prev[j] = j end
    for i = 1, la do
      local cur = { [0] = i }
      for j = 1, lb do
        local cost = name:sub(i, i) == k:sub(j, j) and 0 or 1
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      end
      prev = cur
    end
    local d = prev[lb]
    if not best_d or d < best_d then best, best_d = k, d end
  end
  if best_d and best_d <= 3 then return best end
end

local function check_keys(t, known, where, file)
  for k, v in pairs(t) do
    if type(k) ~= "string" or not known[k] then
      local s = type(k) == "string" and suggest(k, known)
      config_error(string.format("%s: unknown setting '%s'%s", file, tostring(k),
        s and (" in " .. where .. " (did you mean '" .. s .. "'?)") or (" in " .. where)),
        "the README's \"Project config\" section lists every setting")
    end
    local want, rest = known[k]:match("^(%a+)(.*)$") -- a type, or a type and "|false"
    local or_false = rest == "|false"
    if type(v) ~= want and not (v == false and or_false) then
      config_error(string.format("%s: setting '%s' in %s must be a %s%s, not a %s", file, k, where, want,
        or_false and " (or false)" or "", type(v)))
    end
  end
end

-- Locates the config: explicit path, $DHRUN_CONFIG, or dhrun.config.lua in
-- the current directory or the nearest parent.
function M.find(path)
  path = path or os.getenv("DHRUN_CONFIG")
  if path and path ~= "" then
    if lfs.attributes(path, "mode") ~= "file" then
      config_error("config file " .. path .. " does not exist", "pass --config PATH to an existing dhrun.config.lua")
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
  config_error("no " .. M.FILE .. " in " .. lfs.currentdir() .. " or its parents",
    "run dhrun from your project directory, or pass --config PATH (see examples/datahub/dhrun.config.lua)")
end

-- Loads and checks the config; returns a table with absolute paths and
-- defaults filled in, plus cfg.file and cfg.dir.
function M.load(path)
  local file = M.find(path)
  local abs = sys.realpath(file) or file
  local dir = abs:match("^(.*)/[^/]*$") or "."
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(file, "t", env)
  if not chunk then config_error(err, "fix the syntax error in " .. file) end
  local ok, cfg = pcall(chunk)
  if not ok then
    config_error(type(cfg) == "table" and tostring(cfg.message or cfg) or tostring(cfg),
      "fix the error in " .. file)
  end
  if type(cfg) ~= "table" then config_error(file .. " must return a table (got " .. type(cfg) .. ")") end
  check_keys(cfg, KNOWN, "the config", file)
  if cfg.tenancy then
    check_keys(cfg.tenancy, TENANCY_KNOWN, "tenancy", file)
    local tn = cfg.tenancy
    if type(tn.column) ~= "string" or tn.column == "" then config_error(file .. ": tenancy.column is required") end
    if type(tn.tables) ~= "table" or #tn.tables == 0 then
      config_error(file .. ": tenancy.tables must list at least one table")
    end
  end
  cfg.file, cfg.dir = abs, dir
  cfg.project = cfg.project or dir:match("([^/]+)$")
  cfg.app_dir = join(dir, cfg.app_dir or ".")
  cfg.migrations = join(dir, cfg.migrations or "prisma/migrations")
  cfg.schema = join(dir, cfg.schema or "prisma/schema.prisma")
  if cfg.generated then cfg.generated = join(dir, cfg.generated) end
  cfg.migrate_with = cfg.migrate_with or "dhrun"
  if cfg.migrate_with ~= "dhrun" and cfg.migrate_with ~= "prisma" then
    config_error(file .. ": migrate_with must be \"dhrun\" or \"prisma\", not \"" .. cfg.migrate_with .. "\"")
  end
  cfg.commands = cfg.commands or {}
  for name, argv in pairs(cfg.commands) do
    if type(argv) ~= "table" or type(argv[1]) ~= "string" then
      config_error(file .. ": commands." .. tostring(name)
        .. " must be an argv list such as {\"npm\", \"run\", \"build\"}")
    end
  end
  cfg.env = cfg.env or {}
  cfg.lock_timeout = cfg.lock_timeout or "2s"
  return cfg
end

return M
