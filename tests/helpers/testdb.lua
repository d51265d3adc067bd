-- Test helper: a fresh database per test on the harness's PostgreSQL.
--
--   local testdb = require "testdb"
--   local t = testdb.create()
--   finally(function() testdb.drop(t.name) end)
--   local conn <close> = t.connect()          -- or db.connect(t.url), db.connect(t.conninfo)
--
--   t = {name=, url=, conninfo=, connect=function([opts]) -> conn end}
--   testdb.drop(name)        keeps a copy of its journal for the password scan, then drops it,
--                            disconnecting whoever is still connected
--   testdb.admin([opts])     a connection to the harness's default database
--   testdb.url(name [, user]) postgresql://postgres:PASSWORD@%2F<socket dir>:PORT/name (DATABASE_URL form)
--   testdb.conninfo(name)    host='<socket dir>' port=PORT user=postgres dbname=name password='PASSWORD'
--   testdb.password()        the password of superusers postgres and dhrun_pw (scram-sha-256)
--   testdb.tcp_url(name [, password])  postgresql://dhrun_pw:PASSWORD@127.0.0.1:PORT/name
--   testdb.owner_role(name)  a non-superuser LOGIN role owning database name and its objects: role, url
--   testdb.drop_role(role)   drops it (after the database)
--
-- tests/run.sh starts the server with PGTEMP_REQUIRE_PASSWORD=1: every
-- connection, over the socket too, needs the password, and no PGPASSWORD is
-- exported.  So every url and conninfo here carries it (percent-encoded in
-- URLs, quoted in conninfo strings: it has characters that need both), a test
-- that connects some other way fails, and run.sh's scan afterwards proves the
-- password appears in no output, report, journal or log file.
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local lfs = require "lfs"

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

function testdb.url(dbname, user)
  return string.format("postgresql://%s:%s@%s:%s/%s", user or os.getenv("PGUSER") or "postgres",
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

-- Appends the database's journal (every table in schema dhrun) and Prisma's
-- _prisma_migrations (its logs hold error texts) as JSON lines to
-- $DHRUN_TEST_TMP/journals/NAME.jsonl, so that tests/run.sh's password scan
-- sees what flows journaled even though the database is gone by then.
local function keep_journal(name)
  local dir = os.getenv("DHRUN_TEST_TMP")
  if not dir then return end
  do
    local admin <close> = testdb.admin()
    if not admin:query_value("SELECT true FROM pg_database WHERE datname = $1", name) then return end
  end
  local conn <close> = db.connect(testdb.conninfo(name))
  local tables = conn:query([[SELECT format('%I.%I', table_schema, table_name) AS q
    FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND (table_schema = 'dhrun' OR table_name = '_prisma_migrations')
    ORDER BY 1]])
  if #tables == 0 then return end
  lfs.mkdir(dir .. "/journals")
  local f = assert(io.open(dir .. "/journals/" .. name .. ".jsonl", "ab"))
  for _, t in ipairs(tables) do
    for _, r in ipairs(conn:query("SELECT row_to_json(r)::text AS j FROM " .. t.q .. " r")) do
      f:write(t.q, "\t", r.j, "\n")
    end
  end
  f:close()
end

function testdb.drop(name)
  keep_journal(name)
  local admin <close> = testdb.admin()
  admin:exec("DROP DATABASE IF EXISTS " .. db.quote_ident(name) .. " WITH (FORCE)")
end

-- A role that is not a superuser and owns database `name`, its public schema
-- (as PostgreSQL 15's pg_database_owner) and everything in it and in schema
-- dhrun, as a production deployment's role does.  It logs in with the
-- harness's password.  Returns its name and a DATABASE_URL for it; the role
-- is dropped by testdb.drop_role(role), after the database is gone.
function testdb.owner_role(name)
  local role = "dhrun_t_owner_" .. sys.uuid4():gsub("-", ""):sub(1, 12)
  do
    local admin <close> = testdb.admin()
    -- the password travels as a parameter, never in the text of a statement
    admin:query("SELECT set_config('dhrun_test.pw', $1, false)", testdb.password())
    admin:exec(string.format([[DO $$ BEGIN
      EXECUTE format('CREATE ROLE %%I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %%L', '%s',
                     current_setting('dhrun_test.pw'));
    END $$]], role))
    admin:exec(string.format("ALTER DATABASE %s OWNER TO %s", db.quote_ident(name), role))
  end
  local conn <close> = db.connect(testdb.conninfo(name))
  conn:exec(string.format([[DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT c.oid::regclass AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('public', 'dhrun') AND c.relkind IN ('r', 'p', 'v', 'm') LOOP
      EXECUTE format('ALTER TABLE %%s OWNER TO %s', r.t);
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS t FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') LOOP
      EXECUTE format('ALTER TYPE %%s OWNER TO %s', r.t);
    END LOOP;
    IF to_regnamespace('dhrun') IS NOT NULL THEN EXECUTE 'ALTER SCHEMA dhrun OWNER TO %s'; END IF;
  END $$]], role, role, role))
  return role, testdb.url(name, role)
end

function testdb.drop_role(role)
  local admin <close> = testdb.admin()
  admin:exec("DROP ROLE IF EXISTS " .. db.quote_ident(role))
end

function testdb.tcp_url(name, pw)
  return string.format("postgresql://dhrun_pw:%s@127.0.0.1:%s/%s", pct_encode(pw or testdb.password()),
    env("PGPORT"), name or "postgres")
end

return testdb
