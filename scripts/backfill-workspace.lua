-- dhrun backfill-workspace — fill NULL workspaceIds in batches (keyset on the
-- primary key, one transaction per batch, resumable: a rerun continues where
-- an interrupted one stopped).  Holds the release lock and is journaled.
local release = require "dhrun.release"

local function number_arg(args, name, integer)
  local v = args[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 or (integer and (n < 1 or n % 1 ~= 0)) then
    error(require("dhrun.core.sys").error("usage", 2, "--" .. name .. " needs a " .. (integer and "whole number >= 1"
      or "non-negative number") .. ", not '" .. v .. "'"), 0)
  end
  return integer and math.tointeger(n) or n
end

local flow = require("dhrun.flow").new {
  name = "backfill-workspace",
  title = "Backfill workspaceIds",
  options = {
    { name = "batch-size", arg = "N", help = "rows per batch to start with (adapts toward ~0.25 s per batch)" },
    { name = "pause", arg = "SECONDS", help = "pause between batches (to let replicas and vacuum keep up)" },
  },
  next_ok = "verify: dhrun check-workspace",
  check_args = function(args)
    number_arg(args, "batch-size", true)
    number_arg(args, "pause")
  end,
}

flow:step {
  title = "Backfill workspaceIds",
  skip = function(ctx)
    local missing = release.missing_column(ctx)
    if #missing > 0 then
      error(require("dhrun.core.sys").error("state", 1, "the " .. ctx.cfg.tenancy.column .. " column is missing on "
        .. table.concat(missing, ", ") .. " (migration #1 not applied)", { hint = "run dhrun deploy" }), 0)
    end
    if release.tenancy(ctx):null_check({ count = false }).ok then
      return "no NULL " .. ctx.cfg.tenancy.column .. " values"
    end
  end,
  plan = function(ctx) return "backfill in batches: " .. release.offenders_text(release.tenancy(ctx):null_check()) end,
  run = function(ctx)
    local s = release.tenancy(ctx):backfill { batch_size = number_arg(ctx.args, "batch-size", true),
      pause = number_arg(ctx.args, "pause") }
    return { summary = string.format("%d row(s) updated", s.updated or 0), tables = s.tables }
  end,
}

return flow:run(...)
