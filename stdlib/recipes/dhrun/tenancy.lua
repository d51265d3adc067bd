-- dhrun.tenancy: roll out a NOT NULL tenant column (e.g. "tenantId") over
-- several tables of a live PostgreSQL without stalling the application.
--
--   local t = tenancy.new(conn, spec)    -- validates spec against the catalog
--   t:null_check([opts]) / t:has_nulls() -- catalog first, EXISTS probes, counts only offenders
--   t:backfill([opts])                   -- keyset batches, resumable (dhrun.backfill_progress); a later
--                                        -- pass visits only the rows left NULL (see _plan_pass); the
--                                        -- batch size follows AIMD toward batch_target, and health
--                                        -- signals pause or shrink it (see Health); spec.workers > 1
--                                        -- fills key ranges in parallel processes (see _parallel_pass)
--   t:enforce_not_null([opts])           -- CHECK NOT VALID -> VALIDATE -> SET NOT NULL -> DROP CHECK
--   t:drop_not_null([opts])              -- rollback: DROP NOT NULL (optionally all tables in one transaction)
--   t:state()                            -- nullable / check constraint per table, from the catalog
--   tenancy.ddl_retry(conn, sql_or_fn, opts) -- db.retry under its older name
--
-- Why it is shaped like this (see the online-schema-changes reference):
--   * no table scan ever runs under ACCESS EXCLUSIVE: the scan is VALIDATE's
--     (SHARE UPDATE EXCLUSIVE, DML keeps running), and SET NOT NULL then
--     skips its scan because the valid CHECK proves there is no NULL;
--   * every statement that waits for a table lock does so for at most
--     lock_timeout, because a waiting ALTER blocks every query queued behind it;
--     only the SHARE UPDATE EXCLUSIVE each DDL step takes first, which no
--     application query queues behind, waits longer (deadlock_timeout +
--     lock_timeout), so that PostgreSQL cancels an autovacuum on the table;
--   * the backfill commits one batch at a time and stores its cursor in the
--     same transaction, so any interruption loses at most one batch of work.
--
-- lock_timeout is a PostgreSQL interval string ("300ms", "1s") or a number of
-- milliseconds (PostgreSQL's own unit for that setting).
local sys = require "dhrun.core.sys"
local db = require "dhrun.db"
local errors = require "dhrun.errors"
local events = require "dhrun.events"

local format, concat = string.format, table.concat

local M = {}

M.DEFAULTS = {
  batch_size = 5000, max_batch_size = 50000, min_batch_size = 200, batch_target = 0.1, pause = 0,
  lock_timeout = "300ms", retries = 20, retry_base = 0.2, retry_max = 5, flush_after = false, vacuum = true,
  outwait_autovacuum = true, workers = 1, async_commit = true,
  -- health signals (see Health below); false turns one off
  max_wal_rate = 64 * 1024 * 1024, max_replica_lag = 1, max_commit = 0.2, autovacuum = "slow", max_pause = 300,
}
-- AIMD: a batch slower than SLOW x batch_target multiplies the size by
-- SHRINK; so does an unhealthy signal.  A healthy batch faster than the
-- target adds batch_step (by default a twentieth of max - min).
M.SLOW, M.SHRINK = 1.5, 0.5
-- async_commit: seconds between two batches that commit synchronously (the
-- commit time signal)
M.SYNC_EVERY = 1

-- The settings spec.table_settings[table] may override, in the order the
-- validation reports them: {key, minimum, integer}; vacuum is a boolean.
local TABLE_KEYS = {
  { "batch_size", 1, true }, { "min_batch_size", 1, true }, { "max_batch_size", 1, true },
  { "batch_target", 0.001 }, { "pause", 0 }, { "batch_step", 1, true }, { "vacuum" },
}
M.MAX_PASSES = 3
M.PROGRESS_TABLE = "dhrun.backfill_progress"

local NAMEDATALEN = 63 -- PostgreSQL truncates longer identifiers (bytes)

-- A spec that does not fit the database or is malformed: kind "config"
-- (exit 2), said in terms of the spec given to tenancy.new.  Where the spec
-- came from (a config file) is the caller's to add, as a hint.
local function config_error(message, fields)
  errors.raise("config", "tenancy: " .. message, fields)
end

local function isnull(v)
  return v == nil or v == db.null
end

local function quiet_progress()
  local p = {}
  function p.update() end
  function p.add() end
  function p.finish() end
  function p.fail() end
  function p.note() end
  return p
end

local function lock_timeout_text(v)
  if math.type(v) == "integer" and v >= 0 then return v .. "ms" end
  if type(v) == "string" and v:match("^%s*%d+%.?%d*%s*%a*%s*$") then return v end
  config_error(format("spec.lock_timeout must be an interval like \"300ms\" or a number of milliseconds, got %s",
    tostring(v)))
end

---------------------------------------------------------------------------
-- Lock-timeout + jittered-retry helper

-- tenancy.ddl_retry(conn, sql_or_fn, opts) -> result, attempts: db.retry
-- (see dhrun.db), kept under this name for existing scripts.
function M.ddl_retry(conn, work, opts)
  return db.retry(conn, work, opts)
end

---------------------------------------------------------------------------
-- Construction and catalog

local Tenancy = {}
Tenancy.__index = Tenancy

-- t[key] validated (nil: `default`); `where` names t in messages ("spec").
local function check_number(t, key, min, integer, where, default)
  local v = t[key]
  if v == nil then
    if default == nil then return M.DEFAULTS[key] end
    return default
  end
  if type(v) ~= "number" or v < min or (integer and math.type(v) ~= "integer") then
    config_error(format("%s.%s must be a%s number >= %s, got %s", where or "spec", key, integer and "n integer" or "",
      min, tostring(v)))
  end
  return v
end

local function check_boolean(t, key, where, default)
  local v = t[key]
  if v == nil then return default end
  if type(v) ~= "boolean" then
    config_error(format("%s.%s must be true or false, got %s", where, key, tostring(v)))
  end
  return v
end

-- "64MB", "512kB", "1GB" or a number of bytes -> bytes, or nil.
local function parse_bytes(v)
  if type(v) == "number" and v > 0 then return v end
  if type(v) ~= "string" then return nil end
  local n, unit = v:match("^%s*(%d+%.?%d*)%s*([kMG]?B)%s*$")
  local f = unit and ({ B = 1, kB = 1024, MB = 1024 ^ 2, GB = 1024 ^ 3 })[unit]
  return f and tonumber(n) * f or nil
end

-- "1s", "250ms", "5min" or a number of seconds -> seconds, or nil.
local function parse_seconds(v)
  if type(v) == "number" then return v >= 0 and v or nil end
  local ms = type(v) == "string" and require("dhrun.config").parse_duration(v)
  return ms and ms / 1000 or nil
end

-- A health threshold: spec[key] parsed by `parse`, false (off), or the default.
local function check_limit(spec, key, parse, want)
  local v = spec[key]
  if v == nil then v = M.DEFAULTS[key] end
  if v == false then return false end
  local x = parse(v)
  if not x then config_error(format("spec.%s must be %s, or false (off), got %s", key, want, tostring(v))) end
  return x
end

-- spec.probe = {sql = "..." | url = "http://...", max = "50ms"|seconds, timeout =}
local function check_probe(p)
  if p == nil or p == false then return false end
  if type(p) ~= "table" or (p.sql == nil) == (p.url == nil) then
    config_error("spec.probe must be a table with sql = \"SQL\" or url = \"http://...\" (one of them), and max")
  end
  if p.sql ~= nil and type(p.sql) ~= "string" then config_error("spec.probe.sql must be SQL (a string)") end
  if p.url ~= nil and (type(p.url) ~= "string" or not p.url:match("^https?://")) then
    config_error(format("spec.probe.url must be an http:// or https:// URL, got %s", tostring(p.url)))
  end
  local max = parse_seconds(p.max == nil and 0.05 or p.max)
  if not max then config_error(format("spec.probe.max must be a duration like \"50ms\", got %s", tostring(p.max))) end
  return { sql = p.sql, url = p.url, max = max }
end

local function check_sizes(s, where)
  if s.min_batch_size > s.max_batch_size then
    config_error(format("%smin_batch_size (%d) is larger than max_batch_size (%d)", where, s.min_batch_size,
      s.max_batch_size))
  end
end

-- How spec.table_settings[name] is named in messages.
local function table_settings_name(name)
  if name:match("^[%a_][%w_]*$") then return "spec.table_settings." .. name end
  return format("spec.table_settings[%q]", name)
end

-- Each table's batch settings: the global ones, overridden by
-- spec.table_settings[name].  Returns name -> settings.
local function table_settings(spec, s, names, log)
  local given = spec.table_settings
  if given == nil then given = {} end
  if type(given) ~= "table" then
    config_error("spec.table_settings must be a table of {table name = {batch_size=, ...}}")
  end
  local known, out = {}, {}
  for _, name in ipairs(names) do known[name] = true end
  for name, t in pairs(given) do
    if type(name) ~= "string" then config_error("spec.table_settings must be keyed by table name") end
    local where = table_settings_name(name)
    if type(t) ~= "table" then config_error(format("%s must be a table, got %s", where, type(t))) end
    for key in pairs(t) do
      local ok = false
      for _, k in ipairs(TABLE_KEYS) do ok = ok or k[1] == key end
      if not ok then
        local keys = {}
        for i, k in ipairs(TABLE_KEYS) do keys[i] = k[1] end
        config_error(format("%s.%s is not a per-table setting (%s)", where, tostring(key), concat(keys, ", ")))
      end
    end
    if not known[name] then
      -- like spec.backfill: a subset of the tables may be rolled out at a time
      log.warn(format("tenancy: %s: %s is not one of spec.tables: ignored", where, name))
    end
  end
  for _, name in ipairs(names) do
    local t, where = given[name] or {}, table_settings_name(name)
    local e = {}
    for _, k in ipairs(TABLE_KEYS) do
      if k[1] == "vacuum" then
        e.vacuum = check_boolean(t, "vacuum", where, s.vacuum)
      else
        e[k[1]] = check_number(t, k[1], k[2], k[3], where, s[k[1]] or false)
      end
    end
    if e.batch_step == false then e.batch_step = math.max(1, (e.max_batch_size - e.min_batch_size) // 20) end
    check_sizes(e, where .. ": ")
    out[name] = e
  end
  return out
end

-- "<table>_<column>_not_null", kept within PostgreSQL's 63-byte identifier
-- limit (a truncated name would no longer match the catalog lookup, and the
-- steps would not be idempotent): long names get a short hash suffix.
local function constraint_name(tbl, col)
  local name = tbl .. "_" .. col .. "_not_null"
  if #name <= NAMEDATALEN then return name end
  local head = name:sub(1, NAMEDATALEN - 9)
  while #head > 0 and not utf8.len(head) do head = head:sub(1, -2) end -- never cut a UTF-8 sequence
  return head .. "_" .. sys.sha256(name):sub(1, 8)
end

-- tenancy.new(conn, spec) -> t.  Raises kind="config", exit=2 when a table,
-- the column or a primary key is missing.
function M.new(conn, spec)
  if (type(conn) ~= "table" and type(conn) ~= "userdata") or conn.query == nil then
    error("bad argument #1 to 'new' (dhrun.db connection expected)", 2)
  end
  if type(spec) ~= "table" then error("bad argument #2 to 'new' (table expected)", 2) end
  if type(spec.column) ~= "string" or spec.column == "" then
    config_error("spec.column must be a column name (string)")
  end
  if type(spec.tables) ~= "table" or #spec.tables == 0 then
    config_error("spec.tables must be a non-empty list of table names")
  end
  local backfill = spec.backfill or {}
  if type(backfill) ~= "table" then config_error("spec.backfill must be a table") end

  local self = setmetatable({ conn = conn, column = spec.column, tables = {}, spec = {} }, Tenancy)
  local s = self.spec -- the validated settings, defaults filled in
  s.batch_size = check_number(spec, "batch_size", 1, true)
  s.min_batch_size = check_number(spec, "min_batch_size", 1, true)
  s.max_batch_size = check_number(spec, "max_batch_size", 1, true)
  check_sizes(s, "spec.")
  s.batch_target = check_number(spec, "batch_target", 0.001)
  s.pause = check_number(spec, "pause", 0)
  s.batch_step = check_number(spec, "batch_step", 1, true, nil, false) -- false: per table, see table_settings
  s.max_wal_rate = check_limit(spec, "max_wal_rate", parse_bytes, "a size per second like \"64MB\"")
  s.max_replica_lag = check_limit(spec, "max_replica_lag", parse_seconds, "a duration like \"1s\"")
  s.max_commit = check_limit(spec, "max_commit", parse_seconds, "a duration like \"200ms\"")
  s.max_pause = check_limit(spec, "max_pause", parse_seconds, "a duration like \"5min\"")
  s.autovacuum = spec.autovacuum or M.DEFAULTS.autovacuum
  if s.autovacuum ~= "slow" and s.autovacuum ~= "pause" and s.autovacuum ~= "ignore" then
    config_error(format("spec.autovacuum must be \"slow\", \"pause\" or \"ignore\", got %s", tostring(s.autovacuum)))
  end
  s.probe = check_probe(spec.probe)
  s.workers = check_number(spec, "workers", 1, true)
  if s.workers > 1 and type(backfill.prepare) == "function" then
    config_error("spec.workers > 1 needs spec.backfill.prepare as SQL (each worker runs it in its own session)")
  end
  -- what a worker process rebuilds this object from (see _parallel_pass)
  self.portable = {}
  for k, v in pairs(spec) do if k ~= "log" then self.portable[k] = v end end
  s.vacuum = check_boolean(spec, "vacuum", "spec", M.DEFAULTS.vacuum)
  s.outwait_autovacuum = check_boolean(spec, "outwait_autovacuum", "spec", M.DEFAULTS.outwait_autovacuum)
  s.async_commit = check_boolean(spec, "async_commit", "spec", M.DEFAULTS.async_commit)
  s.retries = check_number(spec, "retries", 0, true)
  s.retry_base = check_number(spec, "retry_base", 0)
  s.retry_max = check_number(spec, "retry_max", 0)
  s.lock_timeout = lock_timeout_text(spec.lock_timeout or M.DEFAULTS.lock_timeout)
  s.flush_after = spec.flush_after
  if s.flush_after == nil then s.flush_after = M.DEFAULTS.flush_after end
  if s.flush_after ~= false then
    -- PostgreSQL takes 0 to 2MB for backend_flush_after
    local n, unit = tostring(s.flush_after):match("^(%d+)%s*([kM]?B)$")
    local kb = n and tonumber(n) * ({ B = 1 / 1024, kB = 1, MB = 1024 })[unit]
    if type(s.flush_after) ~= "string" or not kb or kb > 2048 then
      config_error(format("spec.flush_after must be a size like \"256kB\" (at most 2MB), or false, got %s",
        tostring(s.flush_after)))
    end
  end
  self.log = spec.log or require "dhrun.log"
  self.backfill_spec = backfill
  for i, name in ipairs(spec.tables) do
    if type(name) ~= "string" or name == "" then
      config_error(format("spec.tables[%d] must be a table name (string)", i))
    end
  end
  local settings = table_settings(spec, s, spec.tables, self.log)

  local schema = spec.schema
  if schema == nil then
    schema = conn:query_value("SELECT current_schema()")
    if isnull(schema) then
      config_error("there is no current schema (search_path is empty): give spec.schema")
    end
  elseif type(schema) ~= "string" then
    config_error("spec.schema must be a schema name (string)")
  end
  self.schema = schema

  local known = {}
  for i, name in ipairs(spec.tables) do
    known[name] = true
    self.tables[i] = self:_describe(name)
    self.tables[i].settings = settings[name]
  end
  for key, v in pairs(backfill) do
    if key ~= "prepare" and not known[key] then
      -- A subset of the tables may be rolled out at a time; a typo shows here.
      self.log.warn(format("tenancy: spec.backfill.%s is not one of spec.tables: ignored", tostring(key)))
    end
    if key ~= "prepare" and (type(v) ~= "table" or type(v.value) ~= "string") then
      config_error(format("spec.backfill.%s must be a table with value = \"SQL expression\"", key))
    end
  end
  if backfill.prepare ~= nil and type(backfill.prepare) ~= "string" and type(backfill.prepare) ~= "function" then
    config_error("spec.backfill.prepare must be SQL (string) or a function(conn)")
  end
  return self
end

-- Catalog facts for one table: quoted name, primary key columns and types.
function Tenancy:_describe(name)
  local conn = self.conn
  local qname = conn:quote_ident(self.schema) .. "." .. conn:quote_ident(name)
  local row = conn:query_one([[
    SELECT c.oid::int8 AS oid, c.relkind::text AS relkind,
           (SELECT a.attnum FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped) AS attnum
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relname = $2]], self.schema, name, self.column)
  if row == nil then
    config_error(format("table %s does not exist", qname), { table = name })
  end
  if row.relkind ~= "r" and row.relkind ~= "p" then
    config_error(format("%s is not a table", qname), { table = name })
  end
  if isnull(row.attnum) then
    config_error(format("column %s is not in table %s", conn:quote_ident(self.column), qname),
      { table = name, column = self.column })
  end
  local pk = conn:query([[
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = $1::oid AND i.indisprimary
     ORDER BY k.ord]], row.oid)
  if #pk == 0 then
    config_error(format("table %s has no primary key (the backfill walks it in batches)", qname), { table = name })
  end
  local cols = {}
  for i, r in ipairs(pk) do cols[i] = { name = r.name, type = r.type } end
  return {
    name = name, qname = qname, pk = cols, attnum = row.attnum,
    constraint = constraint_name(name, self.column),
    task = self.column .. ":" .. self.schema .. "." .. name,
  }
end

-- nullable, check_constraint ("none"|"not_valid"|"valid") from the catalog.
function Tenancy:_catalog(tb)
  local row = self.conn:query_one([[
    SELECT NOT a.attnotnull AS nullable,
           coalesce((SELECT CASE WHEN con.convalidated THEN 'valid' ELSE 'not_valid' END
                       FROM pg_constraint con
                      WHERE con.conrelid = c.oid AND con.conname = $4 AND con.contype = 'c'), 'none') AS check
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = $1 AND c.relname = $2]], self.schema, tb.name, self.column, tb.constraint)
  if row == nil then
    config_error(format("table %s or its column %s no longer exists", tb.qname, self.conn:quote_ident(self.column)),
      { table = tb.name, column = self.column })
  end
  return row.nullable, row.check
end

function Tenancy:_col()
  return self.conn:quote_ident(self.column)
end

-- EXISTS probe: stops at the first NULL (an index probe when the column is
-- indexed); never a count of the whole table.
function Tenancy:_probe(tb)
  return self.conn:query_value(format("SELECT EXISTS (SELECT 1 FROM %s WHERE %s IS NULL)", tb.qname, self:_col()))
end

function Tenancy:_count_nulls(tb)
  return self.conn:query_value(format("SELECT count(*) FROM %s WHERE %s IS NULL", tb.qname, self:_col()))
end

-- db.retry's options for work on table tb (nil: no table) that takes
-- `lockmode`.  DDL (ACCESS EXCLUSIVE, and VALIDATE's SHARE UPDATE
-- EXCLUSIVE) first outwaits an autovacuum on the table (see db.retry): the
-- backfill's dead rows make autovacuum start on it, and without that wait a
-- short lock_timeout gives up before PostgreSQL cancels the worker, on
-- every attempt.
function Tenancy:_retry_opts(tb, what, lockmode, extra)
  local s = self.spec
  local ddl = lockmode == "AccessExclusiveLock" or lockmode == "ShareUpdateExclusiveLock"
  local o = { lock_timeout = s.lock_timeout, retries = s.retries, retry_base = s.retry_base,
              retry_max = s.retry_max, log = self.log, what = what, lockmode = lockmode,
              relations = tb and { tb.qname } or nil, outwait_autovacuum = ddl and s.outwait_autovacuum }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

---------------------------------------------------------------------------
-- State and checks

-- t:state() -> { {table=, nullable=, check_constraint=}, ... }
function Tenancy:state()
  local out = {}
  for i, tb in ipairs(self.tables) do
    local nullable, check = self:_catalog(tb)
    out[i] = { table = tb.name, nullable = nullable, check_constraint = check }
  end
  return out
end

-- t:null_check([opts]) -> {ok=, tables={ {table=, enforced=, has_nulls=, nulls=} }, offenders=}
--   opts.count = false: do not count the offending rows.
function Tenancy:null_check(opts)
  opts = opts or {}
  local counting = opts.count ~= false
  local report = { ok = true, tables = {}, offenders = counting and 0 or nil }
  for i, tb in ipairs(self.tables) do
    local nullable = self:_catalog(tb)
    -- NOT NULL in the catalog is proof enough: no query touches the table.
    local entry = { table = tb.name, enforced = not nullable, has_nulls = false }
    if nullable then
      entry.has_nulls = self:_probe(tb)
      if entry.has_nulls then
        report.ok = false
        if counting then
          entry.nulls = self:_count_nulls(tb)
          report.offenders = report.offenders + entry.nulls
        end
      end
    end
    report.tables[i] = entry
  end
  return report
end

-- t:has_nulls() -> boolean (EXISTS probes only, stops at the first table with NULLs)
function Tenancy:has_nulls()
  for _, tb in ipairs(self.tables) do
    if self:_catalog(tb) and self:_probe(tb) then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- Backfill

local PROGRESS_DDL = [[
CREATE SCHEMA IF NOT EXISTS dhrun;
CREATE TABLE IF NOT EXISTS dhrun.backfill_progress (
    task         text PRIMARY KEY,
    cursor       text[],
    pass         int NOT NULL DEFAULT 1,
    rows_updated bigint NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    range_end    text[]
);]]

function Tenancy:_progress_exists()
  return not isnull(self.conn:query_value("SELECT to_regclass('dhrun.backfill_progress')::text"))
end

function Tenancy:_ensure_progress_table()
  if self:_progress_exists() then return end
  local ok, err = pcall(self.conn.exec_script, self.conn, PROGRESS_DDL)
  -- Two runs creating it at the same moment: the loser sees a duplicate.
  if not ok and not (type(err) == "table" and (err.sqlstate == "23505" or err.sqlstate == "42P07"
      or err.sqlstate == "42P06")) then
    error(err, 0)
  end
end

function Tenancy:_read_progress(tb)
  local r = self.conn:query_one([[
    SELECT cursor::text AS cursor, pass, rows_updated, finished_at IS NOT NULL AS finished
      FROM dhrun.backfill_progress WHERE task = $1]], tb.task)
  if r == nil then return nil end
  return { cursor = not isnull(r.cursor) and r.cursor or nil, pass = r.pass, rows_updated = r.rows_updated,
           finished = r.finished }
end

-- An index that finds the rows where the column IS NULL: a valid btree
-- index whose first column is the tenant column (not partial, or partial
-- on exactly "column IS NULL").  Its name, or nil.
function Tenancy:_null_index(tb)
  local name = self.conn:query_value([[
    SELECT i.indexrelid::regclass::text
      FROM pg_index i
      JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
     WHERE i.indrelid = $1::regclass AND i.indkey[0] = $2 AND i.indisvalid AND i.indisready
       AND am.amname = 'btree' AND (i.indpred IS NULL OR pg_get_expr(i.indpred, i.indrelid) = $3)
     ORDER BY i.indpred IS NULL, i.indnatts
     LIMIT 1]], tb.qname, tb.attnum, format("(%s IS NULL)", self:_col()))
  return not isnull(name) and name or nil
end

-- True when the planner's statistics on the table are older than the
-- backfill pass that just finished: they still count the column as mostly
-- NULL, and would send a search for the remaining NULLs along the primary
-- key instead of through the column's index.
function Tenancy:_stats_older_than_pass(tb)
  return self.conn:query_value([[
    SELECT coalesce(greatest(s.last_analyze, s.last_autoanalyze) < p.finished_at, true)
      FROM dhrun.backfill_progress p, pg_stat_user_tables s
     WHERE p.task = $1 AND s.relid = $2::regclass]], tb.task, tb.qname) == true
end

-- The primary key as SQL: its columns ("a", "b") and the same as text, for
-- a key's text[] form, the cursor's (ARRAY[...]): "a"::text, "b"::text.
function Tenancy:_pk_sql(tb)
  local cols, texts = {}, {}
  for i, c in ipairs(tb.pk) do
    cols[i] = self.conn:quote_ident(c.name)
    texts[i] = cols[i] .. "::text"
  end
  return concat(cols, ", "), concat(texts, ", ")
end

-- Parameter $n, a key as text[], as a row of the key's own types:
-- ($n::text[])[1]::integer, ($n::text[])[2]::date.
local function key_param(tb, n)
  local parts = {}
  for i, c in ipairs(tb.pk) do parts[i] = format("($%d::text[])[%d]::%s", n, i, c.type) end
  return concat(parts, ", ")
end

-- The batch statement: pick the next `limit` keys in primary key order,
-- update those rows that are still NULL, and return how many keys were
-- visited, how many rows got a value, and the last key (the new cursor, as
-- text[]).  $1 = limit, $2 = a key (text[]).
--   bound: nil (from the first key), ">" (after the cursor $2), ">=" (from
--   key $2 on: a pass that starts at the first key with a NULL);
--   sparse: the keys of rows with NULL only, through the column's index (a
--   pass over what an earlier pass left), instead of every key.
--   upper: the batch ends at key $3 (or $2 without a bound), inclusive: the
--   key `limit` keys on (see _upper_sql), or else the end of a worker's range.
-- After these: the progress row's task, pass and old cursor, and whether the
-- batch may be the last (no upper key was found): only then does a short
-- batch mark the pass finished (rows deleted under a bounded batch make it
-- short too).
function Tenancy:_batch_sql(tb, bound, sparse, upper)
  local conn, bf = self.conn, self.backfill_spec[tb.name]
  local pk, texts = self:_pk_sql(tb)
  local after, before = key_param(tb, 2), key_param(tb, bound and 3 or 2)
  local tcols, desc, join, last = {}, {}, {}, {}
  for i, c in ipairs(tb.pk) do
    local q = conn:quote_ident(c.name)
    tcols[i], desc[i] = "t." .. q, q .. " DESC"
    join[i] = format("t.%s = dhrun_batch.%s", q, q)
    last[i] = format("(SELECT %s FROM dhrun_last)", q)
  end
  local col = self:_col()
  local where = {}
  if sparse then where[#where + 1] = col .. " IS NULL" end
  if bound then where[#where + 1] = format("(%s) %s (%s)", pk, bound, after) end
  if upper then where[#where + 1] = format("(%s) <= (%s)", pk, before) end
  -- Which rows the UPDATE takes: a pass over every key takes the key range
  -- the batch's keys span, (cursor, last key], so the planner scans that
  -- range of the primary key index (a join with the list of keys let it pick
  -- a merge join whose index scan starts at the table's first key: every
  -- batch then read all the rows before it).  A pass over the rows left NULL
  -- joins the list of their keys instead: the range between them may hold
  -- many rows already filled.
  local pick
  if sparse then
    pick = "FROM dhrun_batch%s\n   WHERE " .. concat(join, " AND ")
  else
    local range = {}
    if bound then range[#range + 1] = format("(%s) %s (%s)", concat(tcols, ", "), bound, after) end
    -- The upper key as a parameter, known when the statement is planned: the
    -- planner then sees a range of about `limit` rows.  Bounded only by the
    -- last key of dhrun_batch, a value it learns when the statement runs, it
    -- would plan for a large part of the table: with a parent rule, a hash
    -- of the whole parent table in every batch (10-15 ms a batch at 10M).
    if upper then range[#range + 1] = format("(%s) <= (%s)", concat(tcols, ", "), before) end
    range[#range + 1] = format("(%s) <= (%s)", concat(tcols, ", "), concat(last, ", "))
    pick = "%s\n   WHERE " .. concat(range, " AND ")
  end
  local from = bf.from and ((sparse and ", " or "FROM ") .. bf.from) or ""
  -- Over a key range the NULL test is a filter, written so that no index on
  -- the column can serve it: once ANALYZE has seen part of the table filled,
  -- the planner otherwise ANDs the primary key range with a bitmap of every
  -- NULL in that index (millions of entries per batch at 10M rows: the
  -- benchmark's batches fell to about a hundred rows).
  local null_test = sparse and format("t.%s IS NULL", col) or format("(t.%s IS NULL) IS TRUE", col)
  -- The progress row moves in the same statement (one statement per
  -- batch): the new cursor, the rows updated, finished when the batch came
  -- back short.  Its old cursor in the WHERE clause makes a second run of
  -- the same task update no progress row (progressed = 0) instead of both
  -- moving it.  Parameters after the batch's own: task, pass, old cursor.
  local n = (bound and 2 or 1) + (upper and 1 or 0)
  return format([[
WITH dhrun_batch AS (
  SELECT %s FROM %s%s ORDER BY %s LIMIT $1
), dhrun_last AS (
  SELECT %s FROM dhrun_batch ORDER BY %s LIMIT 1
), dhrun_updated AS (
  UPDATE %s AS t SET %s = (%s)
    %s AND %s%s
  RETURNING t.%s AS dhrun_value
), dhrun_progress AS (
  UPDATE dhrun.backfill_progress
     SET cursor = coalesce((SELECT ARRAY[%s]::text[] FROM dhrun_last), $%d::text[]),
         rows_updated = rows_updated + (SELECT count(*) FROM dhrun_updated WHERE dhrun_value IS NOT NULL),
         updated_at = now(),
         finished_at = CASE WHEN $%d::boolean AND (SELECT count(*) FROM dhrun_batch) < $1 THEN now() END
   WHERE task = $%d AND pass = $%d AND cursor IS NOT DISTINCT FROM $%d::text[] AND finished_at IS NULL
  RETURNING 1
)
SELECT (SELECT count(*) FROM dhrun_batch) AS scanned,
       (SELECT count(*) FROM dhrun_updated WHERE dhrun_value IS NOT NULL) AS updated,
       (SELECT ARRAY[%s]::text FROM dhrun_last) AS cursor,
       (SELECT count(*) FROM dhrun_progress) AS progressed]],
    pk, tb.qname, #where > 0 and (" WHERE " .. concat(where, " AND ")) or "", pk,
    pk, concat(desc, ", "),
    tb.qname, col, bf.value,
    format(pick, from), null_test, bf.where and (" AND (" .. bf.where .. ")") or "",
    col, texts, n + 3, n + 4, n + 1, n + 2, n + 3, texts)
end

-- The key `limit` keys on from the cursor (the batch's last key), as text[],
-- or NULL when fewer keys are left: one index-only scan of the batch's keys.
-- $1 = limit, $2 = the cursor (with a bound), then the end of a worker's
-- range (upper).
function Tenancy:_upper_sql(tb, bound, upper)
  local pk, texts = self:_pk_sql(tb)
  local where = {}
  if bound then where[#where + 1] = format("(%s) %s (%s)", pk, bound, key_param(tb, 2)) end
  if upper then where[#where + 1] = format("(%s) <= (%s)", pk, key_param(tb, bound and 3 or 2)) end
  return format("SELECT ARRAY[%s]::text FROM %s%s ORDER BY %s OFFSET $1 - 1 LIMIT 1", texts, tb.qname,
    #where > 0 and (" WHERE " .. concat(where, " AND ")) or "", pk)
end

-- Whether the table's rule is a parent chain whose every hop finds its row
-- by a btree or hash index on the key (a foreign key's target always has
-- one) that can serve the join: its operator family has an equality
-- operator between the foreign key's type and the key's (int8 = int4 is
-- one; numeric = int4 is not).  Its batches then look each parent up through that index
-- (a nested loop, with PostgreSQL's memoize for repeated parents) instead of
-- hashing the whole parent table: a batch costs the same whatever the size
-- of the parent table.
function Tenancy:_indexed_parents(tb)
  local hops = self.backfill_spec[tb.name].parents
  if not hops then return false end
  local child = tb.qname
  for _, h in ipairs(hops) do
    -- tables as the rule's SQL names them (search_path)
    local parent = self.conn:quote_ident(h.table)
    local found = self.conn:query_value([[
      SELECT EXISTS (
        SELECT 1 FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam
          JOIN pg_opclass oc ON oc.oid = i.indclass[0]
          JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = i.indkey[0]
          JOIN pg_attribute f ON f.attrelid = to_regclass($3) AND f.attname = $4 AND NOT f.attisdropped
         WHERE i.indrelid = to_regclass($1) AND k.attname = $2 AND i.indisvalid AND i.indpred IS NULL
           AND am.amname IN ('btree', 'hash')
           AND EXISTS (SELECT 1 FROM pg_amop o
                        WHERE o.amopfamily = oc.opcfamily AND o.amopmethod = am.oid
                          AND o.amoplefttype = k.atttypid AND o.amoprighttype = f.atttypid
                          AND o.amopstrategy = CASE am.amname WHEN 'btree' THEN 3 ELSE 1 END))]],
      parent, h.key, child, h.fk)
    if found ~= true then return false end
    child = parent
  end
  return true
end

-- Stores the new cursor in the batch's own transaction.  The old cursor in the
-- WHERE clause makes two concurrent runs of one task fail instead of both
-- writing.
local PROGRESS_UPDATE = [[
UPDATE dhrun.backfill_progress
   SET cursor = $2::text[], rows_updated = rows_updated + $3, updated_at = now(),
       finished_at = CASE WHEN $4::boolean THEN now() END
 WHERE task = $1 AND pass = $5 AND cursor IS NOT DISTINCT FROM $6::text[] AND finished_at IS NULL]]

-- A table's batch settings for this run: spec.table_settings over the
-- global ones, and the run's own (backfill{batch_size=, pause=}) over both;
-- an explicit batch size is kept fixed instead of adapting.
local function run_settings(tb, opts)
  local s = {}
  for k, v in pairs(tb.settings) do s[k] = v end
  if opts.batch_size then
    s.batch_size, s.min_batch_size, s.max_batch_size = opts.batch_size, opts.batch_size, opts.batch_size
  end
  if opts.pause then s.pause = opts.pause end
  return s
end

-- How a pass finds its rows.  The first pass visits every key in order.
-- A later one (rows written behind the cursor meanwhile, or NULLs found
-- after a finished run) looks for what is left instead of walking the whole
-- table again: through an index on the column when there is one ("sparse":
-- each batch takes the next keys whose column IS NULL), else from the first
-- key that still has a NULL.  Returns sparse, start key (text[]) or nil, and
-- whether there is nothing left to visit.
function Tenancy:_plan_pass(tb, prog)
  if prog.pass == 1 then return false end
  local index = self:_null_index(tb)
  if index then
    if prog.cursor == nil then
      if prog.analyze then
        -- The statistics still describe the table before the last pass (the
        -- column mostly NULL): the planner would look for the NULLs along the
        -- primary key, reading the whole table in every batch.
        local ok, err = pcall(db.retry, self.conn, "ANALYZE " .. tb.qname, self:_retry_opts(tb,
          "ANALYZE " .. tb.qname, "ShareUpdateExclusiveLock", { retries = math.min(self.spec.retries, 2),
          outwait_autovacuum = false }))
        if not ok and not errors.is(err, "lock") then error(err, 0) end
        if not ok then self.log.warn(format("backfill %s: %s", tb.name, err.message)) end
      end
      self.log.info(format("backfill %s: pass %d visits only the rows with NULL %s (index %s)", tb.name, prog.pass,
        self.column, index))
    end
    return true
  end
  if prog.cursor ~= nil then return false end
  local pk, texts = self:_pk_sql(tb)
  local start = self.conn:query_value(format("SELECT ARRAY[%s]::text FROM %s WHERE %s IS NULL ORDER BY %s LIMIT 1",
    texts, tb.qname, self:_col(), pk))
  if isnull(start) then return false, nil, true end
  self.log.info(format("backfill %s: pass %d starts at key %s, the first with NULL %s (with an index on %s, it would "
    .. "visit only the rows with NULL)", tb.name, prog.pass, start, self.column, self.column))
  return false, start
end

---------------------------------------------------------------------------
-- Health signals, read between batches (see the README, "Backfill health
-- signals").  Each check is one cheap query on the backfill's own session
-- (no table is touched), plus the probe when one is configured:
--   * the WAL generation rate: pg_current_wal_lsn() deltas over the last
--     WAL_WINDOW seconds (cluster-wide: the application's WAL counts too);
--   * the replay lag of every streaming replica, from pg_stat_replication
--     on the primary.  replay_lag stops moving while a replica's replay is
--     stuck (PostgreSQL keeps its last value), so the lag is also estimated
--     from the LSN distance: the age of the oldest WAL position the replica
--     has not replayed, from the history of positions sampled here.  A
--     replica that has replayed everything has no lag.  (Reading the
--     replicas needs a superuser or pg_read_all_stats; without it they are
--     invisible and not checked.)
--   * a VACUUM (an autovacuum worker, usually) running on the table;
--   * the probe: the latency of spec.probe.sql, or of a GET of spec.probe.url.
-- The batch's own duration and commit time come from the batch itself.
local WAL_WINDOW = 2 -- seconds the WAL rate is averaged over
local HISTORY = 512 -- WAL position samples kept for the replica lag estimate

local HEALTH_SQL = [[
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 AS lsn,
       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v WHERE v.relid = $1::regclass) AS vacuum,
       r.application_name AS replica, (r.replay_lsn - '0/0'::pg_lsn)::int8 AS replay,
       extract(epoch FROM r.replay_lag)::float8 AS replay_lag
  FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON r.state = 'streaming' AND r.replay_lsn IS NOT NULL]]

local function bytes_text(n)
  if n >= 1024 ^ 3 then return format("%.1f GB", n / 1024 ^ 3) end
  if n >= 1024 ^ 2 then return format("%.1f MB", n / 1024 ^ 2) end
  return format("%.0f kB", n / 1024)
end

local function seconds_text(v)
  if v < 1 then return format("%.0f ms", v * 1000) end
  return format("%.2f s", v)
end

local Health = {}
Health.__index = Health

local function new_health(t, tb)
  return setmetatable({ conn = t.conn, spec = t.spec, tb = tb, hist = {} }, Health)
end

-- The estimated lag of a replica that has replayed up to `replay`: the age
-- of the first sample whose WAL position is past it.
function Health:_lsn_lag(replay, now)
  local hist = self.hist
  if replay >= hist[#hist].lsn then return 0 end
  for i = #hist, 1, -1 do
    if hist[i].lsn <= replay then return now - hist[i + 1].t end
  end
  return now - hist[1].t -- older than the history: at least that old
end

function Health:_probe_latency()
  local p = self.spec.probe
  -- The probe's SQL runs with the session's settings as they were before the
  -- pass (synchronous_commit, jit, the join settings, lock_timeout), as the
  -- application's statements do, not with the batches' (see _pass): one
  -- statement before it and one after.
  local session = p.sql and self.session and #self.session > 0 and self.session
  local function apply(which)
    local calls, args = {}, {}
    for i, st in ipairs(session) do
      calls[i] = format("set_config($%d, $%d, false)", 2 * i - 1, 2 * i)
      args[2 * i - 1], args[2 * i] = st.name, st[which]
    end
    self.conn:query("SELECT " .. concat(calls, ", "), table.unpack(args, 1, 2 * #session))
  end
  if session then apply("previous") end
  local _ <close> = session and setmetatable({}, { __close = function() pcall(apply, "value") end }) or nil
  local t0 = sys.now()
  if p.sql then
    local ok, err = pcall(self.conn.exec_script, self.conn, p.sql)
    if not ok then return nil, "failed: " .. tostring(type(err) == "table" and err.message or err) end
  else
    local res, err = require("dhrun.http").get(p.url, { timeout = math.max(1, p.max * 20) })
    if not res then return nil, "failed: " .. tostring(err.message or err) end
    if not res.ok then return nil, "failed: HTTP " .. tostring(res.status) end
  end
  return sys.now() - t0
end

-- The WAL position at the start of a pass: the first batch's WAL counts
-- toward the rate too.
function Health:mark()
  if self.spec.max_wal_rate then
    self.hist[#self.hist + 1] = { t = sys.now(), lsn = self.conn:query_value(
      "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8") }
  end
end

-- Reads the signals.  Returns nil when all are within their limits, else the
-- first one over: {signal=, value=, limit=, text=, pause=, wait=}.  pause:
-- the backfill waits until it clears; otherwise the batch size only shrinks.
-- batch = {seconds=, commit=} for the batch that just ended, or nil.
function Health:check(batch)
  local s, now = self.spec, sys.now()
  local rows = self.conn:query(HEALTH_SQL, self.tb.qname)
  local hist = self.hist
  hist[#hist + 1] = { t = now, lsn = rows[1].lsn }
  if #hist > HISTORY then table.remove(hist, 1) end
  local found
  local function over(signal, value, limit, text, pause, wait)
    found = found or { signal = signal, value = value, limit = limit, text = text, pause = pause, wait = wait }
  end
  if s.max_replica_lag then
    for _, r in ipairs(rows) do
      if not isnull(r.replica) and not isnull(r.replay) then
        local lag = self:_lsn_lag(r.replay, now)
        if lag > 0 and not isnull(r.replay_lag) then lag = math.max(lag, r.replay_lag) end
        if lag > s.max_replica_lag then
          over("replica lag", lag, s.max_replica_lag, format("replica lag %s > %s (replica %s, %s behind)",
            seconds_text(lag), seconds_text(s.max_replica_lag), r.replica,
            bytes_text(hist[#hist].lsn - r.replay)), true)
        end
      end
    end
  end
  if s.max_wal_rate then
    local base
    for i = #hist - 1, 1, -1 do
      if now - hist[i].t > WAL_WINDOW then break end
      base = hist[i]
    end
    if base and now - base.t > 0.01 then
      local bytes = hist[#hist].lsn - base.lsn
      local rate = bytes / (now - base.t)
      if rate > s.max_wal_rate then
        -- how long until the average over the window is back at the limit
        local wait = math.min(0.5, bytes / s.max_wal_rate - (now - base.t))
        over("WAL rate", rate, s.max_wal_rate, format("WAL rate %s/s > %s/s", bytes_text(rate),
          bytes_text(s.max_wal_rate)), true, wait)
      end
    end
  end
  if s.probe then
    local took, err = self:_probe_latency()
    if not took then
      over("probe", -1, s.probe.max, "probe " .. err, true)
    elseif took > s.probe.max then
      over("probe", took, s.probe.max, format("probe %s > %s", seconds_text(took), seconds_text(s.probe.max)), true)
    end
  end
  if batch and batch.commit and s.max_commit and batch.commit > s.max_commit then
    over("commit time", batch.commit, s.max_commit, format("commit took %s > %s", seconds_text(batch.commit),
      seconds_text(s.max_commit)), false)
  end
  -- last: it only holds the size, any other signal over its limit comes first
  if s.autovacuum ~= "ignore" and rows[1].vacuum then
    over("vacuum", 1, 0, format("a VACUUM (autovacuum) is running on %s", self.tb.name), s.autovacuum == "pause")
    if found.signal == "vacuum" then found.hold = true end
  end
  return found
end

local function count_text(n)
  return (tostring(math.floor(n)):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

-- Between two batches: reads the health signals, waits while one that
-- pauses is over its limit, and returns the next batch size (AIMD toward
-- batch_target within the table's min and max) and what limits it.
function Tenancy:_control(tb, health, s, size, retried, batch, res)
  local sig = health:check(batch)
  local limiting
  -- the largest batch of the pass so far (see the VACUUM hold below)
  health.peak = math.max(health.peak or 0, size)
  if sig and sig.pause then
    local t0, first = sys.now(), sig
    -- pacing to the WAL rate is routine: it neither shrinks the batch nor
    -- gets a line of its own each time
    if sig.signal ~= "WAL rate" then size = math.max(s.min_batch_size, math.floor(size * M.SHRINK)) end
    local quiet = sig.signal == "WAL rate" and self._wal_said
    if not quiet then
      self.log.info(format("backfill %s: paused: %s", tb.name, sig.text))
      if sig.signal == "WAL rate" then self._wal_said = true end
    end
    local max_pause = self.spec.max_pause
    while sig and sig.pause do
      local waited = sys.now() - t0
      if max_pause and waited > max_pause then
        errors.raise("state", format("backfill of %s paused for %s and %s is still over its limit: %s", tb.name,
          seconds_text(waited), sig.signal, sig.text), { hint = "the backfill resumes after its last committed "
          .. "batch: run it again once this is healthy, or raise the limit (batch.max_pause and the signal's own)",
          signal = sig.signal, value = sig.value })
      end
      sys.sleep(math.max(0.01, sig.wait or 0.1))
      sig = health:check(nil)
    end
    local waited = sys.now() - t0
    res.throttle = res.throttle or {}
    res.throttle[first.signal] = (res.throttle[first.signal] or 0) + waited
    if not quiet then
      self.log.debug(format("backfill %s: resumed after %s (%s)", tb.name, seconds_text(waited), first.signal))
      events.emit("throttle", { table = tb.name, signal = first.signal, value = first.value, limit = first.limit,
        text = first.text, seconds = waited })
    end
    limiting = first.signal
  elseif sig and sig.hold and not (not retried and batch.seconds > M.SLOW * s.batch_target) then
    -- a VACUUM on the table ("slow"): the batch size grows no larger than
    -- the largest it has been in this pass while it runs; it still shrinks
    -- when the batches get slower than the target, and grows back after
    -- that.  (Shrinking on the VACUUM itself sent the batches to their floor
    -- for as long as an autovacuum ran: on the benchmark, a fifth of the
    -- throughput.  Holding the size as it was kept a batch shrunk by one slow
    -- batch small for the minutes an autovacuum of 10M rows takes.)
    if not retried and batch.seconds < s.batch_target and size < health.peak then
      size = math.min(health.peak, size + s.batch_step)
    end
    limiting = sig.signal
  elseif sig and not sig.hold then
    size = math.max(s.min_batch_size, math.floor(size * M.SHRINK))
    limiting = sig.signal
  elseif not retried then
    -- a retried batch's time is mostly waiting: it says nothing about its size
    if batch.seconds > M.SLOW * s.batch_target then
      size = math.max(s.min_batch_size, math.floor(size * M.SHRINK))
      limiting = "batch time"
    elseif batch.seconds < s.batch_target then
      size = math.min(s.max_batch_size, size + s.batch_step)
      if size == s.max_batch_size then limiting = "max batch size" end
    else
      limiting = "batch time"
    end
  end
  if size == s.min_batch_size and not limiting then limiting = "min batch size" end
  -- a fixed size (--batch-size, or min = max) is held back by nothing but a signal
  if s.min_batch_size == s.max_batch_size and (limiting == "batch time" or limiting == "max batch size"
      or limiting == "min batch size") then
    limiting = nil
  end
  return size, limiting
end

-- One pass from the stored cursor to the end of the table.
function Tenancy:_pass(tb, prog, res, opts)
  local conn, log = self.conn, self.log
  -- The settings this pass changes in its session, with what they were: a
  -- probe's SQL runs with them as they were, as the application's does (see
  -- Health:_probe_latency).
  local changed = {}
  local function setting(name, value)
    local h = conn:with_setting(name, value)
    if h then changed[#changed + 1] = { name = name, previous = h.previous, value = value } end
    return h
  end
  -- async_commit: the batches' commits do not wait for the WAL flush (the
  -- WAL writer flushes it within a fraction of a second).  A crash can lose
  -- the last batches, but each batch's cursor commits with it, so the resume
  -- redoes exactly those.  On the benchmark under CPU contention a
  -- synchronous commit cost 5-7 ms per batch (the backend sleeps in fsync,
  -- then waits for a CPU).  One batch a second still commits synchronously:
  -- its commit time is the max_commit signal (how busy the WAL disk is).
  local async = self.spec.async_commit
  local _ <close> = setting("synchronous_commit", async and "off")
  -- JIT compiles a statement whose estimated cost is high, as a batch's is on
  -- a big table (it cannot know the batch's upper key): tens of ms per batch
  -- spent compiling a statement that runs for about 0.1 s
  local _ <close> = setting("jit", "off")
  -- The batches dirty pages much faster than an application does.  Left to
  -- the kernel, they pile up in the page cache (up to dirty_background_ratio
  -- of RAM) and are written back in bursts that commits wait behind.
  -- flush_after (backend_flush_after) makes this session hand its writes to
  -- the disk as it goes, as PostgreSQL's checkpointer and bgwriter do.  Off by
  -- default: on the benchmark machine it cost 4 % of the throughput and its
  -- effect on the write probe's tail was within the noise (bench/why.lua).
  local _ <close> = setting("backend_flush_after", self.spec.flush_after)
  local last_sync = -math.huge
  local s = run_settings(tb, opts)
  local size = self.batch_size or s.batch_size
  local sparse, start, nothing = self:_plan_pass(tb, prog)
  local range_end = prog.upper -- a worker's range (see _parallel_pass)
  local task = prog.task or tb.task
  -- A pass over every key looks each batch's last key up first (one
  -- index-only scan), so that the batch statement is planned for the range
  -- it updates (see _batch_sql).  The statements, by first batch or next,
  -- and bounded or not, are built when first needed.
  local lookup = not sparse and not nothing
  local sqls = {}
  local function sql_for(kind, bounded)
    local key = kind .. (bounded and "+" or "")
    if not sqls[key] then
      local bound = kind:match("next$") and ">" or (start and ">=" or nil)
      sqls[key] = kind:match("^upper") and self:_upper_sql(tb, bound, bounded) or self:_batch_sql(tb, bound, sparse,
        bounded)
    end
    return sqls[key]
  end
  -- a parent chain: look parents up by index rather than hash the parent
  -- table in every batch (see _indexed_parents); with the upper key known,
  -- the planner drives the join from the batch's rows
  local by_index = lookup and self:_indexed_parents(tb)
  local _ <close> = setting("enable_hashjoin", by_index and "off")
  local _ <close> = setting("enable_mergejoin", by_index and "off")
  local estimate = not sparse and conn:query_value("SELECT reltuples::int8 FROM pg_class WHERE oid = $1::regclass",
    tb.qname)
  if estimate and not isnull(estimate) and prog.workers then estimate = estimate // prog.workers end
  local p = log.progress and log.progress {
    label = format("backfill %s (pass %d%s)", tb.name, prog.pass, prog.worker and (", worker " .. prog.worker) or ""),
    unit = "rows", total = (estimate and not isnull(estimate) and estimate > 0) and estimate or nil,
  } or quiet_progress()
  -- One batch from `lower` (the cursor or the start key; nil: the first
  -- key): its upper key first, then the batch statement with the limit, the
  -- bounds, the progress row's task, pass and old cursor, and whether it may
  -- be the last (see _batch_sql).  Returns its result and that.
  local function batch(c, kind, limit, lower)
    local args = { limit }
    if lower then args[#args + 1] = lower end
    local upper, final = range_end, true
    if lookup then
      -- the same limit and lower key, then the end of a worker's range
      local uargs = { table.unpack(args) }
      if range_end then uargs[#uargs + 1] = range_end end
      local key = c:query_value(sql_for("upper " .. kind, range_end ~= nil), table.unpack(uargs))
      if not isnull(key) then upper, final = key, false end
    end
    if upper then args[#args + 1] = upper end
    local n = #args
    args[n + 1], args[n + 2], args[n + 3], args[n + 4] = task, prog.pass, prog.cursor or db.null, final
    return c:query_one(sql_for(kind, upper ~= nil), table.unpack(args, 1, n + 4)), final
  end
  local function moved()
    errors.raise("lock", format("backfill of %s: the progress row %q moved under us: another backfill of this "
      .. "table is running", tb.qname, task), { hint = "let the other run finish, then run again" })
  end
  -- a session lock_timeout for the batches that run on their own (below)
  local _ <close> = setting("lock_timeout", async and self.spec.lock_timeout)
  local scanned, updated = 0, 0
  local health = new_health(self, tb)
  health.session = changed
  health:mark()
  local limiting -- what holds the batch size back, for the progress line
  local ok, err = pcall(function()
    while true do
      local t0, out, worked = sys.now(), nil, nil
      local retried = false
      local sync = not async or t0 - last_sync >= M.SYNC_EVERY
      if sync then last_sync = t0 end
      -- An asynchronous batch is one statement on its own (the batch and its
      -- progress row), after the lookup of its last key in a pass over every
      -- key: two round trips.  Under CPU contention every round trip waits
      -- for the backend and then dhrun to get a CPU; BEGIN, SET LOCAL, the
      -- progress UPDATE and COMMIT cost about 20 ms per batch on the
      -- benchmark under stress-ng.  The synchronous batch runs in a
      -- transaction of its own, to time its commit.
      local _, attempts = db.retry(conn, function(c)
        if async and sync then c:query("SELECT set_config('synchronous_commit', 'on', true)") end
        local cursor = prog.cursor
        local new_cursor, done = cursor, true
        if nothing then
          out = { scanned = 0, updated = 0 }
          if c:exec(PROGRESS_UPDATE, task, cursor, 0, true, prog.pass, cursor) ~= 1 then moved() end
        else
          local final
          out, final = batch(c, cursor and "next" or "first", size, cursor or start)
          if out.progressed ~= 1 then moved() end
          new_cursor = isnull(out.cursor) and cursor or out.cursor
          -- short: the end of the table (or range), unless the batch had an
          -- upper key (rows deleted meanwhile)
          done = final and out.scanned < size
        end
        out.cursor, out.done = new_cursor, done
        worked = sys.now()
      end, self:_retry_opts(tb, "backfill batch on " .. tb.qname, "RowExclusiveLock", {
        autocommit = async and not sync,
        -- a lock timeout: fewer rows per attempt, fewer row locks to wait for
        on_retry = function()
          retried = true
          size = math.max(s.min_batch_size, math.floor(size * M.SHRINK))
          limiting = "lock timeout"
        end,
        hint = "long transactions hold locks on these rows or the table; run the backfill again later: it resumes "
          .. "after the last committed batch",
      }))
      local ended = sys.now()
      local took, commit = ended - t0, ended - worked
      prog.cursor = out.cursor
      scanned, updated = scanned + out.scanned, updated + out.updated
      res.batches = res.batches + 1
      p:update(scanned)
      if opts.on_batch then
        opts.on_batch { table = tb.name, pass = prog.pass, batch = res.batches, scanned = out.scanned,
                        updated = out.updated, cursor = out.cursor, batch_size = size, seconds = took,
                        commit = commit, synchronous = sync, limit = limiting, eta = p.eta and p:eta() or nil }
      end
      if out.done then break end
      if prog.parent_alive and not prog.parent_alive() then
        -- the run that started this worker is gone (kill -9): stop after the committed batch
        errors.raise("state", format("backfill %s: worker %s stops: the run that started it is gone", tb.name,
          prog.worker))
      end
      if s.pause > 0 then sys.sleep(s.pause) end
      size, limiting = self:_control(tb, health, s, size, retried or attempts > 1,
        { seconds = took, commit = sync and commit or nil }, res)
      p:note(format("batch %s%s", count_text(size), limiting and (", limited by " .. limiting) or ""))
    end
  end)
  self.batch_size = size -- a further pass over this table starts at the adapted size
  if ok and async then
    -- done means on disk: a transaction with an ID commits synchronously,
    -- which flushes the WAL of every batch before it
    ok, err = pcall(conn.transaction, conn, function(c)
      c:query("SELECT set_config('synchronous_commit', 'on', true)")
      c:query("SELECT txid_current()")
    end)
  end
  if not ok then
    p:fail("stopped: " .. tostring(type(err) == "table" and err.message or err))
    error(err, 0)
  end
  prog.finished = true
  -- "all updated, 2,000,000 rows in 45.1s", or how many of the rows seen got a value
  p:finish(updated == scanned and "all updated" or (tostring(updated):reverse():gsub("(%d%d%d)", "%1,")
    :reverse():gsub("^,", "") .. " updated"))
  res.scanned, res.updated = res.scanned + scanned, res.updated + updated
  return updated
end

---------------------------------------------------------------------------
-- Workers: spec.workers > 1 fills a table's first pass in that many
-- disjoint key ranges, each by a dhrun process of its own (dhrun is single
-- threaded; a session per process).  Each range has its own progress row
-- ("<task>#2/4": cursor, range_end) that its worker commits with each batch,
-- as a single backfill does, so kill -9 and a rerun stay exact per range: a
-- rerun finds the rows of an unfinished parallel pass and starts a worker for
-- each range not finished (whatever spec.workers now says).  A worker stops
-- after its committed batch once the run that started it is gone.  The health
-- signals are read by every worker, so a pause holds all of them.

local WORKER_CODE = [[require("dhrun.tenancy")._worker(os.getenv("DHRUN_BACKFILL_WORKER"))]]

function Tenancy:_worker_rows(tb, pass)
  if not self:_progress_exists() or isnull(self.conn:query_value([[SELECT 1 FROM pg_attribute
      WHERE attrelid = 'dhrun.backfill_progress'::regclass AND attname = 'range_end' AND NOT attisdropped]])) then
    return {}
  end
  return self.conn:query([[
    SELECT task, cursor::text AS cursor, range_end::text AS range_end, rows_updated, finished_at IS NOT NULL AS finished
      FROM dhrun.backfill_progress
     WHERE left(task, length($1)) = $1 AND pass = $2 ORDER BY task]], tb.task .. "#", pass)
end

-- Range boundaries for n workers: keys at the quantiles of a sample.
function Tenancy:_split(tb, n)
  local conn = self.conn
  local pk, texts = self:_pk_sql(tb)
  local est = conn:query_value("SELECT reltuples::int8 FROM pg_class WHERE oid = $1::regclass", tb.qname)
  local pct = (not isnull(est) and est > 0) and math.min(100, 100 * 20000 / est) or 100
  local keys = conn:query(format("SELECT ARRAY[%s]::text AS k FROM %s TABLESAMPLE SYSTEM (%.6f) ORDER BY %s",
    texts, tb.qname, pct, pk))
  local bounds = {}
  for i = 1, n - 1 do
    local k = keys[math.floor(i * #keys / n)]
    if k and k.k ~= bounds[#bounds] then bounds[#bounds + 1] = k.k end
  end
  return bounds
end

-- The workers' events, in the order they happened, passed on to the run's
-- own (opts.on_batch for batches, events.emit for the rest), each with its
-- worker.  Returns how many batches the workers committed.
local function worker_events(procs, opts)
  local cjson = require "cjson"
  local list = {}
  for _, w in ipairs(procs) do
    local f = io.open(w.events)
    if f then
      for line in f:lines() do
        local ok, e = pcall(cjson.decode, line)
        if ok and type(e) == "table" and type(e.at) == "number" then list[#list + 1] = e end
      end
      f:close()
      os.remove(w.events)
    end
  end
  table.sort(list, function(a, b) return a.at < b.at end)
  local start, batches = sys.now() - events.now(), 0
  for _, e in ipairs(list) do
    local kind = e.kind
    e.kind, e.t, e.at = nil, e.at - start, nil
    for k, v in pairs(e) do if v == cjson.null then e[k] = nil end end
    if kind == "batch" then
      batches = batches + 1
      if opts.on_batch then opts.on_batch(e) end
    else
      events.emit(kind, e)
    end
  end
  return batches
end

-- The workers' events directory: private, in $TMPDIR, named after this host
-- and process (dhrun-workers.<host>.<pid>.XXXXXX), and removed when the pass
-- ends.  A run killed with SIGKILL cannot remove its own, so each parallel
-- pass first removes this user's and this host name's directories whose run
-- is gone.  Gone is told by a lock where the file system has locks: the run
-- holds a write lock (fcntl, lfs.lock) on the directory's `lock` file for
-- the whole pass, and the kernel drops it when the run dies.  A pid would
-- not do: in another pid namespace (a container sharing /tmp and the host
-- name) a live run's pid looks gone.  Without a `lock` file (the file system
-- has no locks, or the directory is being made) the pid in the name decides.
-- What is removed: see remove_workers_dir.
local LOCK_FILE = "lock"

local function workers_base()
  return os.getenv("TMPDIR") or "/tmp", (sys.hostname():gsub("[^%w%-]", "_"))
end

-- Removes a workers' directory: the workers' own files (<n>.jsonl), its lock
-- file under either name, then the directory; each removal may fail (another
-- run may be doing the same).
local function remove_workers_dir(path)
  local lfs = require "lfs"
  pcall(function()
    for f in lfs.dir(path) do
      if f:match("^%d+%.jsonl$") or f == ".lock" or f == LOCK_FILE then os.remove(path .. "/" .. f) end
    end
  end)
  os.remove(path)
end

local function sweep_workers_dirs()
  local base, host = workers_base()
  local lfs = require "lfs"
  local ok, iter, dir = pcall(lfs.dir, base)
  if not ok then return end
  local prefix = "dhrun-workers." .. host .. "."
  for name in iter, dir do
    local pid = name:sub(1, #prefix) == prefix and math.tointeger(tonumber(name:sub(#prefix + 1):match("^(%d+)%.%w+$")))
    local path = base .. "/" .. name
    local a = pid and pid > 0 and pid <= 0x7fffffff and pid ~= sys.pid() and lfs.symlinkattributes(path)
    if a and a.mode == "directory" and a.uid == sys.uid() then
      local lock = path .. "/" .. LOCK_FILE
      local la = lfs.symlinkattributes(lock)
      -- a read lock: it needs only read access, and the run's write lock refuses it
      local fh = la and la.mode == "file" and io.open(lock, "r")
      local gone
      if fh then
        gone = lfs.lock(fh, "r") ~= nil
      elseif not la then
        -- no `lock`: the file system has no locks (or an older dhrun made
        -- it); a `.lock` someone holds all the same keeps it, else the pid
        -- decides
        local held, tmp = false, io.open(path .. "/.lock", "r")
        if tmp then
          local locked, err = lfs.lock(tmp, "r")
          held = not locked and not tostring(err):find("No locks available", 1, true)
          tmp:close()
        end
        gone = not held and not sys.alive(pid)
      end
      if gone then remove_workers_dir(path) end
      if fh then fh:close() end
    end
  end
end

-- Makes this pass's directory: made and locked under a name no sweep looks
-- at (dhrun-making.*), then renamed into place, so that a sweep never sees
-- it unlocked.  Returns its path and a to-be-closed value that removes it.
local function workers_dir()
  local lfs = require "lfs"
  local base, host = workers_base()
  local making = sys.mkdtemp(format("%s/dhrun-making.%s.%d.XXXXXX", base, host, sys.pid()))
  local fh = assert(io.open(making .. "/.lock", "w"))
  -- where the file system has no locks, the lock file keeps its first name
  -- and a sweep goes by the pid in the directory's name
  if lfs.lock(fh, "w") then os.rename(making .. "/.lock", making .. "/" .. LOCK_FILE) end
  local path = base .. "/dhrun-workers." .. making:match("/dhrun%-making%.([^/]*)$")
  assert(os.rename(making, path))
  -- (the lock file is removed while still locked; the lock goes with the close)
  return path, setmetatable({}, { __close = function()
    remove_workers_dir(path)
    fh:close()
  end })
end

function Tenancy:_parallel_pass(tb, prog, res, opts, n)
  local conn = self.conn
  if isnull(conn:query_value([[SELECT 1 FROM pg_attribute WHERE attrelid = 'dhrun.backfill_progress'::regclass
                                 AND attname = 'range_end' AND NOT attisdropped]])) then
    conn:exec("ALTER TABLE dhrun.backfill_progress ADD COLUMN IF NOT EXISTS range_end text[]")
  end
  local rows = self:_worker_rows(tb, prog.pass)
  if #rows == 0 then
    local bounds = self:_split(tb, n)
    local count = #bounds + 1
    conn:transaction(function(c)
      for i = 1, count do
        c:exec([[INSERT INTO dhrun.backfill_progress (task, pass, cursor, range_end) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (task) DO UPDATE SET pass = excluded.pass, cursor = excluded.cursor,
                   range_end = excluded.range_end, rows_updated = 0, started_at = now(), updated_at = now(),
                   finished_at = NULL]], format("%s#%d/%d", tb.task, i, count), prog.pass,
          bounds[i - 1] or db.null, bounds[i] or db.null)
      end
    end)
    rows = self:_worker_rows(tb, prog.pass)
    self.log.info(format("backfill %s: pass %d in %d workers", tb.name, prog.pass, #rows))
  else
    self.log.info(format("backfill %s: resuming pass %d in %d workers", tb.name, prog.pass, #rows))
  end
  local before = 0
  for _, r in ipairs(rows) do before = before + r.rows_updated end
  local process = require "dhrun.process"
  local payload = { spec = self.portable, table = tb.name, parent = sys.pid(), n = #rows, indent = self.log.prefix,
                    batch_size = opts.batch_size, pause = opts.pause }
  -- each worker writes its batch and throttle events to a file of its own
  -- (private directory); they are passed on below, so the run's report has
  -- every worker's batches
  sweep_workers_dirs()
  local evdir, remove_evdir
  if opts.on_batch or events.recording() then evdir, remove_evdir = workers_dir() end
  local _ <close> = remove_evdir
  -- closed before the directory is removed: on an error, the workers that
  -- started are stopped first (they commit each batch with its cursor)
  local procs <close> = setmetatable({}, { __close = function(list)
    for _, w in ipairs(list) do w.proc:stop() end
  end })
  for i, r in ipairs(rows) do
    if not r.finished then
      payload.task, payload.worker = r.task, r.task:match("#([^#]*)$")
      local evfile = evdir and format("%s/%d.jsonl", evdir, i) or false
      procs[#procs + 1] = { task = r.task, events = evfile, proc = process.spawn({ sys.exepath(), "-e", WORKER_CODE }, {
        env = { DHRUN_BACKFILL_WORKER = require("cjson").encode(payload), DHRUN_BACKFILL_DB = opts.connect or false,
                DHRUN_BACKFILL_EVENTS = evfile },
        stdout = process.INHERIT, stderr = process.INHERIT }) }
    end
  end
  local failed = {}
  for _, w in ipairs(procs) do
    local r = w.proc:wait()
    if not r or r.code ~= 0 then failed[#failed + 1] = format("%s (%s)", w.task, r and (r.signame or ("exit "
      .. tostring(r.code))) or "?") end
  end
  -- without the events, one count per worker (how many batches it ran is not known)
  local batches = #procs
  if evdir then batches = worker_events(procs, opts) end
  rows = self:_worker_rows(tb, prog.pass)
  local total, last = 0, nil
  for _, r in ipairs(rows) do total, last = total + r.rows_updated, r.cursor end
  res.updated_in_workers = (res.updated_in_workers or 0) + total - before
  res.batches = res.batches + batches
  if #failed > 0 then
    errors.raise("failed", format("backfill of %s: worker %s failed; the ranges of the others are committed",
      tb.name, concat(failed, ", ")), { hint = "run the backfill again: it resumes each range after its last "
      .. "committed batch" })
  end
  conn:exec([[UPDATE dhrun.backfill_progress SET rows_updated = $2, cursor = $3, updated_at = now(),
              finished_at = now() WHERE task = $1]], tb.task, total, last or db.null)
  prog.finished = true
  res.scanned, res.updated = res.scanned + total - before, res.updated + total - before
  return total - before
end

-- The body of a worker process (see above): its range of one table.
function M._worker(payload)
  local w = require("cjson").decode((assert(payload, "DHRUN_BACKFILL_WORKER not set")))
  -- JSON has no integers: whole numbers back to Lua integers (batch sizes must be)
  local function ints(t)
    for k, v in pairs(t) do
      if type(v) == "table" then ints(v) elseif math.type(v) == "float" and math.tointeger(v) then
        t[k] = math.tointeger(v)
      end
    end
  end
  ints(w)
  local target = os.getenv("DHRUN_BACKFILL_DB")
  local conn <close> = db.connect(target ~= "" and target or nil, { application_name = "dhrun" })
  -- lines under the run's step, as the run's own are
  if type(w.indent) == "string" then w.spec.log = require("dhrun.log").indented(w.indent) end
  local t = M.new(conn, w.spec)
  local tb
  for _, x in ipairs(t.tables) do if x.name == w.table then tb = x end end
  local prepare = t.backfill_spec.prepare
  if prepare then
    db.retry(conn, function(c) c:exec_script(prepare) end, t:_retry_opts(nil, "backfill prepare", nil))
  end
  local r = conn:query_one([[SELECT cursor::text AS cursor, range_end::text AS range_end, pass,
                                    finished_at IS NOT NULL AS finished
                               FROM dhrun.backfill_progress WHERE task = $1]], w.task)
  if not r or r.finished then return end
  local prog = { task = w.task, pass = r.pass, cursor = not isnull(r.cursor) and r.cursor or nil,
                 upper = not isnull(r.range_end) and r.range_end or nil, worker = w.worker, workers = w.n }
  function prog.parent_alive() return sys.alive(math.tointeger(w.parent)) end
  local res = { batches = 0, scanned = 0, updated = 0 }
  -- this worker's events, one JSON line each, for the run that started it
  -- (see worker_events); `at` is the monotonic clock, which every
  -- process on the machine shares
  local evfile = os.getenv("DHRUN_BACKFILL_EVENTS")
  local out = evfile and evfile ~= "" and assert(io.open(evfile, "w"))
  if out then
    local cjson = require "cjson"
    events.record(function(e)
      e.at, e.t, e.worker = sys.now(), nil, w.worker
      out:write(cjson.encode(e), "\n")
      out:flush()
    end)
  end
  t:_pass(tb, prog, res, { batch_size = w.batch_size ~= require("cjson").null and w.batch_size or nil,
                           pause = w.pause ~= require("cjson").null and w.pause or nil,
                           on_batch = out and function(info) events.emit("batch", info) end or nil })
  if out then out:close() end
end

-- VACUUM (ANALYZE) after a table's backfill (spec.vacuum, on by default):
-- the dead row versions the backfill left are cleaned now, before NOT NULL
-- is enforced, instead of by an autovacuum worker that starts in the middle
-- of it (the enforcement outwaits one, see _retry_opts, but each step then
-- waits deadlock_timeout), and the planner learns that the column is filled.
-- It costs about what the autovacuum would (2.2 s after a backfill of 1M
-- rows, 89 MB, that took 72 s), paid up front and unthrottled.  VACUUM runs
-- outside a transaction and waits for its lock like any VACUUM (an
-- autovacuum already on the table is cancelled after deadlock_timeout): it
-- conflicts with other VACUUMs and DDL, not with the application's reads
-- and writes.
function Tenancy:_vacuum(tb, res)
  local conn = self.conn
  local t0 = sys.now()
  conn:notices()
  -- flush_after: VACUUM writes the pages it cleans from this backend too
  local _ <close> = conn:with_setting("backend_flush_after", self.spec.flush_after)
  conn:exec("VACUUM (ANALYZE) " .. tb.qname)
  res.vacuum_seconds = sys.now() - t0
  for _, n in ipairs(conn:notices()) do
    -- e.g. "permission denied to vacuum ..., skipping it" for a role that does not own the table
    if n.severity == "WARNING" then self.log.warn(format("backfill %s: VACUUM: %s", tb.name, n.message)) end
  end
  self.log.info(format("backfill %s: VACUUM (ANALYZE) in %.2f s", tb.name, res.vacuum_seconds))
end

function Tenancy:_backfill_table(tb, opts)
  local conn = self.conn
  local t0 = sys.now()
  local res = { table = tb.name, updated = 0, scanned = 0, batches = 0, passes = 0, remaining = 0 }
  self.batch_size = nil -- each table adapts from its own batch_size: row widths differ
  local nullable = self:_catalog(tb)
  if not nullable or not self:_probe(tb) then
    res.skipped, res.seconds = true, sys.now() - t0
    self.log.info(format("backfill %s: no NULL %s, nothing to do", tb.name, self.column))
    return res
  end
  conn:exec("INSERT INTO dhrun.backfill_progress (task) VALUES ($1) ON CONFLICT (task) DO NOTHING", tb.task)
  local prog = self:_read_progress(tb)
  if prog.cursor and not prog.finished then
    self.log.info(format("backfill %s: resuming pass %d after key %s", tb.name, prog.pass, prog.cursor))
  elseif prog.finished then
    self.log.info(format("backfill %s: NULL %s found after a finished pass: starting pass %d", tb.name, self.column,
      prog.pass + 1))
  end
  while true do
    if prog.finished then
      -- NULLs remain after a finished pass (rows written behind the cursor
      -- meanwhile, or set to NULL since): another pass, which looks only for
      -- them (_plan_pass).
      local analyze = self:_stats_older_than_pass(tb)
      conn:exec([[UPDATE dhrun.backfill_progress SET pass = pass + 1, cursor = NULL, finished_at = NULL,
                  started_at = now(), updated_at = now() WHERE task = $1]], tb.task)
      prog = self:_read_progress(tb)
      prog.analyze = analyze
    end
    local full = prog.cursor == nil
    local n
    local workers = opts.workers or self.spec.workers
    if prog.pass == 1 and not prog.finished and (self:_worker_rows(tb, prog.pass)[1] or (full and workers > 1)) then
      n = self:_parallel_pass(tb, prog, res, opts, workers)
    else
      n = self:_pass(tb, prog, res, opts)
    end
    res.passes = res.passes + 1
    if not self:_probe(tb) then break end
    -- A full pass that filled nothing will not fill anything the next time:
    -- the remaining rows' value expression yields NULL.
    if res.passes >= M.MAX_PASSES or (full and n == 0) then
      res.remaining = self:_count_nulls(tb)
      self.log.warn(format("backfill %s: %d row(s) still have NULL %s after %d pass(es) (their value expression "
        .. "yields NULL, or rows keep arriving without it)", tb.name, res.remaining, self.column, res.passes))
      break
    end
  end
  -- only a table the backfill changed has dead rows for autovacuum to clean
  if res.updated > 0 and run_settings(tb, opts).vacuum then self:_vacuum(tb, res) end
  res.seconds = sys.now() - t0
  return res
end

function Tenancy:_backfill_dry_run()
  local summary = { dry_run = true, tables = {}, updated = 0, nulls = 0 }
  local progress = self:_progress_exists()
  for i, tb in ipairs(self.tables) do
    if not self.backfill_spec[tb.name] then
      config_error(format("spec.backfill has no entry for table %s (how to compute %s for it)", tb.name,
        self.column), { table = tb.name })
    end
    local nullable = self:_catalog(tb)
    local has = nullable and self:_probe(tb) or false
    local entry = { table = tb.name, has_nulls = has, nulls = has and self:_count_nulls(tb) or 0,
                    sql = self:_batch_sql(tb), vacuum = has and tb.settings.vacuum or nil }
    local prog = progress and self:_read_progress(tb)
    if prog and not prog.finished and prog.cursor then entry.resume_cursor, entry.pass = prog.cursor, prog.pass end
    summary.nulls = summary.nulls + entry.nulls
    summary.tables[i] = entry
    self.log.info(format("dry run: backfill %s: %d row(s) with NULL %s%s%s", tb.name, entry.nulls, self.column,
      entry.resume_cursor and format(" (would resume pass %d after key %s)", entry.pass, entry.resume_cursor) or "",
      entry.vacuum and ", then VACUUM (ANALYZE)" or ""))
  end
  return summary
end

-- t:backfill([opts]) -> {tables = { {table=, updated=, scanned=, batches=, passes=, remaining=, seconds=,
--                        skipped=} }, updated = total, remaining = total}
--   opts.dry_run: only report (counts, the batch SQL); changes nothing.
--   opts.on_batch = function(info) after each committed batch:
--     info = {table=, pass=, batch=, scanned=, updated=, cursor=, batch_size=, seconds=}
function Tenancy:backfill(opts)
  opts = opts or {}
  if opts.dry_run then return self:_backfill_dry_run() end
  -- opts.batch_size, opts.pause: per-run overrides (dhrun backfill
  -- --batch-size N --pause S), see run_settings
  for _, tb in ipairs(self.tables) do
    if not self.backfill_spec[tb.name] then
      config_error(format("spec.backfill has no entry for table %s (how to compute %s for it)", tb.name,
        self.column), { table = tb.name })
    end
  end
  self:_ensure_progress_table()
  local prepare = self.backfill_spec.prepare
  if prepare then
    db.retry(self.conn, function(c)
      if type(prepare) == "function" then return prepare(c) end
      c:exec_script(prepare)
    end, self:_retry_opts(nil, "backfill prepare", nil))
  end
  local summary = { tables = {}, updated = 0, remaining = 0 }
  for i, tb in ipairs(self.tables) do
    local r = self:_backfill_table(tb, opts)
    summary.tables[i] = r
    summary.updated = summary.updated + r.updated
    summary.remaining = summary.remaining + r.remaining
  end
  return summary
end

---------------------------------------------------------------------------
-- NOT NULL enforcement and rollback

local function nulls_error(tb, column)
  errors.raise("check", format("%s has rows with NULL %s: run the backfill again", tb.name, column), {
    hint = "the column stays nullable; run the backfill, then enforce again",
    table = tb.name, column = column,
  })
end

-- t:enforce_not_null([opts]) -> {tables = { {table=, action="already"|"enforced"|"planned", steps = {
--                                 {step=, sql=, attempts=, seconds=} }} }}
--   opts.dry_run: plan only (the SQL each table still needs).
--   opts.on_step = function(table, step) before each step runs.
function Tenancy:enforce_not_null(opts)
  opts = opts or {}
  local conn, col, log = self.conn, self:_col(), self.log
  local result = { tables = {} }
  if not opts.dry_run then
    -- All tables are probed before the first DDL, so NULLs left in one table
    -- never leave the others half-enforced.
    local offenders = {}
    for _, tb in ipairs(self.tables) do
      local nullable, check = self:_catalog(tb)
      if nullable and check ~= "valid" and self:_probe(tb) then
        offenders[#offenders + 1] = tb.name
        if check == "not_valid" then
          local drop = format("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", tb.qname, conn:quote_ident(tb.constraint))
          db.retry(conn, drop, self:_retry_opts(tb, drop, "AccessExclusiveLock"))
        end
      end
    end
    if #offenders > 0 then
      errors.raise("check", format("%s %s rows with NULL %s: NOT NULL was not enforced on any table",
        concat(offenders, ", "), #offenders == 1 and "has" or "have", self.column), {
        hint = "run the backfill, then enforce again", tables = offenders, column = self.column })
    end
  end
  for i, tb in ipairs(self.tables) do
    local cname = conn:quote_ident(tb.constraint)
    local sql = {
      add_check = format("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID", tb.qname, cname, col),
      validate = format("ALTER TABLE %s VALIDATE CONSTRAINT %s", tb.qname, cname),
      set_not_null = format("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", tb.qname, col),
      drop_check = format("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", tb.qname, cname),
    }
    -- Each step is planned from the catalog, so a rerun after an interruption
    -- continues where the last one stopped.
    local nullable, check = self:_catalog(tb)
    local plan = {}
    if nullable then
      if check == "none" then plan[#plan + 1] = "add_check" end
      if check ~= "valid" then plan[#plan + 1] = "validate" end
      plan[#plan + 1] = "set_not_null"
    end
    if check ~= "none" or nullable then plan[#plan + 1] = "drop_check" end
    local entry = { table = tb.name, steps = {} }
    result.tables[i] = entry
    if #plan == 0 then
      entry.action = "already"
    elseif opts.dry_run then
      entry.action = "planned"
      for j, step in ipairs(plan) do entry.steps[j] = { step = step, sql = sql[step] } end
    else
      entry.action = "enforced"
      -- Refuse early when NULLs are visible: once the NOT VALID CHECK exists,
      -- any UPDATE of a row still NULL would fail (until the CHECK is dropped).
      if check ~= "valid" and nullable and self:_probe(tb) then
        if check == "not_valid" then
          db.retry(conn, sql.drop_check, self:_retry_opts(tb, sql.drop_check, "AccessExclusiveLock"))
        end
        nulls_error(tb, self.column)
      end
      for _, step in ipairs(plan) do
        if opts.on_step then opts.on_step(tb.name, step) end
        local t0 = sys.now()
        local mode = step == "validate" and "ShareUpdateExclusiveLock" or "AccessExclusiveLock"
        local ok, err, attempts = pcall(db.retry, conn, sql[step],
          self:_retry_opts(tb, format("enforce NOT NULL on %s (step %s)", tb.qname, step), mode, { sql = sql[step] }))
        if not ok then
          if step == "validate" and type(err) == "table" and err.sqlstate == "23514" then
            -- NULLs arrived after the probe: take the CHECK away again so the
            -- application's writes to those rows keep working.
            db.retry(conn, sql.drop_check, self:_retry_opts(tb, sql.drop_check, "AccessExclusiveLock"))
            nulls_error(tb, self.column)
          elseif step == "add_check" and type(err) == "table" and err.sqlstate == "42710" then
            attempts = 1 -- created meanwhile by another run: fine, it is what we wanted
          else
            error(err, 0)
          end
        end
        local took = sys.now() - t0
        entry.steps[#entry.steps + 1] = { step = step, sql = sql[step], attempts = attempts, seconds = took }
        log.debug(format("%s: %s (%.3f s, %d attempt%s)", tb.name, sql[step], took, attempts,
          attempts == 1 and "" or "s"))
      end
      log.ok(format("%s.%s is NOT NULL", tb.name, self.column))
    end
  end
  return result
end

-- t:drop_not_null([opts]) -> {tables = { {table=, action="already"|"dropped"|"planned", sql=, attempts=} }}
--   opts.transaction = true: all tables in ONE transaction (retried as a
--   whole on lock timeout); opts.also = function(conn) runs inside it before
--   COMMIT.  opts.dry_run: plan only.
function Tenancy:drop_not_null(opts)
  opts = opts or {}
  local conn, col = self.conn, self:_col()
  local result = { tables = {} }
  local todo = {}
  for i, tb in ipairs(self.tables) do
    local nullable, check = self:_catalog(tb)
    local entry = { table = tb.name }
    if nullable and check == "none" then
      entry.action = "already"
    else
      entry.action = opts.dry_run and "planned" or "dropped"
      -- One statement: the ACCESS EXCLUSIVE lock is taken once.
      entry.sql = format("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL, DROP CONSTRAINT IF EXISTS %s", tb.qname,
        col, conn:quote_ident(tb.constraint))
      todo[#todo + 1] = { tb = tb, entry = entry }
    end
    result.tables[i] = entry
  end
  if opts.dry_run then return result end
  if opts.transaction then
    local names = {}
    for i, tb in ipairs(self.tables) do names[i] = tb.qname end
    local _, attempts = db.retry(conn, function(c)
      for _, t in ipairs(todo) do c:exec(t.entry.sql) end
      if opts.also then opts.also(c) end
    end, self:_retry_opts(nil, "DROP NOT NULL on " .. concat(names, ", "), "AccessExclusiveLock",
      { relations = names, outwait_autovacuum = self.spec.outwait_autovacuum }))
    for _, t in ipairs(todo) do t.entry.attempts = attempts end
  else
    for _, t in ipairs(todo) do
      local _, attempts = db.retry(conn, t.entry.sql, self:_retry_opts(t.tb, t.entry.sql, "AccessExclusiveLock"))
      t.entry.attempts = attempts
    end
    if opts.also then opts.also(conn) end
  end
  for _, t in ipairs(todo) do self.log.ok(format("%s.%s is nullable again", t.tb.name, self.column)) end
  return result
end

return M
