-- dhrun check-workspace — the Data Hub checklist's name for `dhrun check`
-- (its `npm run datahub:check-workspace` habit): exit 0 only when no
-- workspaceId is NULL.
local flow = require("dhrun.flow").new {
  name = "check-workspace", title = "Verify no NULL workspaceIds", lock = false, journal = false,
}
flow:include("check")
return flow:run(...)
