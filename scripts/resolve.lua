-- dhrun resolve — `prisma migrate resolve`, natively, under the release lock
-- and in the journal:
--   dhrun resolve --rolled-back NAME   a failed migration was rolled back by hand
--   dhrun resolve --applied NAME       a failed (or never run) migration was applied by hand
-- Prisma's preconditions and messages (P3008, P3011, P3012, P3017).
local errors = require "dhrun.errors"
local release = require "dhrun.release"

local function target(args)
  local rb, ap = args["rolled-back"], args.applied
  if rb and ap then errors.usage("Pass either --applied or --rolled-back, not both.") end
  if not rb and not ap then errors.usage("say what to resolve: --rolled-back NAME or --applied NAME") end
  if (rb or ap) == "" then errors.usage("the migration name must not be empty") end
  return rb and "rolled-back" or "applied", rb or ap
end

local flow = require("dhrun.flow").new {
  name = "resolve",
  title = "Resolve a migration",
  config = "required",
  -- the migrations directory only: resolve is how a broken state is fixed
  preflight = { release.preflight_migrations },
  options = {
    { name = "rolled-back", arg = "NAME", help = "mark the failed migration NAME as rolled back" },
    { name = "applied", arg = "NAME", help = "record migration NAME as applied (its SQL is not run)" },
  },
  next_ok = "check the result: dhrun status",
  check_args = function(args) target(args) end,
}

flow:step {
  title = "Resolve the migration",
  plan = function(ctx)
    local how, name = target(ctx.args)
    return "prisma migrate resolve --" .. how .. " " .. name
  end,
  run = function(ctx)
    local how, name = target(ctx.args)
    -- natively, or through the Prisma CLI (migrate_with = "prisma")
    local migrations = release.migrations(ctx)
    local r
    if how == "rolled-back" then
      r = migrations:resolve_rolled_back(name)
    else
      r = migrations:resolve_applied(name)
    end
    return { summary = r.text and (r.text:gsub("^%s+", "")) or r.summary, migration = name, how = how }
  end,
}

return flow:run(...)
