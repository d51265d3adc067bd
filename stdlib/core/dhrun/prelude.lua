-- dhrun.prelude: run by the host before any script.
--
-- * print and io.write pass through the secret redactor, so a password
--   registered with dhrun (every connection URL's password is) never reaches
--   the terminal through them;
-- * os.exit closes the Lua state by default, so __close/__gc handlers
--   (connections, child processes, temporary files) run on every exit path.
local sys = require "dhrun.core.sys"

local redact = sys.redact
local select, tostring = select, tostring
local concat = table.concat
local stdout = io.stdout

local function joined(sep, ...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  return concat(parts, sep)
end

function print(...) -- luacheck: ignore 121
  stdout:write(redact(joined("\t", ...)), "\n")
end

function io.write(...) -- luacheck: ignore 122
  return io.output():write(redact(joined("", ...)))
end

-- The environment's database password is masked from the start, before a
-- script prints os.getenv("DATABASE_URL") or anything else that holds it.
require("dhrun.secret").register_environment()

local exit = os.exit
function os.exit(code, close) -- luacheck: ignore 122
  if close == nil then close = true end
  -- output that could not be written is a failure (dhrun ... > /dev/full)
  local ok, err = io.stdout:flush()
  if not ok then
    io.stderr:write("dhrun: cannot write to standard output: ", (tostring(err):gsub("^%(?[^:]*%)?: ", "")), "\n")
    if code == nil or code == true or code == 0 then code = 1 end
  end
  return exit(code, close)
end
