-- dhrun.errors: the one table of failure kinds and their exit codes.
--
--   local errors = require "dhrun.errors"
--   errors.raise("config", "tenancy.column is required", { hint = "..." })
--   errors.usage("--wait needs a number of seconds")      -- shorthand per kind
--   local code = errors.exit_code(err)                      -- any error value -> exit code
--
-- An error is a table {kind=, exit=, message=, hint=, ...} (made by the host's
-- sys.error, so the host maps it to its exit code when it is not caught).
-- Flows and the stdlib raise through here; nothing else hard-codes an exit
-- code.  The codes are the README's "Exit codes" table:
--   0   ok
--   1   a step or check failed; a state a flow refuses to act on
--   2   usage, config or script error: nothing was changed
--   3   another run holds the release lock (or Prisma's migrate lock)
--   4   the database could not be reached
--   130 interrupted (Ctrl-C), 143 terminated (SIGTERM)
local sys = require "dhrun.core.sys"

local M = {}

M.EXIT = {
  -- 1: something failed while doing the work
  check = 1,       -- a check found a problem (NULLs, a failed smoke check)
  state = 1,       -- the database is in a state this flow refuses to act on
  db = 1,          -- a statement failed
  lock = 1,        -- a bounded lock wait gave up after its retries
  prisma = 1,      -- Prisma Migrate's rules refused (P3xxx)
  process = 1,     -- a command failed
  http = 1,        -- an HTTP request failed
  failed = 1,
  -- 2: the input is wrong; nothing was changed
  usage = 2,       -- command line
  config = 2,      -- dhrun.config.lua, or the config against the project
  script = 2,      -- a Lua error in a flow script outside a step
  io = 2,          -- a file could not be read or written
  -- 3: busy
  busy = 3,        -- another dhrun run holds the release lock; Prisma's lock (P1002)
  -- 4: unreachable
  connect = 4,
  -- signals
  interrupted = 130,
  terminated = 143,
}

-- errors.new(kind, message [, fields]) -> error value (not raised).
-- fields.exit overrides the kind's code (rarely right: say why where used).
function M.new(kind, message, fields)
  local code = fields and fields.exit or M.EXIT[kind]
  if code == nil then error("dhrun.errors: unknown kind '" .. tostring(kind) .. "'", 2) end
  return sys.error(kind, code, tostring(message), fields)
end

-- errors.raise(kind, message [, fields]): raises without position info (the
-- message is for people; `where` is kept for db errors by the db module).
function M.raise(kind, message, fields)
  error(M.new(kind, message, fields), 0)
end

-- Shorthands: errors.usage(msg [, hint | fields]), errors.config(...), ...
for kind in pairs(M.EXIT) do
  M[kind] = function(message, hint)
    local fields = hint
    if type(hint) == "string" then fields = { hint = hint } end
    error(M.new(kind, message, fields), 0)
  end
end

-- True for an error value made by dhrun (a table with kind and exit).
function M.is(err, kind)
  return type(err) == "table" and type(err.kind) == "string" and (kind == nil or err.kind == kind)
end

-- The exit code an error value maps to (1 for a plain Lua error).
function M.exit_code(err)
  if type(err) == "table" and math.type(tonumber(err.exit)) then return math.tointeger(tonumber(err.exit)) end
  return 1
end

-- A programming error in a call to a library function: raises the string
-- `fname: msg` (a plain Lua error, exit 2 like any script error) pointing at
-- the caller's line, the first stack level outside the file that calls
-- misuse (its public functions call each other).
function M.misuse(fname, msg)
  local here = debug.getinfo(2, "S").source
  local level = 3
  while (debug.getinfo(level, "S") or {}).source == here do level = level + 1 end
  error(fname .. ": " .. msg, level)
end

-- One line for people: the message of an error value, or the text of any other.
function M.describe(err)
  if type(err) == "table" then return tostring(err.message or err) end
  return tostring(err)
end

return M
