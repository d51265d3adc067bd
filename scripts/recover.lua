-- dhrun recover — the checklist's "Recovery (If Migration Failed)":
--   1. mark the failed NOT NULL migration as rolled back
--   2. backfill workspaceIds        4. deploy the NOT NULL migration
--   3. verify no NULLs (MUST pass)  5. regenerate the Prisma client   6. build
-- Safe to run at any point: it first works out where the database is, refuses
-- (changing nothing) when that is not a state it knows how to recover, and
-- skips whatever is already done.
local sys = require "dhrun.core.sys"
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "recover",
  title = "Recovery (migration #2 failed)",
  description = "resolve --rolled-back -> backfill -> check (must pass) -> deploy -> generate -> build",
  options = { { name = "no-build", help = "database steps only: skip generate and build" } },
  next_ok = function(ctx)
    if ctx.args["no-build"] then return "build and start the app, then run the smoke test: dhrun smoke" end
    return "start or reload the app, then run the smoke test: dhrun smoke (dhrun release does all three)"
  end,
}

local function not_null(ctx) return ctx.cfg.tenancy.not_null_migration end

local function refuse(msg, hint)
  error(sys.error("state", 1, msg, { hint = hint }), 0)
end

flow:step {
  title = "Find out what to recover",
  readonly = true,
  run = function(ctx)
    local st = release.migrations(ctx):status()
    local name = not_null(ctx)
    for _, f in ipairs(st.failed) do
      if f ~= name then
        refuse("migration " .. f .. " failed, and recover only knows how to recover " .. name,
          "inspect the failure (dhrun status shows it); after fixing it by hand use "
          .. "prisma migrate resolve --applied/--rolled-back \"" .. f .. "\"")
      end
    end
    if #release.missing_column(ctx) > 0 then
      refuse("nothing to recover: migration #1 (" .. ctx.cfg.tenancy.nullable_migration .. ") is not applied yet",
        "this database is before the tenancy release: run dhrun deploy")
    end
    if #st.failed > 0 then return { summary = name .. " failed: recovering", state = "failed" } end
    if #st.to_apply > 0 then
      return { summary = name .. " is not applied (rolled back or pending): finishing the rollout", state = "pending" }
    end
    return { summary = "nothing failed: every step below will be skipped", state = "healthy" }
  end,
}

flow:step {
  title = "Mark the failed migration as rolled back",
  skip = function(ctx)
    for _, f in ipairs(release.migrations(ctx):failed()) do
      if f == not_null(ctx) then return nil end
    end
    return "no failed row for " .. not_null(ctx)
  end,
  plan = function(ctx) return "prisma migrate resolve --rolled-back " .. not_null(ctx) end,
  run = function(ctx) return release.migrations(ctx):resolve_rolled_back(not_null(ctx)) end,
}

flow:step(release.steps.backfill("Backfill workspaceIds"))
flow:step(release.steps.verify_no_nulls("Verify no NULLs (MUST pass)"))
flow:step(release.steps.deploy_not_null("Deploy the NOT NULL migration"))
flow:step(release.steps.generate("Regenerate Prisma client"))
flow:step(release.steps.build("Verify build"))

return flow:run(...)
