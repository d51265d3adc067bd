-- dhrun.db: PostgreSQL for release scripts, on libpq (dhrun.core.db).
--
--   local db = require "dhrun.db"
--   local conn <close> = db.connect()            -- $DATABASE_URL, else PG* variables
--   local rows = conn:query("SELECT id, name FROM t WHERE id > $1", 10)
--   for _, r in ipairs(rows) do print(r.id, r.name) end
--
-- Connection strings: postgres:// and postgresql:// URLs or libpq "key=value"
-- strings.  Prisma's URLs work as they are: parameters only Prisma knows are
-- dropped and ?schema=NAME becomes the search_path.  Every password seen is
-- registered with the redactor, and URLs shown to people (errors, conn.info.url,
-- db.display_url) never contain one.
--
-- Errors: SQL errors raise a dhrun.Error {kind="db", exit=1, sqlstate=, ...}
-- whose message is "[SQLSTATE] primary message"; a failed connect raises
-- kind="connect", exit=4; a malformed connection string kind="config", exit=2.
-- Ctrl-C cancels the running statement on the server and raises the interrupt.
local core = require "dhrun.core.db"
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"
local events = require "dhrun.events"
local secret = require "dhrun.secret"

local db = {}

-- SQL NULL in rows and as a parameter (nil works as a parameter too).  It is
-- the NULL light userdata, i.e. the same value as cjson.null.
db.null = core.null

local methods = core.methods
local error_mt = sys.error_mt

-- Parameters Prisma accepts in its connection URLs that libpq does not know
-- (libpq rejects unknown ones).  Any of them libpq does know is kept.
local PRISMA_ONLY = {
  schema = true, connection_limit = true, pool_timeout = true, socket_timeout = true,
  pgbouncer = true, statement_cache_size = true, sslaccept = true, sslidentity = true,
  max_connection_lifetime = true, max_idle_connection_lifetime = true,
}

local libpq_keywords -- keyword -> default | false, from PQconndefaults (loaded once)
local function keywords()
  libpq_keywords = libpq_keywords or core.conndefaults()
  return libpq_keywords
end

local pct_decode = secret.pct_decode

local function is_url(s)
  return s:find("^postgres://") ~= nil or s:find("^postgresql://") ~= nil
end


local function pct_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- A URL's parts: scheme "postgresql://", userinfo (or nil), the rest up to
-- the query, and the raw query items.  Like libpq, userinfo ends at the first
-- '@' met before any '/'.
local function split_url(url)
  local scheme, rest = url:match("^(%a+://)(.*)$")
  local userinfo, after = rest:match("^([^@/]*)@(.*)$")
  if userinfo then rest = after end
  local main, query = rest:match("^([^?]*)%??(.*)$")
  local items = {}
  for item in query:gmatch("[^&]+") do items[#items + 1] = item end
  return scheme, userinfo, main, items
end

local function join_url(scheme, userinfo, main, items)
  return scheme .. (userinfo and userinfo .. "@" or "") .. main
    .. (#items > 0 and "?" .. table.concat(items, "&") or "")
end

local function item_key(item)
  return pct_decode(item:match("^[^=]*"))
end

local add_secret = secret.add
-- a connection parameter in a URL's query (whose value may hold an '@')
local function is_key(k) return keywords()[k] ~= nil or PRISMA_ONLY[k] ~= nil or k == "schema" end
local function misread_userinfo(url) return secret.misread_userinfo(url, is_key) end
local register_url_secrets = secret.register_url

-- libpq's parse errors quote the text they stopped at, which may be a piece
-- of a password the parse never got to (so it is not registered): masked,
-- from the first quote to the last (a quote inside a password cannot end the
-- mask early), libpq's own one-character tokens ("=", "]") aside.
local function mask_quoted(text)
  local t = text:gsub('"([=%]:/])"', "\1%1\1")
  local _, quotes = t:gsub('"', "")
  if quotes == 1 then t = t:gsub('".*$', '"***') elseif quotes > 1 then t = t:gsub('"(.*)"', '"***"') end
  return (t:gsub("\1(.)\1", '"%1"'))
end

local function config_error(reason, masked)
  local first = tostring(reason):match("^%s*([^\n]*)")
  if masked then first = mask_quoted(first) end
  return setmetatable({
    kind = "config", exit = 2,
    message = "DATABASE_URL is not a valid connection string: " .. first,
    hint = "use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode special characters)"
      .. " or a libpq key=value string",
  }, error_mt)
end

-- Target -> the string to hand to libpq, and Prisma's schema (or nil).
local function prepare(target)
  local schema
  if is_url(target) then
    local misread, password = misread_userinfo(target)
    if misread then
      add_secret(password)
      error(config_error("an unencoded '/' or '@' before the host name (in the password?); "
        .. "percent-encode them as %2F and %40"), 0)
    end
    register_url_secrets(target)
    local scheme, userinfo, main, items = split_url(target)
    local keep, known = {}, keywords()
    for _, item in ipairs(items) do
      local key = item_key(item)
      if key == "pgbouncer" and (item:match("=(.*)$") or "") ~= "false" then
        -- session advisory locks (the release lock, Prisma's migrate lock),
        -- session lock_timeout and search_path do not survive pgbouncer's
        -- transaction pooling
        error(setmetatable({ kind = "config", exit = 2,
          message = "the database URL has pgbouncer=true: dhrun needs a direct connection to PostgreSQL",
          hint = "use the direct URL (Prisma's directUrl) for releases, not the pooled one" }, error_mt), 0)
      end
      if not is_key(key) then
        -- not named: an unknown key may be a piece of a password with a raw '&'
        local near = require("dhrun.config").suggest(key, known)
        error(config_error("a parameter in the URL's query is not a connection parameter"
          .. (near and (" (did you mean '" .. near .. "'?)") or " (percent-encode a '&' in a password as %26)")), 0)
      end
      if key == "schema" and known.schema == nil then
        schema = pct_decode(item:match("^[^=]*=?(.*)$"))
      elseif not (PRISMA_ONLY[key] and known[key] == nil) then
        keep[#keep + 1] = item
      end
    end
    target = join_url(scheme, userinfo, main, keep)
  end
  local parsed, err = core.conninfo_parse(target)
  if not parsed then error(config_error(err, true), 0) end
  add_secret(parsed.password)
  return target, schema
end

-- "postgresql://user@host:port/dbname" from {host=, hostaddr=, port=, dbname=, user=};
-- several hosts ("h1,h2") are zipped with their ports; sockets are percent-encoded.
local function url_from(t)
  local hosts, ports = {}, {}
  for h in tostring(t.host or t.hostaddr or ""):gmatch("[^,]+") do hosts[#hosts + 1] = h end
  for p in tostring(t.port or ""):gmatch("[^,]+") do ports[#ports + 1] = p end
  local parts = {}
  for i, h in ipairs(hosts) do
    local host = h:find(":", 1, true) and "[" .. h .. "]" or pct_encode(h)
    local port = ports[i] or ports[1]
    parts[i] = host .. (port and ":" .. port or "")
  end
  local user = t.user and pct_encode(t.user) .. "@" or ""
  if #hosts == 0 then
    -- libpq's default: its local socket ("postgresql://u@:5432/db" reads like a missing host)
    return "postgresql://" .. user .. "/" .. pct_encode(t.dbname or "") .. (ports[1] and "?port=" .. ports[1] or "")
  end
  if #hosts == 1 and hosts[1]:sub(1, 1) == "/" then
    -- a unix socket reads better as libpq's ?host= form than percent-encoded
    return "postgresql://" .. user .. "/" .. pct_encode(t.dbname or "") .. "?host=" .. hosts[1]
      .. (ports[1] and "&port=" .. ports[1] or "")
  end
  return "postgresql://" .. user .. table.concat(parts, ",") .. "/" .. pct_encode(t.dbname or "")
end

local function conninfo_quote(v)
  if v ~= "" and not v:find("[%s'\\]") then return v end
  return "'" .. v:gsub("[\\']", "\\%0") .. "'"
end

-- db.display_url(target) -> the URL or key=value string without its password
-- (nil target: $DATABASE_URL, else what libpq's PG* defaults point at).
function db.display_url(target)
  if target == nil or target == "" then
    target = os.getenv("DATABASE_URL")
    if target == nil or target == "" then
      local d = keywords()
      return url_from({ host = d.host or nil, port = d.port or nil, dbname = d.dbname or nil, user = d.user or nil })
    end
  end
  if type(target) ~= "string" then
    error("bad argument #1 to 'display_url' (string expected, got " .. type(target) .. ")", 2)
  end
  if is_url(target) then
    local misread = misread_userinfo(target)
    if misread then -- keep only the user name and what follows the last '@'
      local scheme, rest = target:match("^(%a+://)(.*)$")
      return scheme .. misread:match("^[^:/@]*") .. rest:sub(#misread + 1)
    end
    local scheme, userinfo, main, items = split_url(target)
    local keep = {}
    for _, item in ipairs(items) do
      if item_key(item) ~= "password" then keep[#keep + 1] = item end
    end
    return join_url(scheme, userinfo and userinfo:match("^[^:]*"), main, keep)
  end
  local parsed = core.conninfo_parse(target)
  if not parsed then return "<invalid connection string>" end
  local order, rest = { "host", "hostaddr", "port", "dbname", "user" }, {}
  local seen = {}
  for _, k in ipairs(order) do seen[k] = true end
  for k in pairs(parsed) do
    if not seen[k] and k ~= "password" then rest[#rest + 1] = k end
  end
  table.sort(rest)
  local out = {}
  for _, list in ipairs({ order, rest }) do
    for _, k in ipairs(list) do
      if parsed[k] then out[#out + 1] = k .. "=" .. conninfo_quote(parsed[k]) end
    end
  end
  return table.concat(out, " ")
end

local function connect_hint(msg)
  if msg:find("password authentication failed", 1, true) or msg:find("no password supplied", 1, true) then
    return "check the password in DATABASE_URL (or PGPASSWORD, ~/.pgpass);"
      .. " special characters in a URL password must be percent-encoded"
  elseif msg:find('database "[^"]*" does not exist') then
    return "check the database name in DATABASE_URL, or create the database"
  elseif msg:find('role "[^"]*" does not exist') then
    return "check the user name in DATABASE_URL"
  elseif msg:find("timeout expired", 1, true) then
    return "the server did not answer in time: check host and port in DATABASE_URL and the network"
      .. " (connect_timeout sets the wait)"
  end
  return "check that the PostgreSQL server is running and that DATABASE_URL (host, port, credentials)"
    .. " points at it"
end

local function connect_error(msg, tried, timeout, defaulted)
  local first = msg:match("^%s*([^\n]*)")
  if first == "timeout expired" then
    first = string.format("timeout expired after %g s", timeout or 10)
  end
  -- "invalid sslmode value: ..." and the like: the connection string is
  -- wrong, not the server (exit 2, not 4)
  local bad_option = first:match("^invalid %S+ value") or first:match("^invalid connection option")
  return setmetatable({
    kind = bad_option and "config" or "connect", exit = bad_option and 2 or 4,
    message = "cannot connect to " .. url_from(tried) .. ": " .. first
      .. (defaulted and " (DATABASE_URL is not set, so this is libpq's default: the PG* variables, else the local"
        .. " socket as this user)" or ""),
    hint = bad_option and "fix that option in DATABASE_URL" or (defaulted
      and "set DATABASE_URL (e.g. export DATABASE_URL='postgresql://user:password@host:5432/db'), or database_url in"
        .. " the project config" or connect_hint(msg)),
  }, error_mt)
end

-- db.connect([target [, opts]]) -> conn
--   opts: application_name ("dhrun" unless the target or $PGAPPNAME says),
--         connect_timeout (seconds; default: the target's, else 10),
--         settings = {name = value, ...} (set_config after connecting)
function db.connect(target, opts)
  if target ~= nil and type(target) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(target) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  if target == nil then
    target = os.getenv("DATABASE_URL")
    if target == "" then target = nil end
  end
  add_secret(os.getenv("PGPASSWORD"))

  -- Keys before "dbname" are defaults the target may override; keys after
  -- it override the target (libpq's expand_dbname rule).
  local keys, values = { "fallback_application_name" }, { "dhrun" }
  local schema
  if target ~= nil then
    local conninfo
    conninfo, schema = prepare(target)
    keys[#keys + 1], values[#values + 1] = "dbname", conninfo
  end
  if opts.application_name ~= nil then
    keys[#keys + 1], values[#values + 1] = "application_name", tostring(opts.application_name)
  end
  local conn, msg, tried = core.connect(keys, values, opts.connect_timeout)
  if not conn then
    local timeout = opts.connect_timeout or tonumber(tried.connect_timeout)
    error(connect_error(msg, tried, timeout, target == nil), 2)
  end
  conn.info.url = url_from(conn.info)
  if schema and schema ~= "" then
    conn.info.url = conn.info.url .. (conn.info.url:find("?", 1, true) and "&" or "?") .. "schema=" .. schema
  end

  -- Session setup; on failure close now rather than at garbage collection.
  local ok, err = pcall(function()
    if schema and schema ~= "" then
      -- quote_ident() quotes only when needed, as Prisma's own search_path does.
      conn:query_value("SELECT set_config('search_path', quote_ident($1), false)", schema)
    end
    if opts.settings then
      local names = {}
      for name in pairs(opts.settings) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do conn:set(name, opts.settings[name]) end
    end
  end)
  if not ok then
    conn:close()
    if getmetatable(err) == error_mt and err.kind == "db" then
      err.kind, err.exit = "config", 2
      err.message = "cannot apply the connection settings: " .. err.message
    end
    error(err, 0)
  end
  return conn
end

-- db.quote_ident(s) -> s as an SQL identifier, without a connection.
function db.quote_ident(s)
  if type(s) ~= "string" then
    error("bad argument #1 to 'quote_ident' (string expected, got " .. type(s) .. ")", 2)
  end
  if s:find("\0", 1, true) then error("bad argument #1 to 'quote_ident' (contains a zero byte)", 2) end
  return '"' .. s:gsub('"', '""') .. '"'
end

-- db.text_array(list) -> a PostgreSQL text[] literal of the strings in list,
-- every element quoted, for a `$n::text[]` parameter.
function db.text_array(list)
  local parts = {}
  for i, v in ipairs(list) do
    if type(v) ~= "string" then
      error("bad argument #1 to 'text_array' (element " .. i .. " is a " .. type(v) .. ", not a string)", 2)
    end
    parts[i] = '"' .. v:gsub('[\\"]', "\\%0") .. '"'
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Connection methods written in Lua (the rest are in C).

-- Wraps a method so SQL errors come back as nil, err instead of raising.
-- Misuse and interrupts still raise.
local function non_raising(method)
  return function(self, ...)
    local ok, res = pcall(method, self, ...)
    if ok then return res end
    if getmetatable(res) == error_mt and res.kind == "db" then return nil, res end
    error(res, 0)
  end
end

-- conn:try_query(sql, ...) -> rows | nil, err
methods.try_query = non_raising(methods.query)
-- conn:try_exec(sql, ...) -> count | nil, err
methods.try_exec = non_raising(methods.exec)

local depth = setmetatable({}, { __mode = "k" }) -- conn -> open transaction() levels

-- conn:transaction(fn) -> fn(conn)'s results.  BEGIN ... COMMIT, or
-- ROLLBACK and the same error raised again.  Nested: a savepoint.
function methods:transaction(fn)
  if not (type(fn) == "function" or (getmetatable(fn) or {}).__call) then
    error("bad argument #1 to 'transaction' (function expected, got " .. type(fn) .. ")", 2)
  end
  local level = depth[self] or 0
  local savepoint = "dhrun_sp_" .. level
  self:exec(level == 0 and "BEGIN" or "SAVEPOINT " .. savepoint)
  depth[self] = level + 1
  local res = table.pack(pcall(fn, self))
  depth[self] = level > 0 and level or nil

  local function rollback()
    -- Best effort: the connection may be gone; the first error matters.
    if level == 0 then
      pcall(self.exec, self, "ROLLBACK")
    else
      pcall(self.exec, self, "ROLLBACK TO SAVEPOINT " .. savepoint)
      pcall(self.exec, self, "RELEASE SAVEPOINT " .. savepoint)
    end
  end
  if not res[1] then
    rollback()
    error(res[2], 0)
  end
  -- fn caught an SQL error (try_query) and returned: COMMIT would silently
  -- roll back, so say so instead.
  if self:status() == "in error" then
    rollback()
    error(setmetatable({
      kind = "db", exit = 1, sqlstate = "25P02",
      message = "[25P02] transaction rolled back: a statement in it failed and the error was caught",
      hint = "let the error propagate out of transaction(), or use a nested transaction() for the part that may fail",
    }, error_mt), 2)
  end
  self:exec(level == 0 and "COMMIT" or "RELEASE SAVEPOINT " .. savepoint)
  return table.unpack(res, 2, res.n)
end

local function setting_value(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  if t == "boolean" then return v and "on" or "off" end
  return nil, t
end

-- conn:set(name, value) -> the new value.  For the session (not LOCAL).
function methods:set(name, value)
  if type(name) ~= "string" then
    error("bad argument #1 to 'set' (string expected, got " .. type(name) .. ")", 2)
  end
  local v, t = setting_value(value)
  if not v then error("bad argument #2 to 'set' (string, number or boolean expected, got " .. t .. ")", 2) end
  return self:query_value("SELECT set_config($1, $2, false)", name, v)
end

-- conn:get(name) -> current_setting(name)
function methods:get(name)
  if type(name) ~= "string" then
    error("bad argument #1 to 'get' (string expected, got " .. type(name) .. ")", 2)
  end
  return self:query_value("SELECT current_setting($1)", name)
end

-- conn:with_setting(name, value) -> a to-be-closed value.  Sets a session
-- setting now; closing the value puts the previous one back:
--   local _ <close> = conn:with_setting("lock_timeout", "10s")
-- value false: sets nothing and returns nil (a <close> variable may hold nil).
-- Restoring is best effort: a lost connection has nothing left to restore,
-- and a setting made inside a transaction that rolls back is undone anyway.
function methods:with_setting(name, value)
  if type(name) ~= "string" then
    error("bad argument #1 to 'with_setting' (string expected, got " .. type(name) .. ")", 2)
  end
  if value == false then return nil end
  local v, t = setting_value(value)
  if not v then
    error("bad argument #2 to 'with_setting' (string, number, boolean or false expected, got " .. t .. ")", 2)
  end
  local previous = self:get(name)
  self:set(name, v)
  local open = true
  return setmetatable({ name = name, previous = previous }, {
    __close = function()
      if open then
        open = false
        pcall(self.set, self, name, previous)
      end
    end,
  })
end

local function check_key(key, fname)
  if math.type(key) ~= "integer" then
    error("bad argument #1 to '" .. fname .. "' (integer key expected, got " .. (math.type(key) or type(key)) .. ")",
      3)
  end
end

-- conn:advisory_lock(key) -> true.  Session-level; waits (lock_timeout
-- applies, Ctrl-C interrupts).
function methods:advisory_lock(key)
  check_key(key, "advisory_lock")
  self:query("SELECT pg_advisory_lock($1::bigint)", key)
  return true
end

-- conn:try_advisory_lock(key) -> boolean
function methods:try_advisory_lock(key)
  check_key(key, "try_advisory_lock")
  return self:query_value("SELECT pg_try_advisory_lock($1::bigint)", key)
end

-- conn:advisory_unlock(key) -> boolean (false: this session did not hold it)
function methods:advisory_unlock(key)
  check_key(key, "advisory_unlock")
  return self:query_value("SELECT pg_advisory_unlock($1::bigint)", key)
end

---------------------------------------------------------------------------
-- Lock waits: who holds a table, and bounded waits with retries

local format = string.format

local function isnull(v) return v == nil or v == core.null end

-- Table lock modes and the modes each one conflicts with (PostgreSQL's
-- "Conflicting Lock Modes" table).
local LOCK_CONFLICTS = {
  AccessShareLock = { "AccessExclusiveLock" },
  RowShareLock = { "ExclusiveLock", "AccessExclusiveLock" },
  RowExclusiveLock = { "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock" },
  ShareUpdateExclusiveLock = { "ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock",
    "AccessExclusiveLock" },
  ShareLock = { "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock",
    "AccessExclusiveLock" },
  ShareRowExclusiveLock = { "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock",
    "ExclusiveLock", "AccessExclusiveLock" },
  ExclusiveLock = { "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
    "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock" },
  AccessExclusiveLock = { "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
    "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock" },
}

-- Text from the server (a query, an application_name) on one line: runs of
-- white space become one space, other control characters \xNN; cut to
-- `max` bytes (not inside a UTF-8 sequence) with "..." appended.
local function one_line(s, max)
  s = tostring(s):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  s = s:gsub("%c", function(c) return format("\\x%02x", c:byte()) end)
  if max and #s > max then
    s = s:sub(1, max):gsub("[\xC0-\xFF][\x80-\xBF]*$", "") .. "..."
  end
  return s
end

local BLOCKERS_SQL = [[
WITH held AS (
  SELECT l.pid, l.virtualtransaction AS vxid,
         string_agg(DISTINCT l.mode, ', ') AS modes,
         string_agg(DISTINCT l.relation::regclass::text, ', ') AS relations
    FROM pg_locks l
   WHERE l.locktype = 'relation' AND l.granted
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.pid IS DISTINCT FROM pg_backend_pid()
     AND ($1::text[] IS NULL OR l.relation = ANY (ARRAY(SELECT to_regclass(r)::oid FROM unnest($1::text[]) r)))
     AND l.mode = ANY ($2::text[])
   GROUP BY l.pid, l.virtualtransaction
)
SELECT h.pid, h.modes, h.relations, a.pid IS NOT NULL AS listed, a.backend_type,
       a.usesysid IS NOT NULL AS has_user, a.usename::text AS usename,
       coalesce(a.application_name, '') AS app, a.state, a.query,
       to_char(a.query_start, 'YYYY-MM-DD HH24:MI:SS TZ') AS query_start,
       round(extract(epoch FROM now() - a.query_start))::int8 AS query_age,
       round(extract(epoch FROM now() - a.xact_start))::int8 AS xact_age,
       p.gid
  FROM held h
  LEFT JOIN pg_stat_activity a ON a.pid = h.pid
  LEFT JOIN LATERAL (SELECT px.gid FROM pg_locks x JOIN pg_prepared_xacts px ON px.transaction = x.transactionid
                      WHERE h.pid IS NULL AND x.pid IS NULL AND x.locktype = 'transactionid'
                        AND x.virtualtransaction = h.vxid
                      LIMIT 1) p ON true
 ORDER BY h.pid NULLS LAST, h.vxid]]

-- What kind of session holds the lock.  A role without pg_read_all_stats
-- sees other roles' sessions in pg_stat_activity with only pid, user and
-- application_name (backend_type NULL, query "<insufficient privilege>"),
-- and an autovacuum worker with no user and no application at all.
local function blocker_kind(r)
  if isnull(r.pid) then return "prepared transaction", nil end
  if not r.listed then return "session", "no longer in pg_stat_activity" end
  if not isnull(r.backend_type) then return r.backend_type, nil end
  if not r.has_user and r.app == "" and r.modes:find("ShareUpdateExclusiveLock", 1, true) then
    -- autovacuum's VACUUM or ANALYZE holds SHARE UPDATE EXCLUSIVE
    return "autovacuum worker", "probably; not visible to this role", true
  end
  if not isnull(r.usename) then
    return format("session of role \"%s\"", one_line(r.usename, 63)), "not visible to this role", true
  end
  return "session", "not visible to this role", true
end

local function describe_blocker(b)
  local parts = { b.kind .. (b.note and (" (" .. b.note .. ")") or "") }
  if b.gid then parts[#parts + 1] = format("gid \"%s\"", b.gid) end
  if b.application_name ~= "" then parts[#parts + 1] = format("application \"%s\"", b.application_name) end
  if b.state then parts[#parts + 1] = b.state end
  parts[#parts + 1] = format("holds %s on %s", b.modes, b.relations)
  if b.xact_age then parts[#parts + 1] = format("in a transaction for %d s", b.xact_age) end
  if b.query then
    parts[#parts + 1] = format("%s \"%s\"", (b.state or "active") == "active" and "query" or "last query", b.query)
  end
  local who = b.pid and ("pid " .. b.pid) or "a prepared transaction"
  return format("%s (%s)", who, table.concat(parts, ", "))
end

-- db.blockers(conn, relations, mode) -> list, text
--   The sessions holding a table lock that conflicts with `mode` (default
--   "AccessExclusiveLock": any lock) on one of `relations` (SQL names as
--   to_regclass reads them, e.g. '"public"."Account"'; nil: any table of
--   this database).  Read from pg_locks, so sessions this role may not see in
--   pg_stat_activity are still listed, by pid.
--   list: { {pid=, kind=, note=, guessed=, backend_type=, application_name=,
--            state=, modes=, relations=, query=, query_start=, query_age=,
--            xact_age=, user=, gid=} }
--     kind: pg_stat_activity's backend_type ("client backend", "autovacuum
--     worker", ...), or what it probably is when that is hidden from this
--     role ("autovacuum worker" with guessed = true and note "probably; not
--     visible to this role"), or "prepared transaction" (pid nil, gid set).
--     query: the first 100 bytes of the query, on one line.
--   text: one line, "pid 123 (client backend, application "psql", idle in
--   transaction, holds AccessShareLock on "Account", ...); pid 456 (...)".
function db.blockers(conn, relations, mode)
  if relations ~= nil and type(relations) ~= "table" then
    error("bad argument #2 to 'blockers' (list of relation names or nil expected, got " .. type(relations) .. ")", 2)
  end
  mode = mode or "AccessExclusiveLock"
  local conflicts = LOCK_CONFLICTS[mode]
  if not conflicts then
    error("bad argument #3 to 'blockers' (a table lock mode like \"AccessExclusiveLock\" expected, got "
      .. tostring(mode) .. ")", 2)
  end
  local rows = conn:query(BLOCKERS_SQL, relations and db.text_array(relations) or nil, db.text_array(conflicts))
  local list, texts = {}, {}
  for _, r in ipairs(rows) do
    local kind, note, guessed = blocker_kind(r)
    local visible = not guessed and not isnull(r.query)
    local b = {
      pid = not isnull(r.pid) and r.pid or nil, kind = kind, note = note, guessed = guessed or nil,
      backend_type = not isnull(r.backend_type) and r.backend_type or nil,
      application_name = one_line(r.app, 63), state = not isnull(r.state) and r.state or nil,
      modes = r.modes, relations = one_line(r.relations),
      query = visible and one_line(r.query, 100) or nil,
      query_start = visible and not isnull(r.query_start) and r.query_start or nil,
      query_age = visible and not isnull(r.query_age) and r.query_age or nil,
      xact_age = not isnull(r.xact_age) and r.xact_age or nil,
      user = not isnull(r.usename) and r.usename or nil,
      gid = not isnull(r.gid) and one_line(r.gid, 200) or nil,
    }
    list[#list + 1] = b
    texts[#texts + 1] = describe_blocker(b)
  end
  return list, table.concat(texts, "; ")
end

-- SQLSTATEs worth another attempt: lock_not_available (lock_timeout),
-- deadlock_detected, serialization_failure.  The transaction rolled back
-- whole, so trying again is safe.
db.RETRYABLE = { ["55P03"] = true, ["40P01"] = true, ["40001"] = true }

db.RETRY_DEFAULTS = { lock_timeout = "300ms", retries = 20, retry_base = 0.2, retry_max = 5 }

-- Backoff before attempt n+1: exponential from `base`, capped at `max`, with
-- "equal jitter" (half fixed, half random) so that several retrying clients
-- do not hit the lock queue in lockstep.
local function backoff(n, base, max)
  local d = math.min(max, base * 2 ^ (n - 1))
  return d / 2 + math.random() * d / 2
end

-- A hint for an autovacuum worker among the blockers.  PostgreSQL cancels
-- an autovacuum that blocks a lock request only when the waiter's deadlock
-- check runs, deadlock_timeout after its wait began, and never one that
-- runs to prevent transaction ID wraparound.
local function autovacuum_hint(conn, list, timeout, outwaited)
  for _, b in ipairs(list) do
    if b.kind == "autovacuum worker" then
      local ok, r = pcall(conn.query_one, conn, [[SELECT $1::interval < current_setting('deadlock_timeout')::interval
        AS shorter, current_setting('deadlock_timeout') AS deadlock_timeout]], timeout)
      if outwaited then
        return format("autovacuum (pid %s) was not cancelled although each attempt waited past deadlock_timeout%s "
          .. "for it: it probably runs to prevent transaction ID wraparound, which PostgreSQL never cancels; wait "
          .. "for it to finish (pg_stat_progress_vacuum shows how far it is)", b.pid or "?",
          ok and r and format(" (%s)", r.deadlock_timeout) or "")
      end
      if ok and r and r.shorter then
        return format("autovacuum (pid %s) gives way to a waiting lock only after deadlock_timeout (%s), and "
          .. "lock_timeout %s gives up before that: wait for it to finish, VACUUM the table before this step, or "
          .. "let dhrun outwait it (outwait_autovacuum)", b.pid or "?", r.deadlock_timeout, timeout)
      end
      return format("autovacuum (pid %s) holds the table: wait for it to finish, or VACUUM the table before this "
        .. "step", b.pid or "?")
    end
  end
end

-- The lock_timeout of the SHARE UPDATE EXCLUSIVE wait that outwaits an
-- autovacuum: deadlock_timeout plus the transaction's lock_timeout (0, no
-- limit, stays 0).  Sets it for the transaction and returns it ("1300ms").
local OUTWAIT_SQL = [[
SELECT set_config('lock_timeout', CASE WHEN l.setting::int8 = 0 THEN '0'
                                       ELSE (l.setting::int8 + d.setting::int8)::text || 'ms' END, true) AS t
  FROM pg_settings l, pg_settings d
 WHERE l.name = 'lock_timeout' AND d.name = 'deadlock_timeout']]

-- db.retry(conn, work, opts) -> work's result, attempts
--   Runs `work` (an SQL string for conn:exec, or function(conn)) in its own
--   transaction (a savepoint when conn is already in one) with
--   SET LOCAL lock_timeout.  On 55P03/40P01/40001 the transaction rolls
--   back, and after a jittered exponential backoff the work runs again, at
--   most opts.retries more times.  Other errors (SQL, Ctrl-C) propagate
--   unchanged.
--   opts (defaults in db.RETRY_DEFAULTS):
--     lock_timeout  PostgreSQL interval ("300ms", "2s") or milliseconds
--     retries       attempts after the first (20)
--     retry_base, retry_max  backoff seconds: the n-th wait is between half
--                   and all of min(retry_max, retry_base * 2^(n-1)) (0.2, 5)
--     what          how messages name the work (the SQL, on one line)
--     log           a dhrun.log-like table: one warn line per retry, naming
--                   the sessions that held the lock (with relations), and
--                   with outwait_autovacuum an info line naming the sessions
--                   an attempt is about to wait for
--     on_retry      function(attempt, err, delay, blockers) before each wait
--                   (e.g. to shrink a batch); blockers: db.blockers' list
--                   (with relations; else nil)
--     relations, lockmode  which tables and lock mode to name the blockers
--                   for (db.blockers); without relations, every session
--                   holding a table lock in this database is named
--     outwait_autovacuum  with relations: each attempt first takes SHARE
--                   UPDATE EXCLUSIVE on them, waiting up to deadlock_timeout
--                   + lock_timeout, then runs the work under lock_timeout.
--                   An autovacuum worker holding a table is cancelled by
--                   PostgreSQL once a waiter has waited deadlock_timeout (and
--                   only then), and no application query (reads, INSERT,
--                   UPDATE, DELETE) conflicts with or queues behind that
--                   wait; only the work's own lock waits (ACCESS EXCLUSIVE
--                   for DDL) keep them waiting, for at most lock_timeout.
--                   For DDL and VALIDATE, not for the application's kind of
--                   work (a SHARE UPDATE EXCLUSIVE lock serializes with
--                   VACUUM, ANALYZE and DDL)
--     autocommit    work is one statement that is its own transaction: no
--                   BEGIN, SET LOCAL or COMMIT around it (one round trip
--                   per attempt instead of four), and the session's
--                   lock_timeout applies (set it with conn:with_setting).
--                   Not with outwait_autovacuum, nor inside a transaction
--     message       function{attempts=, lock_timeout=, err=} -> the first
--                   part of the final error's message
--     hint          the final error's hint
--   After the last attempt raises kind="lock" (exit 1): "<what>: gave up
--   after N attempts (lock_timeout T, last error: ...); blocked by pid ...",
--   with fields blockers (db.blockers' list), attempts, sqlstate, lock_timeout
--   and cause (the last error).
function db.retry(conn, work, opts)
  if type(conn) ~= "userdata" and type(conn) ~= "table" then
    error("bad argument #1 to 'retry' (connection expected, got " .. type(conn) .. ")", 2)
  end
  local callable = type(work) == "function" or (getmetatable(work) or {}).__call ~= nil
  if type(work) ~= "string" and not callable then
    error("bad argument #2 to 'retry' (SQL string or function expected, got " .. type(work) .. ")", 2)
  end
  opts = opts or {}
  local D = db.RETRY_DEFAULTS
  local timeout = opts.lock_timeout or D.lock_timeout
  if math.type(timeout) == "integer" and timeout >= 0 then
    timeout = timeout .. "ms"
  elseif type(timeout) ~= "string" then
    error("bad argument #3 to 'retry' (lock_timeout: interval string or milliseconds expected, got "
      .. tostring(timeout) .. ")", 2)
  end
  local relations = opts.relations
  if relations ~= nil and (type(relations) ~= "table" or #relations == 0) then
    error("bad argument #3 to 'retry' (relations: a non-empty list of relation names expected)", 2)
  end
  local outwait = opts.outwait_autovacuum and relations ~= nil
  local lock_list = outwait and table.concat(relations, ", ") or nil
  if opts.autocommit and (outwait or conn:status() ~= "idle") then
    error("bad argument #3 to 'retry' (autocommit: not with outwait_autovacuum, nor inside a transaction)", 2)
  end
  local retries = opts.retries or D.retries
  local base, max = opts.retry_base or D.retry_base, opts.retry_max or D.retry_max
  local log = opts.log
  local what = opts.what or (type(work) == "string" and one_line(work, 200)) or "statement"
  local attempt = 0
  while true do
    attempt = attempt + 1
    local waiting -- what the attempt was waiting for when it failed
    local function in_transaction(c)
      -- set_config(..., true) is SET LOCAL: gone at COMMIT/ROLLBACK, and the
      -- value travels as a parameter, never spliced into SQL.
      c:query("SELECT set_config('lock_timeout', $1, true)", timeout)
      if outwait then
        local longer = c:query_value(OUTWAIT_SQL)
        waiting = format("waiting up to %s for SHARE UPDATE EXCLUSIVE", longer)
        if log then
          -- Said before the wait: once it ends, whoever held the lock is gone.
          local held, text = db.blockers(c, relations, "ShareUpdateExclusiveLock")
          if #held > 0 then
            local av, say = true, log.info or log.warn
            for _, b in ipairs(held) do av = av and b.kind == "autovacuum worker" end
            say(format("%s: %s, held by %s%s", what, waiting, text, av and "; PostgreSQL cancels an autovacuum "
              .. "that keeps a lock request waiting for deadlock_timeout, and the application's queries do not "
              .. "queue behind this wait" or ""))
          end
        end
        c:exec("LOCK TABLE " .. lock_list .. " IN SHARE UPDATE EXCLUSIVE MODE")
        c:query("SELECT set_config('lock_timeout', $1, true)", timeout)
        waiting = nil
      end
      if type(work) == "string" then return c:exec(work) end
      return work(c)
    end
    local ok, res
    if opts.autocommit then
      ok, res = pcall(function()
        if type(work) == "string" then return conn:exec(work) end
        return work(conn)
      end)
    else
      ok, res = pcall(conn.transaction, conn, in_transaction)
    end
    if ok then return res, attempt end
    if type(res) ~= "table" or not db.RETRYABLE[res.sqlstate] then error(res, 0) end
    local last = one_line(res.message or tostring(res)) .. (waiting and res.sqlstate == "55P03"
      and format(" (%s)", waiting) or "")
    if attempt > retries then
      -- best effort: the error to report is the lock wait, not a failed look-up
      local found, list, text = pcall(db.blockers, conn, relations, opts.lockmode)
      if not found then list, text = {}, "" end
      local head = opts.message and opts.message { attempts = attempt, lock_timeout = timeout, err = res }
        or format("%s: gave up after %d attempt%s (lock_timeout %s, last error: %s)", what, attempt,
          attempt == 1 and "" or "s", timeout, last)
      local tail = ""
      if #list > 0 then
        tail = (relations and "; blocked by " or "; sessions holding table locks in this database: ") .. text
      end
      local hint = opts.hint or (#list > 0
        and "wait for the sessions named above to finish, or end them (pg_terminate_backend) if they are stuck; "
          .. "then run again"
        or "other sessions held locks that kept this waiting (long transactions?); run again later")
      local av = autovacuum_hint(conn, list, timeout, outwait)
      events.emit("lock_wait", { what = what, attempt = attempt, retries = retries, gave_up = true,
        lock_timeout = timeout, error = one_line(res.message or tostring(res)), blockers = text })
      errors.raise("lock", head .. tail, {
        hint = av and (av .. "; " .. hint) or hint,
        blockers = list, attempts = attempt, sqlstate = res.sqlstate, lock_timeout = timeout, cause = res,
      })
    end
    local delay = backoff(attempt, base, max)
    local list, text
    if (relations and (log or opts.on_retry)) or events.recording() then
      local found
      found, list, text = pcall(db.blockers, conn, relations, opts.lockmode)
      if not found then list, text = nil, nil end
    end
    -- for the release report: every lock wait, and who kept us waiting
    events.emit("lock_wait", { what = what, attempt = attempt, retries = retries, delay = delay,
      lock_timeout = timeout, error = one_line(res.message or tostring(res)), blockers = text })
    if opts.on_retry then opts.on_retry(attempt, res, delay, list) end
    if log then
      log.warn(format("%s: %s%s; retry %d/%d in %.2f s", what, last,
        (text and text ~= "") and ("; blocked by " .. text) or "", attempt, retries, delay))
    end
    sys.sleep(delay)
  end
end

return db
