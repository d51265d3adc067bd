-- dhrun backfill-workspace — the Data Hub checklist's name for
-- `dhrun backfill`: fill NULL workspaceIds in batches, resumably.
local flow = require("dhrun.flow").new { name = "backfill-workspace", title = "Backfill workspaceIds" }
local backfill = flow:include("backfill")
flow.check_args, flow.next_ok = backfill.check_args, backfill.next_ok
return flow:run(...)
