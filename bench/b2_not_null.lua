-- B2: NOT NULL on the backfilled full-scale database, with the write probe
-- and the 20 Hz lock sampler running:
--   dhrun   `dhrun deploy --no-build`: the rollout's NOT NULL step, i.e.
--           dhrun.tenancy's enforce_not_null (CHECK NOT VALID -> VALIDATE ->
--           SET NOT NULL -> DROP CHECK, each with lock_timeout and retries),
--           then migration #2's file
--   plain   migration #2's file as Prisma applies it (one transaction): a
--           direct SET NOT NULL that scans each table under ACCESS EXCLUSIVE
-- each without and with a blocker (a session holding ACCESS SHARE on
-- MetricDaily in an open transaction for 5 s).  ACCESS EXCLUSIVE hold times
-- come from the server log (statement durations and lock waits of the
-- measured session); the sampler's count of consecutive 50 ms samples with
-- an ACCESS EXCLUSIVE lock granted shows whether anything scanned under it.
local lib = require "benchlib"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"

local format = string.format

local M = { name = "b2", title = "B2 NOT NULL" }

local BLOCK_SECONDS = 5
local MIGRATION = "examples/datahub/prisma/migrations/20251219171000_datahub_workspace_not_null/migration.sql"
-- Every statement of the measured session is logged with its duration.
local LOG_ALL = "-c log_min_duration_statement=0"

local function lock_timeout_ms()
  local v = lib.rollout.lock_timeout or "300ms"
  local n, unit = tostring(v):match("^%s*([%d.]+)%s*(%a*)")
  n = tonumber(n)
  if unit == "s" then return n * 1000 end
  if unit == "min" then return n * 60000 end
  return n
end

local function run_dhrun(dbname)
  local _, wall = lib.timed(lib.dhrun_argv("deploy", "--config", lib.config, "--no-build"),
    { env = lib.dhrun_env(dbname, { PGOPTIONS = LOG_ALL }) })
  return wall, 0
end

-- The migration locks Connection before MetricDaily; an app INSERT into
-- MetricDaily holds MetricDaily and then needs a share lock on Connection
-- for its foreign-key check.  So the direct migration can deadlock with the
-- probe, and then it is run again, as a person would (counted).
local MAX_DEADLOCKS = 20

local function run_plain(dbname)
  local deadlocks, t0 = 0, sys.now()
  while true do
    local r = lib.run(lib.psql_argv(dbname, "-1", "-f", MIGRATION), { env = { PGOPTIONS = LOG_ALL }, codes = { 0, 3 } })
    if r.code == 0 then return sys.now() - t0, deadlocks end
    if not r.stderr:find("deadlock detected", 1, true) or deadlocks >= MAX_DEADLOCKS then
      error("the direct migration failed: " .. r.stderr, 0)
    end
    deadlocks = deadlocks + 1
    lib.warn("B2: the direct migration deadlocked with the probe's writes; running it again")
  end
end

-- A session holding ACCESS SHARE on MetricDaily for BLOCK_SECONDS; returns
-- once the lock is granted.
local function start_blocker(dbname)
  local proc = process.spawn(lib.psql_argv(dbname, "-c", format(
    [[BEGIN; SELECT 1 FROM "MetricDaily" LIMIT 1; SELECT pg_sleep(%d); COMMIT;]], BLOCK_SECONDS)),
    { env = { PGAPPNAME = "dhrun-bench-blocker" } })
  local conn <close> = lib.connect(dbname)
  local deadline = sys.now() + 10
  while not conn:query_value([[SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
      WHERE a.application_name = 'dhrun-bench-blocker' AND l.relation = '"MetricDaily"'::regclass AND l.granted)]]) do
    if sys.now() > deadline then error("the blocker session did not get its lock", 0) end
    sys.sleep(0.02)
  end
  return proc
end

local function one(dbname, how, blocker)
  local label = how .. (blocker and "-blocker" or "")
  lib.reset_nullable(dbname)
  lib.checkpoint()
  local sampler = lib.sampler_start(dbname, "b2-" .. label)
  local probe = lib.probe_start(dbname, "b2-" .. label)
  sys.sleep(1)
  local offset = lib.log_offset()
  local blocking = blocker and start_blocker(dbname)
  local wall, deadlocks = (how == "dhrun" and run_dhrun or run_plain)(dbname)
  if blocking then blocking:wait(30) end
  sys.sleep(0.5)
  local r = { wall = wall, deadlocks = deadlocks, probe = probe.stop(), locks = sampler.stop(),
              ae = lib.ae_holds(offset) }
  lib.ok("B2 %s%s: %.2f s; longest ACCESS EXCLUSIVE hold %s (%d statements), %d sample(s) in a row with it; probe %s",
    how, blocker and " with a blocker" or "", wall, lib.fmt_ms(r.ae.max), #r.ae.holds, r.locks.ae_run,
    lib.probe_text(r.probe))
  return r
end

function M.run()
  local scale = lib.scale
  local dbname = lib.backfilled(scale)
  lib.say("B2: VACUUM ANALYZE %s first (the backfill's dead row versions)", dbname)
  local t0 = sys.now()
  lib.sql(dbname, "VACUUM ANALYZE")
  lib.say("VACUUM ANALYZE took %.1f s", sys.now() - t0)
  local timeout = lock_timeout_ms()
  local runs = {}
  for _, blocker in ipairs({ false, true }) do
    for _, how in ipairs({ "dhrun", "plain" }) do
      runs[how .. (blocker and "-blocker" or "")] = one(dbname, how, blocker)
    end
  end
  lib.reset_nullable(dbname)

  local limit = timeout + 100
  local rows = {}
  for _, blocker in ipairs({ false, true }) do
    local sfx = blocker and "-blocker" or ""
    local d, p = runs["dhrun" .. sfx], runs["plain" .. sfx]
    local when = blocker and format(", %d s blocker", BLOCK_SECONDS) or ""
    rows[#rows + 1] = {
      bench = format("B2 longest ACCESS EXCLUSIVE hold, dhrun vs direct SET NOT NULL%s", when),
      measured = lib.fmt_ms(d.ae.max), baseline = lib.fmt_ms(p.ae.max), ratio = d.ae.max / p.ae.max,
      target = "≤ 10 ms", pass = d.ae.max <= 10, key = "b2_hold" .. sfx,
      miss = format("%s, %s over 10 ms", lib.fmt_ms(d.ae.max), lib.fmt_ms(d.ae.max - 10)) }
    rows[#rows + 1] = {
      bench = format("B2 samples in a row with ACCESS EXCLUSIVE held (20 Hz)%s", when),
      measured = tostring(d.locks.ae_run), baseline = tostring(p.locks.ae_run),
      ratio = p.locks.ae_run > 0 and d.locks.ae_run / p.locks.ae_run or nil,
      target = "≤ 1 (no scan)", pass = d.locks.ae_run <= 1, key = "b2_scan" .. sfx }
    rows[#rows + 1] = {
      bench = format("B2 probe max latency, dhrun vs direct%s", when),
      measured = lib.fmt_ms(d.probe.max), baseline = lib.fmt_ms(p.probe.max), ratio = d.probe.max / p.probe.max,
      target = format("≤ %s (lock_timeout + 100 ms)", lib.fmt_ms(limit)),
      -- (transactions pgbench skipped were late by less than the stall the
      -- measured maximum already shows)
      pass = d.probe.max <= limit and not d.probe.aborted, key = "b2_probe" .. sfx,
      miss = format("%s, %s over %s", lib.fmt_ms(d.probe.max), lib.fmt_ms(d.probe.max - limit), lib.fmt_ms(limit)) }
  end

  local out = {}
  local function add(fmt, ...) out[#out + 1] = format(fmt, ...) end
  add("Database: %s MetricDaily rows after dhrun's backfill, `VACUUM ANALYZE`d, migration #2 pending; reset to "
    .. "that state before each run. rollouts[1].lock_timeout = %s.", lib.fmt_int(scale), lib.fmt_ms(timeout))
  add("")
  add("| run | wall time | longest ACCESS EXCLUSIVE hold | AE statements | AE samples (in a row) | lock waiters "
    .. "(max) | deadlocks | probe p99 | probe max | probe > 100 ms |")
  add("|---|---|---|---|---|---|---|---|---|---|")
  for _, key in ipairs({ "dhrun", "plain", "dhrun-blocker", "plain-blocker" }) do
    local r = runs[key]
    add("| %s | %.2f s | %s | %d | %d (%d) | %d | %d | %s | %s | %d |", key, r.wall, lib.fmt_ms(r.ae.max),
      #r.ae.holds, r.locks.ae_samples, r.locks.ae_run, r.locks.max_waiting, r.deadlocks, lib.fmt_ms(r.probe.p99),
      lib.fmt_ms(r.probe.max), r.probe.over100)
  end
  add("")
  add("ACCESS EXCLUSIVE holds of dhrun's run without a blocker, from the server log:")
  add("")
  for _, h in ipairs(runs.dhrun.ae.holds) do
    add("- %s: `%s`", lib.fmt_ms(h.ms), (h.sql:gsub("%s+", " "):gsub("`", "'"):sub(1, 110)))
  end
  add("")
  add("- dhrun = `dhrun deploy --config bench/dhrun.config.lua --no-build`; direct = migration #2's file in one "
    .. "transaction (`psql -1 -f`, as `prisma migrate deploy` runs a migration: one script, one transaction).")
  add("- Hold = from the moment the lock was granted (statement start + logged lock wait) to the end of its "
    .. "transaction; `log_lock_waits` with `deadlock_timeout = 1ms` logs every wait longer than 1 ms. "
    .. "Log timestamps have 1 ms resolution.")
  add("- Deadlocks: the direct migration locks Connection, then MetricDaily; an app INSERT into MetricDaily holds "
    .. "MetricDaily and needs a share lock on Connection for its foreign-key check. When they cross, PostgreSQL "
    .. "aborts one; the direct migration was then run again (its wall time covers every attempt, and the "
    .. "aborted attempts' ACCESS EXCLUSIVE holds are counted). dhrun's enforcement takes one table at a time.")
  add("- Blocker: `BEGIN; SELECT … FROM \"MetricDaily\" LIMIT 1; SELECT pg_sleep(%d); COMMIT` started just before "
    .. "the run.", BLOCK_SECONDS)
  return rows, table.concat(out, "\n")
end

return M
