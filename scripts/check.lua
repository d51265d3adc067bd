-- dhrun check — "Verify no NULLs": exit 0 only when the rollout's column is
-- NULL nowhere; otherwise prints the offenders per table and exits 1.
-- Read-only and fast: NOT NULL tables are answered from the catalog, the
-- others with an EXISTS probe; rows are counted only to report offenders.
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "check",
  title = "Verify no NULLs",
  config = "required",
  preflight = { release.preflight },
  lock = false,
  journal = false,
  options = { release.ROLLOUT_OPTION },
}

flow:step(release.steps.check_nulls())

return flow:run(...)
