-- dhrun status — the checklist's "Quick Status Check", read-only:
--   migrate status   expected: "Database schema is up to date!"
--   check            expected: "✅ All <label> values are backfilled (no NULLs)."
--   build            expected: the build's success line (skip with --no-build)
-- It also says what `prisma migrate status` does not: migrations edited
-- after they were applied, and rolled-back ones that deploy would re-run.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "status",
  title = "Quick Status Check",
  config = "required",
  preflight = { release.preflight },
  lock = false,
  journal = false,
  keep_going = true,
  options = { release.ROLLOUT_OPTION, { name = "no-build", help = "skip the build check" } },
  -- one verdict first, and true; the steps below give the details
  setup = function(ctx)
    local ok, line = release.status_verdict(ctx)
    ctx.log[ok and "ok" or "info"]("verdict: %s", line)
  end,
}

flow:step(release.steps.status_migrations())
flow:step(release.steps.check_nulls())
flow:step {
  title = "Verify build",
  readonly = true,
  skip = function(ctx)
    if ctx.args["no-build"] then return "--no-build" end
    if not release.has_command(ctx, "build") then return "no commands.build in the config" end
    return release.build_skip_reason(ctx)
  end,
  run = release.build,
}

return flow:run(...)
