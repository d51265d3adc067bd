-- dhrun.prisma: Prisma Migrate's bookkeeping (`_prisma_migrations`) on
-- PostgreSQL, done natively, so a database migrated by dhrun looks to Prisma
-- exactly as if Prisma had migrated it, and the other way round.
--
-- What it matches (Prisma Migrate <= 7, see the README's "Prisma
-- compatibility" section):
--   * the table DDL, created in the connection's current schema;
--   * checksums: sha256 of migration.sql as Node reads it (invalid UTF-8
--     replaced by U+FFFD), compared against the raw text and its CRLF/LF
--     variants, and legacy non-zero-padded checksums;
--   * the row lifecycle: INSERT (id, checksum, started_at, migration_name),
--     run the script as one simple query (one implicit transaction), then
--     applied_steps_count + 1, then finished_at; on failure only `logs` is
--     set, which leaves the row "failed";
--   * advisory lock 72707369 on the session that writes the rows, waited for
--     at most 10 s (P1002);
--   * pending = no row with rolled_back_at IS NULL; failed = finished_at and
--     rolled_back_at both NULL; resolve's preconditions and error texts.
local lfs = require "lfs"
local sys = require "dhrun.core.sys"
local db = require "dhrun.db"
local errors = require "dhrun.errors"

local M = {}

M.LOCK_KEY = 72707369
M.LOCK_TIMEOUT = "10s"
M.TABLE = "_prisma_migrations"

M.CREATE_TABLE = [[
CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);]]

local RESOLVE_URL = "https://pris.ly/d/migrate-resolve"

-- Prisma's error texts, by code (the reference's wording).
local TEXT = {
  P1002 = "The database server at `%s`:`%s` was reached but timed out.\n\nPlease try again.\n\n"
    .. "Please make sure your database server is running at `%s`:`%s`.\n\n"
    .. "Context: Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369)). "
    .. "Timeout: 10000ms. See https://pris.ly/d/migrate-advisory-locking for details.\n",
  P3005 = "The database schema is not empty. Read more about how to baseline an existing production database: "
    .. "https://pris.ly/d/migrate-baseline",
  P3008 = "The migration `%s` is already recorded as applied in the database.",
  P3009 = "migrate found failed migrations in the target database, new migrations will not be applied. "
    .. "Read more about how to resolve migration issues in a production database: " .. RESOLVE_URL,
  P3011 = "Migration `%s` cannot be rolled back because it was never applied to the database. "
    .. "Hint: did you pass in the whole migration name? (example: \"20201207184859_initial_migration\")",
  P3012 = "Migration `%s` cannot be rolled back because it is not in a failed state.",
  P3015 = "Could not find the migration file at %s. Please delete the directory or restore the migration file.",
  P3017 = "The migration %s could not be found. Please make sure that the migration exists, and that you included "
    .. "the whole name of the directory. (example: \"20201207184859_initial_migration\")",
  P3018 = "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
    .. "Read more about how to resolve migration issues in a production database: " .. RESOLVE_URL
    .. "\n\nMigration name: %s\n\nDatabase error code: %s\n\nDatabase error:\n%s\n",
  P3019 = "The datasource provider `postgresql` specified in your schema does not match the one specified in the "
    .. "migration_lock.toml, `%s`. Please remove your current migration directory and start a new migration "
    .. "history with prisma migrate dev. Read more: https://pris.ly/d/migrate-provider-switch",
}

-- Raises a Prisma error as a dhrun.Error: `message` is one line for the
-- terminal, `detail` Prisma's full text, `code` the Pxxxx code.
local function perror(code, summary, hint, fmt_args, extra)
  local text = TEXT[code]
  if fmt_args then text = string.format(text, table.unpack(fmt_args)) end
  local fields = { code = code, prisma_message = text, detail = text:gsub("%s+$", ""):gsub("\n+", " "), hint = hint }
  for k, v in pairs(extra or {}) do fields[k] = v end
  -- P1002: another run holds the migrate lock, which is "busy" (exit 3)
  errors.raise(code == "P1002" and "busy" or "prisma", summary .. " (Prisma " .. code .. ")", fields)
end
M.error = perror

---------------------------------------------------------------------------
-- Checksums

-- Node's readFile(..., 'utf-8') turns ill-formed UTF-8 into U+FFFD (one per
-- maximal ill-formed subpart, as the WHATWG decoder does); the checksum is
-- taken over that string's UTF-8 bytes.
function M.node_utf8(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local need
    local lo, hi = 0x80, 0xBF
    if c < 0x80 then
      need = 0
    elseif c >= 0xC2 and c <= 0xDF then
      need = 1
    elseif c >= 0xE0 and c <= 0xEF then
      need = 2
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      need = 3
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      need = -1
    end
    if need < 0 then
      out[#out + 1] = "\u{FFFD}"
      i = i + 1
    else
      local j, ok = i + 1, true
      for k = 1, need do
        local b = s:byte(j)
        local l, h = 0x80, 0xBF
        if k == 1 then l, h = lo, hi end
        if not b or b < l or b > h then ok = false break end
        j = j + 1
      end
      if ok then
        out[#out + 1] = s:sub(i, j - 1)
      else
        out[#out + 1] = "\u{FFFD}"
      end
      i = j
    end
  end
  return table.concat(out)
end

function M.checksum(sql)
  return sys.sha256(M.node_utf8(sql))
end

-- Old engines wrote each byte with {:x} (no zero padding).
local function legacy_checksum(sql)
  local hex = sys.sha256(M.node_utf8(sql))
  return (hex:gsub("%x%x", function(b) return string.format("%x", tonumber(b, 16)) end))
end

-- Prisma's comparison: the file, its CRLF->LF and LF->CRLF variants, each
-- hashed the way the stored checksum was written (zero-padded, or the old
-- unpadded form when the stored text is not 64 characters long).
function M.checksum_matches(sql, stored)
  if stored == nil or stored == db.null then return false end
  local hash = (#stored ~= 64 and #stored > 0) and legacy_checksum or M.checksum
  if hash(sql) == stored then return true end
  if hash((sql:gsub("\r\n", "\n"))) == stored then return true end
  return hash((sql:gsub("\n", "\r\n"))) == stored
end

---------------------------------------------------------------------------
-- The migrations directory

-- JS localeCompare (ICU root collation) for directory names: punctuation
-- sorts before digits, digits before letters, letters case-insensitively
-- with lower case first on a tie.  For Prisma's YYYYMMDDHHMMSS_name
-- directories this is the same as byte order.
local function collation_key(s)
  local primary, tertiary = {}, {}
  for i = 1, #s do
    local c = s:sub(i, i)
    local class
    if c:match("%p") or c:match("%s") then class = 1
    elseif c:match("%d") then class = 2
    elseif c:match("%a") then class = 3
    else class = 4 end
    primary[i] = string.char(64 + class) .. c:lower()
    tertiary[i] = c:match("%u") and "1" or "0"
  end
  return table.concat(primary), table.concat(tertiary)
end

function M.compare_names(a, b)
  local pa, ta = collation_key(a)
  local pb, tb = collation_key(b)
  if pa ~= pb then return pa < pb end
  if ta ~= tb then return ta < tb end
  return a < b
end

-- A whole file as bytes, or nil when it cannot be read.
local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

-- An entry's checksum is computed the first time it is read: listing the
-- directory (done before every flow, read-only ones included) hashes nothing.
local lazy_checksum = {
  __index = function(m, key)
    if key == "checksum" and m.sql then
      local sum = M.checksum(m.sql)
      rawset(m, "checksum", sum)
      return sum
    end
  end,
}

-- Lists migration directories in Prisma's order: {name=, path=, sql=|nil, checksum=}.
-- Raises a config error if the directory is missing.
function M.list(dir)
  local mode = lfs.attributes(dir, "mode")
  if mode ~= "directory" then
    errors.raise("config", "migrations directory " .. dir .. " does not exist",
      { hint = "check `migrations` in the project config (dhrun.config.lua)" })
  end
  local names = {}
  for entry in lfs.dir(dir) do
    if entry ~= "." and entry ~= ".." then
      local attr = lfs.symlinkattributes(dir .. "/" .. entry)
      if attr and attr.mode == "directory" then names[#names + 1] = entry end
    end
  end
  table.sort(names, M.compare_names)
  local list = {}
  for i, name in ipairs(names) do
    local path = dir .. "/" .. name .. "/migration.sql"
    local sql = read_file(path)
    list[i] = setmetatable({ name = name, path = path, sql = sql }, lazy_checksum)
  end
  return list
end

-- The provider named in migration_lock.toml, or nil when there is no file.
function M.lock_provider(dir)
  local text = read_file(dir .. "/migration_lock.toml")
  if not text then return nil end
  for line in text:gmatch("[^\r\n]+") do
    if line:match("^provider") then
      local v = line:gsub("^provider%s*=%s*", "")
      return (v:gsub("^%s+", ""):gsub("%s+$", ""):gsub('^"(.*)"$', "%1"))
    end
  end
  return nil
end

local function check_provider(dir)
  local p = M.lock_provider(dir)
  if p and p ~= "postgresql" then
    perror("P3019", "migration_lock.toml names provider `" .. p .. "`, not postgresql",
      "this migrations directory belongs to another database; check `migrations` in the config", { p })
  end
end

---------------------------------------------------------------------------
-- The table

function M.table_exists(conn)
  return conn:query_value([[
    SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = current_schema() AND c.relname = '_prisma_migrations'
                     AND c.relkind IN ('r', 'p'))]])
end

-- All rows, oldest first, with timestamps as UTC text (microseconds).
function M.rows(conn)
  if not M.table_exists(conn) then return nil end
  return conn:query([[
    SELECT id, checksum, migration_name, logs, applied_steps_count,
           to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS started_at,
           to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS finished_at,
           to_char(rolled_back_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS rolled_back_at
    FROM _prisma_migrations ORDER BY started_at ASC]])
end

local function is_null(v) return v == nil or v == db.null end

function M.row_state(row)
  if not is_null(row.rolled_back_at) then return "rolled_back" end
  if not is_null(row.finished_at) then return "applied" end
  return "failed"
end

-- chrono's Display of DateTime<Utc>: fraction trimmed to 0, 3 or 6 digits.
function M.chrono_time(text)
  local base, frac = text:match("^(.-)%.(%d+)$")
  if not base then return text .. " UTC" end
  frac = (frac .. "000000"):sub(1, 6)
  if frac == "000000" then return base .. " UTC" end
  if frac:sub(4) == "000" then return base .. "." .. frac:sub(1, 3) .. " UTC" end
  return base .. "." .. frac .. " UTC"
end

-- Client-side timestamp as Prisma binds it (chrono::Utc::now()).
local function now_utc()
  local t = sys.time()
  local secs = math.floor(t)
  local micros = math.floor((t - secs) * 1e6)
  return os.date("!%Y-%m-%d %H:%M:%S", secs) .. string.format(".%06d+00", micros)
end
M.now_utc = now_utc

-- The schema a Prisma URL's ?schema= names, when it does not exist yet:
-- the first entry of search_path (as `prisma migrate deploy`, deploy
-- creates it).
local function missing_schema(conn)
  if conn:query_value("SELECT current_schema()") ~= db.null then return nil end
  local path = conn:query_value("SELECT current_setting('search_path')")
  for item in (path .. ","):gmatch("%s*(.-)%s*,") do
    local name = item:match('^"(.*)"$')
    name = name and name:gsub('""', '"') or item
    if name ~= "" and name ~= "$user" then return name end
  end
end

local function initialize(conn)
  if M.table_exists(conn) then return false end
  local schema = missing_schema(conn)
  if schema then conn:exec("CREATE SCHEMA IF NOT EXISTS " .. db.quote_ident(schema)) end
  local others = conn:query([[
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r'
      AND c.relname NOT IN ('spatial_ref_sys', 'geometry_columns', '_prisma_migrations')
    LIMIT 1]])
  if #others > 0 then
    perror("P3005", "the database schema is not empty and has no _prisma_migrations table",
      "baseline it first: dhrun's resolve --applied (or prisma migrate resolve --applied) for migrations it has")
  end
  conn:exec(M.CREATE_TABLE)
  return true
end

---------------------------------------------------------------------------
-- The advisory lock

-- Runs fn() holding Prisma's advisory lock on `conn`, waiting at most 10 s
-- for it like Prisma (P1002 otherwise).  Reentrant per connection.
local held = setmetatable({}, { __mode = "k" })

function M.with_lock(conn, fn)
  if held[conn] then return fn() end
  local ok, err
  do
    local _ <close> = conn:with_setting("lock_timeout", M.LOCK_TIMEOUT)
    ok, err = pcall(conn.advisory_lock, conn, M.LOCK_KEY)
  end
  if not ok then
    if type(err) == "table" and err.sqlstate == "55P03" then
      local holder = conn:query_one([[
        SELECT a.pid, a.application_name, a.client_addr::text AS addr,
               to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') AS since
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1
        LIMIT 1]], M.LOCK_KEY)
      local who = holder and string.format(" (held by pid %s, %s, connected since %s)", holder.pid,
        holder.application_name ~= "" and holder.application_name or "no application_name", holder.since) or ""
      local info = conn:info()
      local host, port = info.host or info.hostaddr or "localhost", tostring(info.port or 5432)
      perror("P1002", "another migration run holds Prisma's advisory lock 72707369" .. who,
        "wait for the other `prisma migrate` / dhrun run to finish, then try again", { host, port, host, port })
    end
    error(err, 0)
  end
  held[conn] = true
  local results = table.pack(pcall(fn))
  held[conn] = nil
  pcall(conn.advisory_unlock, conn, M.LOCK_KEY)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- The pid of another session holding Prisma's advisory lock in this
-- database (a `prisma migrate` or dhrun run in progress), or nil.
function M.lock_holder(conn)
  local pid = conn:query_value([[
    SELECT l.pid FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid <> pg_backend_pid()
    LIMIT 1]], M.LOCK_KEY)
  if pid ~= db.null then return pid end
end

-- Runs fn() with Prisma's advisory lock let go on `conn` if this run holds
-- it, and takes it back afterwards: for a Prisma CLI run, which takes the
-- lock on a session of its own (and would otherwise wait for ours, then fail
-- with P1002).
function M.without_lock(conn, fn)
  if not held[conn] then return fn() end
  conn:advisory_unlock(M.LOCK_KEY)
  held[conn] = nil
  local results = table.pack(pcall(fn))
  local _ <close> = conn:with_setting("lock_timeout", M.LOCK_TIMEOUT)
  conn:advisory_lock(M.LOCK_KEY)
  held[conn] = true
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

---------------------------------------------------------------------------
-- Status

-- Classifies the database against the directory, the way `prisma migrate
-- status` does, plus what Prisma does not say.  Read-only: no lock, no table.
--   st.state: "pending" | "diverged" | "not_managed" | "failed" | "up_to_date"
--   st.exit:  0 for up_to_date, 1 otherwise (as Prisma)
--   st.pending, st.failed, st.applied, st.db_only, st.local_only: names
--   st.rerun:  migrations whose every row is rolled back (deploy re-runs them)
--   st.edited: applied migrations whose file changed after it was applied
--   st.missing_sql: directories without migration.sql
--   st.text:   Prisma's output text; st.notes: dhrun's extra lines
function M.status(conn, dir)
  check_provider(dir)
  local list = M.list(dir)
  local rows = M.rows(conn)
  local st = {
    migrations = list, rows = rows or {}, has_table = rows ~= nil,
    pending = {}, failed = {}, applied = {}, db_only = {}, local_only = {}, rerun = {}, edited = {},
    missing_sql = {}, notes = {},
  }
  local by_name, local_names = {}, {}
  for _, r in ipairs(st.rows) do
    by_name[r.migration_name] = by_name[r.migration_name] or {}
    table.insert(by_name[r.migration_name], r)
  end
  for _, m in ipairs(list) do
    local_names[m.name] = true
    if not m.sql then st.missing_sql[#st.missing_sql + 1] = m.name end
    local rs = by_name[m.name]
    if not rs then
      st.local_only[#st.local_only + 1] = m.name
    else
      local live, applied_row = false, nil
      for _, r in ipairs(rs) do
        local s = M.row_state(r)
        if s ~= "rolled_back" then live = true end
        if s == "applied" then applied_row = r end
      end
      if not live then st.rerun[#st.rerun + 1] = m.name end
      if applied_row then
        st.applied[#st.applied + 1] = m.name
        if m.sql and not M.checksum_matches(m.sql, applied_row.checksum) then st.edited[#st.edited + 1] = m.name end
      end
    end
  end
  local seen_db = {}
  for _, r in ipairs(st.rows) do
    if M.row_state(r) == "failed" then st.failed[#st.failed + 1] = r.migration_name end
    if not local_names[r.migration_name] and not seen_db[r.migration_name] then
      seen_db[r.migration_name] = true
      st.db_only[#st.db_only + 1] = r.migration_name
    end
  end

  -- The text `prisma migrate status` prints (stdout and stderr together,
  -- as a terminal shows them), from its "found" line on.  Its plurals are
  -- "more than one", its blank line after the "found" line is printed only
  -- when up to date, and two of its blank lines are not empty: they are
  -- indented template-literal lines.
  local out = {}
  local function add(s) out[#out + 1] = s end
  local n = #list
  if n == 0 then add("No migration found in prisma/migrations")
  else add(string.format("%d migration%s found in prisma/migrations", n, n > 1 and "s" or "")) end
  local plural = function(t, one, many) return #t > 1 and many or one end
  -- Without the table every local migration is pending (Prisma 6.19's
  -- status checks the pending branch first); "not managed" is left for a
  -- database without the table and a project without migrations.
  if #st.local_only > 0 and #st.db_only == 0 then
    st.state = "pending"
    st.pending = st.local_only
    add(plural(st.pending, "Following migration have not yet been applied:",
      "Following migrations have not yet been applied:"))
    for _, name in ipairs(st.pending) do add(name) end
    add("")
    add("To apply migrations in development run prisma migrate dev.")
    add("To apply migrations in production run prisma migrate deploy.")
  elseif #st.local_only > 0 and #st.db_only > 0 then
    st.state = "diverged"
    -- Prisma's "last common migration" is the local one just before the
    -- first local migration the database has no row for (null when that is
    -- the first one), and it lists every row whose name is not local, one
    -- line per row.
    local common
    for i, m in ipairs(list) do
      if not by_name[m.name] then common = list[i - 1] and list[i - 1].name break end
    end
    local db_rows = {}
    for _, r in ipairs(st.rows) do
      if not local_names[r.migration_name] then db_rows[#db_rows + 1] = r.migration_name end
    end
    add("Your local migration history and the migrations table from your database are different:")
    add("")
    add("The last common migration is: " .. (common or "null"))
    add("")
    add(plural(st.local_only, "The migration have not yet been applied:", "The migrations have not yet been applied:"))
    for _, name in ipairs(st.local_only) do add(name) end
    add("")
    add(plural(db_rows, "The migration from the database are not found locally in prisma/migrations:",
      "The migrations from the database are not found locally in prisma/migrations:"))
    for _, name in ipairs(db_rows) do add(name) end
  elseif not st.has_table then
    st.state = "not_managed"
    st.pending = st.local_only
    add("The current database is not managed by Prisma Migrate.")
    if list[1] then
      add("")
      add("If you want to keep the current database structure and data and create new migrations, baseline this "
        .. "database with the migration \"" .. list[1].name .. "\":")
      add("prisma migrate resolve --applied \"" .. list[1].name .. "\"")
      add("")
    else
      add("        ")
    end
    add("Read more about how to baseline an existing production database:")
    add("https://pris.ly/d/migrate-baseline")
  elseif #st.failed > 0 then
    st.state = "failed"
    add(plural(st.failed, "Following migration have failed:", "Following migrations have failed:"))
    for _, name in ipairs(st.failed) do add(name) end
    add("")
    add("During development if the failed migration(s) have not been deployed to a production database you can "
      .. "then fix the migration(s) and run prisma migrate dev.")
    add("")
    add("The failed migration(s) can be marked as rolled back or applied:")
    add("      ")
    add("- If you rolled back the migration(s) manually:")
    add("prisma migrate resolve --rolled-back \"" .. st.failed[1] .. "\"")
    add("")
    add("- If you fixed the database manually (hotfix):")
    add("prisma migrate resolve --applied \"" .. st.failed[1] .. "\"")
    add("")
    add("Read more about how to resolve migration issues in a production database:")
    add(RESOLVE_URL)
  else
    st.state = "up_to_date"
    add("")
    add("Database schema is up to date!")
  end
  st.exit = st.state == "up_to_date" and 0 or 1
  st.text = table.concat(out, "\n")

  for _, name in ipairs(st.rerun) do
    if st.state ~= "pending" then
      st.notes[#st.notes + 1] = "migration " .. name .. " is only recorded as rolled back: "
        .. "prisma migrate status does not show it, but deploy will run it again"
    end
  end
  for _, name in ipairs(st.edited) do
    st.notes[#st.notes + 1] = "migration " .. name .. " was modified after it was applied "
      .. "(its migration.sql no longer matches the recorded checksum)"
  end
  for _, name in ipairs(st.missing_sql) do
    st.notes[#st.notes + 1] = "migration directory " .. name .. " has no migration.sql (deploy will stop there: P3015)"
  end
  -- what deploy would apply: no row with rolled_back_at IS NULL
  st.to_apply = {}
  for _, m in ipairs(list) do
    local live = false
    for _, r in ipairs(by_name[m.name] or {}) do
      if M.row_state(r) ~= "rolled_back" then live = true end
    end
    if not live then st.to_apply[#st.to_apply + 1] = m end
  end
  return st
end

---------------------------------------------------------------------------
-- Deploy

-- Prisma's failed-row text (P3018) for a database error, as the native
-- schema engine writes it: the error as tokio-postgres displays it
-- ("ERROR: message", DETAIL, HINT), the "Position:" excerpt of the script for
-- an error with a position, then tokio-postgres's Debug dump of the error;
-- "none" as the code of an error without a SQLSTATE.

-- The SQLSTATE codes tokio-postgres knows by name (its Debug shows
-- SqlState(E42601); any other code is SqlState(Other("...")).
local KNOWN_SQLSTATES = {}
for code in ([[
00000 01000 0100C 01008 01003 01007 01006 01004 01P01 02000 02001 03000 08000 08003 08006 08001 08004 08007
08P01 09000 0A000 0B000 0F000 0F001 0L000 0LP01 0P000 0Z000 0Z002 20000 21000 22000 2202E 22021 22008 22012
22005 2200B 22022 22015 2201E 22014 22016 2201F 2201G 22018 22007 22019 2200D 22025 22P06 22010 22023 22013
2201B 2201W 2201X 2202H 2202G 22009 2200C 2200G 22004 22002 22003 2200H 22026 22001 22011 22027 22024 2200F
22P01 22P02 22P03 22P04 22P05 2200L 2200M 2200N 2200S 2200T 22030 22031 22032 22033 22034 22035 22036 22037
22038 22039 2203A 2203B 2203C 2203D 2203E 2203F 2203G 23000 23001 23502 23503 23505 23514 23P01 24000 25000
25001 25002 25008 25003 25004 25005 25006 25007 25P01 25P02 25P03 25P04 26000 27000 28000 28P01 2B000 2BP01
2D000 2F000 2F005 2F002 2F003 2F004 34000 38000 38001 38002 38003 38004 39000 39001 39004 39P01 39P02 39P03
3B000 3B001 3D000 3F000 40000 40002 40001 40003 40P01 42000 42601 42501 42846 42803 42P20 42P19 42830 42602
42622 42939 42804 42P18 42P21 42P22 42809 428C9 42703 42883 42P01 42P02 42704 42701 42P03 42P04 42723 42P05
42P06 42P07 42712 42710 42702 42725 42P08 42P09 42P10 42611 42P11 42P12 42P13 42P14 42P15 42P16 42P17 44000
53000 53100 53200 53300 53400 54000 54001 54011 54023 55000 55006 55P02 55P03 55P04 57000 57014 57P01 57P02
57P03 57P04 57P05 58000 58030 58P01 58P02 72000 F0000 F0001 HV000 HV005 HV002 HV010 HV021 HV024 HV007 HV008
HV004 HV006 HV091 HV00B HV00C HV00D HV090 HV00A HV009 HV014 HV001 HV00P HV00J HV00K HV00Q HV00R HV00L HV00M
HV00N P0000 P0001 P0002 P0003 P0004 XX000 XX001 XX002]]):gmatch("%w+") do
  KNOWN_SQLSTATES[code] = true
end

local SEVERITY_NAMES = { PANIC = "Panic", FATAL = "Fatal", ERROR = "Error", WARNING = "Warning", NOTICE = "Notice",
  DEBUG = "Debug", INFO = "Info", LOG = "Log" }

-- A string as Rust's {:?} writes it.
local function debug_str(v)
  local esc = { ["\t"] = "\\t", ["\r"] = "\\r", ["\n"] = "\\n", ["\0"] = "\\0", ['"'] = '\\"', ["\\"] = "\\\\" }
  return '"' .. tostring(v):gsub('[%c"\\]', function(c)
    return esc[c] or string.format("\\u{%x}", c:byte())
  end) .. '"'
end

local function debug_opt(v, fmt)
  if v == nil then return "None" end
  return "Some(" .. (fmt and fmt(v) or debug_str(v)) .. ")"
end

local function db_error_debug(e, sqlstate, message)
  local severity = e.severity_local or e.severity or "ERROR"
  local position = e.position and ("Original(" .. e.position .. ")")
    or e.internal_position and string.format("Internal { position: %d, query: %s }", e.internal_position,
      debug_str(e.internal_query or ""))
  local code = KNOWN_SQLSTATES[sqlstate] and ("E" .. sqlstate) or ("Other(" .. debug_str(sqlstate) .. ")")
  return table.concat({
    "DbError { severity: " .. debug_str(severity),
    "parsed_severity: " .. debug_opt(e.severity and SEVERITY_NAMES[e.severity], tostring),
    "code: SqlState(" .. code .. ")",
    "message: " .. debug_str(message),
    "detail: " .. debug_opt(e.detail), "hint: " .. debug_opt(e.hint),
    "position: " .. (position and ("Some(" .. position .. ")") or "None"),
    "where_: " .. debug_opt(e.context), "schema: " .. debug_opt(e.schema), "table: " .. debug_opt(e.table),
    "column: " .. debug_opt(e.column), "datatype: " .. debug_opt(e.datatype),
    "constraint: " .. debug_opt(e.constraint), "file: " .. debug_opt(e.source_file),
    "line: " .. debug_opt(e.source_line, tostring), "routine: " .. debug_opt(e.source_function),
  }, ", ") .. " }"
end

-- The "Position:" excerpt: the script's line holding the error position (a
-- byte count over the script's lines, each counted with one newline and
-- without a CR, as the engine counts) after the five lines before it, with
-- their numbers in bold and the line itself in red.  A slot before line 1
-- shows as line 0, as in the engine.
local function position_excerpt(script, position)
  local lines = {}
  for line in (script .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  if script:sub(-1) == "\n" or script == "" then lines[#lines] = nil end
  local bytes = 0
  for i, line in ipairs(lines) do
    line = line:gsub("\r$", "")
    bytes = bytes + #line + 1
    if position <= bytes then
      local numbered = {}
      for back = 5, 1, -1 do
        local number = i - back
        if number >= 0 then
          local prev = number >= 1 and lines[number]:gsub("\r$", "") or ""
          numbered[#numbered + 1] = string.format("\27[1m%3d\27[0m%s%s", number, prev == "" and "" or " ", prev)
        end
      end
      return string.format("\n\nPosition:\n%s\n\27[1m%3d\27[1;31m %s\27[0m", table.concat(numbered, "\n"), i, line)
    end
  end
  return ""
end

local function failure_logs(err, script)
  local e = type(err) == "table" and err or { message = tostring(err) }
  local primary = (e.message or tostring(err)):gsub("^%[[%w]+%] ", "")
  local sqlstate = e.sqlstate
  if not sqlstate or e.kind ~= "db" then
    return primary, "none", primary
  end
  local dbtext = (e.severity_local or e.severity or "ERROR") .. ": " .. primary
  if e.detail then dbtext = dbtext .. "\nDETAIL: " .. e.detail end
  if e.hint then dbtext = dbtext .. "\nHINT: " .. e.hint end
  if e.position then dbtext = dbtext .. position_excerpt(script, e.position) end
  return primary, sqlstate, dbtext .. "\n\n" .. db_error_debug(e, sqlstate, primary)
end
M.failure_logs = failure_logs

-- The tracing span trace the native engine appends to the failed row's
-- logs: where apply_migrations ran the script (the frames and lines of
-- Prisma 6.19's schema engine).
local function span_trace(name)
  local q = debug_str(name)
  return table.concat({
    "   0: sql_schema_connector::apply_migration::apply_script",
    "           with migration_name=" .. q,
    "             at schema-engine/connectors/sql-schema-connector/src/apply_migration.rs:113",
    "   1: schema_commands::commands::apply_migrations::Applying migration",
    "           with migration_name=" .. q,
    "             at schema-engine/commands/src/commands/apply_migrations.rs:95",
    "   2: schema_core::state::ApplyMigrations",
    "             at schema-engine/core/src/state.rs:238",
  }, "\n")
end

local function script_failed(conn, m, err, id, started_at)
  -- The connection is gone (server restart, pg_terminate_backend): the
  -- server rolled back whatever was open and no row can be written now, so
  -- the cause itself is the error, not the INSERT that would fail next.
  if conn:status() == "unknown" then error(err, 0) end
  local primary, sqlstate, dbtext = failure_logs(err, m.sql)
  local text = string.format(TEXT.P3018, m.name, sqlstate, dbtext)
  if not id then
    -- transactional mode rolled everything back: leave the row Prisma
    -- would have left (inserted when the script started, then logs set;
    -- finished_at NULL = failed)
    id = sys.uuid4()
    conn:exec("INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES ($1, $2, $3, $4)",
      id, m.checksum, started_at or now_utc(), m.name)
  end
  conn:try_exec("UPDATE _prisma_migrations SET logs = $1 WHERE id = $2", text .. "\n" .. span_trace(m.name), id)
  perror("P3018", "migration " .. m.name .. " failed: " .. primary,
    "fix the cause, then mark it rolled back (dhrun resolve --rolled-back " .. m.name
      .. ") and deploy again; for the tenancy NOT NULL migration, dhrun recover does all of it",
    { m.name, sqlstate, dbtext },
    { migration = m.name, sqlstate = sqlstate ~= "none" and sqlstate or nil, row_id = id })
end

-- Scripts that cannot run inside a transaction block.
local function needs_autocommit(sql)
  local u = sql:upper()
  return u:find("CONCURRENTLY", 1, true) or u:find("%f[%w]BEGIN%s*;") or u:find("%f[%w]COMMIT%s*;")
end

-- Applies one migration.  The caller holds the advisory lock.
--
-- Default (transactional) mode: the row and the script commit together,
-- with `lock_timeout` set for the transaction and jittered retries when a
-- lock is not granted in time, so a migration never waits in the lock queue
-- for long and a lock timeout records nothing.  A script that fails leaves
-- exactly Prisma's failed row.  A migration that cannot run in a
-- transaction (CREATE INDEX CONCURRENTLY, its own BEGIN/COMMIT) is applied
-- the way Prisma does it: row inserted first, script as one simple query.
local function apply_one(conn, m, opts)
  if opts.exact or needs_autocommit(m.sql) then
    local id = sys.uuid4()
    conn:exec("INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES ($1, $2, $3, $4)",
      id, m.checksum, now_utc(), m.name)
    if opts.on_apply then opts.on_apply(m) end
    local ok, err = pcall(conn.exec_script, conn, m.sql)
    if not ok then
      if errors.is(err, "interrupted") then error(err, 0) end
      script_failed(conn, m, err, id)
    end
    conn:exec("UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1 WHERE id = $1", id)
    conn:exec("UPDATE _prisma_migrations SET finished_at = $1 WHERE id = $2", now_utc(), id)
    return id
  end
  local announced, started_at = false, nil
  local function apply(c)
    local id = sys.uuid4()
    started_at = now_utc()
    c:exec("INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES ($1, $2, $3, $4)",
      id, m.checksum, started_at, m.name)
    if opts.on_apply and not announced then announced = true; opts.on_apply(m) end
    c:exec_script(m.sql)
    c:exec("UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1 WHERE id = $1", id)
    c:exec("UPDATE _prisma_migrations SET finished_at = $1 WHERE id = $2", now_utc(), id)
    return id
  end
  local ok, res
  if opts.lock_timeout then
    -- A lock not granted in time, or a deadlock with the application's
    -- writes: the transaction rolled back whole, nothing is recorded; retry.
    local tries = opts.lock_retries or 10
    ok, res = pcall(db.retry, conn, apply, {
      lock_timeout = opts.lock_timeout, retries = tries - 1, what = "migration " .. m.name, log = opts.log,
      relations = opts.relations, lockmode = opts.relations and "AccessExclusiveLock" or nil,
      outwait_autovacuum = opts.outwait_autovacuum,
      on_retry = opts.on_retry and function(attempt, _, delay) opts.on_retry(m, attempt, delay) end,
      message = function(i)
        return string.format("migration %s: a table it changes stayed locked by other sessions (%d tries, "
          .. "lock_timeout %s each); nothing was applied", m.name, i.attempts, i.lock_timeout)
      end,
    })
    if not ok and errors.is(res, "lock") then error(res, 0) end
  else
    ok, res = pcall(conn.transaction, conn, apply)
  end
  if ok then return res end
  if errors.is(res, "interrupted") then error(res, 0) end
  script_failed(conn, m, res, nil, started_at)
end

local function failed_rows_error(rows)
  local lines, names = {}, {}
  for _, r in ipairs(rows) do
    if M.row_state(r) == "failed" then
      lines[#lines + 1] = "The `" .. r.migration_name .. "` migration started at " .. M.chrono_time(r.started_at)
        .. " failed"
      names[#names + 1] = r.migration_name
    end
  end
  if #names == 0 then return end
  local text = TEXT.P3009 .. "\n" .. table.concat(lines, "\n") .. "\n"
  errors.raise("prisma", "migration " .. names[1] .. " failed earlier; new migrations will not be applied "
    .. "(Prisma P3009)", {
      code = "P3009", prisma_message = text, detail = table.concat(lines, "; "), failed = names,
      hint = "run `dhrun recover` (it resolves the failed migration and redeploys), "
        .. "or prisma migrate resolve --rolled-back \"" .. names[1] .. "\"",
    })
end

-- Applies pending migrations like `prisma migrate deploy`.
--   opts.dry_run: apply nothing, return the plan
--   opts.only:    apply only migrations whose name is in this set/list
--   opts.until_name: stop after applying this migration
--   opts.on_apply(m): called before each script runs
--   opts.lock_timeout, opts.lock_retries, opts.log: apply each migration in
--     one transaction under this lock_timeout, retried (db.retry)
--   opts.relations, opts.outwait_autovacuum: the tables the migrations
--     lock, named when a lock wait fails; with outwait_autovacuum each
--     attempt first outwaits an autovacuum on them (db.retry)
-- Returns {applied = {names}, pending = {migrations}, text = Prisma's output}.
function M.deploy(conn, dir, opts)
  opts = opts or {}
  check_provider(dir)
  local list = M.list(dir)
  local function plan()
    local rows = M.rows(conn) or {}
    failed_rows_error(rows)
    local live = {}
    for _, r in ipairs(rows) do
      if is_null(r.rolled_back_at) then live[r.migration_name] = true end
    end
    local pending = {}
    for _, m in ipairs(list) do
      if not live[m.name] then pending[#pending + 1] = m end
      if opts.until_name and m.name == opts.until_name then break end
    end
    return pending
  end
  if opts.dry_run then
    return { applied = {}, pending = plan(), dry_run = true }
  end
  return M.with_lock(conn, function()
    initialize(conn)
    local pending = plan()
    local applied = {}
    for _, m in ipairs(pending) do
      if not m.sql then
        perror("P3015", "migration " .. m.name .. " has no migration.sql",
          "restore " .. m.path .. " or delete the directory", { m.path })
      end
      apply_one(conn, m, opts)
      applied[#applied + 1] = m.name
    end
    local text
    if #applied == 0 then
      text = "No pending migrations to apply."
    else
      local t = { "The following migration(s) have been applied:", "", "migrations/" }
      for _, name in ipairs(applied) do
        t[#t + 1] = "  └─ " .. name .. "/"
        t[#t + 1] = "    └─ migration.sql"
      end
      t[#t + 1] = "      " -- an indented line of Prisma's template
      t[#t + 1] = "All migrations have been successfully applied."
      text = table.concat(t, "\n")
    end
    return { applied = applied, pending = pending, text = text }
  end)
end

---------------------------------------------------------------------------
-- Resolve

-- `prisma migrate resolve --rolled-back NAME`
function M.resolve_rolled_back(conn, name)
  assert(type(name) == "string" and name ~= "", "resolve_rolled_back: migration name required")
  return M.with_lock(conn, function()
    if not M.table_exists(conn) then
      errors.raise("prisma", "Invariant violation: called markMigrationRolledBack on a database without "
        .. "migrations table.", { hint = "this database was never migrated by Prisma or dhrun" })
    end
    local rows = conn:query("SELECT id, finished_at, rolled_back_at FROM _prisma_migrations "
      .. "WHERE migration_name = $1", name)
    if #rows == 0 then
      perror("P3011", "migration " .. name .. " was never applied to this database, so it cannot be rolled back",
        "check the name: dhrun status lists the migrations", { name })
    end
    local failed = 0
    for _, r in ipairs(rows) do
      if is_null(r.finished_at) and is_null(r.rolled_back_at) then failed = failed + 1 end
    end
    local all_finished = true
    for _, r in ipairs(rows) do
      if is_null(r.finished_at) then all_finished = false end
    end
    if all_finished then
      perror("P3012", "migration " .. name .. " is not in a failed state, so it cannot be marked rolled back",
        "only failed migrations can be rolled back; to undo an applied one use the rollback flow", { name })
    end
    conn:exec("UPDATE _prisma_migrations SET rolled_back_at = $1 "
      .. "WHERE migration_name = $2 AND finished_at IS NULL AND rolled_back_at IS NULL", now_utc(), name)
    return { marked = failed, text = "\nMigration " .. name .. " marked as rolled back." }
  end)
end

-- `prisma migrate resolve --applied NAME`
function M.resolve_applied(conn, dir, name)
  assert(type(name) == "string" and name ~= "", "resolve_applied: migration name required")
  check_provider(dir)
  return M.with_lock(conn, function()
    local m
    for _, x in ipairs(M.list(dir)) do
      if x.name == name and x.sql then m = x end
    end
    if not m then
      perror("P3017", "migration " .. name .. " was not found in " .. dir,
        "pass the whole directory name, e.g. 20201207184859_initial_migration", { name })
    end
    if not M.table_exists(conn) then conn:exec(M.CREATE_TABLE) end
    local done = conn:query_value("SELECT count(*) FROM _prisma_migrations "
      .. "WHERE migration_name = $1 AND finished_at IS NOT NULL", name)
    if done > 0 then
      perror("P3008", "migration " .. name .. " is already recorded as applied", nil, { name })
    end
    local now = now_utc()
    conn:exec("UPDATE _prisma_migrations SET rolled_back_at = $1 "
      .. "WHERE migration_name = $2 AND finished_at IS NULL AND rolled_back_at IS NULL", now, name)
    local id = sys.uuid4()
    conn:exec("INSERT INTO _prisma_migrations (id, checksum, logs, started_at, finished_at, migration_name) "
      .. "VALUES ($1, $2, '', $3, $3, $4)", id, m.checksum, now, name)
    return { id = id, text = "\nMigration " .. name .. " marked as applied." }
  end)
end

return M
