-- dhrun resolve — `prisma migrate resolve`, natively, under the release lock
-- and in the journal:
--   dhrun resolve --rolled-back NAME   a failed migration was rolled back by hand
--   dhrun resolve --applied NAME       a failed (or never run) migration was applied by hand
-- Prisma's preconditions and messages (P3008, P3011, P3012, P3017).
local sys = require "dhrun.core.sys"
local prisma = require "dhrun.prisma"

local function target(args)
  local rb, ap = args["rolled-back"], args.applied
  if rb and ap then error(sys.error("usage", 2, "Pass either --applied or --rolled-back, not both."), 0) end
  if not rb and not ap then
    error(sys.error("usage", 2, "say what to resolve: --rolled-back NAME or --applied NAME"), 0)
  end
  if (rb or ap) == "" then error(sys.error("usage", 2, "the migration name must not be empty"), 0) end
  return rb and "rolled-back" or "applied", rb or ap
end

local flow = require("dhrun.flow").new {
  name = "resolve",
  title = "Resolve a migration",
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
    local r
    if how == "rolled-back" then
      r = prisma.resolve_rolled_back(ctx.conn, name)
    else
      r = prisma.resolve_applied(ctx.conn, ctx.cfg.migrations, name)
    end
    return { summary = (r.text:gsub("^%s+", "")), migration = name, how = how }
  end,
}

return flow:run(...)
