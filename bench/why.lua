-- Known causes of missed targets, by row key (see bench.lua).  Shown under
-- the summary table of RESULTS.md for the rows that miss their target, so
-- the explanation travels with the numbers it explains.  The figures quoted
-- here as "measured once" come from one-off experiments made while building
-- the benchmark on this machine; everything else refers to the tables of
-- the run above.
local why = {
  b1_vs_single = "Mostly the probe. The one statement stalls the probe, so it runs alone: compare its transactions "
    .. "with the scheduled count. dhrun serves the probe's 200 writes/s the whole time, and each write commits "
    .. "with an fsync, adds WAL and can wait on a batch's rows. Without the probe dhrun reaches about 0.93× "
    .. "(row \"without the probe\"). The rest is autovacuum. Committed batches leave dead row versions, and "
    .. "autovacuum starts reclaiming them during the run (autovacuum column), on the same 2 cores and disk. "
    .. "Measured once: the same keyset batches on MetricDaily took 138.5 s with autovacuum on and 128.6 s with "
    .. "it off for the table, against 125.6 s for the one UPDATE. So batching itself costs 2–3 %. The batch "
    .. "SQL is not the problem either. Measured once: a PK-range batch instead of the keyset join took 138.5 s "
    .. "(same), and `jit = off` took 143 s for the whole run, the same as with JIT. So tenancy.lua is "
    .. "unchanged. The probe's share is the price of not stalling the app.",
  b1_vs_prisma = "The target assumes a row-at-a-time ORM loop. The Prisma script a team would write here is "
    .. "set-based per user. Each updateMany is one UPDATE … WHERE EXISTS (…) of about 1,000 rows, so the "
    .. "server does the same per-row work as for dhrun. The loop adds only about 6 round trips per user, plus "
    .. "a scan of Insight and ChatMessage per user, because neither table has an index on userId. Even the "
    .. "speed limit, the one statement (b), is less than 3× this script. No tool can be 10× faster on this "
    .. "data, and dhrun is within the first row's ratio of that limit. Nothing to fix in dhrun. Against this "
    .. "kind of script, dhrun's advantages are that the app is not stalled, the run can be resumed, and it "
    .. "uses a twentieth of the memory (RSS row).",
  b1_probe = "Not row locks, mostly. Look at the slow transactions by kind: inserts and Connection updates, "
    .. "which no MetricDaily batch can block, are slow too. They come in bursts when a checkpoint syncs. The "
    .. "backfill writes WAL at about 45 MB/s (the WAL column), and max_wal_size = 2 GB. That means a checkpoint "
    .. "every 20 s or so (the checkpoints column), and with fsync on, a commit waits behind the checkpointer's "
    .. "fsyncs. The rest are metric_update transactions that hit a row in the batch in flight. Each of those "
    .. "waits at most one batch, and batches adapt toward batch_target = 0.25 s. Fixes: (1) throttle: "
    .. "`--pause` / tenancy.pause exist today, but the pause is fixed. Let tenancy adapt it to the WAL rate "
    .. "(pg_current_wal_lsn between batches, as GitLab and gh-ost throttle). (2) A default batch_target of "
    .. "0.05 s would bound row-lock waits to about 50 ms. (3) On the server, a larger max_wal_size spaces the "
    .. "checkpoints out.",
  b3_psql = "dhrun's fixed cost per run, measured in B3's \"where the time goes\" table and once "
    .. "more by hand. About 4 ms goes to loading its shared libraries. psql pays the libpq part of that too. "
    .. "About 3.5 ms goes to compiling the flow modules from embedded Lua source. About 2 ms goes to "
    .. "release.check_project, which lists and sha256-hashes every migration (OpenSSL's first use included) "
    .. "even for read-only checks. The queries themselves are the same in both, and so is their cost. Fixes: "
    .. "(1) embed the stdlib as precompiled bytecode: tools/embed.c can load each module and lua_dump it at "
    .. "build time, which saves about 3 ms. (2) In check_project, only list the migration names; hash them only "
    .. "where checksums are compared (status, deploy). (3) Load libcurl with dlopen on first use of "
    .. "dhrun.http (see B4).",
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
