-- Test helper: run commands (real processes) and make temporary files.
--
--   sh.dhrun(args, opts) -> {code=, stdout=, stderr=}  runs the dhrun under test
--   sh.run(argv, opts)   -> same, for any command
--   opts: cwd, env (extra variables), stdin (string)
--   sh.tmpdir(), sh.tmpfile(name, content), sh.write(path, content), sh.read(path)
local lfs = require "lfs"

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

function sh.tmpdir()
  counter = counter + 1
  local dir = string.format("%s/t%d-%d-%d", tmproot, require("dhrun.core.sys").pid(), os.time(), counter)
  mkdir_p(dir)
  return dir
end

function sh.tmpfile(name, content)
  return sh.write(sh.tmpdir() .. "/" .. name, content)
end

-- Runs argv through /bin/sh with every word quoted; captures both streams.
function sh.run(argv, opts)
  opts = opts or {}
  local dir = sh.tmpdir()
  local words = {}
  for k, v in pairs(opts.env or {}) do
    words[#words + 1] = k .. "=" .. sh.quote(v)
  end
  for i, a in ipairs(argv) do
    words[#words + 1] = (i == 1 and opts.wrapper) and (opts.wrapper .. " " .. sh.quote(a)) or sh.quote(a)
  end
  local cmd = table.concat(words, " ")
  if opts.cwd then cmd = "cd " .. sh.quote(opts.cwd) .. " && " .. (#words > 0 and "env " or "") .. cmd end
  local stdin = "/dev/null"
  if opts.stdin then stdin = sh.write(dir .. "/stdin", opts.stdin) end
  cmd = string.format("%s <%s >%s 2>%s", cmd, stdin, dir .. "/out", dir .. "/err")
  local _, _, code = os.execute(cmd)
  return { code = code, stdout = sh.read(dir .. "/out") or "", stderr = sh.read(dir .. "/err") or "" }
end

function sh.dhrun(args, opts)
  local argv = { sh.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  opts.wrapper = os.getenv("DHRUN_BIN_WRAPPER")
  return sh.run(argv, opts)
end

return sh
