-- dhrun.release: the steps release flows are made of, bound to a project
-- config: Prisma migrations (native or through the Prisma CLI), the
-- project's tenancy rollouts (dhrun.rollout), and the app's generate and
-- build commands with the "do not re-run unnecessarily" guards.
--
-- Every step of deploy, recover, rollback, status, check and backfill is
-- exported in release.steps, so a project composes its own flow:
--
--   local release = require "dhrun.release"
--   local flow = require("dhrun.flow").new { name = "deploy", preflight = { release.preflight } }
--   flow:step(release.steps.history())
--   flow:step(release.steps.migrate_before())
--   ...
--
-- A flow that uses these steps adds release.preflight: it checks the config
-- against the migrations directory and the database before anything is
-- locked or changed, and picks the rollout (--rollout NAME; the config's
-- only, or last, one by default).
local sys = require "dhrun.core.sys"
local log = require "dhrun.log"
local db = require "dhrun.db"
local errors = require "dhrun.errors"
local events = require "dhrun.events"
local journal = require "dhrun.journal"
local flow = require "dhrun.flow"
local config = require "dhrun.config"
local prisma = require "dhrun.prisma"
local rollout = require "dhrun.rollout"
local lfs = require "lfs"

local T = config.types
local format, concat = string.format, table.concat

local M = {}
local creates_table, enforce_recorded, enforce_and_apply

-- The keys this recipe reads.  The migrations directory is checked against
-- the rollouts when the config is loaded, before anything connects.
config.define("migrations", T.path { default = "prisma/migrations" }, {
  after = function(cfg) M.check_files(cfg) end,
})
config.define("schema", T.path { default = "prisma/schema.prisma" })
config.define("generated", T.path())
config.define("migrate_with", T.enum({ "dhrun", "prisma" }, { default = "dhrun" }))
-- The Prisma CLI that migrate_with = "prisma" runs: an argv prefix, to which
-- `migrate deploy` or `migrate resolve ...` is added.
config.define("prisma_command", T.argv { default = { "npx", "prisma" } })
config.define("lock_timeout", T.duration { default = "2s" })
config.define("build_inputs", T.list(T.path()), {
  -- a mistyped input would make the digest cover nothing and skip every
  -- build; one that holds the generated client is made by `generate`, which
  -- runs first (a fresh checkout has none)
  after = function(cfg)
    -- as written: "gen/", "./gen" and "gen" are one path
    local function norm(p) return (p:gsub("/%./", "/"):gsub("/+", "/"):gsub("/%.?$", "")) end
    local gen = cfg.generated and norm(cfg.generated)
    for _, p in ipairs(cfg.build_inputs or {}) do
      local q = norm(p)
      local makes = gen and (gen == q or gen:sub(1, #q + 1) == q .. "/")
      if not makes and not lfs.attributes(p, "mode") then
        errors.config(cfg.file .. ": build_inputs names " .. p .. ", which does not exist",
          "list the files and directories the build reads, relative to the config")
      end
    end
  end,
})
config.define("app", T.record {
  start = T.argv(), restart = T.argv(), url = T.string(), health = T.string(),
  ready_timeout = T.number { min = 0 }, log = T.string(), output = T.string(), env = T.map(T.string()),
})
config.define("release", T.record { on_smoke_failure = T.enum { "report", "rollback" } })

-- The option every rollout flow takes, and deploy's and recover's --no-build.
M.ROLLOUT_OPTION = { name = "rollout", arg = "NAME", help = "the rollout to act on (default: the config's last one)" }
M.NO_BUILD_OPTION = { name = "no-build", help = "database steps only: skip generate and build" }

local function config_error(msg, hint)
  errors.config(msg, hint)
end

local function state_error(msg, hint, fields)
  fields = fields or {}
  fields.hint = hint
  errors.raise("state", msg, fields)
end

-- Connects to the project's database and checks the config against it
-- (kept for scripts written against the earlier API).
function M.connect(cfg)
  local conn = db.connect(cfg and cfg.database_url, { application_name = "dhrun" })
  if cfg then
    local ok, err = pcall(M.check_project, { cfg = cfg, conn = conn, args = {} })
    if not ok then
      conn:close()
      error(err, 0)
    end
  end
  return conn
end

---------------------------------------------------------------------------
-- Rollouts

-- The rollout this run acts on (ctx.rollout once the preflight chose it).
function M.rollout(ctx)
  if ctx.rollout == nil then
    ctx.rollout = rollout.find(ctx.cfg, ctx.args and ctx.args.rollout) or false
  end
  return ctx.rollout or nil
end

local function need_rollout(ctx)
  local r = M.rollout(ctx)
  if not r then
    config_error("the config has no rollout (rollouts = {...})",
      "the README's \"Writing your own rollout\" shows one; " .. tostring(ctx.cfg and ctx.cfg.file))
  end
  return r
end

function M.label(ctx)
  local r = M.rollout(ctx)
  return r and r.label or "the rollout"
end

function M.column(ctx)
  local r = M.rollout(ctx)
  return r and r.column or "the rollout column"
end

-- "dhrun NAME" plus --rollout when the config has several rollouts, for
-- hints that name a command.
function M.cmd(ctx, name)
  local r = M.rollout(ctx)
  if r and ctx.cfg and #ctx.cfg.rollouts > 1 then return "dhrun " .. name .. " --rollout " .. r.name end
  return "dhrun " .. name
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
    config_error("no command '" .. name .. "' in " .. ctx.cfg.file,
      "add commands." .. name .. " = {\"...\"} to the config")
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
      config_error("migration " .. until_name .. " is not in " .. self.dir,
        "check the migration names of the rollouts in " .. self.cfg.file)
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
  return self:plan_of(pending)
end

-- The plan text for a list of migrations.
function Migrations.plan_of(_, pending)
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
      -- statements as PostgreSQL's own scanner splits them (DO blocks,
      -- strings and nested comments included), without their leading
      -- comments (Prisma's files are mostly comments)
      local stmts, err, pos = require("dhrun.sql").statements(m.sql)
      if not stmts then
        parts[#parts + 1] = "apply " .. m.name .. ": PostgreSQL's scanner rejects it at byte " .. tostring(pos)
          .. ": " .. err .. " (the migration would fail there; --verbose shows the file)"
      else
        parts[#parts + 1] = "apply " .. m.name .. " (" .. #stmts .. " statement(s); --verbose shows the file):"
        for _, st in ipairs(stmts) do
          local d = st.display
          parts[#parts + 1] = "  " .. (utf8.len(d) and #d > 110 and (d:sub(1, utf8.offset(d, 108) - 1) .. "...")
            or d) .. ";"
        end
      end
    end
  end
  return table.concat(parts, "\n")
end

-- Runs `<prisma_command> migrate ARGS...` in the app directory, its output
-- streamed.  The CLI takes Prisma's advisory lock on a session of its own:
-- this run lets go of it meanwhile, if it holds it.
local function prisma_cli(self, args)
  local process = require "dhrun.process"
  local argv = {}
  for _, a in ipairs(self.cfg.prisma_command or { "npx", "prisma" }) do argv[#argv + 1] = a end
  argv[#argv + 1] = "migrate"
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  log.info("      $ %s", table.concat(argv, " "))
  return prisma.without_lock(self.conn, function()
    return process.must(argv, { cwd = self.cfg.app_dir, env = command_env(self.ctx), stream = true,
      prefix = "      │ " })
  end)
end

-- Applies pending migrations (up to until_name).  Returns a step detail.
function Migrations:deploy(until_name, opts)
  if self.cfg.migrate_with == "prisma" then
    -- `prisma migrate deploy` applies everything pending: only when that is
    -- exactly what this step wants.
    local all, wanted = prisma.status(self.conn, self.dir).to_apply, self:pending(until_name)
    if #all ~= #wanted then
      config_error("prisma migrate deploy would also apply " .. all[#wanted + 1].name .. ", which comes later in "
        .. "this flow", "use migrate_with = \"dhrun\" (applies migrations one by one, as Prisma records them)")
    end
    prisma_cli(self, { "deploy" })
    local names = {}
    for _, m in ipairs(wanted) do names[#names + 1] = m.name end
    return { summary = #names == 0 and "no pending migrations (prisma migrate deploy)"
      or ("applied " .. table.concat(names, ", ") .. " (prisma migrate deploy)"), applied = names }
  end
  opts = opts or {}
  local res = prisma.deploy(self.conn, self.dir, {
    until_name = until_name, lock_timeout = opts.lock_timeout or self.cfg.lock_timeout,
    on_apply = function(m) log.info("      applying %s", m.name) end,
    relations = opts.relations, outwait_autovacuum = opts.outwait_autovacuum, log = opts.log,
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
  return { summary = "marked " .. name .. " rolled back (" .. r.marked .. " failed row(s))", marked = r.marked,
    text = r.text }
end

function Migrations:resolve_applied(name)
  if self.cfg.migrate_with == "prisma" then
    prisma_cli(self, { "resolve", "--applied", name })
    return { summary = "marked " .. name .. " applied (prisma CLI)" }
  end
  local r = prisma.resolve_applied(self.conn, self.dir, name)
  return { summary = "marked " .. name .. " applied", text = r.text }
end

---------------------------------------------------------------------------
-- prisma generate guard: run only if the schema changed since the last
-- successful generate here, the generated client is missing, or migrations
-- were applied in this run.

local read = prisma.read_file

-- Digests of what the last successful generate or build here saw, kept in
-- app_dir/.dhrun/NAME.sha256.
local function marker(cfg, name)
  return cfg.app_dir .. "/.dhrun/" .. name .. ".sha256"
end

local function marker_matches(cfg, name, digest)
  local last = read(marker(cfg, name))
  return last ~= nil and last:gsub("%s+$", "") == digest
end

local function write_marker(cfg, name, digest)
  lfs.mkdir(cfg.app_dir .. "/.dhrun")
  local f = io.open(marker(cfg, name), "w")
  if f then
    f:write(digest, "\n")
    f:close()
  end
end

function M.schema_hash(cfg)
  local s = read(cfg.schema)
  return s and sys.sha256(s) or nil
end

-- In a dry run: whether the generate step would run.
function M.steps_will_generate(ctx)
  if not M.has_command(ctx, "generate") or ctx.args["no-build"] then return false end
  local migrated = #M.migrations(ctx):status().to_apply > 0
  return M.generate_skip_reason(ctx, migrated) == nil
end

-- Returns nil when generate is needed, else the reason to skip it.
function M.generate_skip_reason(ctx, migrated_this_run)
  if migrated_this_run then return nil end
  local cfg = ctx.cfg
  if cfg.generated and lfs.attributes(cfg.generated, "mode") == nil then return nil end
  local hash = M.schema_hash(cfg)
  if not hash then return nil end
  if marker_matches(cfg, "generate", hash) then
    return "schema unchanged since the last generate (sha256 " .. hash:sub(1, 12) .. ")"
  end
  return nil
end

function M.generate(ctx)
  local r = M.command(ctx, "generate")
  ctx.generated = true
  local hash = M.schema_hash(ctx.cfg)
  if hash then write_marker(ctx.cfg, "generate", hash) end
  -- a `generated` path that generate does not make (a typo) would have
  -- generate and the build run in every deploy, without a word
  if ctx.cfg.generated and lfs.attributes(ctx.cfg.generated, "mode") == nil then
    log.warn("      generate did not create %s (the config's `generated`): until that path is right, generate "
      .. "and the build run in every deploy", ctx.cfg.generated)
  end
  return { summary = "prisma client generated", seconds = r.duration }
end

---------------------------------------------------------------------------
-- Build guard: with `build_inputs` in the config, the build runs only when
-- the digest of those files changed since the last successful build here
-- (or the client was generated in this run); the digest is recorded after
-- each successful build.

-- sha256 over the names and contents of every file under the inputs, in a
-- fixed order; nil when there is no build_inputs or one is missing.
function M.build_digest(cfg)
  if not cfg.build_inputs then return nil end
  local files = {}
  local function walk(path)
    local mode = lfs.attributes(path, "mode")
    if mode == "file" then
      files[#files + 1] = path
    elseif mode == "directory" then
      for name in lfs.dir(path) do
        if name ~= "." and name ~= ".." then walk(path .. "/" .. name) end
      end
    end
  end
  for _, p in ipairs(cfg.build_inputs) do
    -- not there yet (the generated client before `generate`): no digest, so
    -- the build runs
    if not lfs.attributes(p, "mode") then return nil end
    walk(p)
  end
  table.sort(files)
  local parts = {}
  for _, f in ipairs(files) do
    parts[#parts + 1] = f:sub(#cfg.app_dir + 2) .. "\0" .. sys.sha256(read(f) or "")
  end
  return sys.sha256(table.concat(parts, "\n")), #files
end

-- Returns nil when the build must run, else the reason to skip it.
function M.build_skip_reason(ctx)
  if ctx.generated then return nil end
  local digest, n = M.build_digest(ctx.cfg)
  if not digest then return nil end
  if marker_matches(ctx.cfg, "build", digest) then
    return string.format("build inputs unchanged since the last successful build (%d file(s), sha256 %s)", n,
      digest:sub(1, 12))
  end
end

function M.build(ctx)
  local digest = M.build_digest(ctx.cfg)
  -- the last digest goes before the build and comes back only with its
  -- success: a failed build (or one with an input missing) must not leave an
  -- older digest to skip the next one
  os.remove(marker(ctx.cfg, "build"))
  local r = M.command(ctx, "build")
  if digest then write_marker(ctx.cfg, "build", digest) end
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
-- Tenancy (the selected rollout's engine)

function M.tenancy(ctx, r)
  r = r or need_rollout(ctx)
  ctx._tenancy = ctx._tenancy or {}
  if ctx._tenancy[r.name] then return ctx._tenancy[r.name] end
  local tenancy = require "dhrun.tenancy"
  local spec = rollout.tenancy_spec(r)
  spec.log = log.indented("      ")
  local ok, t = pcall(tenancy.new, ctx.conn, spec)
  if not ok then
    if errors.is(t, "config") and not t.hint_added then
      t.hint = (t.hint and (t.hint .. "; ") or "") .. "check rollout " .. r.name .. " in " .. ctx.cfg.file
      t.hint_added = true
    end
    error(t, 0)
  end
  ctx._tenancy[r.name] = t
  return t
end

-- One line per table with NULLs, e.g. "Orders 120, Invoices 3".
function M.offenders_text(report)
  local parts = {}
  for _, t in ipairs(report.tables) do
    if t.has_nulls then parts[#parts + 1] = t.table .. " " .. tostring(t.nulls or "some") end
  end
  return concat(parts, ", ")
end

---------------------------------------------------------------------------
-- Checks against the project and the database

-- The rollout's tables as the catalog has them, one round trip:
-- {name=, is_table=, has=} per table, plus the current schema.
local function catalog(ctx, r)
  local rows = ctx.conn:query([[
    SELECT u.name::text, coalesce(current_schema(), '(none: search_path is empty)') AS schema,
           c.oid IS NOT NULL AS is_table,
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped) AS has
      FROM unnest($1::name[]) WITH ORDINALITY AS u(name, ord) -- name: cut to 63 bytes, as CREATE TABLE does
      LEFT JOIN pg_class c ON c.relname = u.name AND c.relkind IN ('r', 'p')
                          AND c.relnamespace = (SELECT oid FROM pg_namespace
                                                 WHERE nspname = coalesce($3, current_schema()))
     ORDER BY u.ord]], db.text_array(rollout.table_names(r)), r.column, r.schema or db.null)
  return rows
end

-- Whether every migration the rollout applies before its backfill is
-- applied (then its tables and column must exist).
local function before_applied(ctx, r)
  local st = M.migrations(ctx):status()
  local applied = {}
  for _, n in ipairs(st.applied) do applied[n] = true end
  for _, m in ipairs(st.migrations) do
    if m.name == r.not_null_migration then break end
    if not applied[m.name] then return false, st end
  end
  return true, st
end

-- Whether migration SQL creates table `name`, as PostgreSQL's parser reads
-- it (quoted names as written, unquoted ones folded to lower case).
function creates_table(sql, name)
  local ok, names = pcall(require("dhrun.sql").created_tables, sql)
  if not ok then return false end
  for _, n in ipairs(names) do
    if n == name then return true end
  end
  return false
end

-- Tables of the rollout that do not have the column yet (the migrations
-- before the backfill are still to come), as a list.  A table that does not
-- exist counts as missing while those migrations are pending (a fresh
-- database), and is a config error once they are applied.
function M.missing_column(ctx, r)
  r = r or need_rollout(ctx)
  local missing, absent = {}, {}
  local schema
  for _, row in ipairs(catalog(ctx, r)) do
    schema = row.schema
    if not row.is_table then absent[#absent + 1] = row.name end
    if not row.has then missing[#missing + 1] = row.name end
  end
  if #absent > 0 then
    -- A fresh database: fine when a migration still to come before the
    -- backfill creates the table; otherwise it is a typo in the config.
    local pending = M.pending_between(ctx, nil, r.not_null_migration)
    local uncreated = {}
    for _, name in ipairs(absent) do
      local created = false
      for _, m in ipairs(pending) do
        if m.sql and creates_table(m.sql, name) then created = true end
      end
      if not created then uncreated[#uncreated + 1] = name end
    end
    if #uncreated > 0 then
      config_error(format("rollout %s names %s, which %s not a table in schema %s%s", r.name,
        concat(uncreated, ", "), #uncreated == 1 and "is" or "are", r.schema or schema,
        #pending > 0 and ", and no migration still to come creates it" or ""),
        "check rollouts." .. r.name .. ".tables in " .. ctx.cfg.file)
    end
  end
  return missing, #absent > 0
end

-- Checks the config against the project, read-only, before anything is
-- locked or changed:
--   * the migrations directory is for PostgreSQL and every migration in it
--     has its migration.sql (Prisma would stop at the first one without,
--     after applying those before it);
--   * every migration a rollout names is in it;
--   * the selected rollout's tables and column exist, or will be created by
--     migrations still to come (a fresh database).
function M.check_project(ctx)
  local cfg = ctx.cfg
  if not cfg then
    config_error("this flow needs a project config: no " .. config.FILE .. " here or in a parent directory",
      "run dhrun from your project directory, or pass --config PATH")
  end
  if not cfg._files_checked then M.check_files(cfg) end
  if not ctx.conn then return end
  local r = M.rollout(ctx)
  if not r then return end
  local by_name = {}
  for _, m in ipairs(prisma.list(cfg.migrations)) do by_name[m.name] = m end
  M.check_catalog(ctx, r, by_name)
end

-- The part of the project check that needs no database: the migrations
-- directory and the migrations each rollout names.
function M.check_files(cfg)
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
    if m.name:find("[%c\127]") then
      config_error("migration directory " .. string.format("%q", m.name):gsub("\\\n", "\\n")
        .. " has a control character in its name", "rename it in " .. dir)
    end
    if not m.sql then
      config_error("migration " .. m.name .. " has no migration.sql (Prisma P3015)",
        "restore " .. m.path .. " or delete the directory")
    end
    by_name[m.name] = m
  end
  for _, r in ipairs(cfg.rollouts) do
    local names = { r.not_null_migration }
    for _, m in ipairs(r.migrations) do names[#names + 1] = m end
    for _, n in ipairs(names) do
      if not by_name[n] then
        config_error(format("rollout %s names migration %s, which is not in %s (%d migration(s))", r.name, n, dir,
          #list), "check rollouts." .. r.name .. " and `migrations` in " .. cfg.file)
      end
    end
    local last_before
    for i, m in ipairs(list) do
      if m.name == r.not_null_migration then
        for _, b in ipairs(r.migrations) do
          for j = i, #list do
            if list[j].name == b then
              config_error(format("rollout %s: migration %s comes after its NOT NULL migration %s", r.name, b,
                r.not_null_migration), "a migration applied before the backfill must sort before it")
            end
          end
        end
        break
      end
      last_before = m.name
    end
    r.last_before = last_before
  end
  cfg._files_checked = true
end

-- The part that reads the catalog: the rollout's tables and column.
function M.check_catalog(ctx, r, by_name)
  local missing = M.missing_column(ctx, r) -- raises for a missing table once it should exist
  if #missing == 0 then return end
  local total = #r.tables
  local done, st = before_applied(ctx, r)
  local why
  if #missing < total then
    why = " (the other tables have it)"
  elseif done then
    why = ", although the migrations before the backfill are applied"
  else
    -- Prisma quotes every identifier; a hand-written migration may not
    local adds = false
    for _, n in ipairs(r.migrations) do
      local sql = by_name[n].sql
      if sql:find('"' .. r.column .. '"', 1, true) or (r.column == r.column:lower()
          and sql:lower():find(r.column, 1, true)) then
        adds = true
      end
    end
    -- tables created by pending migrations (a fresh database) are fine
    local created_later = #st.to_apply > 0 and #st.applied == 0
    if not adds and not created_later and #r.migrations > 0 then
      why = ", and no migration of the rollout (" .. concat(r.migrations, ", ") .. ") adds it"
    end
  end
  if why then
    config_error(format('rollout %s: column "%s" is not a column of %s%s', r.name, r.column, concat(missing, ", "),
      why), "check rollouts." .. r.name .. ".column in " .. ctx.cfg.file)
  end
end

-- The preflight of every flow that uses these steps.
function M.preflight(ctx)
  M.check_project(ctx)
end

-- The migrations directory and the rollouts' migration names only (no
-- catalog checks): for resolve, which is how a broken state gets fixed.
function M.preflight_migrations(ctx)
  M.check_project({ cfg = ctx.cfg, args = ctx.args })
end

-- The checklist's check: returns ok, line, report.
function M.null_check(ctx)
  local report = M.tenancy(ctx):null_check()
  if report.ok then
    return true, "✅ All " .. M.label(ctx) .. " values are backfilled (no NULLs).", report
  end
  local total = 0
  for _, t in ipairs(report.tables) do total = total + (t.nulls or 0) end
  return false, format("❌ %d %s value(s) are NULL: %s", total, M.label(ctx), M.offenders_text(report)), report
end

-- Raises the check failure that stops a flow before the NOT NULL migration.
function M.require_no_nulls(ctx, hint)
  local ok, line, report = M.null_check(ctx)
  if ok then return { summary = line } end
  errors.raise("check", line, {
    hint = hint or ("run the backfill (" .. M.cmd(ctx, "backfill") .. "), then dhrun " .. ctx.flow.name
      .. " --resume; the NOT NULL migration was not attempted"),
    offenders = report.tables })
end

-- In a dry run the MUST-pass check comes after a backfill that was only
-- planned: it is skipped (with what the backfill would do) rather than
-- failing on NULLs the real run would have filled.
function M.check_skip_in_dry_run(ctx)
  if not ctx.dry_run then return nil end
  if not M.rollout(ctx) then return "no rollout in the config" end
  if #M.missing_column(ctx) > 0 then return "after the migrations before the backfill, and the backfill" end
  local report = M.tenancy(ctx):null_check()
  if not report.ok then return "after the backfill, which would fill: " .. M.offenders_text(report) end
end

---------------------------------------------------------------------------
-- Applying migrations in order, each the right way

-- Pending migrations (directory order) strictly after `after` (a name, or
-- nil for the start) and strictly before `stop` (nil: to the end).
function M.pending_between(ctx, after, stop)
  local st = M.migrations(ctx):status()
  local todo = {}
  for _, m in ipairs(st.to_apply) do todo[m.name] = true end
  local out, inside = {}, after == nil
  for _, m in ipairs(st.migrations) do
    if stop and m.name == stop then break end
    if inside and todo[m.name] then out[#out + 1] = m end
    if m.name == after then inside = true end
  end
  return out, st
end

-- Which rollout a migration belongs to (nil: none), and its role.
local function owner_of(ctx, name)
  for _, r in ipairs(ctx.cfg.rollouts) do
    if r.not_null_migration == name then return r, "not_null" end
    for _, m in ipairs(r.migrations) do if m == name then return r, "before" end end
  end
end

-- Enforces NOT NULL, recording each DDL statement (when it started, how
-- long it took, the lock it needed) for the release report.
function enforce_recorded(t)
  local starts = {}
  local res = t:enforce_not_null { on_step = function(tbl, step) starts[tbl .. "\0" .. step] = events.now() end }
  for _, entry in ipairs(res.tables or {}) do
    for _, st in ipairs(entry.steps or {}) do
      events.emit("ddl", { t = starts[entry.table .. "\0" .. st.step], table = entry.table, step = st.step,
        sql = st.sql, seconds = st.seconds, attempts = st.attempts,
        lockmode = st.step == "validate" and "ShareUpdateExclusiveLock" or "AccessExclusiveLock" })
    end
  end
  return res
end

-- Rollout r's NOT NULL migration, applied online (under Prisma's lock, which
-- the caller holds): NOT NULL enforced table by table, then the migration
-- file with the rollout's short lock_timeout.  Its SET NOT NULLs are
-- catalog-only by then, but each still needs ACCESS EXCLUSIVE, which an
-- autovacuum on a table would hold up like the enforcement's steps:
-- outwaited the same way.
function enforce_and_apply(ctx, r, t)
  local enforced = enforce_recorded(t)
  local names = {}
  for i, tb in ipairs(t.tables) do names[i] = tb.qname end
  local d = M.migrations(ctx):deploy(r.not_null_migration, { lock_timeout = t.spec.lock_timeout,
    relations = names, outwait_autovacuum = t.spec.outwait_autovacuum, log = t.log })
  d.not_null = enforced.tables
  return d
end

-- Applies `list` (pending migrations, in order) one by one.  A migration
-- that is another rollout's NOT NULL migration is applied online through
-- that rollout (CHECK NOT VALID -> VALIDATE -> SET NOT NULL) when its tables
-- have no NULLs; with NULLs it is refused: that rollout must be finished
-- first.  Every other migration waits at most `lock_timeout` per lock.
function M.apply_list(ctx, list)
  local applied = {}
  local i = 0
  while i < #list do
    i = i + 1
    local m = list[i]
    local r, role = owner_of(ctx, m.name)
    if role ~= "not_null" and ctx.cfg.migrate_with == "prisma" then
      -- `prisma migrate deploy` applies everything pending: the migrations
      -- up to the next NOT NULL migration go in one run
      while list[i + 1] and select(2, owner_of(ctx, list[i + 1].name)) ~= "not_null" do
        applied[#applied + 1] = list[i].name
        i = i + 1
      end
      m = list[i]
      M.migrations(ctx):deploy(m.name)
    elseif role == "not_null" and r ~= M.rollout(ctx) then
      local t = M.tenancy(ctx, r)
      if t:has_nulls() then
        state_error(format("migration %s is rollout %s's NOT NULL migration, and %s still has NULLs", m.name, r.name,
          r.column), "finish that rollout first: dhrun deploy --rollout " .. r.name)
      end
      prisma.with_lock(ctx.conn, function() enforce_and_apply(ctx, r, t) end)
    else
      M.migrations(ctx):deploy(m.name)
    end
    applied[#applied + 1] = m.name
  end
  return applied
end

local function plan_list(ctx, list)
  if #list == 0 then return "no pending migrations" end
  local notes = {}
  for _, m in ipairs(list) do
    local r, role = owner_of(ctx, m.name)
    if role == "not_null" then
      notes[#notes + 1] = m.name .. ": rollout " .. r.name .. "'s NOT NULL migration, applied online"
    elseif not r then
      notes[#notes + 1] = m.name .. ": not part of a rollout (lock_timeout " .. ctx.cfg.lock_timeout .. " per lock)"
    end
  end
  local text = M.migrations(ctx):plan_of(list)
  if #notes > 0 then text = text .. "\n" .. concat(notes, "\n") end
  return text
end

---------------------------------------------------------------------------
-- The steps, as step definitions for dhrun.flow.  deploy, recover and
-- release use the same ones.  ctx.migrated records that this run applied a
-- migration (generate must run).

M.steps = {}

-- Refuses to go on top of a failed migration, with the hint that fits it.
function M.steps.history()
  return {
    title = "Preflight: no failed migration in the history",
    readonly = true,
    run = function(ctx)
      local failed = M.migrations(ctx):failed()
      if #failed > 0 and prisma.lock_holder(ctx.conn) then
        -- A migration that another run (prisma migrate deploy, dhrun) is
        -- applying right now has a row that looks failed (started, not
        -- finished).  Like prisma migrate deploy, read the history once that
        -- run has let go of the lock (at most 10 s, then P1002: busy).
        failed = prisma.with_lock(ctx.conn, function() return M.migrations(ctx):failed() end)
      end
      if #failed > 0 then
        local r, role = owner_of(ctx, failed[1])
        local hint
        if role == "not_null" then
          hint = "run dhrun recover" .. (#ctx.cfg.rollouts > 1 and (" --rollout " .. r.name) or "")
            .. " (it resolves the failed NOT NULL migration, backfills and redeploys)"
        else
          hint = "see what failed (dhrun status), fix the database by hand, then record it: dhrun resolve "
            .. "--rolled-back " .. failed[1] .. " (or --applied " .. failed[1] .. ")"
        end
        state_error("migration " .. failed[1] .. " failed earlier; " .. ctx.flow.name
          .. " will not continue on top of it", hint)
      end
      return { summary = "migration history is healthy" }
    end,
  }
end

-- Every pending migration before the rollout's NOT NULL migration: its own
-- (which add the column) and any others in between, in directory order.
-- Without a rollout: every pending migration.
function M.steps.migrate_before()
  return {
    name = "Apply the migrations before the backfill",
    title = function(ctx)
      local r = M.rollout(ctx)
      if not r then return "Apply pending migrations" end
      return "Apply the migrations before the " .. r.column .. " backfill"
    end,
    skip = function(ctx)
      local r = M.rollout(ctx)
      local list = M.pending_between(ctx, nil, r and r.not_null_migration)
      if #list == 0 then
        if r and r.last_before then return r.last_before .. " is already applied" end
        return "no pending migrations"
      end
    end,
    plan = function(ctx)
      local r = M.rollout(ctx)
      return plan_list(ctx, (M.pending_between(ctx, nil, r and r.not_null_migration)))
    end,
    run = function(ctx)
      local r = M.rollout(ctx)
      local list = M.pending_between(ctx, nil, r and r.not_null_migration)
      local applied = M.apply_list(ctx, list)
      ctx.migrated = ctx.migrated or #applied > 0
      return { summary = "applied " .. concat(applied, ", "), applied = applied }
    end,
  }
end

function M.steps.backfill()
  return {
    name = "Backfill the rollout column",
    title = function(ctx) return "Backfill " .. M.column(ctx) end,
    skip = function(ctx)
      if not M.rollout(ctx) then return "no rollout in the config" end
      if #M.missing_column(ctx) > 0 then
        return not ctx.dry_run and "the column does not exist (its migrations are not applied)" or nil
      end
      if M.tenancy(ctx):null_check({ count = false }).ok then
        return "no NULL " .. M.column(ctx) .. " values"
      end
    end,
    plan = function(ctx)
      if #M.missing_column(ctx) > 0 then
        return "after the migrations before it add the column: fill every row's " .. M.column(ctx) .. " in batches"
      end
      return "backfill in batches: " .. M.offenders_text(M.tenancy(ctx):null_check())
    end,
    run = function(ctx)
      local opts = {}
      for k, v in pairs(ctx.backfill_opts or {}) do opts[k] = v end
      -- each committed batch, for the release report (rate and batch size over time)
      opts.on_batch = function(info) events.emit("batch", info) end
      -- batch.workers > 1: each worker process connects to the same database
      opts.connect = opts.connect or (ctx.cfg and ctx.cfg.database_url)
      local s = M.tenancy(ctx):backfill(opts)
      return { summary = format("%d row(s) updated", s.updated or 0), tables = s.tables }
    end,
  }
end

function M.steps.verify_no_nulls()
  return {
    name = "Verify no NULLs (MUST pass)",
    title = function(ctx) return "Verify no NULL " .. M.column(ctx) .. " (MUST pass)" end,
    readonly = true,
    skip = function(ctx)
      if not M.rollout(ctx) then return "no rollout in the config" end
    end,
    run = function(ctx)
      -- in a dry run the backfill before it was only planned: the check
      -- would run after it, and it is not failed on NULLs it would fill
      local after = M.check_skip_in_dry_run(ctx)
      if after then return { summary = "would run " .. after } end
      return M.require_no_nulls(ctx)
    end,
  }
end

-- The NOT NULL migration, online: under Prisma's advisory lock (so a
-- `prisma migrate deploy` elsewhere cannot slip in between), NOT NULL is
-- enforced table by table, then the migration file is applied with the
-- rollout's short lock_timeout: by then its SET NOT NULLs are catalog-only.
-- Only that migration: anything after it is the next step's.
function M.deploy_not_null(ctx)
  local r = need_rollout(ctx)
  local t = M.tenancy(ctx)
  return prisma.with_lock(ctx.conn, function()
    local before = M.pending_between(ctx, nil, r.not_null_migration)
    if #before > 0 then
      state_error("migration " .. before[1].name .. " is still pending before " .. r.not_null_migration,
        "run " .. M.cmd(ctx, "deploy") .. ", which applies it first")
    end
    return enforce_and_apply(ctx, r, t)
  end)
end

local function not_null_pending(ctx)
  local r = M.rollout(ctx)
  if not r then return false end
  local st = M.migrations(ctx):status()
  for _, m in ipairs(st.to_apply) do
    if m.name == r.not_null_migration then return true end
  end
  -- a dry run of recover: the failed row would have been resolved as
  -- rolled back by the step before, so the migration would be pending
  if ctx.dry_run and ctx.flow.name ~= "deploy" then
    for _, f in ipairs(st.failed) do
      if f == r.not_null_migration then return true end
    end
  end
  return false
end

function M.steps.deploy_not_null()
  return {
    name = "Apply the NOT NULL migration (online)",
    title = function(ctx) return "Apply the NOT NULL migration (" .. M.column(ctx) .. ", online)" end,
    skip = function(ctx)
      local r = M.rollout(ctx)
      if not r then return "no rollout in the config" end
      if not not_null_pending(ctx) then return r.not_null_migration .. " is already applied" end
    end,
    plan = function(ctx)
      local r = need_rollout(ctx)
      local m
      for _, x in ipairs(M.migrations(ctx):status().migrations) do
        if x.name == r.not_null_migration then m = x end
      end
      local names, done = rollout.table_names(r), {}
      if #M.missing_column(ctx) == 0 then
        local partial = M.partial_not_null(ctx)
        if partial then names, done = partial.nullable, partial.enforced end
      end
      return (#done > 0 and (r.column .. " is NOT NULL already on " .. concat(done, ", ") .. "; ") or "")
        .. "make " .. r.column .. " NOT NULL online on " .. concat(names, ", ")
        .. " (CHECK NOT VALID -> VALIDATE -> SET NOT NULL -> DROP CHECK, bounded lock waits), then\n"
        .. M.migrations(ctx):plan_of({ m })
    end,
    run = function(ctx)
      local d = M.deploy_not_null(ctx)
      ctx.migrated = ctx.migrated or #(d.applied or {}) > 0
      return d
    end,
  }
end

-- Pending migrations after the rollout's NOT NULL migration: a step of
-- their own, each waiting at most `lock_timeout` per lock (another
-- rollout's NOT NULL migration goes online through that rollout).
function M.steps.migrate_after()
  return {
    title = "Apply later migrations",
    skip = function(ctx)
      local r = M.rollout(ctx)
      if not r then return "no rollout in the config (the first step applied every migration)" end
      if #M.pending_between(ctx, r.not_null_migration) == 0 then
        return "no pending migrations after " .. r.not_null_migration
      end
    end,
    plan = function(ctx)
      return plan_list(ctx, (M.pending_between(ctx, M.rollout(ctx).not_null_migration)))
    end,
    run = function(ctx)
      local applied = M.apply_list(ctx, (M.pending_between(ctx, M.rollout(ctx).not_null_migration)))
      ctx.migrated = ctx.migrated or #applied > 0
      return { summary = "applied " .. concat(applied, ", "), applied = applied }
    end,
  }
end

function M.steps.generate(title)
  return {
    title = title or "Regenerate the client",
    skip = function(ctx)
      if ctx.args["no-build"] then return "--no-build" end
      if not M.has_command(ctx, "generate") then return "no commands.generate in the config" end
      -- a dry run applied nothing, but the real run would: judge as it would
      local migrated = ctx.migrated or (ctx.dry_run and #M.migrations(ctx):status().to_apply > 0)
      return M.generate_skip_reason(ctx, migrated)
    end,
    plan = function(ctx) return concat(ctx.cfg.commands.generate, " ") end,
    run = M.generate,
  }
end

function M.steps.build(title)
  return {
    title = title or "Build the application",
    skip = function(ctx)
      if ctx.args["no-build"] then return "--no-build" end
      if not M.has_command(ctx, "build") then return "no commands.build in the config" end
      if ctx.dry_run and M.steps_will_generate(ctx) then return nil end
      return M.build_skip_reason(ctx)
    end,
    plan = function(ctx) return concat(ctx.cfg.commands.build, " ") end,
    run = M.build,
  }
end

-- What deploy and recover say to do next, when they end well.
function M.next_after_deploy(ctx)
  if ctx.args["no-build"] then return "build and start the app, then run its smoke test (dhrun smoke)" end
  return "start or reload the app, then run its smoke test (dhrun smoke; dhrun release does all three)"
end

---------------------------------------------------------------------------
-- Recover

-- Works out what recover would do; refuses (changing nothing) a state it
-- does not know how to recover.
function M.steps.recover_state()
  return {
    title = "Find out what to recover",
    readonly = true,
    run = function(ctx)
      local r = need_rollout(ctx)
      local st = M.migrations(ctx):status()
      local name = r.not_null_migration
      for _, f in ipairs(st.failed) do
        if f ~= name then
          state_error("migration " .. f .. " failed, and recover only recovers the NOT NULL migration of rollout "
            .. r.name .. " (" .. name .. ")",
            "see what failed (dhrun status), fix the database by hand, then record it: dhrun resolve --rolled-back "
            .. f .. " (or --applied " .. f .. ")")
        end
      end
      local before = M.pending_between(ctx, nil, name)
      if #before > 0 or #M.missing_column(ctx) > 0 then
        state_error("nothing to recover: the migrations before the backfill are not all applied ("
          .. (before[1] and before[1].name or "the column is missing") .. ")",
          "this database is before the rollout: run " .. M.cmd(ctx, "deploy"))
      end
      if #st.failed > 0 then return { summary = name .. " failed: recovering", state = "failed" } end
      if not_null_pending(ctx) then
        return { summary = name .. " is not applied (rolled back or pending): finishing the rollout",
                 state = "pending" }
      end
      return { summary = "nothing failed: every step below will be skipped", state = "healthy" }
    end,
  }
end

function M.steps.resolve_failed()
  return {
    title = "Mark the failed NOT NULL migration as rolled back",
    skip = function(ctx)
      local r = need_rollout(ctx)
      for _, f in ipairs(M.migrations(ctx):failed()) do
        if f == r.not_null_migration then return nil end
      end
      return "no failed row for " .. r.not_null_migration
    end,
    plan = function(ctx) return "prisma migrate resolve --rolled-back " .. need_rollout(ctx).not_null_migration end,
    run = function(ctx) return M.migrations(ctx):resolve_rolled_back(need_rollout(ctx).not_null_migration) end,
  }
end

---------------------------------------------------------------------------
-- Rollback

local function live_rows(ctx, name)
  if not prisma.table_exists(ctx.conn) then return 0 end
  return ctx.conn:query_value([[SELECT count(*) FROM _prisma_migrations
    WHERE migration_name = $1 AND rolled_back_at IS NULL]], name)
end

function M.rollback_prompt(ctx)
  local r = need_rollout(ctx)
  return { action = "roll back", word = "rollback", text = "This makes " .. r.column .. " nullable again on "
    .. concat(rollout.table_names(r), ", ") .. " and marks " .. r.not_null_migration .. " rolled back." }
end

function M.steps.rollback()
  return {
    title = "Drop NOT NULL and mark the migration rolled back",
    skip = function(ctx)
      local r = need_rollout(ctx)
      if #M.missing_column(ctx) > 0 then
        return "nothing to roll back: the column does not exist (the rollout's migrations are not applied)"
      end
      local enforced = 0
      for _, t in ipairs(M.tenancy(ctx):state()) do
        if not t.nullable then enforced = enforced + 1 end
      end
      if enforced == 0 and live_rows(ctx, r.not_null_migration) == 0 then
        return "nothing to roll back: the column is nullable everywhere and the migration is not recorded as applied"
      end
    end,
    plan = function(ctx)
      local r = need_rollout(ctx)
      local lines = { "in one transaction (lock_timeout " .. tostring(M.tenancy(ctx).spec.lock_timeout)
        .. " per lock, retried):" }
      for _, t in ipairs(rollout.table_names(r)) do
        lines[#lines + 1] = "  ALTER TABLE " .. db.quote_ident(t) .. " ALTER COLUMN " .. db.quote_ident(r.column)
          .. " DROP NOT NULL;"
      end
      lines[#lines + 1] = "  UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = '"
        .. r.not_null_migration .. "' AND rolled_back_at IS NULL;"
      return concat(lines, "\n")
    end,
    run = function(ctx)
      local r = need_rollout(ctx)
      local marked = 0
      local t0 = events.now()
      local res = prisma.with_lock(ctx.conn, function()
        return M.tenancy(ctx):drop_not_null {
          transaction = true,
          also = function(conn)
            if prisma.table_exists(conn) then
              marked = conn:exec([[UPDATE _prisma_migrations SET rolled_back_at = $1
                WHERE migration_name = $2 AND rolled_back_at IS NULL]], prisma.now_utc(), r.not_null_migration)
            end
          end,
        }
      end)
      events.emit("ddl", { t = t0, table = concat(rollout.table_names(r), ", "), step = "drop_not_null",
        seconds = events.now() - t0, lockmode = "AccessExclusiveLock",
        sql = "one transaction: ALTER TABLE ... ALTER COLUMN " .. r.column .. " DROP NOT NULL on each table" })
      return { summary = format("%s nullable on %d table(s); %d migration row(s) marked rolled back", r.column,
        #(res.tables or {}), marked), tables = res.tables, marked = marked, at = sys.time() }
    end,
  }
end

---------------------------------------------------------------------------
-- Status and checks

-- What is wrong with the migration history, or nil: {message=, hint=}.
function M.migration_problem(ctx, st)
  st = st or M.migrations(ctx):status()
  if st.exit ~= 0 then
    local hint, recover = "run dhrun deploy", nil
    if st.state == "failed" then
      local r, role = owner_of(ctx, st.failed[1])
      if role == "not_null" then
        recover = true
        hint = "run dhrun recover" .. (#ctx.cfg.rollouts > 1 and (" --rollout " .. r.name) or "")
      else
        hint = "fix the database by hand, then dhrun resolve --rolled-back " .. st.failed[1] .. " (or --applied)"
      end
    elseif st.state == "diverged" then
      hint = "the database has migrations this project does not: check you are on the right branch and database"
    end
    local what = st.state:gsub("_", " ")
    if st.state == "pending" then what = #st.pending .. " migration(s) not applied yet (" .. st.pending[1] .. "…)" end
    if st.state == "failed" then what = "migration " .. st.failed[1] .. " failed" end
    -- recover: a failed NOT NULL migration of a rollout, which recover finishes
    return { message = "migrations: " .. what, hint = hint, recover = recover }
  end
  if #st.rerun > 0 then
    -- Prisma calls this "up to date"; the release is not complete
    return { message = "migration " .. st.rerun[1] .. " is recorded as rolled back: deploy will apply it again",
      hint = "after fixing the cause (" .. M.cmd(ctx, "backfill") .. "), run " .. M.cmd(ctx, "deploy") }
  end
end

-- What is wrong with the rollout's column, or nil.
function M.column_problem(ctx)
  if not M.rollout(ctx) then return nil end
  local missing = M.missing_column(ctx)
  if #missing > 0 then
    return { message = "the " .. M.column(ctx) .. " column is missing on " .. concat(missing, ", ")
      .. " (the rollout's migrations are not applied)", hint = "run " .. M.cmd(ctx, "deploy") }
  end
  local ok, line = M.null_check(ctx)
  if not ok then
    return { message = line, hint = "run " .. M.cmd(ctx, "backfill") .. " (or " .. M.cmd(ctx, "deploy")
      .. ", which backfills first)" }
  end
end

-- A run in progress (it holds the release lock) is what to wait for, not a
-- reason to start another: the hint that says so, or nil.
function M.in_progress_hint(ctx)
  local who = ctx.conn and journal.holder(ctx.conn, flow.RELEASE_LOCK)
  if not who or who.id == ctx.run_id then return nil end -- (this run's own lock)
  return format("run #%s (%s by %s@%s, since %s) is in progress: let it finish, then run %s again", who.id,
    who.flow, tostring(who.user_name), tostring(who.host), who.started, M.cmd(ctx, "status"))
end

-- One line that is true, for the top of `status`: the database is up to
-- date, or the first thing that is not.  Returns ok, line.
function M.status_verdict(ctx)
  local st = M.migrations(ctx):status()
  local p = M.migration_problem(ctx, st) or M.column_problem(ctx)
  if p then
    p.hint = M.in_progress_hint(ctx) or p.hint
    return false, "NOT up to date: " .. p.message .. "; " .. p.hint
  end
  local r = M.rollout(ctx)
  return true, format("up to date: %d migration(s) applied%s", #st.applied,
    r and ("; " .. r.label .. " backfilled, no NULLs") or "")
end

function M.steps.status_migrations()
  return {
    title = "Migration status",
    readonly = true,
    run = function(ctx)
      local st = M.migrations(ctx):status()
      local p = M.migration_problem(ctx, st)
      if p and st.exit == 0 then
        -- Prisma's own text would say "up to date": shown as what Prisma
        -- says, not as dhrun's verdict
        log.info("      prisma migrate status would say:")
        for line in (st.text .. "\n"):gmatch("(.-)\n") do log.info("        %s", line) end
      else
        for line in (st.text .. "\n"):gmatch("(.-)\n") do log.info("      %s", line) end
      end
      for _, note in ipairs(st.notes) do log.warn("      note: %s", note) end
      if p then errors.raise("check", p.message, { hint = p.hint }) end
      return { summary = format("all %d migration(s) applied", #st.applied), notes = st.notes }
    end,
  }
end

-- NOT NULL on some of the rollout's tables but not all (an enforcement that
-- stopped, or a table changed by hand): nil, or {enforced = {names},
-- nullable = {names}, text = "NOT NULL on 1 of 4 tables: ...; the others
-- (...): run dhrun deploy (or dhrun recover) to finish"}.  report: the
-- tenancy's null_check (read here when nil).
function M.partial_not_null(ctx, report)
  report = report or M.tenancy(ctx):null_check { count = false }
  local enforced, nullable = {}, {}
  for _, t in ipairs(report.tables) do
    if t.enforced then enforced[#enforced + 1] = t.table else nullable[#nullable + 1] = t.table end
  end
  if #enforced == 0 or #nullable == 0 then return nil end
  local r = M.rollout(ctx)
  local todo
  if not_null_pending(ctx) then
    todo = "run " .. M.cmd(ctx, "deploy") .. " (or " .. M.cmd(ctx, "recover") .. ") to finish"
  else
    todo = "nullable although " .. r.not_null_migration .. " is recorded as applied (changed by hand?): "
      .. M.cmd(ctx, "rollback") .. ", then " .. M.cmd(ctx, "deploy") .. ", makes them all NOT NULL again"
  end
  return { enforced = enforced, nullable = nullable,
           text = format("NOT NULL on %d of %d tables: %s; the others (%s): %s", #enforced, #report.tables,
             concat(enforced, ", "), concat(nullable, ", "), todo) }
end

-- The rollout's NULL check, table by table.  hint: what the failure says.
function M.steps.check_nulls(title)
  return {
    name = title or "Check for NULLs",
    title = function(ctx)
      if not M.rollout(ctx) then return title or "Check for NULLs" end
      return title or ("Check for NULL " .. M.column(ctx))
    end,
    readonly = true,
    skip = function(ctx)
      if not M.rollout(ctx) then return "no rollout in the config" end
    end,
    run = function(ctx)
      local missing = M.missing_column(ctx)
      if #missing > 0 then
        errors.raise("check", "the " .. M.column(ctx) .. " column is missing on " .. concat(missing, ", ")
          .. " (the rollout's migrations are not applied)", { hint = "run " .. M.cmd(ctx, "deploy") })
      end
      local ok, line, report = M.null_check(ctx)
      local checks = {}
      for _, t in ipairs(M.tenancy(ctx):state()) do checks[t.table] = t.check_constraint end
      for _, t in ipairs(report.tables) do
        local how = t.enforced and "NOT NULL enforced" or (t.has_nulls and (tostring(t.nulls) .. " NULL row(s)")
          or "no NULLs")
        if checks[t.table] ~= "none" then
          -- left by an enforcement that stopped between its steps; the next one continues from it
          how = how .. (checks[t.table] == "valid" and ", validated CHECK constraint" or ", CHECK constraint NOT VALID")
            .. " (NOT NULL enforcement stopped half way)"
        end
        log.info("      %-14s %s", t.table, how)
      end
      local partial = M.partial_not_null(ctx, report)
      if partial then log.warn("      %s", partial.text) end
      if not ok then
        -- after a failed NOT NULL migration, deploy refuses: recover is the way
        local mp = M.migration_problem(ctx)
        M.require_no_nulls(ctx, M.in_progress_hint(ctx) or (mp and mp.recover and mp.hint)
          or ("run " .. M.cmd(ctx, "backfill") .. " (or " .. M.cmd(ctx, "deploy") .. ", which backfills first)"))
      end
      return { summary = partial and (line .. " " .. partial.text) or line, tables = report.tables,
               not_null = partial and partial.enforced or nil }
    end,
  }
end

-- The backfill on its own (the backfill flow): fails when the column does
-- not exist yet.
function M.steps.backfill_only()
  local step = M.steps.backfill()
  local skip = step.skip
  step.skip = function(ctx)
    if M.rollout(ctx) then
      local missing = M.missing_column(ctx)
      if #missing > 0 then
        state_error("the " .. M.column(ctx) .. " column is missing on " .. concat(missing, ", ")
          .. " (the rollout's migrations are not applied)", "run " .. M.cmd(ctx, "deploy"))
      end
    end
    return skip(ctx)
  end
  return step
end

return M
