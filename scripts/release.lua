-- dhrun release — the whole release in one run, one lock, one journal:
--   the Normal Deployment (deploy.lua's steps), then start or reload the app,
--   then the project's smoke test (the steps of the first smoke.lua on the
--   search path: a project keeps its own in its scripts/ directory).
-- What a failed smoke test does is configured: report it and exit 1 (the
-- default), or run the Emergency Rollback (release.on_smoke_failure =
-- "rollback" in the config, or --on-smoke-failure rollback).
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"
local log = require "dhrun.log"
local http = require "dhrun.http"
local process = require "dhrun.process"
local Flow = require "dhrun.flow"

local function policy(ctx)
  local p = ctx.args["on-smoke-failure"] or (ctx.cfg.release or {}).on_smoke_failure or "report"
  if p ~= "report" and p ~= "rollback" then
    errors.usage("--on-smoke-failure must be report or rollback, not '" .. p .. "'")
  end
  return p
end

local flow = Flow.new {
  name = "release",
  title = "Release: deploy, restart the app, smoke test",
  options = { { name = "on-smoke-failure", arg = "report|rollback", help = "what a failed smoke test does" } },
  next_ok = "the release is live and smoke-tested",
  on_failure = function(ctx, result)
    for _, s in ipairs(result.steps) do
      if s.status == "failed" and not ctx.flow.steps[s.seq].smoke then
        return -- deploy itself failed: recovery is `dhrun recover`, not a rollback
      end
    end
    if policy(ctx) ~= "rollback" then
      log.info("the smoke test failed; the release stays in place (release.on_smoke_failure = \"report\")")
      return
    end
    log.warn("the smoke test failed: running the Emergency Rollback (release.on_smoke_failure = \"rollback\")")
    local rollback = Flow.new { name = "rollback-steps" }
    rollback:include("rollback")
    for _, step in ipairs(rollback.steps) do
      local reason = step.skip and step.skip(ctx)
      if reason then
        log.info("      rollback: skipped: %s", reason)
      else
        local d = step.run(ctx)
        log.ok("      rollback: %s", type(d) == "table" and d.summary or "done")
      end
    end
  end,
}

flow:include("deploy")

-- The app, for the rest of this run: app.restart (a command that restarts
-- the real service) or app.start (runs the app in the background while this
-- flow runs: for demos and CI).  Then wait until it answers its health URL.
local app_proc -- luacheck: ignore 231 (kept alive until the run ends; closed with the Lua state)
flow:step {
  title = "Start or reload the app",
  plan = function(ctx)
    local app = ctx.cfg.app or {}
    local argv = app.restart or app.start
    return argv and table.concat(argv, " ") or "no app.start / app.restart in the config"
  end,
  run = function(ctx)
    local app = ctx.cfg.app or {}
    if not (app.restart or app.start) then
      errors.config("no app.start or app.restart in " .. ctx.cfg.file,
        "app.restart = {\"systemctl\", \"restart\", \"myapp\"} for a service; app.start for a demo")
    end
    local env = {}
    for k, v in pairs(ctx.cfg.env or {}) do env[k] = v end
    for k, v in pairs(app.env or {}) do env[k] = v end
    if app.restart then
      log.info("      $ %s", table.concat(app.restart, " "))
      process.must(app.restart, { cwd = ctx.cfg.app_dir, env = env, stream = true, prefix = "      │ " })
    else
      log.info("      $ %s  (in the background while this run lasts)", table.concat(app.start, " "))
      local out = app.output and (app.output:match("^/") and app.output or ctx.cfg.app_dir .. "/" .. app.output)
      if out then process.run({ "mkdir", "-p", (out:match("^(.*)/[^/]*$")) }) end
      app_proc = process.spawn(app.start, { cwd = ctx.cfg.app_dir, env = env, stdout = out, stderr = out })
    end
    local url = (app.url or "http://127.0.0.1:3000"):gsub("/+$", "") .. (app.health or "/health")
    local deadline = sys.now() + (app.ready_timeout or 30)
    local last
    repeat
      local res, err = http.get(url, { timeout = 2 })
      if res and res.status == 200 then
        return { summary = "up: GET " .. url .. " -> 200" }
      end
      last = res and ("HTTP " .. res.status) or err.message
      if app_proc and not app_proc:running() then
        local r = app_proc:wait(1)
        errors.process("the app exited during start-up (code " .. tostring(r and r.code) .. ")",
          "see the app's output" .. (app.output and (" in " .. app.output) or ""))
      end
      sys.sleep(0.25)
    until sys.now() > deadline
    errors.process("the app did not become healthy within " .. (app.ready_timeout or 30) .. " s (" .. last .. ")",
      "check the app's log and " .. url)
  end,
}

-- The project's smoke test, when it has one on the search path.
if flow:include("smoke", { optional = true }) then
  for _, s in ipairs(flow.steps) do
    if s.from == "smoke" then s.smoke = true end
  end
else
  flow:step {
    title = "Smoke test",
    smoke = true,
    skip = function() return "no smoke.lua on the search path (a project keeps its own in its scripts/ directory)" end,
    run = function() end,
  }
end

return flow:run(...)
