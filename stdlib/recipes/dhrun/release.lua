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
-- The config is checked against the project and the database right away
-- (M.check_project), so a wrong one is refused before anything is locked,
-- journaled or changed.
function M.connect(cfg)
  local url = cfg and cfg.database_url
  local conn = db.connect(url, { application_name = "dhrun" })
  if cfg then
    local ok, err = pcall(M.check_project, conn, cfg)
    if not ok then
      conn:close()
      error(err, 0)
    end
  end
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
  local out, todo = {}, {}
  for _, m in ipairs(st.to_apply) do todo[m.name] = true end
  -- in directory order, so that nothing after until_name counts once
  -- until_name itself is applied
  for _, m in ipairs(st.migrations) do
    if todo[m.name] then out[#out + 1] = m end
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
  local verbose = log.level() == "debug"
  for _, m in ipairs(pending) do
    if not m.sql then
      parts[#parts + 1] = "apply " .. m.name .. ": no migration.sql (deploy would stop here: P3015)"
    elseif verbose then
      parts[#parts + 1] = "apply " .. m.name .. ":"
      parts[#parts + 1] = "  " .. m.sql:gsub("%s+$", ""):gsub("\n", "\n  ")
    else
      -- statements without their comments (Prisma's files are mostly comments)
      local stmts = {}
      for stmt in (m.sql:gsub("%-%-[^\n]*", "") .. ";"):gmatch("([^;]*);") do
        stmt = stmt:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
        if stmt ~= "" then stmts[#stmts + 1] = stmt end
      end
      parts[#parts + 1] = "apply " .. m.name .. " (" .. #stmts .. " statement(s); --verbose shows the file):"
      for _, stmt in ipairs(stmts) do
        parts[#parts + 1] = "  " .. (#stmt > 110 and (stmt:sub(1, 107) .. "...") or stmt) .. ";"
      end
    end
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

-- Migration #2 done online: under Prisma's advisory lock (so a `prisma
-- migrate deploy` elsewhere cannot slip in between the steps), NOT NULL is
-- enforced table by table, then the migration file is applied with the
-- tenancy's short lock_timeout: by then its SET NOT NULLs are catalog-only.
function M.deploy_not_null(ctx)
  local t = M.tenancy(ctx)
  return prisma.with_lock(ctx.conn, function()
    local enforced = t:enforce_not_null()
    local d = M.migrations(ctx):deploy(nil, { lock_timeout = t.spec.lock_timeout })
    d.not_null = enforced.tables
    return d
  end)
end

-- Applies pending migrations (up to until_name).  Returns a step detail.
function Migrations:deploy(until_name, opts)
  if self.cfg.migrate_with == "prisma" then
    prisma_cli(self, { "deploy" })
    return { summary = "prisma migrate deploy ran" }
  end
  local res = prisma.deploy(self.conn, self.dir, {
    until_name = until_name, lock_timeout = opts and opts.lock_timeout or self.cfg.lock_timeout,
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
  spec.log = M.indented_log("      ")
  ctx._tenancy = tenancy.new(ctx.conn, spec)
  return ctx._tenancy
end

-- A dhrun.log look-alike whose lines sit under the current step.
function M.indented_log(prefix)
  local proxy = {}
  for _, name in ipairs({ "debug", "info", "ok", "warn", "error" }) do
    proxy[name] = function(fmt, ...)
      if select("#", ...) == 0 then return log[name](prefix .. tostring(fmt)) end
      return log[name](prefix .. fmt, ...)
    end
  end
  proxy.progress = function(o)
    local copy = {}
    for k, v in pairs(o) do copy[k] = v end
    copy.label = prefix .. (o.label or "")
    return log.progress(copy)
  end
  return setmetatable(proxy, { __index = log })
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
  -- the build's own last word ("Compiled successfully"), from stdout first
  local last
  for _, stream in ipairs({ r.stderr, r.stdout }) do
    for line in stream:gmatch("[^\n]+") do
      if line:match("%S") then last = line end
    end
  end
  return { summary = "build ok" .. (last and (": " .. last:gsub("^%s+", "")) or ""), seconds = r.duration }
end

---------------------------------------------------------------------------
-- Checklist-level helpers shared by the flows

-- Tables of the tenancy spec that do not have the column yet (before
-- migration #1), as a list; empty when the rollout can start.
function M.missing_column(ctx)
  local t = ctx.cfg.tenancy
  -- One round trip for every table: this runs before each flow.
  local rows = ctx.conn:query([[
    SELECT u.name::text, coalesce(current_schema(), '(none: search_path is empty)') AS schema,
           c.oid IS NOT NULL AS is_table,
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped) AS has
      FROM unnest($1::name[]) WITH ORDINALITY AS u(name, ord) -- name: cut to 63 bytes, as CREATE TABLE does
      LEFT JOIN pg_class c ON c.relname = u.name AND c.relkind IN ('r', 'p')
                          AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     ORDER BY u.ord]], db.text_array(t.tables), t.column)
  local missing = {}
  for _, r in ipairs(rows) do
    if not r.is_table then
      error(sys.error("config", 2, string.format("tenancy.tables names %s, which is not a table in schema %s",
        r.name, r.schema), { hint = "check tenancy.tables in " .. ctx.cfg.file }), 0)
    end
    if not r.has then missing[#missing + 1] = r.name end
  end
  return missing
end

local function config_error(msg, hint)
  error(sys.error("config", 2, msg, { hint = hint }), 0)
end

-- Checks the config against the project and the database, read-only:
--   * the migrations directory exists, is for PostgreSQL, and every
--     migration in it has its migration.sql (Prisma would stop at the first
--     one without, after applying those before it);
--   * tenancy: both named migrations are in it, every table exists, and the
--     column exists on every table, or on none while migration #1 (which
--     must add it) is still to be applied.
-- Raises a config error (exit 2) naming the first problem.
function M.check_project(conn, cfg)
  local dir = cfg.migrations
  local list = prisma.list(dir)
  local provider = prisma.lock_provider(dir)
  if provider and provider ~= "postgresql" then
    config_error("migration_lock.toml in " .. dir .. " names provider `" .. provider
      .. "`, not postgresql (Prisma P3019)",
      "this migrations directory belongs to another database; check `migrations` in " .. cfg.file)
  end
  local by_name = {}
  for _, m in ipairs(list) do
    if not m.sql then
      config_error("migration " .. m.name .. " has no migration.sql (Prisma P3015)",
        "restore " .. m.path .. " or delete the directory")
    end
    by_name[m.name] = m
  end
  local t = cfg.tenancy
  if not t then return end
  for _, key in ipairs({ "nullable_migration", "not_null_migration" }) do
    if t[key] and not by_name[t[key]] then
      config_error(string.format("tenancy.%s names %s, which is not in %s (%d migration(s))", key, t[key], dir,
        #list), "check tenancy.* and `migrations` in " .. cfg.file)
    end
  end
  local missing = M.missing_column({ cfg = cfg, conn = conn }) -- raises for a missing table
  if #missing == 0 then return end
  local why
  if #missing < #t.tables then
    why = " (the other tables have it)"
  elseif t.nullable_migration then
    local applied = false
    for _, r in ipairs(prisma.rows(conn) or {}) do
      if r.migration_name == t.nullable_migration and prisma.row_state(r) == "applied" then applied = true end
    end
    -- Prisma quotes every identifier; a hand-written migration may not
    local sql, col = by_name[t.nullable_migration].sql, t.column
    local adds = sql:find('"' .. col .. '"', 1, true) or (col == col:lower() and sql:lower():find(col, 1, true))
    if applied then
      why = ", although migration #1 (" .. t.nullable_migration .. ") is applied"
    elseif not adds then
      why = ", and migration #1 (" .. t.nullable_migration .. ") does not add it"
    end
  end
  if why then
    config_error(string.format('tenancy.column "%s" is not a column of %s%s', t.column, table.concat(missing, ", "),
      why), "check tenancy.column in " .. cfg.file)
  end
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
function M.require_no_nulls(ctx, hint)
  local ok, line, report = M.null_check(ctx)
  if ok then return { summary = line } end
  error(sys.error("check", 1, line, {
    hint = hint or ("run the backfill (dhrun backfill-workspace), then dhrun " .. ctx.flow.name
      .. " --resume; migration #2 was not attempted"),
    offenders = report.tables }), 0)
end

-- In a dry run the MUST-pass check comes after a backfill that was only
-- planned: it is skipped (with what the backfill would do) rather than
-- failing on NULLs the real run would have filled.
function M.check_skip_in_dry_run(ctx)
  if not ctx.dry_run then return nil end
  if #M.missing_column(ctx) > 0 then return "after migration #1 and the backfill" end
  local report = M.tenancy(ctx):null_check()
  if not report.ok then return "after the backfill, which would fill: " .. M.offenders_text(report) end
end

---------------------------------------------------------------------------
-- The checklist's shared steps, as step definitions for dhrun.flow.  deploy,
-- recover and release use the same ones:
--   flow:step(release.steps.backfill("Backfill workspaceIds"))
-- ctx.migrated records that this run applied a migration (generate must run).

M.steps = {}

function M.steps.backfill(title)
  return {
    title = title,
    skip = function(ctx)
      if #M.missing_column(ctx) > 0 then
        return not ctx.dry_run and "the column does not exist (migration #1 not applied)" or nil
      end
      if M.tenancy(ctx):null_check({ count = false }).ok then
        return "no NULL " .. ctx.cfg.tenancy.column .. " values"
      end
    end,
    plan = function(ctx)
      if #M.missing_column(ctx) > 0 then
        return "after migration #1 adds the column: fill every row's " .. ctx.cfg.tenancy.column .. " in batches"
      end
      return "backfill in batches: " .. M.offenders_text(M.tenancy(ctx):null_check())
    end,
    run = function(ctx)
      local s = M.tenancy(ctx):backfill()
      return { summary = string.format("%d row(s) updated", s.updated or 0), tables = s.tables }
    end,
  }
end

function M.steps.verify_no_nulls(title)
  return { title = title, readonly = true, skip = M.check_skip_in_dry_run, run = M.require_no_nulls }
end

function M.steps.deploy_not_null(title)
  return {
    title = title,
    skip = function(ctx)
      if #M.migrations(ctx):pending() == 0 then return "no pending migrations" end
    end,
    plan = function(ctx)
      local t = ctx.cfg.tenancy
      return "make " .. t.column .. " NOT NULL online on " .. table.concat(t.tables, ", ")
        .. " (CHECK NOT VALID -> VALIDATE -> SET NOT NULL -> DROP CHECK, bounded lock waits), then\n"
        .. M.migrations(ctx):plan(nil, t.nullable_migration)
    end,
    run = function(ctx)
      local d = M.deploy_not_null(ctx)
      ctx.migrated = ctx.migrated or #(d.applied or {}) > 0
      return d
    end,
  }
end

function M.steps.generate(title)
  return {
    title = title,
    skip = function(ctx)
      if ctx.args["no-build"] then return "--no-build" end
      if not M.has_command(ctx, "generate") then return "no commands.generate in the config" end
      return M.generate_skip_reason(ctx, ctx.migrated)
    end,
    plan = function(ctx) return table.concat(ctx.cfg.commands.generate, " ") end,
    run = M.generate,
  }
end

function M.steps.build(title)
  return {
    title = title,
    skip = function(ctx)
      if ctx.args["no-build"] then return "--no-build" end
      if not M.has_command(ctx, "build") then return "no commands.build in the config" end
    end,
    plan = function(ctx) return table.concat(ctx.cfg.commands.build, " ") end,
    run = M.build,
  }
end

return M
