-- dhrun.rollout: tenancy rollouts declared in the project config.
--
-- A rollout makes one column NOT NULL over several tables of a live
-- database: migrations that add it (nullable), a batched backfill, a check,
-- then the NOT NULL migration applied online.  A project describes each one
-- in `rollouts` (see the README, "Writing your own rollout"):
--
--   rollouts = {
--     { name = "org-scope", label = "Task Hub organizationId", column = "organizationId",
--       migrations = { "..._org_nullable", "..._org_indexes" },   -- applied before the backfill
--       not_null_migration = "..._org_not_null",
--       prepare = [[ idempotent SQL, run once before the backfill ]],
--       batch = { size = 5000, min = 200, max = 50000, target = 0.1, pause = 0,
--                 max_wal_rate = "64MB", max_replica_lag = "1s", probe = { sql = "SELECT 1", max = "50ms" } },
--       tables = {
--         { "Project", value = [[...]], from = [[...]], where = [[...]] },
--         { "Task", parent = "projectId -> Project" },
--         { "AuditEvent", parent = "taskId -> Task", fallback = [[...]], batch = { size = 2000 } },
--       } },
--   }
--
-- This module registers the `rollouts` key (and the older single `tenancy`
-- section, read as one rollout named "default"), validates them when the
-- config is loaded, and turns a rollout into a dhrun.tenancy spec.
local config = require "dhrun.config"
local errors = require "dhrun.errors"
local db = require "dhrun.db"

local T = config.types
local format, concat = string.format, table.concat

local M = {}

M.DEFAULT_NAME = "default"

local seconds = T.either(T.number { min = 0 }, T.duration { seconds = true })

local function check_batch_sizes(b, ctx, path)
  if b.min and b.max and b.min > b.max then
    errors.config(format("%s: %s.min (%d) is larger than %s.max (%d)", ctx.file, path, b.min, path, b.max))
  end
end

local TABLE_BATCH_KEYS = {
  size = T.integer { min = 1 },
  min = T.integer { min = 1 },
  max = T.integer { min = 1 },
  target = T.either(T.number { min = 0.001 }, T.duration { seconds = true }),
  pause = seconds,
  step = T.integer { min = 1 },
}

-- A table's own batch: the sizes and pace only (the health signals are the rollout's).
local TABLE_BATCH = T.record(TABLE_BATCH_KEYS, { validate = check_batch_sizes })

local SIZE = T.string { pattern = "^%s*%d+%.?%d*%s*[kMG]?B%s*$", what = "a size like \"64MB\"" }
local OFF = T.enum({ false })

local BATCH_KEYS = {
  -- health signals (README, "Backfill health signals"); false turns one off
  max_wal_rate = T.either(OFF, T.either(T.number { min = 1 }, SIZE)),
  max_replica_lag = T.either(OFF, seconds),
  max_commit = T.either(OFF, seconds),
  max_pause = T.either(OFF, seconds),
  autovacuum = T.enum({ "slow", "pause", "ignore" }),
  workers = T.integer { min = 1, max = 64 },
  async_commit = T.boolean(),
  probe = T.record({
    sql = T.string(),
    url = T.string { pattern = "^https?://", what = "an http:// or https:// URL" },
    max = seconds,
  }, {
    validate = function(p, ctx, path)
      if (p.sql == nil) == (p.url == nil) then
        errors.config(format("%s: %s needs sql = \"SQL\" or url = \"http://...\" (one of them)", ctx.file, path))
      end
    end,
  }),
}
for k, v in pairs(TABLE_BATCH_KEYS) do BATCH_KEYS[k] = v end
local BATCH = T.record(BATCH_KEYS, { validate = check_batch_sizes })

local NAME = T.string { pattern = "^[%w_][%w_%-%.]*$", what = "a name of letters, digits, '-', '_' or '.'" }

-- "fkColumn -> Table" or "fkColumn -> Table.keyColumn"
local function parse_hop(text, ctx, path)
  local fk, tbl = tostring(text):match("^%s*(.-)%s*%->%s*(.-)%s*$")
  local key
  if tbl then
    local t2, k2 = tbl:match("^(.-)%.([^%.]+)$")
    if t2 then tbl, key = t2, k2 end
  end
  if not fk or fk == "" or not tbl or tbl == "" then
    errors.config(format("%s: %s must look like \"fkColumn -> Table\" (or \"fkColumn -> Table.key\"), not %q",
      ctx.file, path, tostring(text)))
  end
  return { fk = fk, table = tbl, key = key or "id" }
end

local PARENT = T.either(T.string(), T.list(T.string(), { min = 1 }))

local TABLE = T.record({
  [1] = T.string(),
  name = T.string(),
  value = T.string(),
  from = T.string(),
  where = T.string(),
  parent = PARENT,
  fallback = T.string(),
  batch = TABLE_BATCH,
  vacuum = T.boolean(),
}, {
  validate = function(t, ctx, path)
    local name = t.name or t[1]
    if not name then errors.config(format("%s: %s needs the table's name: { \"Table\", ... }", ctx.file, path)) end
    if t.name and t[1] and t.name ~= t[1] then
      errors.config(format("%s: %s names the table twice (%q and %q)", ctx.file, path, t[1], t.name))
    end
    if not t.value and not t.parent then
      errors.config(format("%s: %s (%s) needs value = \"SQL expression\" or parent = \"fkColumn -> Table\"",
        ctx.file, path, name))
    end
    if t.value and t.parent then
      errors.config(format("%s: %s (%s) has both value and parent: give one", ctx.file, path, name))
    end
    if (t.from or t.where) and not t.value then
      errors.config(format("%s: %s (%s): from and where go with value", ctx.file, path, name))
    end
    if t.fallback and not t.parent then
      errors.config(format("%s: %s (%s): fallback goes with parent (with value, write coalesce(...))", ctx.file,
        path, name))
    end
    local hops
    if t.parent then
      local list = type(t.parent) == "string" and { t.parent } or t.parent
      hops = {}
      for i, h in ipairs(list) do hops[i] = parse_hop(h, ctx, path .. ".parent") end
    end
    return { name = name, value = t.value, from = t.from, where = t.where, hops = hops, fallback = t.fallback,
             batch = t.batch or {}, vacuum = t.vacuum }
  end,
})

local ROLLOUT = T.record({
  name = NAME,
  label = T.string(),
  column = T.required(T.string()),
  migrations = T.list(T.string()),
  not_null_migration = T.required(T.string()),
  prepare = T.string(),
  tables = T.required(T.list(TABLE, { min = 1 })),
  batch = BATCH,
  lock_timeout = T.duration { default = "300ms" },
  retries = T.integer { min = 0, default = 20 },
  retry_base = seconds,
  retry_max = seconds,
  schema = T.string(),
  flush_after = T.either(T.enum({ false }), T.string { pattern = "^%d+%s*[kM]?B$", what = "a size like \"256kB\"" }),
  vacuum = T.boolean(),
  outwait_autovacuum = T.boolean(),
}, {
  validate = function(r, ctx, path)
    local seen = {}
    for i, t in ipairs(r.tables) do
      if seen[t.name] then
        errors.config(format("%s: %s.tables[%d] names %s again", ctx.file, path, i, t.name))
      end
      seen[t.name] = true
    end
    r.migrations = r.migrations or {}
    for _, m in ipairs(r.migrations) do
      if m == r.not_null_migration then
        errors.config(format("%s: %s.migrations lists the NOT NULL migration %s: it is applied after the backfill",
          ctx.file, path, m))
      end
    end
  end,
})

-- The older single-rollout section (one column, migration #1 and #2).
local LEGACY = T.record {
  label = T.string(), column = T.required(T.string()), tables = T.required(T.list(T.string(), { min = 1 })),
  nullable_migration = T.string(), not_null_migration = T.required(T.string()),
  backfill = T.map(T.any()), batch_size = T.integer { min = 1 }, max_batch_size = T.integer { min = 1 },
  min_batch_size = T.integer { min = 1 }, batch_target = T.number { min = 0.001 }, pause = T.number { min = 0 },
  lock_timeout = T.duration(), retries = T.integer { min = 0 }, retry_base = T.number { min = 0 },
  retry_max = T.number { min = 0 }, schema = T.string(), flush_after = T.any(),
}

local function from_legacy(tn)
  local bf = tn.backfill or {}
  local tables = {}
  for i, name in ipairs(tn.tables) do
    local rule = bf[name] or {}
    tables[i] = { name, value = rule.value, from = rule.from, where = rule.where }
  end
  return {
    name = M.DEFAULT_NAME, label = tn.label, column = tn.column,
    migrations = tn.nullable_migration and { tn.nullable_migration } or {},
    not_null_migration = tn.not_null_migration, prepare = bf.prepare, tables = tables,
    batch = { size = tn.batch_size, max = tn.max_batch_size, min = tn.min_batch_size, target = tn.batch_target,
              pause = tn.pause },
    lock_timeout = tn.lock_timeout, retries = tn.retries, retry_base = tn.retry_base, retry_max = tn.retry_max,
    schema = tn.schema, flush_after = tn.flush_after,
  }
end

config.define("rollouts", T.list(ROLLOUT), {
  after = function(cfg, ctx)
    if cfg.tenancy then
      if cfg.rollouts then
        errors.config(ctx.file .. ": give either rollouts = {...} or the older tenancy = {...}, not both")
      end
      cfg.rollouts = { ROLLOUT.check(from_legacy(cfg.tenancy), ctx, "tenancy") }
    end
    cfg.rollouts = cfg.rollouts or {}
    local names, owner = {}, {}
    for i, r in ipairs(cfg.rollouts) do
      r.name = r.name or (#cfg.rollouts == 1 and M.DEFAULT_NAME) or nil
      if not r.name then errors.config(format("%s: rollouts[%d] needs a name", ctx.file, i)) end
      if names[r.name] then errors.config(format("%s: two rollouts are named %q", ctx.file, r.name)) end
      names[r.name] = r
      r.label = r.label or ((cfg.project or "") .. " " .. r.column):gsub("^ ", "")
      r.index = i
      local mine = { r.not_null_migration }
      for _, m in ipairs(r.migrations) do mine[#mine + 1] = m end
      for _, m in ipairs(mine) do
        if owner[m] then
          errors.config(format("%s: migration %s belongs to two rollouts (%s and %s)", ctx.file, m, owner[m], r.name))
        end
        owner[m] = r.name
      end
    end
    cfg.rollout_of_migration = owner
  end,
})
config.define("tenancy", LEGACY)

-- The rollout named `name`, or the config's only one, or its last one.
-- Raises a usage error (with the names) for an unknown name.
function M.find(cfg, name)
  local list = cfg and cfg.rollouts or {}
  if name then
    for _, r in ipairs(list) do if r.name == name then return r end end
    local names = {}
    for i, r in ipairs(list) do names[i] = r.name end
    local known = {}
    for _, n in ipairs(names) do known[n] = true end
    local s = config.suggest(name, known)
    errors.usage(format("no rollout named %q%s", name, #names > 0 and (" (the config has: " .. concat(names, ", ")
      .. ")" .. (s and ("; did you mean " .. s .. "?") or "")) or " (the config has no rollouts)"))
  end
  return list[#list]
end

-- The SQL for a parent chain: value, from, where over alias t (the table
-- being filled).  With a fallback, one scalar subquery in coalesce(), so
-- rows whose chain ends in NULL get the fallback instead of being skipped.
local function chain_sql(column, hops, fallback)
  local q = db.quote_ident
  local joins = { format("%s h1", q(hops[1].table)) }
  for i = 2, #hops do
    joins[#joins + 1] = format("JOIN %s h%d ON h%d.%s = h%d.%s", q(hops[i].table), i, i, q(hops[i].key), i - 1,
      q(hops[i].fk))
  end
  local from = concat(joins, " ")
  local where = format("h1.%s = t.%s", q(hops[1].key), q(hops[1].fk))
  local value = format("h%d.%s", #hops, q(column))
  if fallback then
    return format("coalesce((SELECT %s FROM %s WHERE %s), (%s))", value, from, where, fallback)
  end
  return value, from, where
end
M.chain_sql = chain_sql

-- The dhrun.tenancy spec for a rollout (see tenancy.new).
function M.tenancy_spec(r)
  local b = r.batch or {}
  local spec = {
    column = r.column, tables = {}, backfill = { prepare = r.prepare },
    batch_size = b.size, min_batch_size = b.min, max_batch_size = b.max, batch_target = b.target, pause = b.pause,
    batch_step = b.step, max_wal_rate = b.max_wal_rate, max_replica_lag = b.max_replica_lag,
    max_commit = b.max_commit, max_pause = b.max_pause, autovacuum = b.autovacuum, probe = b.probe,
    workers = b.workers, async_commit = b.async_commit,
    lock_timeout = r.lock_timeout, retries = r.retries, retry_base = r.retry_base, retry_max = r.retry_max,
    schema = r.schema, flush_after = r.flush_after, vacuum = r.vacuum, table_settings = {},
    outwait_autovacuum = r.outwait_autovacuum,
  }
  for i, t in ipairs(r.tables) do
    spec.tables[i] = t.name
    if t.hops then
      local value, from, where = chain_sql(r.column, t.hops, t.fallback)
      -- parents: the chain's hops, so that a batch can look them up by index
      spec.backfill[t.name] = { value = value, from = from, where = where, parents = from and t.hops or nil }
    else
      spec.backfill[t.name] = { value = t.value, from = t.from, where = t.where }
    end
    local tb = t.batch or {}
    if next(tb) or t.vacuum ~= nil then
      spec.table_settings[t.name] = { batch_size = tb.size, min_batch_size = tb.min, max_batch_size = tb.max,
        batch_target = tb.target, pause = tb.pause, batch_step = tb.step, vacuum = t.vacuum }
    end
  end
  return spec
end

-- Names of the rollout's tables, in backfill order.
function M.table_names(r)
  local out = {}
  for i, t in ipairs(r.tables) do out[i] = t.name end
  return out
end

return M
