-- B4: start-up cost (`dhrun -e ''` vs `lua5.4 -e ''`, hyperfine) and the
-- smoke flow's wall time against the example app, running on the released
-- full-scale database.
local lib = require "benchlib"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"

local format = string.format

local M = { name = "b4", title = "B4 start-up and smoke" }

local APP = "examples/datahub"
-- The smoke flow is the example's own: found through DHRUN_PATH.
local SCRIPTS = APP .. "/scripts"
local SMOKE_RUNS = 3

-- The example app on a free port; -> proc, base URL, log path.
local function start_app(dbname)
  local dir = lib.mkdir_p(lib.out .. "/app")
  local log_path = dir .. "/app.log"
  os.remove(dir .. "/stdout")
  local proc = process.spawn({ "node", "dist/src/server.js" }, {
    cwd = APP,
    env = { DATABASE_URL = lib.url(dbname), PORT = "0", HOST = "127.0.0.1", APP_LOG = log_path },
    stdout = dir .. "/stdout", stderr = dir .. "/stderr",
  })
  local deadline = sys.now() + 30
  while true do
    local base = (lib.read(dir .. "/stdout") or ""):match("listening on (http://127%.0%.0%.1:%d+)")
    if base then return proc, base, log_path end
    if not proc:running() or sys.now() > deadline then
      proc:stop()
      error("the example app did not start: " .. (lib.read(dir .. "/stderr") or ""):sub(-500), 0)
    end
    sys.sleep(0.05)
  end
end

-- Why smoke cannot run here, or nil.
local function smoke_missing()
  if not lib.exists(SCRIPTS .. "/smoke.lua") then return SCRIPTS .. "/smoke.lua missing" end
  if not lib.exists(APP .. "/node_modules") then
    return "the example app's packages are not installed (make app-deps)"
  end
end

local function smoke(ctx)
  local missing = smoke_missing()
  if missing then
    lib.say("B4 smoke: skipped (%s)", missing)
    return nil, missing
  end
  if not lib.exists(APP .. "/dist/src/server.js") then
    lib.say("building the example app (npm run build)")
    lib.run({ "npm", "run", "build" }, { cwd = APP })
  end
  local dbname = lib.enforced(lib.scale)
  local user = lib.sql_value(dbname, [[SELECT u.email FROM "User" u JOIN "WorkspaceMember" m ON m."userId" = u.id
    AND m.role = 'OWNER' ORDER BY u.id LIMIT 1]])
  local proc, base, log_path = start_app(dbname)
  local times, last = {}, nil
  local ok, err = pcall(function()
    for i = 1, SMOKE_RUNS do
      local r, wall = lib.timed(lib.dhrun_argv("smoke", "--config", lib.config, "--url", base, "--user", user,
        "--log", log_path), { env = lib.dhrun_env(dbname, { DHRUN_PATH = SCRIPTS }), codes = { 0, 1 } })
      times[i], last = wall, r
    end
  end)
  proc:stop(5)
  if not ok then error(err, 0) end
  local summary = ""
  for line in last.stdout:gmatch("smoke: ([^\n]*)") do summary = line end
  ctx.smoke_exit = last.code
  return { median = lib.median(times), min = math.min(table.unpack(times)), max = math.max(table.unpack(times)),
           code = last.code, summary = summary }
end

-- An empty main() linked against liblua only, against the host binary's
-- libraries, and against those plus libpq (what a database script loads):
-- how much of the start-up is the dynamic loader's.
local function empty_programs()
  local c = lib.write(lib.out .. "/empty.c", "int main(void) { return 0; }\n")
  local out = {}
  for _, v in ipairs({ { "empty-lua", "lua5.4" }, { "empty-dhrun-libs", "lua5.4 libcrypto" },
                          { "empty-db-libs", "lua5.4 libcrypto libpq" } }) do
    local flags = lib.run({ "pkg-config", "--libs", table.unpack((function()
      local t = {}
      for w in v[2]:gmatch("%S+") do t[#t + 1] = w end
      return t
    end)()) }).stdout:gsub("%s+$", "")
    local argv = { "cc", "-O2", "-o", lib.out .. "/" .. v[1], c, "-Wl,--no-as-needed" }
    for w in flags:gmatch("%S+") do argv[#argv + 1] = w end
    lib.run(argv)
    out[#out + 1] = { name = v[1] .. " (" .. v[2] .. ")", cmd = lib.out .. "/" .. v[1] }
  end
  return out
end

local WITH_DB = "dhrun -e 'require \"dhrun.db\"'"

function M.run(ctx)
  local cmds = {
    { name = "dhrun -e ''", cmd = lib.dhrun .. " -e ''" },
    { name = "lua5.4 -e ''", cmd = "lua5.4 -e ''" },
    { name = WITH_DB, cmd = lib.dhrun .. WITH_DB:sub(#"dhrun" + 1) },
  }
  local ok, empties = pcall(empty_programs)
  if ok then
    for _, e in ipairs(empties) do cmds[#cmds + 1] = e end
  else
    lib.warn("B4: could not build the empty programs (%s)", tostring(empties))
    empties = {}
  end
  local r = lib.hyperfine("b4-startup", cmds, { warmup = 10, runs = 200 })
  local d, l, db = r["dhrun -e ''"], r["lua5.4 -e ''"], r[WITH_DB]
  lib.ok("B4 dhrun -e '': %s; lua5.4 -e '': %s", lib.hf_text(d), lib.hf_text(l))
  local rows = {
    { bench = "B4 start-up, `dhrun -e ''` vs `lua5.4 -e ''`", measured = lib.fmt_ms(d.mean),
      baseline = lib.fmt_ms(l.mean), ratio = d.mean / l.mean, target = "≤ 3×", pass = d.mean / l.mean <= 3,
      key = "b4_startup" },
    { bench = "B4 start-up with the database module, `" .. WITH_DB .. "` vs `lua5.4 -e ''`",
      measured = lib.fmt_ms(db.mean), baseline = lib.fmt_ms(l.mean), ratio = db.mean / l.mean, target = "info",
      key = "b4_startup_db" },
  }
  local out = {
    format("- `dhrun -e ''`: %s; `lua5.4 -e ''`: %s (hyperfine, 200 runs, `-N`).", lib.hf_text(d), lib.hf_text(l)),
    format("- `%s` (opens lib/dhrun/db.so and libpq's dependencies): %s.", WITH_DB, lib.hf_text(db)),
  }
  for _, e in ipairs(empties) do
    out[#out + 1] = format("- `int main(void) { return 0; }` linked with %s: %s.", e.name:match("%((.*)%)"),
      lib.hf_text(r[e.name]))
  end
  local fine, s, missing = pcall(smoke, ctx)
  if not fine then
    local msg = type(s) == "table" and tostring(s.message or s) or tostring(s)
    lib.warn("B4 smoke failed: %s", msg)
    rows[#rows + 1] = { bench = "B4 smoke flow: ERROR", measured = (msg:gsub("\n.*", "")), baseline = "",
                        target = "", pass = false, key = "b4_smoke" }
    out[#out + 1] = "- B4 smoke: ERROR " .. msg
  elseif s then
    rows[#rows + 1] = {
      bench = "B4 smoke flow wall time (`dhrun smoke`, example app, released DB)",
      measured = format("%.2f s", s.median), baseline = "5 min (the checklist's manual smoke test)",
      ratio = s.median / 300, target = "info", key = "b4_smoke" }
    out[#out + 1] = format("- `dhrun smoke` against the example app (node, on the released %s-row database): "
      .. "median %.2f s of %d runs (%.2f–%.2f s); last run exit %d: %s", lib.tag(lib.scale), s.median, SMOKE_RUNS,
      s.min, s.max, s.code, s.summary)
  else
    print("B4 smoke: skipped (" .. missing .. ")")
    out[#out + 1] = "- B4 smoke: skipped (" .. missing .. ")"
  end
  return rows, table.concat(out, "\n")
end

return M
