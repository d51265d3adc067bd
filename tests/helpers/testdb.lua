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
--   testdb.url(name)         postgresql://postgres:PASSWORD@%2F<socket dir>:PORT/name (DATABASE_URL form)
--   testdb.conninfo(name)    host='<socket dir>' port=PORT user=postgres dbname=name password='PASSWORD'
--   testdb.password()        the password of superusers postgres and dhrun_pw (scram-sha-256)
--   testdb.tcp_url(name [, password])  postgresql://dhrun_pw:PASSWORD@127.0.0.1:PORT/name
--
-- tests/run.sh starts the server with PGTEMP_REQUIRE_PASSWORD=1: every
-- connection, over the socket too, needs the password, and no PGPASSWORD is
-- exported.  So every url and conninfo here carries it (percent-encoded in
-- URLs, quoted in conninfo strings: it has characters that need both), a test
-- that connects some other way fails.
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"

local testdb = {}

local function env(name)
  return assert(os.getenv(name), name .. " not set: run the suite with tests/run.sh")
end

local function pct_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- A libpq key=value value: single-quoted, with ' and \ escaped.
local function quote(s)
  return "'" .. s:gsub("[\\']", "\\%0") .. "'"
end

local password
function testdb.password()
  if not password then
    local f = assert(io.open(env("PGTEMP_DIR") .. "/password", "rb"))
    password = f:read("a")
    f:close()
  end
  return password
end

function testdb.conninfo(dbname)
  return string.format("host=%s port=%s user=%s dbname=%s password=%s", quote(env("PGHOST")), env("PGPORT"),
    os.getenv("PGUSER") or "postgres", dbname, quote(testdb.password()))
end

function testdb.url(dbname)
  return string.format("postgresql://%s:%s@%s:%s/%s", os.getenv("PGUSER") or "postgres",
    pct_encode(testdb.password()), pct_encode(env("PGHOST")), env("PGPORT"), dbname)
end

function testdb.admin(opts)
  return db.connect(testdb.conninfo(os.getenv("PGDATABASE") or "postgres"), opts)
end

function testdb.create()
  local name = "dhrun_t_" .. sys.uuid4():gsub("-", ""):sub(1, 16)
  local admin <close> = testdb.admin()
  admin:exec("CREATE DATABASE " .. db.quote_ident(name))
  local info = testdb.conninfo(name)
  return {
    name = name,
    url = testdb.url(name),
    conninfo = info,
    connect = function(opts) return db.connect(info, opts) end,
  }
end

function testdb.drop(name)
  local admin <close> = testdb.admin()
  admin:exec("DROP DATABASE IF EXISTS " .. db.quote_ident(name) .. " WITH (FORCE)")
end

function testdb.tcp_url(name, pw)
  return string.format("postgresql://dhrun_pw:%s@127.0.0.1:%s/%s", pct_encode(pw or testdb.password()),
    env("PGPORT"), name or "postgres")
end

return testdb
