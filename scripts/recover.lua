-- dhrun recover — the checklist's "Recovery (If Migration Failed)" for a
-- rollout whose NOT NULL migration failed:
--   1. work out the state (refuse, changing nothing, what it cannot recover)
--   2. mark the failed NOT NULL migration as rolled back
--   3. backfill   4. verify no NULLs (MUST pass)   5. the NOT NULL migration, online
--   6. later migrations   7. regenerate the client   8. build
-- Safe to run at any point: whatever is already done is skipped.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "recover",
  title = "Recovery (the NOT NULL migration failed)",
  description = "resolve --rolled-back -> backfill -> check (must pass) -> NOT NULL migration -> generate -> build",
  config = "required",
  preflight = { release.preflight },
  options = { release.ROLLOUT_OPTION, release.NO_BUILD_OPTION },
  next_ok = release.next_after_deploy,
}

flow:step(release.steps.recover_state())
flow:step(release.steps.resolve_failed())
flow:step(release.steps.backfill())
flow:step(release.steps.verify_no_nulls())
flow:step(release.steps.deploy_not_null())
flow:step(release.steps.migrate_after())
flow:step(release.steps.generate())
flow:step(release.steps.build("Verify the build"))

return flow:run(...)
