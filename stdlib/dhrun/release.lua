-- dhrun.release: the building blocks the Data Hub-style flows are made of,
-- bound to a project config: the database connection, the migrations
-- (native or through the Prisma CLI), the tenancy rollout, and the app's
-- generate and build commands with the "do not re-run unnecessarily" guards.
local sys = require "dhrun.core.sys"
local log = require "dhrun.log"
local db = require "dhrun.db"
local prisma = require "dhrun.prisma"
local lfs = require "lfs"

local M = {}

-- Connects to the project's database: cfg.database_url, else $DATABASE_URL,
-- else the PG* variables.
function M.connect(cfg)
  local url = cfg and cfg.database_url
  local conn = db.connect(url, { application_name = "dhrun" })
  return conn
end

---------------------------------------------------------------------------
-- Commands (generate, build, start): argv lists from the config, run in the
-- app directory with output streamed and prefixed.

local function command_env(ctx)
  local env = {}
  for k, v in pairs(ctx.cfg.env or {}) do env[k] = v end
  if ctx.cfg.database_url then env.DATABASE_URL = ctx.cfg.database_url end
  return env
end

function M.command(ctx, name, opts)
  opts = opts or {}
  local argv = ctx.cfg.commands[name]
  if not argv then
    error(sys.error("config", 2, "no command '" .. name .. "' in " .. ctx.cfg.file, {
      hint = "add commands." .. name .. " = {\"...\"} to the config" }), 0)
  end
  local process = require "dhrun.process"
  log.info("      $ %s", table.concat(argv, " "))
  return process.must(argv, {
    cwd = ctx.cfg.app_dir, env = command_env(ctx), stream = opts.stream ~= false,
    prefix = "      │ ", timeout = opts.timeout,
  })
end

function M.has_command(ctx, name)
  return ctx.cfg.commands[name] ~= nil
end

---------------------------------------------------------------------------
-- Migrations

local Migrations = {}
Migrations.__index = Migrations

function M.migrations(ctx)
  return setmetatable({ ctx = ctx, conn = ctx.conn, dir = ctx.cfg.migrations, cfg = ctx.cfg }, Migrations)
end

function Migrations:status()
  return prisma.status(self.conn, self.dir)
end

-- Migrations deploy would apply (optionally only up to `until_name`).
function Migrations:pending(until_name)
  local st = prisma.status(self.conn, self.dir)
  local out = {}
  for _, m in ipairs(st.to_apply) do
    out[#out + 1] = m
    if until_name and m.name == until_name then break end
  end
  if until_name then
    local found = false
    for _, m in ipairs(st.migrations) do if m.name == until_name then found = true end end
    if not found then
      error(sys.error("config", 2, "migration " .. until_name .. " is not in " .. self.dir, {
        hint = "check the migration names in tenancy.* of " .. self.cfg.file }), 0)
    end
  end
  return out, st
end

function Migrations:is_applied(name)
  local st = prisma.status(self.conn, self.dir)
  for _, n in ipairs(st.applied) do if n == name then return true end end
  return false
end

function Migrations:failed()
  return prisma.status(self.conn, self.dir).failed
end

-- The plan text for dry runs: names and SQL of what would be applied.
-- (after_name: leave out migrations up to this one, which an earlier step
-- of the same dry run would have applied.)
function Migrations:plan(until_name, after_name)
  local pending = self:pending(until_name)
  if after_name then
    for i, m in ipairs(pending) do
      if m.name == after_name then
        pending = { table.unpack(pending, i + 1) }
        break
      end
    end
  end
  if #pending == 0 then return "no pending migrations" end
  local parts = {}
  for _, m in ipairs(pending) do
    parts[#parts + 1] = "apply " .. m.name .. ":"
    parts[#parts + 1] = m.sql and ("  " .. m.sql:gsub("%s+$", ""):gsub("\n", "\n  ")) or "  (no migration.sql!)"
  end
  return table.concat(parts, "\n")
end

local function prisma_cli(self, args)
  local process = require "dhrun.process"
  local argv = { "npx", "prisma", "migrate" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  log.info("      $ %s", table.concat(argv, " "))
  return process.must(argv, { cwd = self.cfg.app_dir, env = command_env(self.ctx), stream = true,
    prefix = "      │ " })
end

-- Applies pending migrations (up to until_name).  Returns a step detail.
function Migrations:deploy(until_name)
  if self.cfg.migrate_with == "prisma" then
    prisma_cli(self, { "deploy" })
    return { summary = "prisma migrate deploy ran" }
  end
  local res = prisma.deploy(self.conn, self.dir, {
    until_name = until_name, lock_timeout = self.cfg.lock_timeout,
    on_apply = function(m) log.info("      applying %s", m.name) end,
  })
  local summary = #res.applied == 0 and "no pending migrations" or ("applied " .. table.concat(res.applied, ", "))
  return { summary = summary, applied = res.applied, prisma_rows = res.rows }
end

function Migrations:resolve_rolled_back(name)
  if self.cfg.migrate_with == "prisma" then
    prisma_cli(self, { "resolve", "--rolled-back", name })
    return { summary = "marked " .. name .. " rolled back (prisma CLI)" }
  end
  local r = prisma.resolve_rolled_back(self.conn, name)
  return { summary = "marked " .. name .. " rolled back (" .. r.marked .. " failed row(s))", marked = r.marked }
end

---------------------------------------------------------------------------
-- Tenancy (the workspaceId rollout), from cfg.tenancy

function M.tenancy(ctx)
  if ctx._tenancy then return ctx._tenancy end
  local tcfg = ctx.cfg.tenancy
  if not tcfg then
    error(sys.error("config", 2, ctx.cfg.file .. " has no tenancy section", {
      hint = "add tenancy = {column=, tables=, ...} (see examples/datahub/dhrun.config.lua)" }), 0)
  end
  local tenancy = require "dhrun.tenancy"
  local spec = {}
  for k, v in pairs(tcfg) do spec[k] = v end
  spec.log = log
  ctx._tenancy = tenancy.new(ctx.conn, spec)
  return ctx._tenancy
end

-- One line per table with NULLs, e.g. "MetricDaily 120, Insight 3".
function M.offenders_text(report)
  local parts = {}
  for _, t in ipairs(report.tables) do
    if t.has_nulls then parts[#parts + 1] = t.table .. " " .. tostring(t.nulls or "some") end
  end
  return table.concat(parts, ", ")
end

---------------------------------------------------------------------------
-- prisma generate guard: run only if the schema changed since the last
-- successful generate here, the generated client is missing, or migrations
-- were applied in this run.

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function marker_path(cfg)
  return cfg.app_dir .. "/.dhrun/generate.sha256"
end

function M.schema_hash(cfg)
  local s = read(cfg.schema)
  return s and sys.sha256(s) or nil
end

-- Returns nil when generate is needed, else the reason to skip it.
function M.generate_skip_reason(ctx, migrated_this_run)
  if migrated_this_run then return nil end
  local cfg = ctx.cfg
  if cfg.generated and lfs.attributes(cfg.generated, "mode") == nil then return nil end
  local hash = M.schema_hash(cfg)
  if not hash then return nil end
  local last = read(marker_path(cfg))
  if last and last:gsub("%s+$", "") == hash then
    return "schema unchanged since the last generate (sha256 " .. hash:sub(1, 12) .. ")"
  end
  return nil
end

function M.generate(ctx)
  local r = M.command(ctx, "generate")
  local hash = M.schema_hash(ctx.cfg)
  if hash then
    lfs.mkdir(ctx.cfg.app_dir .. "/.dhrun")
    local f = io.open(marker_path(ctx.cfg), "w")
    if f then f:write(hash, "\n"); f:close() end
  end
  return { summary = "prisma client generated", seconds = r.duration }
end

function M.build(ctx)
  local r = M.command(ctx, "build")
  local last
  for line in (r.stdout .. "\n" .. r.stderr):gmatch("[^\n]+") do
    if line:match("%S") then last = line end
  end
  return { summary = "build ok" .. (last and (": " .. last:gsub("^%s+", "")) or ""), seconds = r.duration }
end

---------------------------------------------------------------------------
-- Checklist-level helpers shared by the flows

-- Tables of the tenancy spec that do not have the column yet (before
-- migration #1), as a list; empty when the rollout can start.
function M.missing_column(ctx)
  local t = ctx.cfg.tenancy
  local missing = {}
  for _, name in ipairs(t.tables) do
    if not ctx.conn:query_value([[SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p'))]], name) then
      error(sys.error("config", 2, string.format("tenancy.tables names %s, which is not a table in schema %s",
        name, ctx.conn:query_value("SELECT current_schema()")), {
        hint = "check tenancy.tables in " .. ctx.cfg.file }), 0)
    end
    local has = ctx.conn:query_value([[SELECT EXISTS (SELECT 1 FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relname = $1 AND a.attname = $2 AND NOT a.attisdropped)]],
      name, t.column)
    if not has then missing[#missing + 1] = name end
  end
  return missing
end

function M.label(ctx)
  return ctx.cfg.tenancy.label or (ctx.cfg.project .. " " .. ctx.cfg.tenancy.column)
end

-- The checklist's check: returns ok, line, report.
function M.null_check(ctx)
  local report = M.tenancy(ctx):null_check()
  if report.ok then
    return true, "✅ All " .. M.label(ctx) .. " values are backfilled (no NULLs).", report
  end
  local total = 0
  for _, t in ipairs(report.tables) do total = total + (t.nulls or 0) end
  return false, string.format("❌ %d %s value(s) are NULL: %s", total, M.label(ctx), M.offenders_text(report)),
    report
end

-- Raises the check failure that stops a flow before migration #2.
function M.require_no_nulls(ctx)
  local ok, line, report = M.null_check(ctx)
  if ok then return { summary = line } end
  error(sys.error("check", 1, line, {
    hint = "run the backfill (dhrun backfill-workspace), then this flow again; migration #2 was not attempted",
    offenders = report.tables }), 0)
end

return M
