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

---------------------------------------------------------------------------
-- A bounded record of a run's events, for the reports: memory does not grow
-- with the length of the run.  Batch events are kept per series (table,
-- pass, worker) at full detail up to `per_series` of them; past twice that,
-- neighbours are merged in pairs and later batches are added to the newest
-- entry until it covers as many, so a long backfill keeps between
-- `per_series` and twice as many entries, all of the same width.  A
-- merged entry has `batches` (how many), `t` of its first batch and `t_last`
-- of its last, sums of scanned, updated and seconds (so scanned / seconds is
-- still its rate), batch_size as the mean with batch_size_min and _max,
-- commit as the longest, and cursor, limit and eta of its last batch.
-- Other events are kept as they come, the first `limit` of each kind; the
-- rest are counted in dropped().  DDL events and lock waits that gave up are
-- always kept (a run has few, and the report's verdicts rest on them).
--
--   local c = events.collector()
--   events.record(function(e) c:add(e) end)
--   ... c:list() -- the kept events in time order

local Collector = {}
Collector.__index = Collector

function events.collector(opts)
  opts = opts or {}
  return setmetatable({ per_series = opts.per_series or 100, limit = opts.limit or 1000, series = {},
    order = {}, other = {}, kinds = {}, dropped_n = 0, seq = 0, rank = setmetatable({}, { __mode = "k" }) },
    Collector)
end

local function merge(a, b)
  local na, nb = a.batches or 1, b.batches or 1
  local size_a, size_b = a.batch_size or 0, b.batch_size or 0
  a.batch_size_min = math.min(a.batch_size_min or size_a, b.batch_size_min or size_b)
  a.batch_size_max = math.max(a.batch_size_max or size_a, b.batch_size_max or size_b)
  a.batch_size = math.floor((size_a * na + size_b * nb) / (na + nb) + 0.5)
  a.batches, a.t_last = na + nb, b.t_last or b.t
  for _, k in ipairs { "scanned", "updated", "seconds" } do
    if a[k] or b[k] then a[k] = (a[k] or 0) + (b[k] or 0) end
  end
  if a.commit or b.commit then a.commit = math.max(a.commit or 0, b.commit or 0) end
  a.synchronous = a.synchronous or b.synchronous or nil
  a.batch, a.cursor, a.limit, a.eta = b.batch, b.cursor, b.limit, b.eta
  return a
end

function Collector:add(e)
  self.seq = self.seq + 1
  if e.kind ~= "batch" then
    local n = (self.kinds[e.kind] or 0) + 1
    self.kinds[e.kind] = n
    if n > self.limit and e.kind ~= "ddl" and not e.gave_up then
      self.dropped_n = self.dropped_n + 1
    else
      self.rank[e] = self.seq -- ties in t keep their order
      self.other[#self.other + 1] = e
    end
    return
  end
  self.rank[e] = self.seq
  local key = table.concat({ tostring(e.table), tostring(e.pass), tostring(e.worker) }, "\0")
  local s = self.series[key]
  if not s then
    s = { width = 1 }
    self.series[key] = s
    self.order[#self.order + 1] = key
  end
  -- every entry covers `width` batches (the newest one up to that): merging
  -- in pairs then doubles the width for the whole series alike
  local last = s[#s]
  if last and (last.batches or 1) < s.width then
    merge(last, e)
    return
  end
  s[#s + 1] = e
  if #s >= 2 * self.per_series then
    local out = { width = s.width * 2 }
    for i = 1, #s - 1, 2 do out[#out + 1] = merge(s[i], s[i + 1]) end
    if #s % 2 == 1 then out[#out + 1] = s[#s] end
    self.series[key] = out
  end
end

-- How many events past `limit` were not kept.
function Collector:dropped() return self.dropped_n end

-- The kept events in time order (ties in the order they came).
function Collector:list()
  local out = {}
  for _, e in ipairs(self.other) do out[#out + 1] = e end
  for _, key in ipairs(self.order) do
    for _, e in ipairs(self.series[key]) do out[#out + 1] = e end
  end
  local rank = self.rank
  table.sort(out, function(a, b)
    if (a.t or 0) ~= (b.t or 0) then return (a.t or 0) < (b.t or 0) end
    return rank[a] < rank[b]
  end)
  return out
end

return events
