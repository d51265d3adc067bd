-- Known causes of missed targets, by row key (see bench.lua).  Shown under
-- the summary table of RESULTS.md for the rows that miss their target, so
-- the explanation travels with the numbers it explains.  The figures quoted
-- here as "measured once" come from one-off experiments made while building
-- the benchmark on this machine; everything else refers to the tables of
-- the run above.
local why = {
  b1_vs_single = "Close to the line, and it moves between runs. Earlier full runs on this machine gave 0.81–0.93× "
    .. "with the probe (four runs) and 0.82–0.93× without it (three). Two costs land on dhrun and not on the one "
    .. "statement. (1) The probe. The one statement stalls the probe, so it runs alone (compare its transactions "
    .. "with the scheduled count), while dhrun serves 200 writes/s throughout. (2) Autovacuum. Committed batches "
    .. "leave dead row versions, and autovacuum starts reclaiming them during the run (autovacuum column), on the "
    .. "same 2 cores and disk. Measured once, MetricDaily only: the same keyset batches took 138.5 s with "
    .. "autovacuum on and 128.6 s with it off for the table, against 125.6 s for the one UPDATE. So batching "
    .. "itself costs 2–3 %. The batch SQL is not the problem: a PK-range batch instead of the keyset join (138.5 s) "
    .. "and `jit = off` (143 s for the whole run, the same as with JIT) changed nothing, so tenancy.lua is "
    .. "unchanged. What is left is the price of not stalling the app.",
  b1_vs_prisma = "The target assumes a row-at-a-time ORM loop. The Prisma script a team would write here is "
    .. "set-based per user. Each updateMany is one UPDATE … WHERE EXISTS (…) of about 1,000 rows, so the "
    .. "server does the same per-row work as for dhrun. The loop adds only about 6 round trips per user, plus "
    .. "a scan of Insight and ChatMessage per user, because neither table has an index on userId. Even the "
    .. "speed limit, the one statement (b), is less than 3× this script. No tool can be 10× faster on this "
    .. "data, and dhrun is within the first row's ratio of that limit. Nothing to fix in dhrun. Against this "
    .. "kind of script, dhrun's advantages are that the app is not stalled, the run can be resumed, and it "
    .. "uses a twentieth of the memory (RSS row).",
  b1_probe = "WAL flushes, not locks. The busy probe sessions were waiting for their commit's WAL fsync "
    .. "(IO:WALSync, LWLock:WALWrite in the wait-event line). They almost never waited for a row lock "
    .. "(Lock:transactionid), and inserts that no batch can block are among the slow ones. The backfill writes "
    .. "about 7 GB of WAL in about 150 s, roughly 45 MB/s: each updated row gets a new version, and so do its "
    .. "three index entries. With synchronous_commit on, a probe commit waits for the disk behind that stream, "
    .. "and behind the checkpointer's fsyncs, since max_wal_size = 2 GB means a checkpoint every ~30 s. The "
    .. "Prisma script writes WAL at half that rate, and its probe maximum stays just under 100 ms. So the lever "
    .. "is the WAL rate. Fixes: (1) dhrun has a fixed `--pause` / tenancy.pause today. tenancy should adapt "
    .. "the pause to a WAL-rate target instead (pg_current_wal_lsn() between batches, as GitLab and gh-ost "
    .. "throttle). (2) For the example app, build the workspaceId indexes after the backfill (CREATE INDEX "
    .. "CONCURRENTLY), as the online-schema-changes reference advises. Migration #1 creates them before it, "
    .. "which adds an index insert and its WAL to every updated row. A smaller batch_target would not help: "
    .. "the waits are not on the batch's rows.",
  b3_psql = "dhrun spends its extra 12–14 ms before and around the queries, not in them: psql replays the same "
    .. "statements. From B3's \"where the time goes\" table: start-up with its shared libraries takes ~4 ms "
    .. "(B4), compiling the flow modules from embedded Lua source +3 ms, and connecting about the same as psql. "
    .. "Measured once by hand: release.check_project, which runs before every flow, costs about 6 ms in "
    .. "check-workspace. It lists and sha256-hashes every migration file, initialising OpenSSL, and it queries "
    .. "the catalog twice per table; the step then repeats those queries (missing_column). Fixes: (1) embed the "
    .. "stdlib as precompiled bytecode: tools/embed.c can load each module and lua_dump it at build time, "
    .. "saving about 3 ms. (2) In check_project, list the migration names without hashing them; only status "
    .. "and deploy compare checksums. Ask for all tables' columns in one catalog query and reuse the answer in "
    .. "the step. (3) dlopen libcurl (and libpq) on first use (B4). Together these remove roughly half of "
    .. "the extra time. The rest (loading the config, the flow runner, the log lines) needs a profile first.",
  b4_startup = "Not dhrun's own start-up. An empty main() linked against the same libraries takes about as long "
    .. "as `dhrun -e ''` (B4 details). Those libraries are libpq, libcrypto and libcurl, with the ~30 libraries "
    .. "they pull in (Kerberos, LDAP, GnuTLS, nettle, p11-kit, …). The time goes to the dynamic loader's symbol "
    .. "lookups, page faults and those libraries' constructors, while dhrun's own init takes well under 1 ms. "
    .. "Fix: do not link libpq and libcurl at build time. dlopen them (RTLD_LAZY) when dhrun.core.db or "
    .. "dhrun.core.http is first required. A script that does not touch the database then starts like "
    .. "lua5.4.",
}
-- B3's four "vs psql" rows share one cause.
for _, what in ipairs({ "status", "check-workspace" }) do
  for _, state in ipairs({ "before", "after" }) do why["b3_psql_" .. what .. "_" .. state] = why.b3_psql end
end
return why
