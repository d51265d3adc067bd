-- dhrun status — the checklist's "Quick Status Check", read-only:
--   migrate status   expected: "Database schema is up to date!"
--   check-workspace  expected: "✅ All Data Hub workspaceId values are backfilled (no NULLs)."
--   build            expected: the build's success line (skip with --no-build)
-- It also says what `prisma migrate status` does not: migrations edited
-- after they were applied, and rolled-back ones that deploy would re-run.
local sys = require "dhrun.core.sys"
local log = require "dhrun.log"
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "status",
  title = "Quick Status Check",
  lock = false,
  journal = false,
  keep_going = true,
  options = { { name = "no-build", help = "skip the build check" } },
}

flow:step {
  title = "Migration status",
  readonly = true,
  run = function(ctx)
    local st = release.migrations(ctx):status()
    for line in (st.text .. "\n"):gmatch("(.-)\n") do log.info("      %s", line) end
    for _, note in ipairs(st.notes) do log.warn("      note: %s", note) end
    if st.exit ~= 0 then
      local hint = st.state == "failed" and "run dhrun recover" or "run dhrun deploy"
      error(sys.error("check", 1, "migrations: " .. st.state:gsub("_", " "), { hint = hint }), 0)
    end
    if #st.rerun > 0 then
      -- Prisma calls this "up to date"; the release is not complete
      error(sys.error("check", 1, "migration " .. st.rerun[1] .. " is recorded as rolled back: deploy will apply "
        .. "it again", { hint = "after fixing the cause (dhrun backfill-workspace), run dhrun deploy" }), 0)
    end
    return { summary = "Database schema is up to date!", notes = st.notes }
  end,
}

flow:step {
  title = "Check for NULLs",
  readonly = true,
  run = function(ctx)
    if #release.missing_column(ctx) > 0 then
      error(sys.error("check", 1, "the " .. ctx.cfg.tenancy.column .. " column does not exist yet "
        .. "(migration #1 not applied)", { hint = "run dhrun deploy" }), 0)
    end
    return release.require_no_nulls(ctx, "run dhrun backfill-workspace (or dhrun deploy, which backfills first)")
  end,
}

flow:step {
  title = "Verify build",
  readonly = true,
  skip = function(ctx)
    if ctx.args["no-build"] then return "--no-build" end
    if not release.has_command(ctx, "build") then return "no commands.build in the config" end
  end,
  run = release.build,
}

return flow:run(...)
