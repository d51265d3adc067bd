-- Test helper: run commands (real processes) and make temporary files.
--
--   sh.dhrun(args, opts) -> {code=, stdout=, stderr=}  runs the dhrun under test
--   sh.run(argv, opts)   -> same, for any command
--   opts: cwd, env (extra variables), stdin (string)
--   sh.tmpdir(), sh.tmpfile(name, content), sh.write(path, content), sh.read(path)
local lfs = require "lfs"
local process = require "dhrun.process"

local sh = {}
sh.bin = assert(os.getenv("DHRUN_BIN"), "DHRUN_BIN not set: run the suite with tests/run.sh")
sh.root = os.getenv("DHRUN_ROOT") or lfs.currentdir()
local tmproot = os.getenv("DHRUN_TEST_TMP") or "/tmp"
local counter = 0

function sh.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function sh.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function mkdir_p(dir)
  local path = ""
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    lfs.mkdir(path)
  end
end

function sh.write(path, content)
  mkdir_p(path:match("^(.*)/[^/]*$"))
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

-- How many times `needle` (plain text) occurs in s.
function sh.count(s, needle)
  local n, pos = 0, 1
  while true do
    local i = s:find(needle, pos, true)
    if not i then return n end
    n, pos = n + 1, i + 1
  end
end

function sh.tmpdir()
  counter = counter + 1
  local dir = string.format("%s/t%d-%d-%d", tmproot, require("dhrun.core.sys").pid(), os.time(), counter)
  mkdir_p(dir)
  return dir
end

function sh.tmpfile(name, content)
  return sh.write(sh.tmpdir() .. "/" .. name, content)
end

-- Runs argv (no shell) with dhrun.process; captures both streams.  opts.wrapper
-- (set by sh.dhrun from DHRUN_BIN_WRAPPER, e.g. "valgrind -q ...") is split on
-- spaces and put before argv.  Like the shell this replaces: a program that
-- cannot start gives 127/126 and a message on stderr, a signal gives 128+N.
function sh.run(argv, opts)
  opts = opts or {}
  local words = {}
  for w in (opts.wrapper or ""):gmatch("%S+") do words[#words + 1] = w end
  for _, a in ipairs(argv) do words[#words + 1] = a end
  local env = {}
  for k, v in pairs(opts.env or {}) do env[k] = v and tostring(v) end
  local r = process.run(words, { cwd = opts.cwd, env = env, stdin = opts.stdin })
  local code = r.code or (r.signal and 128 + r.signal)
  local stderr = r.error and (r.error .. "\n") or r.stderr
  if opts.wrapper then
    -- valgrind's own notices ("--123-- WARNING: unhandled syscall: 434", i.e.
    -- pidfd_open on valgrind 3.19) are not dhrun's output; its errors are
    -- "==123==" lines and --error-exitcode, which stay.
    stderr = stderr:gsub("%-%-%d+%-%- [^\n]*\n", "")
  end
  return { code = code, stdout = r.stdout, stderr = stderr }
end

function sh.dhrun(args, opts)
  local argv = { sh.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  opts.wrapper = os.getenv("DHRUN_BIN_WRAPPER")
  return sh.run(argv, opts)
end

return sh
