-- bench/benchlib.lua: what the benchmarks share.  Databases (a seeded
-- template per scale, cloned for each strategy), timed child processes with
-- their peak RSS, the write probe (pgbench), the 20 Hz lock sampler, the
-- server log reader, hyperfine, and number formatting.
--
-- Runs inside dhrun, started by bench/run.sh, which exports PGHOST/PGPORT/
-- PGUSER (the throwaway cluster), PGTEMP_DIR, PGTEMP_BIN, DHRUN_BIN and
-- BENCH_OUT, and runs from the repository root (all paths here are relative
-- to it).
local db = require "dhrun.db"
local config = require "dhrun.config"
local rollout = require "dhrun.rollout"
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local log = require "dhrun.log"
local lfs = require "lfs"
local cjson = require "cjson"

local format, concat = string.format, table.concat

local M = {}

local function need_env(name)
  local v = os.getenv(name)
  if not v or v == "" then error(name .. " is not set: run the benchmarks with bench/run.sh", 0) end
  return v
end

M.dhrun = need_env("DHRUN_BIN")
M.out = need_env("BENCH_OUT")
M.pgdir = need_env("PGTEMP_DIR")
M.pgbin = need_env("PGTEMP_BIN")
M.config = "bench/dhrun.config.lua"
-- The example project's own config, loaded and checked as dhrun loads it
-- (dhrun.release registers the keys its flows read): its rollout (tables,
-- column, backfill rules, lock_timeout) is what every strategy works from.
require "dhrun.release"
M.example = config.load("examples/datahub/dhrun.config.lua")
M.rollout = rollout.find(M.example)
-- The rollout as dhrun.tenancy runs it: column, tables in backfill order,
-- and per table the value/from/where of its backfill (parent chains
-- written out as SQL), plus the prepare SQL in backfill.prepare.
M.spec = rollout.tenancy_spec(M.rollout)
M.tables = M.spec.tables

-- BENCH_SCALE: MetricDaily rows at full scale; the other tables follow the
-- seed's proportions (one user per 1000 metric rows: 10,000 users at 10M).
M.scale = math.tointeger(tonumber(os.getenv("BENCH_SCALE") or "") or 10000000)
if not M.scale or M.scale < 1000 then error("BENCH_SCALE must be an integer >= 1000", 0) end
M.full_scale = M.scale == 10000000

---------------------------------------------------------------------------
-- Small helpers

M.say = log.info
M.ok = log.ok
M.warn = log.warn

function M.mkdir_p(dir)
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    lfs.mkdir(path)
  end
  return dir
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

function M.exists(path) return lfs.attributes(path, "mode") ~= nil end

-- "10M", "3M", "200k": names databases and labels rows.
function M.tag(n)
  if n % 1000000 == 0 then return (n // 1000000) .. "M" end
  if n >= 1000000 then return format("%.1fM", n / 1e6) end
  if n % 1000 == 0 then return (n // 1000) .. "k" end
  return tostring(n)
end

-- Users for a scale: the seed's ratio (1 per 1000 metric rows), at least 60.
function M.users(scale) return math.max(60, scale // 1000) end

-- Sorted copy; percentile p (0..100) by nearest rank.
function M.percentile(sorted, p)
  if #sorted == 0 then return nil end
  local i = math.max(1, math.min(#sorted, math.ceil(#sorted * p / 100)))
  return sorted[i]
end

function M.median(list)
  local s = { table.unpack(list) }
  table.sort(s)
  return M.percentile(s, 50)
end

function M.fmt_int(n)
  local s = tostring(math.floor(n + 0.5))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""):gsub("^%-,", "-"))
end

function M.fmt_ms(ms)
  if ms == nil then return "n/a" end
  if ms >= 10000 then return format("%.1f s", ms / 1000) end
  if ms >= 100 then return format("%d ms", math.floor(ms + 0.5)) end
  if ms >= 10 then return format("%.1f ms", ms) end
  return format("%.2f ms", ms)
end

function M.fmt_mb(bytes)
  if bytes >= 1024 ^ 3 then return format("%.2f GB", bytes / 1024 ^ 3) end
  return format("%.0f MB", bytes / 1024 ^ 2)
end

function M.fmt_rate(rows_per_s) return M.fmt_int(rows_per_s) .. " rows/s" end

---------------------------------------------------------------------------
-- Databases

-- libpq URL of a database on the throwaway cluster (unix socket, trust).
function M.url(dbname)
  return format("postgresql://postgres@localhost/%s?host=%s&port=%s", dbname, need_env("PGHOST"),
    need_env("PGPORT"))
end

function M.connect(dbname)
  return db.connect(M.url(dbname or "postgres"), { application_name = "dhrun-bench" })
end

-- One statement (or a script) on a database, in a connection of its own.
function M.sql(dbname, sql, ...)
  local conn <close> = M.connect(dbname)
  return conn:query(sql, ...)
end

function M.sql_value(dbname, sql, ...)
  local conn <close> = M.connect(dbname)
  return conn:query_value(sql, ...)
end

function M.drop_db(name)
  M.sql("postgres", "DROP DATABASE IF EXISTS " .. db.quote_ident(name) .. " WITH (FORCE)")
end

-- FILE_COPY: copies the template's files after a checkpoint, much faster
-- than the WAL_LOG default for a database of a few GB.
function M.clone(template, name)
  M.drop_db(name)
  local t0 = sys.now()
  M.sql("postgres", format("CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY", db.quote_ident(name),
    db.quote_ident(template)))
  M.say("cloned %s from %s (%.1f s)", name, template, sys.now() - t0)
  return name
end

function M.checkpoint() M.sql("postgres", "CHECKPOINT") end

-- pg_table_size of each of the rollout's tables, and their sum (bytes).
function M.table_sizes(dbname)
  local conn <close> = M.connect(dbname)
  local out, total = {}, 0
  for _, t in ipairs(M.tables) do
    out[t] = conn:query_value("SELECT pg_table_size($1::regclass)", db.quote_ident(t))
    total = total + out[t]
  end
  out.total = total
  return out
end

function M.wal_lsn()
  return M.sql_value("postgres", "SELECT pg_current_wal_lsn()::text")
end

function M.wal_bytes(from, to)
  return M.sql_value("postgres", "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::int8", to, from)
end

---------------------------------------------------------------------------
-- Child processes

local function env_with(extra)
  local env = {}
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- Runs argv to completion; raises with the output's tail unless it exits 0
-- (or opts.codes lists the accepted exit codes).
function M.run(argv, opts)
  opts = opts or {}
  local r = process.run(argv, { env = env_with(opts.env), cwd = opts.cwd, stdin = opts.stdin,
                                timeout = opts.timeout })
  local accepted = opts.codes or { 0 }
  for _, c in ipairs(accepted) do
    if r.code == c and not r.timed_out then return r end
  end
  local tail = ((r.stderr or "") .. (r.stdout or "")):sub(-2000)
  error(format("%s failed (%s):\n%s", concat(argv, " "),
    r.timed_out and "timed out" or r.signame or ("exit " .. tostring(r.code)), tail), 0)
end

-- Runs argv under /usr/bin/time: -> result, seconds (wall), peak RSS in KiB.
function M.timed(argv, opts)
  local file = os.tmpname()
  local full = { "/usr/bin/time", "-f", "%e %M", "-o", file }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local t0 = sys.now()
  local ok, r = pcall(M.run, full, opts)
  local wall = sys.now() - t0
  local rss = tonumber(((M.read(file) or ""):match("(%d+)%s*$")))
  os.remove(file)
  if not ok then error(r, 0) end
  return r, wall, rss
end

-- The dhrun under test, as a user runs it, on database `dbname`.
function M.dhrun_argv(...)
  return { M.dhrun, ... }
end

function M.dhrun_env(dbname, extra)
  local env = { BENCH_DATABASE_URL = M.url(dbname), NO_COLOR = "1" }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

---------------------------------------------------------------------------
-- Seeded databases.  One template per scale (seeded once, in the state
-- after migration #1: "workspaceId" everywhere NULL), cloned per strategy.

local state = { templates = {}, backfilled = {}, enforced = {} }
M.setup_seconds = {}

-- bench.probe_keys: one row per connection of a user who owns a workspace,
-- so the probe's statements pick a valid (user, connection, workspace) by a
-- primary-key lookup.  Lives in its own schema, out of the app's way.  The
-- owners' workspaces in one pass (WorkspaceMember has no index on userId: a
-- lookup per connection took 25 s of the 10M template's seeding).
local PROBE_KEYS = [[
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.probe_keys;
CREATE TABLE bench.probe_keys AS
SELECT row_number() OVER (ORDER BY c.id)::int AS n, c.id AS conn_id, c."userId" AS user_id, c.provider,
       o."workspaceId" AS ws_id
  FROM "Connection" c
  JOIN (SELECT DISTINCT ON (m."userId") m."userId", m."workspaceId" FROM "WorkspaceMember" m
         WHERE m.role = 'OWNER' ORDER BY m."userId", m."createdAt", m.id) o ON o."userId" = c."userId";
ALTER TABLE bench.probe_keys ADD PRIMARY KEY (n);
CREATE TABLE IF NOT EXISTS bench.meta (key text PRIMARY KEY, value text);
INSERT INTO bench.meta SELECT 'seeded_max_metric_id', max(id)::text FROM "MetricDaily"
  ON CONFLICT (key) DO UPDATE SET value = excluded.value;
]]

function M.template(scale)
  local name = "tmpl_" .. M.tag(scale):lower():gsub("%.", "_")
  if state.templates[scale] then return name end
  M.drop_db(name)
  M.sql("postgres", "CREATE DATABASE " .. db.quote_ident(name))
  M.say("seeding %s: %s users, %s MetricDaily rows (examples/datahub/setup.lua --state nullable)", name,
    M.fmt_int(M.users(scale)), M.fmt_int(scale))
  local t0 = sys.now()
  -- preparing the data is not measured: asynchronous commits, and memory
  -- for migration #1's index builds
  M.run({ M.dhrun, "examples/datahub/setup.lua", "--state", "nullable", "--users", tostring(M.users(scale)),
          "--metrics", tostring(scale) }, { env = { DATABASE_URL = M.url(name),
          PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=512MB" } })
  local conn <close> = M.connect(name)
  conn:exec_script(PROBE_KEYS)
  conn:exec("VACUUM ANALYZE")
  conn:close()
  M.checkpoint()
  M.setup_seconds[name] = sys.now() - t0
  M.ok("%s ready (%.1f s)", name, M.setup_seconds[name])
  state.templates[scale] = true
  return name
end

-- The backfill as one UPDATE per table (same prepare SQL, same rules as the
-- example config's rollout), as a psql script: the speed limit.  Each table
-- is then VACUUMed (ANALYZE), as dhrun's backfill does after each table by
-- default, so that both end in the same state and pay for the same cleanup.
function M.single_update_sql()
  local t = M.spec
  local col = db.quote_ident(t.column)
  local parts = { "\\set ON_ERROR_STOP on", t.backfill.prepare }
  for _, name in ipairs(t.tables) do
    local b = t.backfill[name]
    parts[#parts + 1] = format("UPDATE %s AS t SET %s = (%s)%s WHERE t.%s IS NULL%s;", db.quote_ident(name), col,
      b.value, b.from and (" FROM " .. b.from) or "", col, b.where and (" AND (" .. b.where .. ")") or "")
    parts[#parts + 1] = format("VACUUM (ANALYZE) %s;", db.quote_ident(name))
  end
  return M.write(M.out .. "/single-update.sql", concat(parts, "\n") .. "\n")
end

function M.psql_argv(dbname, ...)
  local argv = { M.pgbin .. "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname }
  for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  return argv
end

-- Remembers a database a benchmark has backfilled (B1 does this, so B2/B3
-- reuse its result instead of backfilling again).
function M.set_backfilled(scale, name) state.backfilled[scale] = name end

-- A database of `scale` with every workspaceId filled in, still nullable
-- (migration #2 pending): B1's result if it ran, else a clone filled by the
-- single-statement backfill (the quickest way to the same data).
function M.backfilled(scale)
  if state.backfilled[scale] then return state.backfilled[scale] end
  local name = M.clone(M.template(scale), "filled_" .. M.tag(scale):lower():gsub("%.", "_"))
  M.say("backfilling %s with one UPDATE per table", name)
  M.run(M.psql_argv(name, "-f", M.single_update_sql()))
  state.backfilled[scale] = name
  return name
end

-- The same database after `dhrun deploy` (NOT NULL enforced, migration #2
-- applied).  Turns the backfilled database into this state.
function M.enforced(scale)
  local name = M.backfilled(scale)
  if state.enforced[scale] then return name end
  M.say("dhrun deploy --no-build on %s (NOT NULL)", name)
  M.run(M.dhrun_argv("deploy", "--config", M.config, "--no-build"), { env = M.dhrun_env(name) })
  state.enforced[scale] = true
  return name
end

-- Back to "backfilled, nullable, migration #2 pending": what B2 needs before
-- each run.  A harness reset, not dhrun's rollback flow.
function M.reset_nullable(name)
  local conn <close> = M.connect(name)
  local t = M.rollout
  local col = db.quote_ident(t.column)
  for _, tbl in ipairs(M.tables) do
    conn:exec(format("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", db.quote_ident(tbl), col))
    conn:exec(format("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", db.quote_ident(tbl),
      db.quote_ident(tbl .. "_" .. t.column .. "_not_null")))
  end
  conn:exec("DELETE FROM _prisma_migrations WHERE migration_name = $1", t.not_null_migration)
  for scale, n in pairs(state.backfilled) do
    if n == name then state.enforced[scale] = nil end
  end
end

---------------------------------------------------------------------------
-- The write probe: pgbench at a fixed 200 tx/s from 4 clients, small
-- single-row writes to the four tables (bench/probe/*.sql), every
-- transaction logged.  bench/probe_loop.lua runs it in 3 s chunks until
-- told to stop, so a run of any length is covered and every log is complete.

M.PROBE_SCRIPTS = {
  { "metric_update.sql", 2 }, { "metric_upsert.sql", 1 }, { "connection_update.sql", 1 },
  { "insight_insert.sql", 1 }, { "chat_insert.sql", 1 },
}

function M.probe_start(dbname, label)
  local dir = M.mkdir_p(format("%s/probe/%s", M.out, label))
  for f in lfs.dir(dir) do
    if f ~= "." and f ~= ".." then os.remove(dir .. "/" .. f) end
  end
  local conn <close> = M.connect(dbname)
  local maxid = conn:query_value([[SELECT value FROM bench.meta WHERE key = 'seeded_max_metric_id']])
  local nkeys = conn:query_value("SELECT count(*) FROM bench.probe_keys")
  conn:close()
  local stop = dir .. "/stop"
  local proc = process.spawn({ M.dhrun, "bench/probe_loop.lua", dbname, dir, stop, tostring(maxid),
                               tostring(nkeys) }, { stdout = dir .. "/loop.log", stderr = dir .. "/loop.log" })
  local handle = { dir = dir }
  function handle.stop()
    M.write(stop, "")
    local r = proc:wait(60)
    if not r then proc:stop() end
    return M.probe_stats(dir)
  end
  return handle
end

-- Per-transaction logs: "client tx latency_us script epoch us [lag]", the
-- latency being "skipped" for transactions pgbench did not send because
-- they were already later than --latency-limit.  With -R the latency counts
-- from the scheduled start (no coordinated omission).
function M.probe_stats(dir)
  local lat, skipped, failed, files = {}, 0, 0, 0
  local slow = {} -- script number -> transactions over 100 ms (skipped included)
  local first, last
  for f in lfs.dir(dir) do
    if f:match("^chunk%d+%.") then
      files = files + 1
      for line in io.lines(dir .. "/" .. f) do
        local us, script, epoch = line:match("^%d+ %d+ (%S+) (%d+) (%d+)")
        if us == "skipped" then
          skipped = skipped + 1
        elseif us == "failed" then
          failed = failed + 1
        elseif us then
          lat[#lat + 1] = tonumber(us) / 1000
        end
        if us == "skipped" or (us and tonumber(us) > 100000) then
          local name = M.PROBE_SCRIPTS[tonumber(script) + 1][1]:gsub("%.sql$", "")
          slow[name] = (slow[name] or 0) + 1
        end
        epoch = tonumber(epoch)
        if epoch then
          first = math.min(first or epoch, epoch)
          last = math.max(last or epoch, epoch)
        end
      end
    end
  end
  table.sort(lat)
  local over = skipped
  for i = #lat, 1, -1 do
    if lat[i] <= 100 then break end
    over = over + 1
  end
  local aborted = (M.read(dir .. "/loop.log") or ""):match("aborted") ~= nil
  local seconds = first and (last - first + 1) or 0
  local kinds = {}
  for name, n in pairs(slow) do kinds[#kinds + 1] = format("%s %d", name, n) end
  table.sort(kinds)
  -- a probe client stuck behind a lock when its 3 s chunk ends is not
  -- rescheduled: `scheduled` (200/s over the probe's span) shows starvation
  return { n = #lat + skipped, done = #lat, skipped = skipped, over100 = over, p50 = M.percentile(lat, 50),
           p99 = M.percentile(lat, 99), max = lat[#lat], seconds = seconds, scheduled = 200 * seconds,
           chunks = files, aborted = aborted, failed = failed, slow_by_kind = concat(kinds, ", ") }
end

function M.probe_text(p)
  return format("%d tx over %d s: p50 %s, p99 %s, max %s; %d over 100 ms (%d skipped as hopelessly late)%s%s",
    p.n, p.seconds, M.fmt_ms(p.p50), M.fmt_ms(p.p99), M.fmt_ms(p.max), p.over100, p.skipped,
    p.failed > 0 and format("; %d failed after retries", p.failed) or "",
    p.aborted and "; some probe clients ABORTED (see bench/out/probe)" or "")
end

---------------------------------------------------------------------------
-- Lock sampler: bench/lock_sampler.lua polls pg_locks at 20 Hz from its own
-- session (the reference method): per sample, granted ACCESS EXCLUSIVE locks
-- and waiting requests on the four tables.

function M.sampler_start(dbname, label)
  local file = format("%s/locks-%s.tsv", M.out, label)
  local stop = file .. ".stop"
  os.remove(stop)
  local proc = process.spawn({ M.dhrun, "bench/lock_sampler.lua", dbname, file, stop, table.unpack(M.tables) },
    { stderr = file .. ".err" })
  local handle = {}
  function handle.stop()
    M.write(stop, "")
    if not proc:wait(10) then proc:stop() end
    os.remove(stop)
    return M.sampler_stats(file)
  end
  return handle
end

-- -> {samples, ae_samples, ae_run (longest run of consecutive samples with
--     an ACCESS EXCLUSIVE granted), max_waiting, max_wait_ms,
--     probe_waits = "Lock:extend 12, IO:WALSync 3, ..." (busy probe sessions seen per wait)}
function M.sampler_stats(file)
  local s = { samples = 0, ae_samples = 0, ae_run = 0, max_waiting = 0, max_wait_ms = 0 }
  local run, waits, dwaits = 0, {}, {}
  s.max_replica_lag = nil
  for line in io.lines(file) do
    local _, ae, waiting, wait_ms, probe = line:match("^(%S+)\t(%d+)\t(%d+)\t(%S+)\t?(%S*)")
    local lag, dhrun = line:match("^%S+\t%d+\t%d+\t%S+\t%S*\t(%S+)\t(%S+)")
    for w in (probe or ""):gmatch("[^,]+") do
      if w ~= "-" then waits[w] = (waits[w] or 0) + 1 end
    end
    for w in (dhrun or ""):gmatch("[^,]+") do
      if w ~= "-" then dwaits[w] = (dwaits[w] or 0) + 1 end
    end
    if tonumber(lag) then s.max_replica_lag = math.max(s.max_replica_lag or 0, tonumber(lag)) end
    if ae then
      s.samples = s.samples + 1
      if tonumber(ae) > 0 then
        s.ae_samples, run = s.ae_samples + 1, run + 1
        s.ae_run = math.max(s.ae_run, run)
      else
        run = 0
      end
      s.max_waiting = math.max(s.max_waiting, tonumber(waiting))
      s.max_wait_ms = math.max(s.max_wait_ms, tonumber(wait_ms) or 0)
    end
  end
  local list = {}
  for w, n in pairs(waits) do list[#list + 1] = { w, n } end
  table.sort(list, function(x, y) return x[2] > y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  for i, x in ipairs(list) do list[i] = x[1] .. " " .. x[2] end
  s.probe_waits = #list > 0 and concat(list, ", ") or "none seen"
  local dl = {}
  for w, n in pairs(dwaits) do dl[#dl + 1] = { w, n } end
  table.sort(dl, function(x, y) return x[2] > y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  for i, x in ipairs(dl) do dl[i] = x[1] .. " " .. x[2] end
  s.dhrun_waits = #dl > 0 and concat(dl, ", ") or "none seen"
  return s
end

---------------------------------------------------------------------------
-- The server log ($PGTEMP_DIR/server.log), read from a saved offset:
-- records of "YYYY-MM-DD HH:MM:SS.mmm UTC [pid] user@db LEVEL:  text",
-- continuation lines (tab-indented) joined with "\n".

function M.log_offset()
  return lfs.attributes(M.pgdir .. "/server.log", "size") or 0
end

local function log_ms(date, time)
  local y, mo, d = date:match("(%d+)-(%d+)-(%d+)")
  local h, mi, s, ms = time:match("(%d+):(%d+):(%d+)%.(%d+)")
  local t = os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
                      min = tonumber(mi), sec = tonumber(s) }
  return t * 1000 + tonumber(ms)
end

function M.log_records(offset)
  local f = assert(io.open(M.pgdir .. "/server.log", "rb"))
  f:seek("set", offset or 0)
  local text = f:read("a")
  f:close()
  local records, cur = {}, nil
  for line in text:gmatch("([^\n]*)\n") do
    local date, time, pid, level, msg =
      line:match("^(%d+%-%d+%-%d+) (%d+:%d+:%d+%.%d+) %S+ %[(%d+)%] %S* ?(%u+):  (.*)$")
    if date then
      cur = { ms = log_ms(date, time), pid = tonumber(pid), level = level, text = msg }
      records[#records + 1] = cur
    elseif cur and line:sub(1, 1) == "\t" then
      cur.text = cur.text .. "\n" .. line:sub(2)
    end
  end
  return records
end

-- The statements a process ran (log_statement = all through PGOPTIONS), with
-- their parameters written in as literals: a script psql can run.
function M.captured_sql(offset)
  local out, last = {}, nil
  for _, r in ipairs(M.log_records(offset)) do
    local sql = r.level == "LOG" and (r.text:match("^statement: (.*)$") or r.text:match("^execute [^:]*: (.*)$"))
    if sql then
      out[#out + 1] = sql
      last = #out
    elseif r.level == "DETAIL" and last then
      local params = r.text:match("^parameters: (.*)$")
      if params then
        local values = {}
        for n, v in (params .. ", "):gmatch("%$(%d+) = (NULL), ") do values[tonumber(n)] = v end
        -- the ", $" sentinel lets the last value end like the others
        for n, v in (params .. ", $"):gmatch("%$(%d+) = ('.-'), %f[%$]") do values[tonumber(n)] = v end
        out[last] = out[last]:gsub("%$(%d+)", function(n) return values[tonumber(n)] end)
      end
      last = nil
    end
  end
  return concat(out, ";\n") .. ";\n"
end

-- ACCESS EXCLUSIVE holds, from a log written with log_min_duration_statement
-- = 0 (the measured sessions only, through PGOPTIONS) and log_lock_waits with
-- deadlock_timeout = 1ms (so any wait longer than 1 ms is logged with its
-- length).  A statement taking ACCESS EXCLUSIVE (any ALTER TABLE but
-- VALIDATE) holds it from the moment it got the lock, its start plus the
-- logged wait, to the end of its transaction: the COMMIT/ROLLBACK of an
-- explicit transaction, else the statement's own end.  Timestamps have 1 ms
-- resolution, durations 1 us.  Returns {holds = {{ms=, sql=}}, max = ms}.
function M.ae_holds(offset)
  local holds, open = {}, {}
  local wait = {} -- pid -> ms waited for an AccessExclusiveLock by the statement in progress
  local function close(pid, end_ms)
    local o = open[pid]
    if o and o.start then holds[#holds + 1] = { ms = end_ms - o.start, sql = o.sql } end
    open[pid] = nil
  end
  for _, r in ipairs(M.log_records(offset)) do
    local pid = r.pid
    local waited = r.text:match("^process %d+ acquired AccessExclusiveLock .- after ([%d.]+) ms")
    if waited then
      wait[pid] = wait[pid] or tonumber(waited) -- the first AE lock of the statement starts the hold
    end
    local dur, sql = r.text:match("^duration: ([%d.]+) ms  %a+ [^:]*: (.*)$")
    if not dur then dur, sql = r.text:match("^duration: ([%d.]+) ms  statement: (.*)$") end
    if r.level == "LOG" and dur and not r.text:match("^duration: [%d.]+ ms  parse ")
        and not r.text:match("^duration: [%d.]+ ms  bind ") then
      dur = tonumber(dur)
      local head = sql:match("^%s*(%a+)") or ""
      head = head:upper()
      local started = r.ms - dur
      if head == "BEGIN" or head == "START" then
        open[pid] = { begin = true }
      elseif head == "COMMIT" or head == "ROLLBACK" or head == "END" then
        close(pid, r.ms)
      else
        local upper = sql:upper()
        local takes_ae = upper:find("ALTER TABLE", 1, true)
          and not upper:match("^%s*ALTER TABLE [^;]* VALIDATE CONSTRAINT [^;]*;?%s*$")
        if takes_ae then
          local o = open[pid]
          local got = started + (wait[pid] or 0)
          if o then
            if not o.start then o.start, o.sql = got, sql end
          else
            holds[#holds + 1] = { ms = r.ms - got, sql = sql }
          end
        end
      end
      wait[pid] = nil
    elseif r.level == "ERROR" then
      -- a lock timeout acquired nothing; a deadlock or another error ends
      -- the transaction's holds (the session rolls back or disconnects)
      wait[pid] = nil
      if open[pid] and open[pid].start then close(pid, r.ms) end
    end
  end
  local max = 0
  for _, h in ipairs(holds) do max = math.max(max, h.ms) end
  return { holds = holds, max = max }
end

-- Checkpoints that completed in the log since offset: count and the
-- longest sync phase (seconds), when fsync stalls every writer's commit.
function M.checkpoints(offset)
  local n, max_sync = 0, 0
  for _, r in ipairs(M.log_records(offset)) do
    local sync = r.text:match("^checkpoint complete: .-sync=([%d.]+) s")
    if sync then n, max_sync = n + 1, math.max(max_sync, tonumber(sync)) end
  end
  return { n = n, max_sync = max_sync }
end

-- Autovacuum/autoanalyze runs on a table so far (pg_stat_user_tables).
function M.autovacuums(dbname, tbl)
  local conn <close> = M.connect(dbname)
  conn:query("SELECT pg_stat_clear_snapshot()")
  return conn:query_value([[SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass]],
    db.quote_ident(tbl))
end

---------------------------------------------------------------------------
-- hyperfine: commands = { {name=, cmd=} } (cmd split like a shell's words,
-- no shell in between: -N).  -> {name = {mean=, stddev=, median=, min=, max=}} in ms.

function M.hyperfine(label, commands, opts)
  opts = opts or {}
  local json = format("%s/hyperfine-%s.json", M.out, label)
  local argv = { "hyperfine", "-N", "--style", "none", "--warmup", tostring(opts.warmup or 3), "--runs",
                 tostring(opts.runs or 30), "--export-json", json }
  if opts.ignore_failure then argv[#argv + 1] = "-i" end
  for _, c in ipairs(commands) do
    argv[#argv + 1] = "-n"
    argv[#argv + 1] = c.name
  end
  for _, c in ipairs(commands) do argv[#argv + 1] = c.cmd end
  M.run(argv, { env = opts.env })
  local data = cjson.decode(M.read(json))
  local out = {}
  for _, r in ipairs(data.results) do
    out[r.command] = { mean = r.mean * 1000, stddev = (r.stddev or 0) * 1000, median = r.median * 1000,
                       min = r.min * 1000, max = r.max * 1000 }
  end
  return out
end

function M.hf_text(r)
  return format("%s ± %s (median %s, min %s)", M.fmt_ms(r.mean), M.fmt_ms(r.stddev), M.fmt_ms(r.median),
    M.fmt_ms(r.min))
end

return M
