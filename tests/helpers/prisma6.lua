-- Test helper: the real Prisma Migrate CLI (6.19, through its WASM schema
-- engine and a driver adapter) as an oracle for dhrun's bookkeeping.
--
--   local prisma6 = require "prisma6"
--   local p = prisma6.project()                 -- one throwaway Prisma project per spec file
--   local r = p:run(url, { "migrate", "status" }, { migrations = dir [, schema = path] })
--   r = {code=, stdout=, stderr=, text=, error_code=}
--   p:status(url, dir), p:deploy(url, dir), p:resolve(url, dir, "--applied", NAME), p:dev(url, dir, models)
--   local run = p:start(url, args, opts) ... run:wait() -> r   -- in the background
--   p.dir, p.env (the environment the CLI runs with, DATABASE_URL aside), prisma6.argv ({"node", CLI})
--
-- The CLI and its packages live in tests/interop/prisma6 (package.json and
-- package-lock.json committed, node_modules not): the first use runs
-- `npm ci --ignore-scripts` there, later uses find it installed.  Prisma 7
-- cannot run Migrate here (its native schema engine is a download); 6.19's
-- CLI runs it through @prisma/schema-engine-wasm and @prisma/adapter-pg,
-- with the workarounds in tests/interop/prisma6/oracle.cjs and
-- unref-timers.cjs.
--
-- r.text is what `prisma migrate ...` says about the migrations, as a
-- terminal shows stdout and stderr together: stdout from its "N migrations
-- found" line on (the schema/datasource lines and the driver-adapter warning
-- before it left out), then stderr without the config-loading lines.
--
-- The URL (it has the password) goes to the CLI in the environment only and
-- is never printed; the CLI's output, kept in memory, does not contain it.
local lfs = require "lfs"
local process = require "dhrun.process"
local sh = require "sh"

local M = {}
M.pkg = sh.root .. "/tests/interop/prisma6"
M.cli = M.pkg .. "/node_modules/prisma/build/index.js"
M.argv = { "node", M.cli }

local function mtime(path)
  return lfs.attributes(path, "modification")
end

local function fail(msg)
  error("tests/helpers/prisma6: " .. msg, 0)
end

-- npm ci in the package directory unless its node_modules is up to date
-- with package-lock.json (npm writes node_modules/.package-lock.json).
local installed = false
function M.install()
  if installed then return end
  local stamp = M.pkg .. "/node_modules/.package-lock.json"
  local lock = M.pkg .. "/package-lock.json"
  if not (mtime(M.cli) and mtime(stamp) and mtime(stamp) >= mtime(lock)) then
    local probe = process.run({ "npm", "--version" }, { capture = true })
    if not probe.ok then
      fail("npm is needed to install the Prisma CLI the interop tests run (tests/interop/prisma6): install "
        .. "Node.js 20 and npm (Debian: apt-get install nodejs npm), then run the tests again")
    end
    local r = process.run({ "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error" },
      { cwd = M.pkg, timeout = 600 })
    if not r.ok then
      fail("npm ci in tests/interop/prisma6 failed (exit " .. tostring(r.code) .. "):\n"
        .. (r.stdout or "") .. (r.stderr or ""))
    end
  end
  installed = true
end

local SCHEMA = [[
datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}
]]

-- Migrations and schema come from the environment, so one project serves
-- every directory a spec makes.
local CONFIG = [[
const oracle = require(%q);
export default {
  experimental: { adapter: true },
  engine: "js",
  schema: process.env.DHRUN_ORACLE_SCHEMA ?? "schema.prisma",
  migrations: { path: process.env.DHRUN_ORACLE_MIGRATIONS ?? "migrations" },
  async adapter() {
    return oracle.adapter(process.env.DATABASE_URL);
  },
};
]]

local Project = {}
Project.__index = Project

function M.project()
  M.install()
  local dir = sh.tmpdir() .. "/prisma6"
  sh.write(dir .. "/schema.prisma", SCHEMA)
  sh.write(dir .. "/prisma.config.ts", string.format(CONFIG, M.pkg .. "/oracle.cjs"))
  lfs.mkdir(dir .. "/migrations")
  -- An existing file stops the CLI from downloading engines.  `migrate
  -- resolve --rolled-back` still starts the schema-engine binary, to ask it
  -- whether the database can be reached (6.19 skips that for an adapter only
  -- on --applied): `true` answers nothing and exits 0, which the CLI takes
  -- for yes.
  local env = {
    PRISMA_SCHEMA_ENGINE_BINARY = assert(require("dhrun.process").which("true"), "no `true` on PATH"),
    PRISMA_QUERY_ENGINE_LIBRARY = M.cli,
    CHECKPOINT_DISABLE = "1",
    PRISMA_HIDE_UPDATE_MESSAGE = "1",
    NO_COLOR = "1",
    NODE_OPTIONS = '--require "' .. M.pkg .. '/unref-timers.cjs"',
  }
  return setmetatable({ dir = dir, env = env }, Project)
end

-- The environment for one run: the project's, the URL, and where the
-- migrations and the schema are.
function Project:run_env(url, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(self.env) do env[k] = v end
  env.DATABASE_URL = url
  env.DHRUN_ORACLE_MIGRATIONS = opts.migrations
  env.DHRUN_ORACLE_SCHEMA = opts.schema
  return env
end

local function migration_text(stdout, stderr)
  local out = {}
  local started = false
  for line in (stdout .. "\n"):gmatch("(.-)\n") do
    if not started and (line:match("^%d+ migrations? found in prisma/migrations$")
        or line == "No migration found in prisma/migrations") then
      started = true
    end
    if started then out[#out + 1] = line end
  end
  local err = stderr:gsub("^Loaded Prisma config from prisma%.config%.ts%.\n\nPrisma config detected, skipping "
    .. "environment variable loading%.\n", "")
  return (table.concat(out, "\n"):gsub("\n+$", "\n") .. err):gsub("\n+$", "")
end

-- Starts the CLI with `args` in the project directory, in the background;
-- :wait() returns {code=, stdout=, stderr=, text=, error_code=}.  Two runs
-- started together take the time of one on two cores.
local Run = {}
Run.__index = Run

function Project:start(url, args, opts)
  local argv = { table.unpack(M.argv) }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out = sh.tmpdir()
  local child = process.spawn(argv, { cwd = self.dir, env = self:run_env(url, opts), stdout = out .. "/stdout",
    stderr = out .. "/stderr" })
  return setmetatable({ child = child, out = out }, Run)
end

function Run:wait()
  local r = self.child:wait(60)
  if not r then
    self.child:stop()
    error("tests/helpers/prisma6: the Prisma CLI did not finish within 60 s", 0)
  end
  local res = { code = r.code, stdout = sh.read(self.out .. "/stdout") or "", stderr = sh.read(self.out .. "/stderr")
    or "" }
  res.text = migration_text(res.stdout, res.stderr)
  res.error_code = res.stderr:match("\nError: (P%d%d%d%d)\n") or res.stderr:match("^Error: (P%d%d%d%d)\n")
  return res
end

function Project:run(url, args, opts)
  return self:start(url, args, opts):wait()
end

function Project:status(url, dir) return self:run(url, { "migrate", "status" }, { migrations = dir }) end

function Project:deploy(url, dir) return self:run(url, { "migrate", "deploy" }, { migrations = dir }) end

function Project:resolve(url, dir, how, name)
  return self:run(url, { "migrate", "resolve", how, name }, { migrations = dir })
end

-- `migrate dev` without generate or seed: the one command that compares
-- checksums ("The migration `X` was modified after it was applied.").
-- The schema must describe what the migrations build, so that nothing new
-- is to be created ("Already in sync, ...").
function Project:dev(url, dir, schema_models)
  local schema = self.dir .. "/dev-" .. tostring(sh.tmpdir():match("(%d+)$")) .. ".prisma"
  sh.write(schema, SCHEMA .. "\n" .. schema_models)
  return self:run(url, { "migrate", "dev", "--skip-generate", "--skip-seed" }, { migrations = dir, schema = schema })
end

return M
