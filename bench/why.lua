-- Known causes of missed targets, by row key (see bench.lua).  Shown under
-- the summary table of RESULTS.md for the rows that miss their target, so
-- the explanation travels with the numbers it explains.  The figures quoted
-- here as "measured once" come from one-off experiments made while building
-- the benchmark on this machine; everything else refers to the tables of
-- the run above.
local why = {
  b1_vs_single = "Two costs land on dhrun and not on the one statement. (1) The probe: the one statement stalls "
    .. "it (compare its transactions with the scheduled count), so it runs alone, while dhrun serves 200 writes/s "
    .. "throughout, on the same 2 cores. Measured once (2026-12-07, this machine, the same 10M template, one "
    .. "run each, back to back): without the probe dhrun took 255 s and the one statement 234 s (0.92×); in that "
    .. "day's full run, with the probe, 292 s and 227 s. The adaptive section compares the two without the probe, "
    .. "at 1M rows, in pairs. "
    .. "(2) Autovacuum: committed batches leave dead row versions, and autovacuum may start reclaiming them during "
    .. "the run (autovacuum column); the one statement's are invisible to it until it commits. The fixed cost of "
    .. "a batch is small since each batch is planned for its own key range (measured once: planning 1-2 ms and "
    .. "the upper-key lookup under 1 ms, per batch of about 0.1 s); before that, the parent rule hashed all of "
    .. "Connection in every batch, and this row was 0.70×.",
  b1_adapt_ratio = "Single runs of the same configuration moved by up to 20 % (the \"median of\" column lists "
    .. "them, and the pairs' ratios are listed under the adaptive table): autovacuum starts on MetricDaily in "
    .. "some runs and not in others (dead rows of committed batches), and checkpoints land in some. The fixed "
    .. "cost of each batch (planning, the upper-key lookup, the health query) is paid 2.5 times as often at "
    .. "batch.target 0.1 s as at 0.25 s.",
  b1_rss_flat = "The rest of the growth is Lua's garbage collector, which lets the heap grow to about twice its "
    .. "live size between collections, and the libpq result buffers of the larger batches. The run's record "
    .. "of its batches for the report is bounded (dhrun.events.collector: 100 to 200 entries per table, "
    .. "neighbours merged); before that it kept every batch event, and this row was 1.39×.",
  b1_vs_prisma = "The target assumes a row-at-a-time ORM loop. The Prisma script a team would write here is "
    .. "set-based per user. Each updateMany is one UPDATE … WHERE EXISTS (…) of about 1,000 rows, so the "
    .. "server does the same per-row work as for dhrun. The loop adds only about 6 round trips per user, plus "
    .. "a scan of Insight and ChatMessage per user, because neither table has an index on userId. Even the "
    .. "speed limit, the one statement (b), is less than 3× this script. No tool can be 10× faster on this "
    .. "data, and dhrun is within the first row's ratio of that limit. Nothing to fix in dhrun. Against this "
    .. "kind of script, dhrun's advantages are that the app is not stalled, the run can be resumed, and it "
    .. "uses a twentieth of the memory (RSS row).",
  b1_probe = "The slow probe transactions have two causes, in the proportions this run's kinds column and "
    .. "busy-probe line show. (1) Row locks: metric_update rewrites a MetricDaily row that a batch has updated "
    .. "but not yet committed, and waits for that batch. A batch holds the rows it updates until it commits, so "
    .. "this wait is at most one batch: batch.target (0.1 s by default), and up to 1.5 times that before the "
    .. "controller halves the batch. (2) The WAL: the other kinds wait for their own commit's WAL flush behind "
    .. "the backfill's WAL stream and the data writeback (IO:WALSync, LWLock:WALWrite). At 10M rows the table no "
    .. "longer fits the page cache the way the 1M one does, so both spread more than at 1M. The adaptive "
    .. "section's target sweep shows the tail following batch.target. A smaller batch.target (0.05 s) moves the "
    .. "tail down for some throughput; `batch.probe` with the app's own query pauses the backfill when the app's "
    .. "latency goes over its limit.",
  b1_adapt_p99 = "A replica on the same 2-core VM: its walsender, walreceiver and replay process share the two "
    .. "cores with the backfill, the probe's four sessions and pgbench, and the probe's commits wait longer for "
    .. "their WAL flush (IO:WALSync, LWLock:WALWrite in the busy probe line). Compare the sweep's 0.10 s row: the "
    .. "same settings without the replica. The replica's own fsync is off (tools/pgtemp.sh), as if its disk were "
    .. "its own; its CPU cannot be. In production a replica runs on a machine of its own. The backfill kept the "
    .. "replica within 1 s (the lag row).",
  b3_psql = "dhrun spends its extra time before and around the queries, not in them: psql replays the same "
    .. "statements. Already done: the stdlib is embedded as bytecode, libpq and libcurl are opened on first "
    .. "use, migration checksums are computed only when compared, and the tenancy tables are checked in one "
    .. "catalog query. What is left is start-up with libpq (B4's details), loading the config and the flow "
    .. "runner, and the log lines; a profile of one run is the next step.",
  b4_startup = "dhrun's own start-up is well under 1 ms; the rest is the dynamic loader. The database and HTTP "
    .. "modules are already shared objects opened on first require, so `dhrun -e ''` loads only liblua, "
    .. "libcrypto (sha256, uuid) and libc. Next step if needed: open libcrypto on first use too.",
}
why.b1_adapt_max = why.b1_adapt_p99
-- B3's four "vs psql" rows share one cause.
for _, what in ipairs({ "status", "check" }) do
  for _, state in ipairs({ "before", "after" }) do why["b3_psql_" .. what .. "_" .. state] = why.b3_psql end
end
return why
