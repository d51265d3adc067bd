-- dhrun.events: what happened during a run, as it happens, for the release
-- report (--report-html, --report-json): backfill batches, lock waits and
-- their blockers, DDL statements and how long each held its lock.
--
--   events.emit(kind, fields)   -- a no-op unless a run is recording
--   events.record(fn)           -- the runner: fn(event) receives each one
--
-- Each event gets `t`, seconds since the recording started.  Kinds the
-- stdlib emits: "batch" {table=, pass=, scanned=, updated=, batch_size=,
-- seconds=}, "lock_wait" {what=, attempt=, retries=, delay=, error=,
-- blockers=}, "ddl" {table=, step=, sql=, lockmode=, seconds=, attempts=}, "throttle" {table=,
-- signal=, value=, limit=, text=, seconds=} (a backfill paused by a health signal).
local sys = require "dhrun.core.sys"

local events = {}

local sink, started

function events.record(fn)
  sink, started = fn, fn and sys.now() or nil
end

-- Seconds since the recording started (to stamp an event's start
-- yourself: emit(kind, {t = ..., seconds = ...})).
function events.now()
  return started and sys.now() - started or 0
end

function events.emit(kind, fields)
  if not sink then return end
  local e = { kind = kind, t = sys.now() - started }
  for k, v in pairs(fields or {}) do e[k] = v end
  local ok, err = pcall(sink, e)
  if not ok then io.stderr:write("dhrun: events: ", tostring(err), "\n") end
end

function events.recording()
  return sink ~= nil
end

return events
