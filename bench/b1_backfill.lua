-- B1: the workspaceId backfill at full scale (10M MetricDaily rows plus the
-- other three tables at the seed's sizes), three ways, each on a fresh clone
-- of the same seeded template, each with the write probe running:
--   (a) dhrun backfill --config bench/dhrun.config.lua (as a user runs it)
--   (b) one UPDATE ... FROM per table after the same prepare SQL, each table then
--       VACUUMed as dhrun does by default (psql): the speed limit
--   (c) the Prisma Client script a team would write (bench/prisma-baseline), capped in time
-- plus dhrun alone at 1/10 of the scale, to show its memory is flat.
local lib = require "benchlib"
local sys = require "dhrun.core.sys"
local cjson = require "cjson"
local process = require "dhrun.process"
local db = require "dhrun.db"

local format = string.format

local M = { name = "b1", title = "B1 backfill" }

local PRISMA_DIR = "bench/prisma-baseline"
local PRISMA_SECONDS = tonumber(os.getenv("BENCH_PRISMA_SECONDS") or "") or 30

-- Same-rule check: a digest of (table, workspaceId, row count) over the
-- seeded rows (the probe's own rows left out), so (a) and (b) can be shown
-- to have written exactly the same values.
local DIGEST = [[
SELECT md5(string_agg(tbl || ':' || ws || ':' || n, ',' ORDER BY tbl, ws)) FROM (
  SELECT 'MetricDaily' AS tbl, coalesce("workspaceId", '-') AS ws, count(*) AS n FROM "MetricDaily"
   WHERE id <= (SELECT value::int8 FROM bench.meta WHERE key = 'seeded_max_metric_id') GROUP BY 2
  UNION ALL SELECT 'Connection', coalesce("workspaceId", '-'), count(*) FROM "Connection" GROUP BY 2
  UNION ALL SELECT 'Insight', coalesce("workspaceId", '-'), count(*) FROM "Insight"
   WHERE id NOT LIKE 'probe-%' GROUP BY 2
  UNION ALL SELECT 'ChatMessage', coalesce("workspaceId", '-'), count(*) FROM "ChatMessage"
   WHERE id NOT LIKE 'probe-%' GROUP BY 2) s]]

local function nulls_left(dbname)
  local conn <close> = lib.connect(dbname)
  local n = 0
  for _, t in ipairs(lib.tables) do
    n = n + conn:query_value(format([[SELECT count(*) FROM %q WHERE "workspaceId" IS NULL]], t))
  end
  return n
end

-- Rows the run filled: NULLs before minus NULLs after (the probe only ever
-- writes rows that already have a workspaceId).
local function seeded_rows(template)
  local conn <close> = lib.connect(template)
  local n = 0
  for _, t in ipairs(lib.tables) do n = n + conn:query_value(format("SELECT count(*) FROM %q", t)) end
  return n
end

-- One strategy on a fresh clone: probe on, run, probe off, measure.
local function measure(template, dbname, label, fn, with_probe, sample, ready)
  lib.clone(template, dbname)
  lib.checkpoint()
  if ready then ready() end -- e.g. a replica has replayed the clone
  local before = lib.table_sizes(dbname)
  local lsn = lib.wal_lsn()
  local probe = with_probe and lib.probe_start(dbname, "b1-" .. label)
  local sampler = (with_probe or sample) and lib.sampler_start(dbname, "b1-" .. label)
  if probe then sys.sleep(1) end -- a second of undisturbed probe first
  local offset = lib.log_offset()
  local res = fn(dbname)
  res.checkpoints = lib.checkpoints(offset)
  res.autovacuums = lib.autovacuums(dbname, "MetricDaily")
  if probe then res.probe = probe.stop() end
  if sampler then res.locks = sampler.stop() end
  res.wal = lib.wal_bytes(lsn, lib.wal_lsn())
  res.before, res.after = before, lib.table_sizes(dbname)
  res.nulls_left = nulls_left(dbname)
  return res
end

local function dhrun_backfill(dbname)
  local r, wall, rss = lib.timed(lib.dhrun_argv("backfill", "--config", lib.config),
    { env = lib.dhrun_env(dbname) })
  lib.write(format("%s/b1-%s.log", lib.out, dbname), r.stdout .. r.stderr)
  return { seconds = wall, rss_kb = rss }
end

local function single_update(dbname)
  local _, wall = lib.timed(lib.psql_argv(dbname, "-f", lib.single_update_sql()))
  return { seconds = wall }
end

local function prisma_script(dbname)
  local r, wall, rss = lib.timed({ "node", "backfill.js" }, {
    cwd = PRISMA_DIR, env = { PGDATABASE = dbname, BENCH_PRISMA_MAX_SECONDS = tostring(PRISMA_SECONDS) },
  })
  local out = cjson.decode(r.stdout:match("{.*}"))
  -- rows/s over the script's own loop (its node start-up is not counted)
  return { seconds = wall, loop_seconds = out.seconds, rss_kb = rss, updated = out.rows, capped = out.capped,
           users_done = out.users_done, users_total = out.users_total }
end

local function growth(res)
  return res.after.total / res.before.total
end


---------------------------------------------------------------------------
-- The adaptive backfill (health signals, AIMD): at 1/10 of the scale from
-- 1M rows on (the template the RSS series uses), else at the scale.

local function dhrun_with(batch)
  return function(dbname)
    local rep = format("%s/b1-%s.json", lib.out, dbname)
    local env = { BENCH_BATCH = cjson.encode(batch or {}) }
    local r, wall, rss = lib.timed(lib.dhrun_argv("backfill", "--config", lib.config, "--report-json", rep),
      { env = lib.dhrun_env(dbname, env) })
    lib.write(format("%s/b1-%s.log", lib.out, dbname), r.stdout .. r.stderr)
    -- batch sizes and pauses from the run's events
    local sizes, throttles, at_min, md = {}, {}, 0, {}
    local report = cjson.decode(lib.read(rep) or "{}")
    for _, e in ipairs(report.events or {}) do
      if e.kind == "batch" and e.table == "MetricDaily" then
        sizes[#sizes + 1] = e.batch_size
        md[#md + 1] = e
        if e.batch_size <= ((batch or {}).min or 200) then at_min = at_min + 1 end
      elseif e.kind == "throttle" then
        throttles[e.signal] = (throttles[e.signal] or 0) + (e.seconds or 0)
      end
    end
    table.sort(sizes)
    -- the progress line's ETA when MetricDaily was a quarter done, against the time it then took
    local total, cum, eta = 0, 0, nil
    for _, e in ipairs(md) do total = total + (e.scanned or 0) end
    for _, e in ipairs(md) do
      cum = cum + (e.scanned or 0)
      if cum >= total / 4 and e.eta and e.eta ~= cjson.null then
        eta = { shown = e.eta, real = md[#md].t - e.t }
        break
      end
    end
    return { seconds = wall, rss_kb = rss, sizes = sizes, at_min = at_min, throttles = throttles, eta = eta }
  end
end

local function throttle_text(t)
  local list = {}
  for k, v in pairs(t or {}) do list[#list + 1] = format("%s %.1f s", k, v) end
  table.sort(list)
  return #list > 0 and table.concat(list, ", ") or "none"
end

local function sizes_text(r)
  local z = r.sizes or {}
  if #z == 0 then return "—" end
  return format("%s / %s / %s (%d of %d at the floor)", lib.fmt_int(z[1]), lib.fmt_int(z[(#z + 1) // 2]),
    lib.fmt_int(z[#z]), r.at_min, #z)
end

-- stress-ng --cpu 2 for the length of fn
local function under_stress(fn)
  return function(dbname)
    local proc = process.spawn({ "stress-ng", "--cpu", "2", "--timeout", "900s", "--quiet" })
    local ok, r = pcall(fn, dbname)
    proc:stop()
    if not ok then error(r, 0) end
    return r
  end
end

-- A streaming replica for the runs inside fn(start_ready): started before
-- them (its base backup is not part of any measured window), and the
-- ready() it passes waits until the replica has replayed everything the
-- primary wrote (the clone of the template included).
local function with_replica(fn)
  local dir = lib.out .. "/replica"
  process.run({ "tools/pgtemp.sh", "stop", dir })
  local r = process.run({ "tools/pgtemp.sh", "start-replica", lib.pgdir, dir }, { timeout = 600 })
  if not r.ok then error("could not start a replica: " .. r.stderr, 0) end
  local function ready()
    local conn <close> = lib.connect("postgres")
    local target = conn:query_value("SELECT pg_current_wal_lsn()::text")
    local deadline = sys.now() + 300
    while not conn:query_value([[SELECT coalesce(bool_and(replay_lsn >= $1::pg_lsn), false)
                                   FROM pg_stat_replication]], target) do
      if sys.now() > deadline then error("the replica did not catch up within 300 s", 0) end
      sys.sleep(0.1)
    end
  end
  local ok, res = pcall(fn, ready)
  process.run({ "tools/pgtemp.sh", "stop", dir })
  if not ok then error(res, 0) end
  return res
end

-- The target sweep as a picture (SVG, no library needed): rows/s against
-- the write probe's p99 (filled) and max (hollow), one pair per
-- batch.target, the latency axis logarithmic.
local function tradeoff_svg(points)
  local W, H, L, R, T, B = 640, 360, 70, 20, 30, 50
  local xs, ys = {}, {}
  for _, p in ipairs(points) do
    xs[#xs + 1], xs[#xs + 2], ys[#ys + 1] = p.p99, p.max, p.rate
  end
  local lo = 10 ^ math.floor(math.log(math.min(table.unpack(xs)), 10))
  local hi = 10 ^ math.ceil(math.log(math.max(table.unpack(xs)), 10))
  local step = 10000
  local ymax = math.ceil(math.max(table.unpack(ys)) * 1.1 / step) * step
  local function x(v) return L + (W - L - R) * (math.log(v / lo) / math.log(hi / lo)) end
  local function y(v) return H - B - (H - T - B) * v / ymax end
  local o = {}
  local function add(fmt, ...) o[#o + 1] = format(fmt, ...) end
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">', W, H)
  add('<rect width="%d" height="%d" fill="white"/>', W, H)
  add('<text x="%d" y="18" font-size="14">%s</text>', L,
    "Backfill throughput against the write probe's latency, by batch.target")
  local d = lo
  while d <= hi * 1.0001 do
    add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>', x(d), T, x(d), H - B)
    add('<text x="%.1f" y="%d" text-anchor="%s">%s ms</text>', x(d), H - B + 16,
      d * 10 > hi * 1.0001 and "end" or "middle", lib.fmt_int(d))
    d = d * 10
  end
  for v = 0, ymax, step do
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>', L, y(v), W - R, y(v))
    add('<text x="%d" y="%.1f" text-anchor="end">%s</text>', L - 6, y(v) + 4, lib.fmt_int(v))
  end
  add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c00" stroke-dasharray="4"/>', x(100), T, x(100), H - B)
  add('<text x="%.1f" y="%d" fill="#c00">100 ms</text>', x(100) + 4, T + 12)
  add('<text x="%d" y="%d" text-anchor="middle">probe latency (log scale): p99 filled, max hollow</text>',
    (L + W - R) // 2, H - 12)
  add('<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">rows/s</text>', (T + H - B) // 2)
  for _, p in ipairs(points) do
    add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#36c"/>', x(p.p99), y(p.rate), x(p.max), y(p.rate))
    add('<circle cx="%.1f" cy="%.1f" r="5" fill="#36c"/>', x(p.p99), y(p.rate))
    add('<circle cx="%.1f" cy="%.1f" r="5" fill="white" stroke="#36c" stroke-width="2"/>', x(p.max), y(p.rate))
    add('<text x="%.1f" y="%.1f">%s</text>', x(p.max) + 9, y(p.rate) + 4, p.label)
  end
  add("</svg>")
  return table.concat(o, "\n") .. "\n"
end

function M.adaptive(rows, ctx)
  local s = lib.scale >= 1000000 and lib.scale // 10 or lib.scale
  local t = lib.template(s)
  local total = seeded_rows(t)
  local tag = lib.tag(s)
  -- The runs under stress-ng (no probe: rows/s, batch sizes, the ETA) use a
  -- template of half that size, seeded when they come: six runs of it fit
  -- the 20 minutes.
  local s2 = s // 2
  local tag2 = lib.tag(s2)
  local details = {}
  local function add(fmt, ...) details[#details + 1] = format(fmt, ...) end
  -- run(label, fn, probe, sample, ready, keep) on a clone of template tmpl
  -- (n rows to fill); keep: a name to keep the backfilled database under
  -- (else it is dropped)
  local function runner(tmpl, n, tg)
    return function(label, fn, probe, sample, ready, keep)
    lib.say("B1 adaptive (%s): %s", tg, label)
    local r = measure(tmpl, "b1_adapt", label:gsub("[^%w]+", "-"), fn, probe, sample, ready)
    r.rows = n - r.nulls_left
    r.rate = r.rows / r.seconds
    if keep then
      lib.drop_db(keep)
      lib.sql("postgres", format("ALTER DATABASE b1_adapt RENAME TO %s", db.quote_ident(keep)))
    else
      lib.drop_db("b1_adapt")
    end
    lib.ok("%s: %s rows in %.1f s = %s%s", label, lib.fmt_int(r.rows), r.seconds, lib.fmt_rate(r.rate),
      r.probe and ("; probe " .. lib.probe_text(r.probe)) or "")
    return r
    end
  end
  local run = runner(t, total, tag)
  -- A new cluster creates its WAL segment files as it first writes them
  -- (IO:WALInitWrite), and the first measured run would pay for all the
  -- others: write as much WAL as one run does (about 700 MB at 1M rows) first,
  -- in logical messages (no table), and let a checkpoint keep the segments
  -- for reuse.  (This was an unmeasured UPDATE run: 25 s.)
  lib.say("B1 adaptive (%s): warm-up (creating the WAL segments, not measured)", tag)
  lib.sql("postgres", format([[SELECT count(pg_logical_emit_message(false, 'dhrun-bench', repeat('x', 1048576)))
                                 FROM generate_series(1, %d)]], math.max(64, 800 * s // 1000000)))
  lib.checkpoint()
  local adapt_load = (lib.read("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)")
  -- The two ratio rows compare REPEAT pairs of runs, each pair taken back to
  -- back (A B A B A B): single runs of the same configuration moved by up to
  -- ±20 % on this VM, and the machine drifts over minutes, more than the
  -- differences being measured.  The ratio is the median of the pairs'
  -- ratios (a pair shares the machine's state; the drift cancels); the
  -- ratio of the medians is shown too.
  local REPEAT = 3
  local function alternate(with, a, b)
    local ra, rb, ratios = {}, {}, {}
    for i = 1, REPEAT do
      ra[i] = with(format("%s (%d of %d)", a[1], i, REPEAT), a[2], false, a[3])
      rb[i] = with(format("%s (%d of %d)", b[1], i, REPEAT), b[2], false, b[3], nil, i == REPEAT and b.keep or nil)
      ratios[i] = rb[i].rate / ra[i].rate
    end
    local function median(list)
      local sorted = { table.unpack(list) }
      table.sort(sorted, function(x, y) return x.rate < y.rate end)
      local m = sorted[(#sorted + 1) // 2]
      m.runs, m.runs_list = {}, list
      for i, r in ipairs(list) do m.runs[i] = lib.fmt_int(r.rate) end
      return m
    end
    local ma, mb = median(ra), median(rb)
    local sorted = { table.unpack(ratios) }
    table.sort(sorted)
    mb.paired = { ratio = sorted[(#sorted + 1) // 2], list = ratios, of_medians = mb.rate / ma.rate }
    return ma, mb
  end
  -- The last dhrun run's database stays when this is the RSS series' scale
  -- (a tenth of the full one): it is that series' point, and B2/B3 use it
  -- as this scale's backfilled database.
  local kept = s == lib.scale // 10 and "b1_dhrun_" .. tag:lower():gsub("%.", "_") or nil
  local single, quiet = alternate(run, { "one UPDATE, no probe", single_update },
    { "dhrun defaults, no probe", dhrun_with(), keep = kept })
  local last_quiet = quiet.runs_list[REPEAT]
  last_quiet.scale = s
  if kept then lib.set_backfilled(s, kept) end
  -- After the pairs, as in the runs before 2026-12-07 06:29: placed first
  -- (right after the warm-up, on a new cluster) it measured a probe p99 of
  -- 37 ms and a max of 210 ms, against 12-16 ms and 80-284 ms here.  Its base
  -- backup copies the cluster (the templates and the kept database, a few
  -- hundred MB at 1M rows), outside the measured window.
  local idle = with_replica(function(ready)
    return run("dhrun defaults, probe and replica", dhrun_with(), true, false, ready)
  end)
  local sweep = {}
  for _, target in ipairs({ 0.05, 0.1, 0.25 }) do
    sweep[#sweep + 1] = run(format("dhrun target %.2f s, probe", target), dhrun_with { target = target }, true)
    sweep[#sweep].target = target
  end
  local two = run("dhrun, 2 workers, limits relaxed", dhrun_with { workers = 2, max_wal_rate = false,
    max_commit = false, max_replica_lag = false }, false)
  local t2 = lib.template(s2)
  local s_single, s_dhrun = alternate(runner(t2, seeded_rows(t2), tag2),
    { "one UPDATE under stress-ng --cpu 2", under_stress(single_update), true },
    { "dhrun defaults under stress-ng --cpu 2", under_stress(dhrun_with()), true })
  local eta = s_dhrun.eta

  local lag = idle.locks.max_replica_lag
  local list = {
    { bench = format("B1 adaptive: rows/s, dhrun defaults vs one UPDATE, no probe, no replica (%s; ratio: median "
        .. "of %d pairs)", tag, REPEAT),
      measured = lib.fmt_rate(quiet.rate), baseline = lib.fmt_rate(single.rate), ratio = quiet.paired.ratio,
      target = "≥ 0.9×", pass = quiet.paired.ratio >= 0.9, key = "b1_adapt_ratio" },
    { bench = format("B1 adaptive: probe p99 with defaults, a replica attached (%s)", tag),
      measured = lib.fmt_ms(idle.probe.p99), baseline = "10 ms", ratio = idle.probe.p99 / 10, target = "≤ 10 ms",
      pass = idle.probe.p99 <= 10, key = "b1_adapt_p99" },
    { bench = format("B1 adaptive: probe max with defaults, a replica attached (%s)", tag),
      measured = lib.fmt_ms(idle.probe.max), baseline = "100 ms", ratio = idle.probe.max / 100,
      target = "< 100 ms", pass = idle.probe.max < 100, key = "b1_adapt_max" },
    { bench = format("B1 adaptive: replica replay lag max with defaults (%s)", tag),
      measured = lag and format("%.2f s", lag) or "not seen", baseline = "1 s (max_replica_lag)",
      ratio = lag and lag / 1 or 0, target = "≤ 1 s", pass = lag ~= nil and lag <= 1, key = "b1_adapt_lag" },
    { bench = format("B1 adaptive: rows/s under stress-ng --cpu 2, dhrun vs one UPDATE (%s; ratio: median of %d "
        .. "pairs)", tag2, REPEAT),
      measured = lib.fmt_rate(s_dhrun.rate), baseline = lib.fmt_rate(s_single.rate),
      ratio = s_dhrun.paired.ratio, target = "≥ 0.8×", pass = s_dhrun.paired.ratio >= 0.8,
      key = "b1_adapt_stress" },
    { bench = format("B1 adaptive: rows/s under stress-ng, batch size not stuck at the floor (%s)", tag2),
      measured = sizes_text(s_dhrun), baseline = "floor 200", ratio = #s_dhrun.sizes > 0 and
      s_dhrun.at_min / #s_dhrun.sizes or 0, target = "median > floor", pass = #s_dhrun.sizes > 0 and
      s_dhrun.sizes[(#s_dhrun.sizes + 1) // 2] > 200, key = "b1_adapt_floor" },
    { bench = format("B1 adaptive: ETA at 25%% under stress-ng vs the real remaining time (%s)", tag2),
      measured = eta and format("%.1f s", eta.shown) or "not shown", baseline = eta and format("%.1f s", eta.real)
      or "—", ratio = eta and eta.shown / eta.real or 0, target = "0.7–1.3×",
      pass = eta ~= nil and eta.shown / eta.real >= 0.7 and eta.shown / eta.real <= 1.3, key = "b1_adapt_eta" },
    { bench = format("B1 adaptive: rows/s, 2 workers (limits relaxed) vs one UPDATE (%s)", tag),
      measured = lib.fmt_rate(two.rate), baseline = lib.fmt_rate(single.rate), ratio = two.rate / single.rate,
      target = "≥ 1.2×", pass = two.rate / single.rate >= 1.2, key = "b1_adapt_workers" },
  }
  for _, r in ipairs(list) do rows[#rows + 1] = r end

  add("")
  add("## B1 adaptive backfill (%s MetricDaily rows)", tag)
  add("")
  add("Each run on a fresh clone of the %s template, after an unmeasured warm-up that creates the cluster's WAL "
    .. "segment files; dhrun with the rollout's defaults (batch.target 0.1 s, async_commit, max_wal_rate 64MB, "
    .. "max_replica_lag 1s, max_commit 200ms, "
    .. "autovacuum slow) unless the row says otherwise. The one UPDATE is followed by VACUUM (ANALYZE), as dhrun's "
    .. "backfill is. The runs under stress-ng use a %s template (same seed, half the rows). Rows marked "
    .. "\"median of\" were run %d times each, each run back to back with one of its baseline (a pair); their "
    .. "\"vs one UPDATE\" is the median of the pairs' ratios (the pairs' ratios and the ratio of the medians are "
    .. "listed below the table). The others ran once. The replica is a streaming replica on the same VM "
    .. "(tools/pgtemp.sh start-replica: its own postmaster, fsync off), started and caught up before the run. Batch "
    .. "sizes are MetricDaily's (min / median / max).",
    tag, tag2, REPEAT)
  add("")
  add("| run | rows/s | vs one UPDATE | probe p50 | p99 | max | replica lag max | batch sizes | paused |")
  add("|---|---|---|---|---|---|---|---|---|")
  local function line(name, r, base)
    if r.runs then name = format("%s (median of %s)", name, table.concat(r.runs, ", ")) end
    add("| %s | %s | %.2f× | %s | %s | %s | %s | %s | %s |", name, lib.fmt_int(r.rate),
      r.paired and r.paired.ratio or r.rate / base.rate,
      r.probe and lib.fmt_ms(r.probe.p50) or "—", r.probe and lib.fmt_ms(r.probe.p99) or "—",
      r.probe and lib.fmt_ms(r.probe.max) or "—",
      (r.locks and r.locks.max_replica_lag) and format("%.2f s", r.locks.max_replica_lag) or "—",
      sizes_text(r), throttle_text(r.throttles))
  end
  line("one UPDATE, no probe", single, single)
  line("dhrun, no probe", quiet, single)
  line("dhrun, probe + replica", idle, single)
  for _, r in ipairs(sweep) do line(format("dhrun, target %.2f s, probe", r.target), r, single) end
  local points = {}
  for _, r in ipairs(sweep) do
    points[#points + 1] = { label = format("%.2f s", r.target), rate = r.rate, p99 = r.probe.p99, max = r.probe.max }
  end
  ctx.files = ctx.files or {}
  ctx.files["b1-tradeoff.svg"] = tradeoff_svg(points)
  line("dhrun, 2 workers, limits relaxed, no probe", two, single)
  line(format("one UPDATE, stress-ng --cpu 2 (%s)", tag2), s_single, s_single)
  line(format("dhrun, stress-ng --cpu 2 (%s)", tag2), s_dhrun, s_single)
  add("")
  for _, x in ipairs({ { "no probe", quiet }, { "under stress-ng", s_dhrun } }) do
    local pairs_ = {}
    for i, v in ipairs(x[2].paired.list) do pairs_[i] = format("%.2f×", v) end
    add("- dhrun vs one UPDATE, %s: pairs %s, median %.2f×; ratio of the medians %.2f×.", x[1],
      table.concat(pairs_, ", "), x[2].paired.ratio, x[2].paired.of_medians)
  end
  add("")
  add("![rows/s against the write probe's p99 (filled) and max (hollow), by batch.target](b1-tradeoff.svg)")
  add("")
  add("Probe transactions over 100 ms, by kind (metric_update rewrites a MetricDaily row, which waits while a batch "
    .. "holds it):")
  add("")
  add("- defaults, probe + replica: %s", idle.probe.slow_by_kind ~= "" and idle.probe.slow_by_kind or "none")
  for _, r in ipairs(sweep) do
    add("- target %.2f s: %s", r.target, r.probe.slow_by_kind ~= "" and r.probe.slow_by_kind or "none")
  end
  add("")
  add("Load average: %s at the start of these runs (other work on the machine counts: the ratios compare runs "
    .. "made one after another).", adapt_load)
  add("")
  add("What dhrun's backfill session was waiting for (20 Hz samples of pg_stat_activity; \"CPU\": running):")
  add("")
  add("- idle, probe + replica: %s", idle.locks.dhrun_waits)
  for _, r in ipairs(sweep) do add("- target %.2f s: %s", r.target, r.locks.dhrun_waits) end
  add("- stress-ng --cpu 2, no probe: %s", s_dhrun.locks.dhrun_waits)
  add("")
  add("Busy probe sessions, idle with replica: %s", idle.locks.probe_waits)
  return { details = details, kept = last_quiet }
end

function M.run(ctx)
  -- The adaptive runs first, while the cluster holds only their templates:
  -- the replica's base backup then copies little.
  local adapt_rows = {}
  local adapt = M.adaptive(adapt_rows, ctx)
  local scale = lib.scale
  local template = lib.template(scale)
  local total_rows = seeded_rows(template)
  local tag = lib.tag(scale)
  lib.say("B1: backfill of %s rows (%s MetricDaily) three ways", lib.fmt_int(total_rows), tag)

  lib.say("B1 (a) dhrun backfill")
  local a = measure(template, "b1_dhrun", "dhrun", dhrun_backfill, true)
  a.rows = total_rows - a.nulls_left
  a.rate = a.rows / a.seconds
  local digest_a = lib.sql_value("b1_dhrun", DIGEST)
  lib.ok("dhrun: %s in %.1f s = %s, peak RSS %d KiB; probe %s", lib.fmt_int(a.rows), a.seconds,
    lib.fmt_rate(a.rate), a.rss_kb, lib.probe_text(a.probe))

  lib.say("B1 (b) one UPDATE per table (psql)")
  local b = measure(template, "b1_single", "single", single_update, true)
  b.rows = total_rows - b.nulls_left
  b.rate = b.rows / b.seconds
  local digest_b = lib.sql_value("b1_single", DIGEST)
  lib.ok("single statement: %s in %.1f s = %s; probe %s", lib.fmt_int(b.rows), b.seconds, lib.fmt_rate(b.rate),
    lib.probe_text(b.probe))
  lib.drop_db("b1_single")

  lib.say("B1 (c) the Prisma Client script (per-user updateMany loop, capped at %d s)", PRISMA_SECONDS)
  local c = measure(template, "b1_prisma", "prisma", prisma_script, true)
  c.rows = total_rows - c.nulls_left
  c.rate = c.rows / c.loop_seconds
  lib.ok("prisma: %s rows in %.1f s (%d of %d users%s) = %s, peak RSS %d KiB; probe %s", lib.fmt_int(c.rows),
    c.loop_seconds, c.users_done, c.users_total, c.capped and ", capped" or "", lib.fmt_rate(c.rate), c.rss_kb,
    lib.probe_text(c.probe))
  lib.drop_db("b1_prisma")

  -- RSS at 1/10 of the scale, without the probe: on a full run that is the
  -- last of the adaptive section's "dhrun defaults, no probe" runs (same
  -- template, same settings), else a run of its own on a template of that
  -- scale, kept for B2/B3.
  local series = {}
  local s = scale // 10
  if adapt.kept.scale == s then
    series[1] = adapt.kept
  else
    local t = lib.template(s)
    local name = "b1_dhrun_" .. lib.tag(s):lower():gsub("%.", "_")
    local r = measure(t, name, "dhrun-" .. lib.tag(s), dhrun_backfill, false)
    r.scale, r.rows = s, seeded_rows(t) - r.nulls_left
    r.rate = r.rows / r.seconds
    series[1] = r
    lib.set_backfilled(s, name)
  end
  lib.ok("dhrun at %s: %s rows in %.1f s, peak RSS %d KiB", lib.tag(s), lib.fmt_int(series[1].rows),
    series[1].seconds, series[1].rss_kb)
  -- B2 and B3 go on from here: the database as dhrun's backfill (a) left it.
  -- (a) is also the series' full-scale point.  (A second full-scale run
  -- without the probe no longer fits the 20 minutes; the adaptive runs
  -- compare dhrun and the one statement without the probe, at 1/10.)
  a.scale = scale
  series[#series + 1] = a
  lib.set_backfilled(scale, "b1_dhrun")

  local rss_min, rss_max = math.huge, 0
  for _, r in ipairs({ a, table.unpack(series) }) do
    rss_min, rss_max = math.min(rss_min, r.rss_kb), math.max(rss_max, r.rss_kb)
  end
  local flat = rss_max / rss_min

  local rows = {
    { bench = format("B1 backfill rows/s, dhrun vs one UPDATE per table (%s)", tag),
      measured = lib.fmt_rate(a.rate), baseline = lib.fmt_rate(b.rate), ratio = a.rate / b.rate,
      target = "≥ 0.9×", pass = a.rate / b.rate >= 0.9, key = "b1_vs_single" },
    { bench = format("B1 backfill rows/s, dhrun vs Prisma updateMany script (%s)", tag),
      measured = lib.fmt_rate(a.rate), baseline = lib.fmt_rate(c.rate) .. (c.capped and " (capped)" or ""),
      ratio = a.rate / c.rate, target = "≥ 10×", pass = a.rate / c.rate >= 10, key = "b1_vs_prisma" },
    { bench = "B1 probe max latency during dhrun's backfill",
      measured = lib.fmt_ms(a.probe.max), baseline = lib.fmt_ms(b.probe.max) .. " (one UPDATE)",
      ratio = a.probe.max / b.probe.max, target = "< 100 ms",
      pass = a.probe.max < 100 and a.probe.skipped == 0 and not a.probe.aborted, key = "b1_probe",
      miss = format("max %s, %.1f× the 100 ms limit; %d of %d probe transactions over 100 ms (%d of them skipped "
        .. "as hopelessly late)", lib.fmt_ms(a.probe.max), a.probe.max / 100, a.probe.over100, a.probe.n,
        a.probe.skipped) },
    { bench = format("B1 dhrun peak RSS (%s)", tag), measured = format("%.1f MB", a.rss_kb / 1024),
      baseline = format("%.1f MB (Prisma script)", c.rss_kb / 1024), ratio = a.rss_kb / c.rss_kb,
      target = "< 32 MB", pass = a.rss_kb < 32 * 1024, key = "b1_rss",
      miss = format("%.1f MB, %.1f MB over 32 MB", a.rss_kb / 1024, a.rss_kb / 1024 - 32) },
    { bench = "B1 dhrun peak RSS flat across scales (max/min)",
      measured = format("%.1f–%.1f MB", rss_min / 1024, rss_max / 1024),
      baseline = table.concat((function()
        local t = {}
        for _, r in ipairs(series) do t[#t + 1] = format("%s: %.1f", lib.tag(r.scale), r.rss_kb / 1024) end
        return t
      end)(), ", ") .. format(" (%s with the probe)", tag),
      ratio = flat, target = "≤ 1.10× (flat)", pass = flat <= 1.10, key = "b1_rss_flat" },
    { bench = "B1 table growth (4 tables), dhrun vs one UPDATE",
      measured = format("%.2f×", growth(a)), baseline = format("%.2f×", growth(b)), ratio = growth(a) / growth(b),
      target = "info", key = "b1_growth" },
  }

  for _, r in ipairs(adapt_rows) do rows[#rows + 1] = r end

  -- details for RESULTS.md
  local d = {}
  local function add(fmt, ...) d[#d + 1] = format(fmt, ...) end
  add("Data: %s rows to fill (%s MetricDaily rows; Connection, Insight, ChatMessage at the seed's sizes for %s "
    .. "users), cloned from one template for each strategy; every strategy fills the same rule (the example "
    .. "config's rollout: its tables' rules and its `prepare` SQL).", lib.fmt_int(total_rows), tag,
    lib.fmt_int(lib.users(scale)))
  add("")
  add("| strategy | rows filled | wall time | rows/s | peak RSS | table size before → after | WAL written "
    .. "| checkpoints (longest sync) | autovacuums of MetricDaily |")
  add("|---|---|---|---|---|---|---|---|---|")
  local function line(name, r, secs)
    add("| %s | %s | %.1f s | %s | %s | %s → %s (%.2f×) | %s | %d (%.2f s) | %d |", name, lib.fmt_int(r.rows), secs,
      lib.fmt_int(r.rate), r.rss_kb and format("%.1f MB", r.rss_kb / 1024) or "—", lib.fmt_mb(r.before.total),
      lib.fmt_mb(r.after.total), growth(r), lib.fmt_mb(r.wal), r.checkpoints.n, r.checkpoints.max_sync,
      r.autovacuums)
  end
  line("(a) `dhrun backfill`", a, a.seconds)
  line("(b) one `UPDATE … FROM …` per table, then `VACUUM (ANALYZE)` (psql)", b, b.seconds)
  line(format("(c) Prisma Client 7 script, per-user `updateMany`%s", c.capped and " — capped" or ""), c,
    c.loop_seconds)
  for _, r in ipairs(series) do
    if r ~= a then line(format("(a) at %s MetricDaily rows, no probe", lib.tag(r.scale)), r, r.seconds) end
  end
  add("")
  add("- Wall time is the whole process (start-up, prepare, all four tables); (c) counts its loop only, "
    .. "without node's start-up. Peak RSS is `/usr/bin/time -f %%M`. WAL is cluster-wide (it includes the probe's).")
  if c.capped then
    add("- (c) was stopped after %d s (`BENCH_PRISMA_SECONDS`): it had finished %d of %d users; its rows/s is "
      .. "over the rows it completed. At that rate all %s rows would take about %.0f min.", PRISMA_SECONDS,
      c.users_done, c.users_total, lib.fmt_int(total_rows), total_rows / c.rate / 60)
  end
  add("- Same result: the digest of (table, workspaceId, rows) after (a) is `%s`, after (b) `%s`: %s.",
    digest_a, digest_b, digest_a == digest_b and "identical" or "DIFFERENT")
  add("- NULLs left: (a) %d, (b) %d.", a.nulls_left, b.nulls_left)
  add("")
  add("Write probe (pgbench, 200 tx/s, 4 clients, single-row writes to the four tables) while each ran:")
  add("")
  add("| strategy | transactions (scheduled) | p50 | p99 | max | over 100 ms (skipped) | slow ones by kind |")
  add("|---|---|---|---|---|---|---|")
  for _, x in ipairs({ { "(a) dhrun", a }, { "(b) one UPDATE per table", b }, { "(c) Prisma script", c } }) do
    local p = x[2].probe
    add("| %s | %d (%d) | %s | %s | %s | %d (%d) | %s |", x[1], p.n, p.scheduled, lib.fmt_ms(p.p50),
      lib.fmt_ms(p.p99), lib.fmt_ms(p.max), p.over100, p.skipped, p.slow_by_kind ~= "" and p.slow_by_kind or "—")
  end
  add("")
  add("What busy probe sessions were waiting for, sampled at 20 Hz (pg_stat_activity; \"CPU\": running):")
  add("")
  for _, x in ipairs({ { "(a) dhrun", a }, { "(b) one UPDATE per table", b }, { "(c) Prisma script", c } }) do
    add("- %s: %s", x[1], x[2].locks.probe_waits)
  end
  add("")
  add("- Kinds: metric_update rewrites an existing MetricDaily row (it waits if the backfill holds that row); "
    .. "the others insert new rows or update a Connection, which no MetricDaily batch locks. \"Scheduled\" is "
    .. "200/s over the probe's span: a probe client stuck behind a lock when its 3 s pgbench chunk ends is not "
    .. "rescheduled, so a starved probe shows as few transactions.")
  for _, line_ in ipairs(adapt.details) do add("%s", line_) end
  ctx.b1 = { a = a, b = b, c = c }
  return rows, table.concat(d, "\n")
end

return M
