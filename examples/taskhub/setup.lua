-- examples/taskhub/setup.lua — puts a database into a starting state of the
-- Task Hub organization rollout, with seed data:
--
--   dhrun examples/taskhub/setup.lua [--state pre|nullable] [--users N] [--tasks N]
--
-- pre       the init migration only (before the rollout), then seed data
-- nullable  also the rollout's first two migrations (organizationId added and
--           indexed, all NULL)
-- The database is $DATABASE_URL (or the PG* variables); a Prisma URL's
-- ?schema=NAME is honoured, and the schema is created when missing, as
-- `prisma migrate deploy` does.  Applies migrations with dhrun's
-- Prisma-compatible migrator, so Prisma sees the same history.
local db = require "dhrun.db"
local prisma = require "dhrun.prisma"
local log = require "dhrun.log"
local flow = require "dhrun.flow"
local sys = require "dhrun.core.sys"

local INIT = "20260112090000_init"
local INDEXES = "20260203101500_org_indexes"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local opts = { state = "pre", users = "50", tasks = "2000" }
local argv = { ... }
local function usage()
  require("dhrun.errors").usage("usage: dhrun examples/taskhub/setup.lua [--state pre|nullable] [--users N] "
    .. "[--tasks N]")
end
local i = 1
while i <= #argv do
  local name = argv[i]:match("^%-%-(%w+)$")
  if not name or opts[name] == nil or argv[i + 1] == nil then usage() end
  opts[name] = argv[i + 1]
  i = i + 2
end
local users, tasks = math.tointeger(tonumber(opts.users)), math.tointeger(tonumber(opts.tasks))
if (opts.state ~= "pre" and opts.state ~= "nullable") or not users or not tasks then usage() end

local conn <close> = db.connect()
local t0 = sys.now()
-- (a ?schema=NAME that does not exist yet is created by the first migration,
-- as prisma migrate deploy does)
local dir = here .. "/prisma/migrations"
prisma.deploy(conn, dir, { until_name = INIT })
local f = assert(io.open(here .. "/seed/seed.sql", "rb"))
conn:exec_script(f:read("a"))
f:close()
log.info("seed: %s", conn:query_value("SELECT pg_temp.taskhub_seed($1, $2)", users, tasks))
if opts.state == "nullable" then
  prisma.deploy(conn, dir, { until_name = INDEXES })
end
log.ok("database ready in state '%s' (%s)", opts.state, flow.fmt_duration(sys.now() - t0))
