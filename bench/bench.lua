-- bench/bench.lua [b1] [b2] [b3] [b4]: runs the benchmarks (all by default)
-- and reports them: a table `benchmark | measured | baseline | ratio |
-- target | pass` on stdout, and RESULTS.md with the machine, the settings and
-- each benchmark's details.  Started by bench/run.sh (which starts the
-- throwaway PostgreSQL); see there for the environment it expects.
--
-- A full run (every benchmark, default BENCH_SCALE) writes bench/RESULTS.md;
-- any other run writes bench/out/RESULTS.md, so the committed results are
-- always those of one complete run.
package.path = "bench/?.lua;" .. package.path
local lib = require "benchlib"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"

local format, concat = string.format, table.concat

local ALL = { "b1", "b2", "b3", "b4" }
local MODULES = { b1 = "b1_backfill", b2 = "b2_not_null", b3 = "b3_status", b4 = "b4_startup" }

-- Why a target is missed, where the cause is known (shown under the table
-- in RESULTS.md for rows that miss).
local WHY = require "why"

local names = { ... }
if #names == 0 then names = ALL end
for _, n in ipairs(names) do
  if not MODULES[n] then error(format("unknown benchmark '%s' (choose from %s)", n, concat(ALL, ", ")), 0) end
end
local complete = #names == #ALL and lib.full_scale

---------------------------------------------------------------------------
-- The machine and the server, as RESULTS.md describes them

local function first_line(argv)
  local r = process.run(argv)
  return r.ok and (r.stdout .. r.stderr):match("[^\n]+") or "?"
end

local function machine()
  local cpu = (lib.read("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
  local mem = tonumber((lib.read("/proc/meminfo") or ""):match("MemTotal:%s*(%d+)")) or 0
  local conn <close> = lib.connect("postgres")
  local settings = {}
  for _, r in ipairs(conn:query([[SELECT name, setting, coalesce(unit, '') AS unit FROM pg_settings
      WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_level',
                     'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'work_mem', 'maintenance_work_mem',
                     'jit', 'effective_io_concurrency', 'random_page_cost', 'log_lock_waits', 'deadlock_timeout')
      ORDER BY name]])) do
    local v = r.setting .. (r.unit ~= "" and (" × " .. r.unit) or "")
    if r.name == "shared_buffers" then v = format("%d MB", tonumber(r.setting) * 8 // 1024) end
    if r.name == "max_wal_size" then v = format("%d MB", tonumber(r.setting)) end
    settings[#settings + 1] = format("%s = %s", r.name, v)
  end
  local prisma = (lib.read("bench/prisma-baseline/node_modules/@prisma/client/package.json") or "")
    :match('"version"%s*:%s*"([^"]+)"') or "not installed"
  return {
    cpu = format("%s, %s cores (nproc)", cpu, first_line({ "nproc" })),
    memory = format("%.1f GiB", mem / 1024 / 1024),
    kernel = first_line({ "uname", "-sr" }),
    postgres = conn:query_value("SELECT version()"),
    settings = concat(settings, ", "),
    tools = format("dhrun %s; %s; node %s; Prisma Client %s; %s; %s", first_line({ lib.dhrun, "-V" }):match("[%d.]+")
      or "?", first_line({ "lua5.4", "-v" }):match("Lua [%d.]+") or "lua5.4", first_line({ "node", "--version" }),
      prisma, first_line({ lib.pgbin .. "/pgbench", "--version" }), first_line({ "hyperfine", "--version" })),
  }
end

---------------------------------------------------------------------------
-- The table

local function ratio_text(r)
  if r == nil or r ~= r or r == math.huge or r == -math.huge then return "—" end
  if r >= 100 then return format("%.0f×", r) end
  if r >= 10 then return format("%.1f×", r) end
  if r >= 0.1 then return format("%.2f×", r) end
  return format("%.3g×", r)
end

local function pass_text(row)
  if row.pass == nil then return "info" end
  return row.pass and "yes" or "NO"
end

local function cell(s) return (tostring(s):gsub("|", "\\|")) end

local function table_md(rows)
  local out = { "| benchmark | measured | baseline | ratio | target | pass |", "|---|---|---|---|---|---|" }
  for _, r in ipairs(rows) do
    out[#out + 1] = format("| %s | %s | %s | %s | %s | %s |", cell(r.bench), cell(r.measured), cell(r.baseline),
      ratio_text(r.ratio), cell(r.target), pass_text(r))
  end
  return concat(out, "\n")
end

---------------------------------------------------------------------------

local function loadavg() return ((lib.read("/proc/loadavg") or "?"):match("^(%S+)")) end
local load_start = loadavg()
local started = sys.now()
local ctx = {}
local rows, sections, errors = {}, {}, 0
lib.say("benchmarks: %s at BENCH_SCALE=%s", concat(names, " "), lib.fmt_int(lib.scale))
local info = machine()
for _, n in ipairs(names) do
  local mod = require(MODULES[n])
  local t0 = sys.now()
  local ok, r, details = pcall(mod.run, ctx)
  if ok then
    for _, row in ipairs(r) do rows[#rows + 1] = row end
    sections[#sections + 1] = { title = mod.title, text = details, seconds = sys.now() - t0 }
  else
    errors = errors + 1
    local msg = type(r) == "table" and tostring(r.message or r) or tostring(r)
    lib.warn("%s failed: %s", mod.title, msg)
    rows[#rows + 1] = { bench = mod.title .. ": ERROR", measured = msg:gsub("\n.*", ""), baseline = "", target = "",
                        pass = false }
    sections[#sections + 1] = { title = mod.title, text = "ERROR: " .. msg, seconds = sys.now() - t0 }
  end
end
local total = sys.now() - started

local tbl = table_md(rows)
print()
print(tbl)
print()

-- RESULTS.md
local md = {}
local function add(fmt, ...) md[#md + 1] = select("#", ...) > 0 and format(fmt, ...) or fmt end
add("# Benchmark results")
add("")
add("Written by `make bench` (`bench/run.sh`); every number below comes from one run on the machine described, "
  .. "with dhrun and its baselines measured in the same run on the same data. Re-run to refresh: the file is "
  .. "generated.")
add("")
add("- Run: %s, benchmarks %s, BENCH_SCALE = %s MetricDaily rows, %.1f min in all; load average %s at the "
  .. "start, %s at the end.", os.date("!%Y-%m-%d %H:%M UTC"), concat(names, ", "), lib.fmt_int(lib.scale), total / 60,
  load_start, loadavg())
add("- Each strategy runs once, except where a row says \"median of\" or \"pairs\" (runs back to back with their "
  .. "baseline; the ratio is the median of the pairs' ratios). The whole suite must fit in 20 minutes. "
  .. "Single runs of one configuration moved by up to ±20 % on this 2-core VM, and latency maxima move more. "
  .. "Read the ratios, not the third digit.")
add("- Machine: %s; %s memory; %s.", info.cpu, info.memory, info.kernel)
add("- PostgreSQL: %s, a throwaway cluster (tools/pgtemp.sh, PGTEMP_DURABLE=1), local socket.", info.postgres)
add("- Settings: %s.", info.settings)
add("- Tools: %s.", info.tools)
add("- Seeding: %s.", (function()
  local t = {}
  for name, s in pairs(lib.setup_seconds) do t[#t + 1] = format("%s %.0f s", name, s) end
  table.sort(t)
  return #t > 0 and concat(t, ", ") or "none"
end)())
add("")
add("## Summary")
add("")
add(tbl)
add("")
-- By how much a row misses: the module's own words (absolute targets), or
-- from the ratio and a "≥ N×" / "≤ N×" target.
local function shortfall(r)
  if r.miss then return r.miss end
  local ge, le = r.target:match("≥ ([%d.]+)×"), r.target:match("≤ ([%d.]+)×")
  if ge and r.ratio then
    return format("%s where ≥ %s× is the target: %.0f %% short", ratio_text(r.ratio), ge,
      (1 - r.ratio / tonumber(ge)) * 100)
  elseif le and r.ratio then
    return format("%s where ≤ %s× is the target: %.0f %% over", ratio_text(r.ratio), le,
      (r.ratio / tonumber(le) - 1) * 100)
  end
  return format("measured %s (baseline %s), target %s", r.measured, r.baseline, r.target)
end

local misses, told = {}, {}
for _, r in ipairs(rows) do
  if r.pass == false then
    local why = WHY[r.key]
    if why and told[why] then
      why = "Same cause as above."
    elseif why then
      told[why] = true
    end
    misses[#misses + 1] = format("- **%s**: %s.%s", r.bench, shortfall(r), why and (" " .. why) or "")
  end
end
if #misses > 0 then
  add("### Targets missed, by how much and why")
  add("")
  for _, m in ipairs(misses) do add(m) end
  add("")
end
for _, s in ipairs(sections) do
  add("## %s (%.0f s)", s.title, s.seconds)
  add("")
  add(s.text)
  add("")
end
local path = complete and "bench/RESULTS.md" or (lib.out .. "/RESULTS.md")
lib.write(path, concat(md, "\n"))
-- pictures the sections refer to (ctx.files: name -> content), next to it
for name, content in pairs(ctx.files or {}) do lib.write(path:gsub("[^/]*$", "") .. name, content) end
lib.ok("results written to %s (%.1f min)", path, total / 60)
return errors == 0 and 0 or 1
