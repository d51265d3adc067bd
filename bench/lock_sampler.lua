-- bench/lock_sampler.lua DB OUTFILE STOPFILE TABLE...: samples pg_locks at 20 Hz from
-- a session of its own until STOPFILE exists.  One line per sample:
--   epoch  granted ACCESS EXCLUSIVE locks  waiting requests  longest wait (ms)  probe waits
-- on the given (tenancy) tables (the method of the online-schema-changes
-- reference, §6); the last column lists what each busy probe (pgbench)
-- session was waiting for at that instant (wait_event_type:wait_event, or
-- "CPU"), to tell lock waits from I/O stalls; then the replay lag of the
-- most lagging streaming replica in seconds (the age of the oldest WAL
-- position it has not replayed, from this sampler's own history of
-- positions; "-" without a replica), and what the backfill's session
-- (application_name dhrun) was waiting for.  Started by benchlib.sampler_start.
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local lfs = require "lfs"

local dbname, file, stop = ...
local tables = { select(4, ...) }
assert(#tables > 0, "usage: dhrun bench/lock_sampler.lua DB OUTFILE STOPFILE TABLE...")
local conn <close> = db.connect(("postgresql://postgres@localhost/%s?host=%s&port=%s"):format(dbname,
  os.getenv("PGHOST"), os.getenv("PGPORT")), { application_name = "dhrun-bench-sampler" })
local oids = conn:query_value([[SELECT array_agg(to_regclass(quote_ident(t))::oid)::text
  FROM unnest($1::text[]) t]], "{" .. table.concat(tables, ",") .. "}")
local out = assert(io.open(file, "w"))
local SAMPLE = [[
SELECT extract(epoch FROM clock_timestamp())::text,
       count(*) FILTER (WHERE granted AND mode = 'AccessExclusiveLock'),
       count(*) FILTER (WHERE NOT granted),
       coalesce(round(extract(epoch FROM max(clock_timestamp() - waitstart)) * 1000), 0)::text
  FROM pg_locks WHERE locktype = 'relation' AND relation = ANY ($1::oid[])]]
local PROBE_WAITS = [[
SELECT coalesce(string_agg(coalesce(wait_event_type || ':' || wait_event, 'CPU'), ','), '-')
  FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active' AND pid <> pg_backend_pid()]]
local REPLICA = [[
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 AS lsn,
       (SELECT min((replay_lsn - '0/0'::pg_lsn)::int8) FROM pg_stat_replication WHERE state = 'streaming') AS replay]]
-- "client:in-transaction": the session waits for dhrun's next statement
-- inside a batch's transaction (a round trip); "client:between": between
-- two transactions (the controller, the health check, a pause)
local DHRUN_WAITS = [[
SELECT coalesce(string_agg(CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                                WHEN state LIKE 'idle in transaction%' THEN 'client:in-transaction'
                                ELSE 'client:between' END, ','), '-')
  FROM pg_stat_activity WHERE application_name = 'dhrun' AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()]]
local hist = {}
local function replica_lag(now)
  local r = conn:query_one(REPLICA)
  hist[#hist + 1] = { t = now, lsn = r.lsn }
  if #hist > 20 * 600 then table.remove(hist, 1) end
  if r.replay == nil or r.replay == db.null then return "-" end
  if r.replay >= r.lsn then return "0" end
  for i = #hist, 1, -1 do
    if hist[i].lsn <= r.replay then return string.format("%.3f", now - hist[i + 1].t) end
  end
  return string.format("%.3f", now - hist[1].t)
end
local period, next_at = 0.05, sys.now()
while lfs.attributes(stop, "mode") == nil do
  local r = conn:query(SAMPLE, oids)[1]
  out:write(r[1], "\t", r[2], "\t", r[3], "\t", r[4], "\t", conn:query_value(PROBE_WAITS), "\t",
    replica_lag(sys.now()), "\t", conn:query_value(DHRUN_WAITS), "\n")
  next_at = next_at + period
  local delay = next_at - sys.now()
  if delay > 0 then sys.sleep(delay) else next_at = sys.now() end
end
out:close()
