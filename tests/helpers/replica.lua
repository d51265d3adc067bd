-- Test helper: a streaming replica of the harness's PostgreSQL (pg_basebackup
-- -R and a second postmaster on its own socket and port, tools/pgtemp.sh
-- start-replica), for the specs that need one.
--
--   local replica = require "replica"
--   local r = replica.start()       -- in lazy_setup; ~1 s
--   r.conninfo(dbname)              -- a connection string to the replica (the primary's password)
--   r.stop()                        -- in lazy_teardown; idempotent
--
-- tests/run.sh stops any replica left under its temp dir on exit, so a spec
-- that dies before its teardown leaves no postmaster behind.
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local testdb = require "testdb"

local replica = {}

local function quote(s)
  return "'" .. s:gsub("[\\']", "\\%0") .. "'"
end

function replica.start()
  local root = assert(os.getenv("DHRUN_ROOT"), "run the suite with tests/run.sh")
  local dir = assert(os.getenv("DHRUN_TEST_TMP")) .. "/replica-" .. sys.uuid4():sub(1, 8)
  local tool = root .. "/tools/pgtemp.sh"
  local r = process.run({ tool, "start-replica", assert(os.getenv("PGTEMP_DIR")), dir }, { timeout = 120 })
  assert(r.ok, "could not start a replica: " .. r.stderr)
  local host, port = r.stdout:match("PGTEMP_REPLICA_HOST='([^']+)' PGTEMP_REPLICA_PORT='(%d+)'")
  assert(host, r.stdout)
  local self = { dir = dir, host = host, port = port }
  function self.conninfo(dbname)
    return string.format("host=%s port=%s user=postgres dbname=%s password=%s", quote(host), port,
      dbname or "postgres", quote(testdb.password()))
  end
  function self.stop()
    if self.stopped then return end
    self.stopped = true
    process.run({ tool, "stop", dir }, { timeout = 60 })
  end
  return self
end

return replica
