-- dhrun deploy — the checklist's "Normal Deployment (Clean State)":
--   1. deploy migration #1 (nullable columns)   4. deploy migration #2 (NOT NULL)
--   2. backfill workspaceIds                    5. regenerate the Prisma client
--   3. verify no NULLs (MUST pass)              6. build the application
-- Every step follows the "Do NOT Re-Run Unnecessarily" rules: it runs only
-- when needed and otherwise says why it was skipped, so running deploy on an
-- up-to-date database changes nothing.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "deploy",
  title = "Normal Deployment",
  description = "migration #1 -> backfill -> check (must pass) -> migration #2 -> generate -> build",
  options = { { name = "no-build", help = "database steps only: skip generate and build" } },
  next_ok = function(ctx)
    if ctx.args["no-build"] then return "build and start the app, then run the smoke test: dhrun smoke" end
    return "start or reload the app, then run the smoke test: dhrun smoke (dhrun release does all three)"
  end,
}

local function tenancy(ctx) return ctx.cfg.tenancy end

flow:step {
  title = "Preflight: no failed migration in the history",
  readonly = true,
  run = function(ctx)
    local failed = release.migrations(ctx):failed()
    if #failed > 0 then
      error(require("dhrun.core.sys").error("state", 1, "migration " .. failed[1] .. " failed earlier; "
        .. "deploy will not continue on top of it", { hint = "run dhrun recover (the checklist's Recovery)" }), 0)
    end
    return { summary = "migration history is healthy" }
  end,
}

flow:step {
  title = "Deploy migration #1 (nullable columns)",
  skip = function(ctx)
    if #release.migrations(ctx):pending(tenancy(ctx).nullable_migration) == 0 then
      return tenancy(ctx).nullable_migration .. " is already applied"
    end
  end,
  plan = function(ctx) return release.migrations(ctx):plan(tenancy(ctx).nullable_migration) end,
  run = function(ctx)
    local d = release.migrations(ctx):deploy(tenancy(ctx).nullable_migration)
    ctx.migrated = ctx.migrated or #(d.applied or {}) > 0
    return d
  end,
}

flow:step(release.steps.backfill("Backfill workspaceIds"))
flow:step(release.steps.verify_no_nulls("Verify no NULLs (MUST pass)"))
flow:step(release.steps.deploy_not_null("Deploy migration #2 (NOT NULL)"))
flow:step(release.steps.generate("Regenerate Prisma client"))
flow:step(release.steps.build("Build application"))

return flow:run(...)
