-- dhrun deploy — the Normal Deployment of a rollout:
--   1. preflight: no failed migration        5. the NOT NULL migration, online
--   2. the migrations before the backfill    6. later migrations, if any
--   3. backfill the column                   7. regenerate the client
--   4. verify no NULLs (MUST pass)           8. build the application
-- Every step runs only when needed and otherwise says why it was skipped,
-- so running deploy on an up-to-date database changes nothing.  On an empty
-- database it applies every migration.  A project wraps it with
-- flow:include_next("deploy") in its own scripts/deploy.lua.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "deploy",
  title = "Normal Deployment",
  description = "migrations before the backfill -> backfill -> check (must pass) -> NOT NULL migration (online) "
    .. "-> later migrations -> generate -> build",
  config = "required",
  preflight = { release.preflight },
  options = { release.ROLLOUT_OPTION, release.NO_BUILD_OPTION },
  next_ok = release.next_after_deploy,
}

flow:step(release.steps.history())
flow:step(release.steps.migrate_before())
flow:step(release.steps.backfill())
flow:step(release.steps.verify_no_nulls())
flow:step(release.steps.deploy_not_null())
flow:step(release.steps.migrate_after())
flow:step(release.steps.generate())
flow:step(release.steps.build())

return flow:run(...)
