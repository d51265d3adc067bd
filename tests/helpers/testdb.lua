-- Test helper: a fresh database per test on the harness's PostgreSQL.
--
--   local testdb = require "testdb"
--   local t = testdb.create()
--   finally(function() testdb.drop(t.name) end)
--   local conn <close> = t.connect()          -- or db.connect(t.url), db.connect(t.conninfo)
--
--   t = {name=, url=, conninfo=, connect=function([opts]) -> conn end}
--   testdb.drop(name)        drops it, disconnecting whoever is still connected
--   testdb.admin([opts])     a connection to the harness's default database
--   testdb.password()        the password of superuser dhrun_pw (TCP, scram-sha-256)
--   testdb.tcp_url(name [, password])  postgresql://dhrun_pw:PASSWORD@127.0.0.1:PORT/name
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"

local testdb = {}

local function env(name)
  return assert(os.getenv(name), name .. " not set: run the suite with tests/run.sh")
end

local function pct_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- key=value string for the harness server (unix socket, user postgres).
local function conninfo(dbname)
  return string.format("host='%s' port=%s user=%s dbname=%s", env("PGHOST"), env("PGPORT"),
    os.getenv("PGUSER") or "postgres", dbname)
end

function testdb.admin(opts)
  return db.connect(conninfo(os.getenv("PGDATABASE") or "postgres"), opts)
end

function testdb.create()
  local name = "dhrun_t_" .. sys.uuid4():gsub("-", ""):sub(1, 16)
  local admin <close> = testdb.admin()
  admin:exec("CREATE DATABASE " .. db.quote_ident(name))
  local info = conninfo(name)
  return {
    name = name,
    url = string.format("postgresql://%s@%s:%s/%s", os.getenv("PGUSER") or "postgres", pct_encode(env("PGHOST")),
      env("PGPORT"), name),
    conninfo = info,
    connect = function(opts) return db.connect(info, opts) end,
  }
end

function testdb.drop(name)
  local admin <close> = testdb.admin()
  admin:exec("DROP DATABASE IF EXISTS " .. db.quote_ident(name) .. " WITH (FORCE)")
end

function testdb.password()
  local f = assert(io.open(env("PGTEMP_DIR") .. "/password", "rb"))
  local pw = f:read("a")
  f:close()
  return pw
end

function testdb.tcp_url(name, password)
  return string.format("postgresql://dhrun_pw:%s@127.0.0.1:%s/%s", pct_encode(password or testdb.password()),
    env("PGPORT"), name or "postgres")
end

return testdb
