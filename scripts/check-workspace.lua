-- dhrun check-workspace — "Verify no NULLs": exit 0 only when no tenancy
-- column is NULL; otherwise prints the offenders per table and exits 1.
-- Read-only and fast: NOT NULL tables are answered from the catalog, the
-- others with an EXISTS probe; rows are counted only to report offenders.
local log = require "dhrun.log"
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "check-workspace",
  title = "Verify no NULLs",
  lock = false,
  journal = false,
}

flow:step {
  title = "Check for NULLs",
  readonly = true,
  run = function(ctx)
    local missing = release.missing_column(ctx)
    if #missing > 0 then
      error(require("dhrun.core.sys").error("check", 1, "the " .. ctx.cfg.tenancy.column .. " column is missing on "
        .. table.concat(missing, ", ") .. " (migration #1 not applied)", { hint = "run dhrun deploy" }), 0)
    end
    local ok, line, report = release.null_check(ctx)
    for _, t in ipairs(report.tables) do
      local how = t.enforced and "NOT NULL enforced" or (t.has_nulls and (tostring(t.nulls) .. " NULL row(s)")
        or "no NULLs")
      log.info("      %-14s %s", t.table, how)
    end
    if not ok then release.require_no_nulls(ctx) end
    return { summary = line, tables = report.tables }
  end,
}

return flow:run(...)
