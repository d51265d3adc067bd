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

local migrated = false -- did this run apply a migration? (then generate must run)

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
    migrated = migrated or #(d.applied or {}) > 0
    return d
  end,
}

flow:step {
  title = "Backfill workspaceIds",
  skip = function(ctx)
    if #release.missing_column(ctx) > 0 then
      return not ctx.dry_run and "the column does not exist" or nil
    end
    if release.tenancy(ctx):null_check({ count = false }).ok then
      return "no NULL " .. tenancy(ctx).column .. " values"
    end
  end,
  plan = function(ctx)
    if #release.missing_column(ctx) > 0 then
      return "after migration #1 adds the column: fill every row's " .. tenancy(ctx).column .. " in batches"
    end
    return "backfill in batches: " .. release.offenders_text(release.tenancy(ctx):null_check())
  end,
  run = function(ctx)
    local s = release.tenancy(ctx):backfill()
    return { summary = string.format("%d row(s) updated", s.updated or 0), tables = s.tables }
  end,
}

flow:step {
  title = "Verify no NULLs (MUST pass)",
  readonly = true,
  skip = release.check_skip_in_dry_run,
  run = release.require_no_nulls,
}

flow:step {
  title = "Deploy migration #2 (NOT NULL)",
  skip = function(ctx)
    if #release.migrations(ctx):pending() == 0 then return "no pending migrations" end
  end,
  plan = function(ctx)
    return "make " .. tenancy(ctx).column .. " NOT NULL online on " .. table.concat(tenancy(ctx).tables, ", ")
      .. " (CHECK NOT VALID -> VALIDATE -> SET NOT NULL -> DROP CHECK, bounded lock waits), then\n"
      .. release.migrations(ctx):plan(nil, tenancy(ctx).nullable_migration)
  end,
  run = function(ctx)
    local d = release.deploy_not_null(ctx)
    migrated = migrated or #(d.applied or {}) > 0
    return d
  end,
}

flow:step {
  title = "Regenerate Prisma client",
  skip = function(ctx)
    if ctx.args["no-build"] then return "--no-build" end
    if not release.has_command(ctx, "generate") then return "no commands.generate in the config" end
    return release.generate_skip_reason(ctx, migrated)
  end,
  plan = function(ctx) return table.concat(ctx.cfg.commands.generate, " ") end,
  run = release.generate,
}

flow:step {
  title = "Build application",
  skip = function(ctx)
    if ctx.args["no-build"] then return "--no-build" end
    if not release.has_command(ctx, "build") then return "no commands.build in the config" end
  end,
  plan = function(ctx) return table.concat(ctx.cfg.commands.build, " ") end,
  run = release.build,
}

return flow:run(...)
