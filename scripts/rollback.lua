-- dhrun rollback — the checklist's "Emergency Rollback" for a rollout: make
-- its column nullable again on its tables and mark its NOT NULL migration
-- rolled back, in one transaction, each lock wait bounded (retried with
-- backoff).  Asks for confirmation on a terminal; elsewhere it needs --yes.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "rollback",
  title = "Emergency Rollback",
  description = "DROP NOT NULL on the rollout's tables + mark its NOT NULL migration rolled back (atomically)",
  config = "required",
  preflight = { release.preflight },
  options = { release.ROLLOUT_OPTION,
    { name = "yes", short = "y", help = "confirm without asking (required when not on a terminal)" } },
  confirm = release.rollback_prompt,
  next_ok = function(ctx)
    -- NULLs or not: the rollback may have been for another reason
    local ok, clean = pcall(release.null_check, ctx)
    if ok and clean then
      return "no NULLs now: once the cause of the rollback is fixed, re-deploy the NOT NULL migration: "
        .. release.cmd(ctx, "deploy")
    end
    return "fix the NULLs: " .. release.cmd(ctx, "backfill") .. ", then re-deploy the NOT NULL migration: "
      .. release.cmd(ctx, "deploy")
  end,
}

flow:step(release.steps.rollback())

return flow:run(...)
