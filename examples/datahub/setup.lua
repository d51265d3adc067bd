-- examples/datahub/setup.lua — puts a database into a starting state of the
-- Data Hub tenancy release, with seed data:
--
--   dhrun examples/datahub/setup.lua [--state pre|nullable] [--users N] [--metrics N]
--
-- pre       the init migration only (before the release), then seed data
-- nullable  also migration #1 (workspaceId added, all NULL)
-- The database is $DATABASE_URL (or the PG* variables).  Applies migrations
-- with dhrun's Prisma-compatible migrator, so Prisma sees the same history.
local db = require "dhrun.db"
local prisma = require "dhrun.prisma"
local log = require "dhrun.log"
local flow = require("dhrun.flow")

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local opts = { state = "pre", users = "60", metrics = "5000" }
local argv = { ... }
local i = 1
local USAGE = "usage: dhrun examples/datahub/setup.lua [--state pre|nullable] [--users N] [--metrics N]"
while i <= #argv do
  if argv[i] == "--help" or argv[i] == "-h" then
    print(USAGE .. "\n  pre       the init migration, then seed data (before the release)\n"
      .. "  nullable  also migration #1 (workspaceId added, all NULL): a database to try the backfill on\n"
      .. "The database is $DATABASE_URL (or the PG* variables).")
    return 0
  end
  local name = argv[i]:match("^%-%-(%w+)$")
  if not name or opts[name] == nil or argv[i + 1] == nil then require("dhrun.errors").usage(USAGE) end
  opts[name] = argv[i + 1]
  i = i + 2
end

local conn <close> = db.connect()
local dir = here .. "/prisma/migrations"
local t0 = require("dhrun.core.sys").now()
prisma.deploy(conn, dir, { until_name = "20251201090000_init" })
local f = assert(io.open(here .. "/seed/seed.sql", "rb"))
conn:exec_script(f:read("a"))
f:close()
log.info("seed: %s", conn:query_value("SELECT pg_temp.datahub_seed($1, $2)", tonumber(opts.users),
  tonumber(opts.metrics)))
if opts.state == "nullable" then
  prisma.deploy(conn, dir, { until_name = "20251219170000_datahub_workspace_nullable" })
end
log.ok("database ready in state '%s' (%s)", opts.state, flow.fmt_duration(require("dhrun.core.sys").now() - t0))
