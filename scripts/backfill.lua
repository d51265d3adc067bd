-- dhrun backfill — fill the rollout column's NULLs in batches (keyset on the
-- primary key, one transaction per batch, resumable: a rerun continues where
-- an interrupted one stopped).  Holds the release lock and is journaled.
local errors = require "dhrun.errors"
local release = require "dhrun.release"

local function number_arg(args, name, integer)
  local v = args[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 or n ~= n or n == math.huge or (integer and (n < 1 or n % 1 ~= 0)) then
    errors.usage("--" .. name .. " needs a " .. (integer and "whole number >= 1" or "non-negative number")
      .. ", not '" .. v .. "'")
  end
  return integer and math.tointeger(n) or n
end

local flow = require("dhrun.flow").new {
  name = "backfill",
  title = "Backfill",
  config = "required",
  preflight = { release.preflight },
  options = {
    release.ROLLOUT_OPTION,
    { name = "batch-size", arg = "N", help = "rows per batch, kept fixed (default: adapts toward ~0.1 s per batch)" },
    { name = "pause", arg = "SECONDS", help = "pause between batches (to let replicas and vacuum keep up)" },
  },
  next_ok = function(ctx) return "verify: " .. release.cmd(ctx, "check") end,
  check_args = function(args)
    number_arg(args, "batch-size", true)
    number_arg(args, "pause")
  end,
  setup = function(ctx)
    ctx.backfill_opts = { batch_size = number_arg(ctx.args, "batch-size", true), pause = number_arg(ctx.args, "pause") }
  end,
}

flow:step(release.steps.backfill_only())

return flow:run(...)
