-- B3: the read-only checks a person runs at 3 a.m., timed with hyperfine:
--   `dhrun status --no-build` and `dhrun check`
--   vs psql running the very same queries (captured from dhrun's own session
--   through the server log, parameters written in): the limit
--   vs bare `node -e 0`: the least any `npx prisma migrate status` pays
-- before NOT NULL is enforced (backfilled, migration #2 pending: `status`
-- then reports the pending migration and exits 1, as it should) and after
-- (`dhrun deploy` applied it).  After enforcement check answers
-- from the catalog alone: the same time at 1/10 of the rows, and no scan of
-- the four tables at all (pg_stat_user_tables counters unchanged).
local lib = require "benchlib"

local format = string.format

local M = { name = "b3", title = "B3 status and check" }

local RUNS = 30

-- The SQL dhrun's `args` runs against dbname, as one psql script.
local function capture(dbname, args, label)
  local offset = lib.log_offset()
  local argv = lib.dhrun_argv(table.unpack(args))
  lib.run(argv, { env = lib.dhrun_env(dbname, { PGOPTIONS = "-c log_statement=all" }), codes = { 0, 1 } })
  local sql = lib.captured_sql(offset)
  local file = lib.write(format("%s/b3-%s.sql", lib.out, label), sql)
  local n = select(2, sql:gsub(";\n", ""))
  return file, n
end

local function scans(dbname)
  local conn <close> = lib.connect(dbname)
  conn:query("SELECT pg_stat_clear_snapshot()")
  return conn:query_value([[SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::int8 FROM pg_stat_user_tables
                             WHERE schemaname = 'public' AND relname = ANY ($1::text[])]],
    "{" .. table.concat(lib.tables, ",") .. "}")
end

local STATUS = { "status", "--config", lib.config, "--no-build" }
local CHECK = { "check", "--config", lib.config }

local function cmdline(args)
  return lib.dhrun .. " " .. table.concat(args, " ")
end

-- One state of one database: dhrun vs psql (same queries) vs node -e 0.
local function measure(dbname, label)
  local status_sql, n_status = capture(dbname, STATUS, "status-" .. label)
  local check_sql, n_check = capture(dbname, CHECK, "check-" .. label)
  local psql = lib.pgbin .. "/psql -X -q -o /dev/null -d " .. dbname .. " -f "
  local scans_before = scans(dbname)
  local r = lib.hyperfine("b3-" .. label, {
    { name = "dhrun status", cmd = cmdline(STATUS) },
    { name = "psql status", cmd = psql .. status_sql },
    { name = "dhrun check", cmd = cmdline(CHECK) },
    { name = "psql check", cmd = psql .. check_sql },
    { name = "node -e 0", cmd = "node -e 0" },
  }, { runs = RUNS, ignore_failure = true, env = lib.dhrun_env(dbname) })
  r.queries = { status = n_status, check = n_check }
  r.table_scans = scans(dbname) - scans_before
  for _, k in ipairs({ "dhrun status", "psql status", "dhrun check", "psql check", "node -e 0" }) do
    lib.ok("B3 %s %s: %s", label, k, lib.hf_text(r[k]))
  end
  return r
end

function M.run()
  local scale = lib.scale
  local small = scale // 10
  local tag, small_tag = lib.tag(scale), lib.tag(small)

  local dbname = lib.backfilled(scale)
  local before = measure(dbname, "before-" .. tag)
  lib.enforced(scale)
  local after = measure(dbname, "after-" .. tag)
  lib.enforced(small)
  local after_small = measure(lib.backfilled(small), "after-" .. small_tag)

  -- Where dhrun's time goes: start-up, loading the flow modules, one
  -- connection and query; and psql's connection and query.
  local connect = [[require"dhrun.db".connect(os.getenv"BENCH_DATABASE_URL"):query"SELECT 1"]]
  local parts = lib.hyperfine("b3-parts", {
    { name = "dhrun -e ''", cmd = lib.dhrun .. " -e ''" },
    { name = "dhrun: load flow, release, tenancy", cmd = lib.dhrun
      .. [[ -e 'require"dhrun.flow"; require"dhrun.release"; require"dhrun.tenancy"']] },
    { name = "dhrun: connect + SELECT 1", cmd = lib.dhrun .. " -e '" .. connect .. "'" },
    { name = "psql: connect + SELECT 1", cmd = lib.pgbin .. "/psql -X -q -o /dev/null -d " .. dbname
      .. " -c 'SELECT 1'" },
  }, { runs = RUNS, env = lib.dhrun_env(dbname) })

  local rows = {}
  for _, st in ipairs({ { "before NOT NULL", before, "before" }, { "after NOT NULL", after, "after" } }) do
    local r = st[2]
    for _, what in ipairs({ "status", "check" }) do
      local d, p = r["dhrun " .. what], r["psql " .. what]
      rows[#rows + 1] = {
        bench = format("B3 dhrun %s vs psql, same queries (%s, %s)", what, st[1], tag),
        measured = lib.fmt_ms(d.mean), baseline = lib.fmt_ms(p.mean), ratio = d.mean / p.mean, target = "≤ 1.5×",
        pass = d.mean / p.mean <= 1.5, key = "b3_psql_" .. what .. "_" .. st[3] }
    end
    rows[#rows + 1] = {
      bench = format("B3 dhrun status vs bare `node -e 0` (%s, %s)", st[1], tag),
      measured = lib.fmt_ms(r["dhrun status"].mean), baseline = lib.fmt_ms(r["node -e 0"].mean),
      ratio = r["dhrun status"].mean / r["node -e 0"].mean, target = "info", key = "b3_node_" .. st[3] }
  end
  local big, sm = after["dhrun check"], after_small["dhrun check"]
  rows[#rows + 1] = {
    bench = format("B3 check after NOT NULL, %s vs %s rows", tag, small_tag),
    measured = lib.fmt_ms(big.mean), baseline = lib.fmt_ms(sm.mean), ratio = big.mean / sm.mean,
    target = "O(1): ≤ 1.25×, 0 table scans",
    pass = big.mean / sm.mean <= 1.25 and after.table_scans == 0 and after_small.table_scans == 0,
    key = "b3_o1" }

  local out = {}
  local function add(fmt, ...) out[#out + 1] = format(fmt, ...) end
  add("hyperfine, %d runs after 3 warm-ups each, no shell (`-N`); mean ± σ. psql runs the statements dhrun's own "
    .. "session sent (captured with `log_statement = all`, parameters written in): `bench/out/b3-*.sql`.", RUNS)
  add("")
  add("| state | command | time | statements |")
  add("|---|---|---|---|")
  for _, st in ipairs({ { "before NOT NULL, " .. tag, before }, { "after NOT NULL, " .. tag, after },
                        { "after NOT NULL, " .. small_tag, after_small } }) do
    local r = st[2]
    for _, k in ipairs({ "dhrun status", "psql status", "dhrun check", "psql check", "node -e 0" }) do
      local n = k:match("status$") and r.queries.status or k:match("check$") and r.queries.check or nil
      add("| %s | `%s` | %s | %s |", st[1], k, lib.hf_text(r[k]), n and tostring(n) or "")
    end
  end
  add("")
  add("Where the time goes (same database, hyperfine):")
  add("")
  add("| command | time |")
  add("|---|---|")
  for _, k in ipairs({ "dhrun -e ''", "dhrun: load flow, release, tenancy", "dhrun: connect + SELECT 1",
                       "psql: connect + SELECT 1" }) do
    add("| `%s` | %s |", k, lib.hf_text(parts[k]))
  end
  add("")
  add("- Table scans (seq + index, pg_stat_user_tables) of the four tables while the after-NOT-NULL commands ran: "
    .. "%d at %s, %d at %s (psql's copies of the queries included).", after.table_scans, tag,
    after_small.table_scans, small_tag)
  add("- Before NOT NULL, `status` exits 1 (migration #2 pending): that is its correct answer, and hyperfine "
    .. "runs it with `-i`.")
  return rows, table.concat(out, "\n")
end

return M
