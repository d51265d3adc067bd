-- dhrun rollback — the checklist's "Emergency Rollback": make workspaceId
-- nullable again on the four tables and mark the NOT NULL migration rolled
-- back, in one transaction, each lock wait bounded (retried with backoff).
-- Asks for confirmation on a terminal; elsewhere it needs --yes.
local sys = require "dhrun.core.sys"
local db = require "dhrun.db"
local prisma = require "dhrun.prisma"
local release = require "dhrun.release"

local flow = require("dhrun.flow").new {
  name = "rollback",
  title = "Emergency Rollback",
  description = "DROP NOT NULL on the tenancy tables + mark the NOT NULL migration rolled back (atomically)",
  options = { { name = "yes", short = "y", help = "confirm without asking (required when not on a terminal)" } },
  confirm = function(ctx)
    return { action = "roll back", word = "rollback", text = "This makes " .. ctx.cfg.tenancy.column
      .. " nullable again on " .. table.concat(ctx.cfg.tenancy.tables, ", ") .. " and marks "
      .. ctx.cfg.tenancy.not_null_migration .. " rolled back." }
  end,
  next_ok = "fix the NULLs: dhrun backfill-workspace, then re-deploy the NOT NULL migration: dhrun deploy",
}

local function live_rows(ctx)
  if not prisma.table_exists(ctx.conn) then return 0 end
  return ctx.conn:query_value([[SELECT count(*) FROM _prisma_migrations
    WHERE migration_name = $1 AND rolled_back_at IS NULL]], ctx.cfg.tenancy.not_null_migration)
end

flow:step {
  title = "Drop NOT NULL and mark the migration rolled back",
  skip = function(ctx)
    local enforced = 0
    for _, t in ipairs(release.tenancy(ctx):state()) do
      if not t.nullable then enforced = enforced + 1 end
    end
    if enforced == 0 and live_rows(ctx) == 0 then
      return "nothing to roll back: the column is nullable everywhere and the migration is not recorded as applied"
    end
  end,
  plan = function(ctx)
    local lines = { "in one transaction (lock_timeout " .. tostring(release.tenancy(ctx).spec.lock_timeout)
      .. " per lock, retried):" }
    for _, t in ipairs(ctx.cfg.tenancy.tables) do
      lines[#lines + 1] = "  ALTER TABLE " .. db.quote_ident(t) .. " ALTER COLUMN "
        .. db.quote_ident(ctx.cfg.tenancy.column) .. " DROP NOT NULL;"
    end
    lines[#lines + 1] = "  UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = '"
      .. ctx.cfg.tenancy.not_null_migration .. "' AND rolled_back_at IS NULL;"
    return table.concat(lines, "\n")
  end,
  run = function(ctx)
    local marked = 0
    local res = prisma.with_lock(ctx.conn, function()
      return release.tenancy(ctx):drop_not_null {
        transaction = true,
        also = function(conn)
          if prisma.table_exists(conn) then
            marked = conn:exec([[UPDATE _prisma_migrations SET rolled_back_at = $1
              WHERE migration_name = $2 AND rolled_back_at IS NULL]], prisma.now_utc(),
              ctx.cfg.tenancy.not_null_migration)
          end
        end,
      }
    end)
    return { summary = string.format("%s nullable on %d table(s); %d migration row(s) marked rolled back",
      ctx.cfg.tenancy.column, #(res.tables or {}), marked), tables = res.tables, marked = marked,
      at = sys.time() }
  end,
}

return flow:run(...)
