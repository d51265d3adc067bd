-- dhrun.journal: the record of every flow run, kept in the target database
-- (schema "dhrun", out of Prisma's way).  It is the release audit trail —
-- who ran what, where, with which dhrun version and app revision, each
-- step's outcome and timing, the `_prisma_migrations` rows written — and
-- what `--resume` continues from.
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"
local db = require "dhrun.db"
local report = require "dhrun.report"

local M = {}

M.SCHEMA_SQL = [[
CREATE SCHEMA IF NOT EXISTS dhrun;
CREATE TABLE IF NOT EXISTS dhrun.runs (
  id            bigserial PRIMARY KEY,
  flow          text NOT NULL,
  project       text,
  status        text NOT NULL DEFAULT 'running',
  started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at   timestamptz,
  user_name     text,
  host          text,
  pid           integer,
  dhrun_version text,
  git_revision  text,
  args          text[],
  exit_code     integer,
  message       text,
  resumed_from  bigint,
  backend_pid   integer
);
CREATE TABLE IF NOT EXISTS dhrun.steps (
  run_id      bigint NOT NULL REFERENCES dhrun.runs(id) ON DELETE CASCADE,
  seq         integer NOT NULL,
  name        text NOT NULL,
  status      text NOT NULL,
  reason      text,
  started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at timestamptz,
  duration_ms integer,
  detail      jsonb,
  PRIMARY KEY (run_id, seq)
);]]

function M.exists(conn)
  return conn:query_value("SELECT to_regclass('dhrun.steps') IS NOT NULL")
end

function M.ensure(conn)
  if M.exists(conn) then return end
  local ok, err = pcall(conn.exec_script, conn, M.SCHEMA_SQL)
  if not ok then
    if type(err) == "table" and err.sqlstate == "42501" then
      errors.config("dhrun cannot create its journal (schema dhrun): " .. tostring(err.message),
        "grant CREATE on the database to this user once, or create schema dhrun owned by it "
          .. "(CREATE SCHEMA dhrun AUTHORIZATION <user>)")
    end
    error(err, 0)
  end
end

-- Runs left 'running' by a dhrun that died (kill -9, lost connection).  The
-- caller holds the release lock, so no such run can still be alive.
function M.close_abandoned(conn)
  return conn:exec([[UPDATE dhrun.runs SET status = 'abandoned', finished_at = clock_timestamp(),
    message = coalesce(message, 'dhrun stopped without closing this run (killed, or its connection was lost)')
    WHERE status = 'running']])
end

function M.begin_run(conn, info)
  return conn:query_value([[INSERT INTO dhrun.runs (flow, project, user_name, host, pid, dhrun_version, git_revision,
      args, resumed_from, backend_pid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9, pg_backend_pid())
    RETURNING id]],
    info.flow, info.project, sys.user(), sys.hostname(), sys.pid(), sys.options().version or "?",
    info.git_revision, db.text_array(info.args or {}), info.resumed_from)
end

function M.step_start(conn, run_id, seq, name)
  conn:exec([[INSERT INTO dhrun.steps (run_id, seq, name, status) VALUES ($1, $2, $3, 'running')
    ON CONFLICT (run_id, seq) DO UPDATE SET status = 'running', started_at = clock_timestamp(),
      finished_at = NULL, reason = NULL, detail = NULL]], run_id, seq, name)
end

function M.step_end(conn, run_id, seq, status, reason, detail, duration)
  local ok, json = true, nil
  if detail ~= nil then ok, json = pcall(report.encode, detail) end
  if not ok then json = nil end
  conn:exec([[UPDATE dhrun.steps SET status = $3, reason = $4, detail = $5::jsonb, finished_at = clock_timestamp(),
      duration_ms = $6 WHERE run_id = $1 AND seq = $2]],
    run_id, seq, status, reason and sys.redact(reason), json, duration and math.floor(duration * 1000 + 0.5))
end

function M.end_run(conn, run_id, status, exit_code, message)
  conn:exec([[UPDATE dhrun.runs SET status = $2, exit_code = $3, message = $4, finished_at = clock_timestamp()
    WHERE id = $1]], run_id, status, exit_code, message and sys.redact(message))
end

-- The newest run of `flow` and its steps, or nil.
function M.last_run(conn, flow)
  if not M.exists(conn) then return nil end
  local run = conn:query_one([[SELECT id, status, user_name, host, array_to_json(args)::text AS args_json,
      to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"') AS started
    FROM dhrun.runs WHERE flow = $1 ORDER BY id DESC LIMIT 1]], flow)
  if not run then return nil end
  run.steps = conn:query("SELECT seq, name, status, reason FROM dhrun.steps WHERE run_id = $1 ORDER BY seq", run.id)
  return run
end

-- The run whose session holds advisory lock `key` now (for the lock-busy
-- message), or nil: the holder is found in pg_locks, not guessed from rows
-- a killed run may have left 'running'.
function M.holder(conn, key)
  if not M.exists(conn) then return nil end
  return conn:query_one([[SELECT r.id, r.flow, r.user_name, r.host, r.pid,
      to_char(r.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"') AS started
    FROM pg_locks l JOIN dhrun.runs r ON r.backend_pid = l.pid AND r.status = 'running'
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database
      WHERE datname = current_database()) AND l.classid = ($1::bigint >> 32)::oid
      AND l.objid = ($1::bigint & 4294967295)::oid
      AND l.objsubid = 1
    ORDER BY r.id DESC LIMIT 1]], key)
end

return M
