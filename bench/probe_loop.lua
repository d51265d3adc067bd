-- bench/probe_loop.lua DB DIR STOPFILE MAX_METRIC_ID NKEYS: the write probe.
-- pgbench at a fixed 200 tx/s (-R) from 4 clients, each transaction one small
-- single-row write to one of the four tenancy tables (bench/probe/*.sql),
-- --latency-limit=100, deadlocks retried (--max-tries), every transaction
-- logged (-l).  It runs in 3 s chunks
-- until STOPFILE exists, so the probe covers a workload of any length and
-- every chunk's log is complete (pgbench has no clean way to be stopped
-- early).  A chunk's clients stuck behind a lock keep the chunk open, so
-- stalls are seen whole.  Started by benchlib.probe_start.
local lfs = require "lfs"
local process = require "dhrun.process"

local dbname, dir, stop, maxid, nkeys = ...
assert(nkeys, "usage: dhrun bench/probe_loop.lua DB DIR STOPFILE MAX_METRIC_ID NKEYS")
local pgbench = (os.getenv("PGTEMP_BIN") or "/usr/lib/postgresql/15/bin") .. "/pgbench"
local scripts = {
  "metric_update.sql@2", "metric_upsert.sql@1", "connection_update.sql@1", "insight_insert.sql@1",
  "chat_insert.sql@1",
}

local chunk = 0
while lfs.attributes(stop, "mode") == nil do
  chunk = chunk + 1
  local argv = { pgbench, "-n", "-M", "prepared", "-R", "200", "-c", "4", "-j", "1", "--latency-limit=100",
                 "--max-tries=10", "-l",
                 "--log-prefix=" .. dir .. "/chunk" .. chunk, "-T", "3", "-D", "maxid=" .. maxid,
                 "-D", "nkeys=" .. nkeys }
  for _, s in ipairs(scripts) do
    argv[#argv + 1] = "-f"
    argv[#argv + 1] = "bench/probe/" .. s
  end
  argv[#argv + 1] = dbname
  local r = process.run(argv)
  if not r.ok then
    io.stderr:write(("chunk %d: pgbench exit %s\n%s%s"):format(chunk, tostring(r.code), r.stdout, r.stderr))
    if r.code ~= 2 then break end -- 2: some clients aborted (logged above); anything else: give up
  end
end
