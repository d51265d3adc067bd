-- Test helper: the example Data Hub app as a real Node process.
--
--   app.build(url)            npm ci (when node_modules is missing), npm run generate and npm run build; returns
--                             the build's result
--   app.ensure_built(url)     build once per test run (dist/src/server.js newer than the sources)
--   app.start(url, faults)    node dist/src/server.js on a free port -> {proc, base, port, log_path, dir}
--   app.stop(a)               SIGTERM, then SIGKILL after 5 s; returns the process result
--   app.log(a)                the app's log file so far
local sh = require "sh"
local dh = require "datahub"
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local lfs = require "lfs"

local M = {}
M.dir = dh.example

function M.build(url)
  if lfs.attributes(M.dir .. "/node_modules", "mode") ~= "directory" then
    local ci = sh.run({ "npm", "ci", "--no-audit", "--no-fund" }, { cwd = M.dir })
    assert(ci.code == 0, "npm ci failed:\n" .. ci.stdout .. ci.stderr)
  end
  -- as the release does it: generate the client, then build (the build
  -- does not generate it again)
  local gen = sh.run({ "npm", "run", "generate" }, { cwd = M.dir, env = { DATABASE_URL = url } })
  assert(gen.code == 0, "npm run generate failed:\n" .. gen.stdout .. gen.stderr)
  local build = sh.run({ "npm", "run", "build" }, { cwd = M.dir, env = { DATABASE_URL = url } })
  assert(build.code == 0, "npm run build failed:\n" .. build.stdout .. build.stderr)
  return build
end

local function newest_source()
  local newest = 0
  for _, sub in ipairs({ "src", "public", "prisma" }) do
    for f in lfs.dir(M.dir .. "/" .. sub) do
      local m = lfs.attributes(M.dir .. "/" .. sub .. "/" .. f, "modification")
      if m and m > newest then newest = m end
    end
  end
  return newest
end

function M.ensure_built(url)
  local built = lfs.attributes(M.dir .. "/dist/src/server.js", "modification")
  if not built or built < newest_source() then M.build(url) end
end

function M.start(url, faults)
  local dir = sh.tmpdir()
  local proc = process.spawn({ "node", "dist/src/server.js" }, {
    cwd = M.dir,
    env = { DATABASE_URL = url, PORT = "0", HOST = "127.0.0.1", APP_LOG = dir .. "/logs/app.log",
            DATAHUB_FAULTS = faults or false },
    stdout = dir .. "/stdout", stderr = dir .. "/stderr",
  })
  local deadline = sys.now() + 30
  while true do
    local base = (sh.read(dir .. "/stdout") or ""):match("listening on (http://127%.0%.0%.1:%d+)")
    if base then
      return { proc = proc, base = base, port = base:match(":(%d+)$"), log_path = dir .. "/logs/app.log", dir = dir }
    end
    if not proc:running() or sys.now() > deadline then
      proc:stop()
      error("the app did not start: " .. (sh.read(dir .. "/stderr") or ""))
    end
    sys.sleep(0.05)
  end
end

function M.stop(a)
  if a then return a.proc:stop(5) end
end

function M.log(a)
  return sh.read(a.log_path) or ""
end

return M
