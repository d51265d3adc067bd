-- dhrun smoke — the checklist's "5-Minute Smoke Test", against the running
-- app, in seconds:
--   1. Data Hub overview: /data loads, provider cards visible, metrics shown
--   2. Provider detail: /data/google-ads (and every connected provider) with
--      its metrics chart and insights list
--   3. Chat: "Show me my data" gets an assistant reply; both messages are
--      stored with the session's workspaceId (checked in the database)
--   4. Connect/Disconnect (optional, --no-connect-test for production): the
--      status flips and is restored, so the data is left as it was found
--   5. Application logs since the smoke test started: no errors, no
--      constraint violations, no Prisma errors about workspaceId
--   + a headless browser loads /data and fails on any console error (skipped
--     with a reason when Chromium is not installed)
-- In a dry run the checks are only listed (they write: chat messages, the
-- connect/disconnect flip).  Every check runs and is reported (pass/fail/skip with timing); the exit
-- code is 1 if any failed.  Point it at a deployment with --url and --user.
local errors = require "dhrun.errors"
local config = require "dhrun.config"
local http = require "dhrun.http"
local process = require "dhrun.process"
local lfs = require "lfs"

-- This flow's own section of the project config.
local T = config.types
config.define("smoke", T.record {
  user = T.string(), user_query = T.string(), connect_provider = T.string(), connect_test = T.boolean(),
  browser = T.boolean(), browser_path = T.string(), timeout = T.number { min = 0.001 },
  providers = T.list(T.record { slug = T.string(), name = T.string(), enum = T.string() }),
})

local flow = require("dhrun.flow").new {
  name = "smoke",
  title = "5-Minute Smoke Test",
  lock = false,
  journal = false,
  keep_going = true,
  options = {
    { name = "url", arg = "URL", help = "base URL of the running app (config: app.url)" },
    { name = "user", arg = "EMAIL", help = "user whose session the checks use (config: smoke.user)" },
    { name = "log", arg = "PATH", help = "the app's log file (config: app.log)" },
    { name = "no-connect-test", help = "skip Connect/Disconnect (for production)" },
    { name = "no-browser", help = "skip the headless-browser console check" },
  },
}

local PROVIDERS = {
  { slug = "google-ads", name = "Google Ads", enum = "GOOGLE_ADS" },
  { slug = "meta-ads", name = "Meta Ads", enum = "META_ADS" },
  { slug = "linkedin-ads", name = "LinkedIn", enum = "LINKEDIN_ADS" },
  { slug = "tiktok-ads", name = "TikTok Ads", enum = "TIKTOK_ADS" },
  { slug = "google-analytics", name = "Google Analytics", enum = "GOOGLE_ANALYTICS" },
  { slug = "shopify", name = "Shopify", enum = "SHOPIFY" },
}

local function fail(msg, hint)
  errors.check(msg, hint)
end

-- smoke settings: flags, then the config's smoke/app sections, then defaults
local function settings(ctx)
  if ctx.smoke then return ctx.smoke end
  local cfg = ctx.cfg or {}
  local app, smoke = cfg.app or {}, cfg.smoke or {}
  local s = {
    url = (ctx.args.url or app.url or "http://127.0.0.1:3000"):gsub("/+$", ""),
    user = ctx.args.user or smoke.user,
    log = ctx.args.log or app.log,
    providers = smoke.providers or PROVIDERS,
    connect_provider = smoke.connect_provider or "google-ads",
    connect_test = not ctx.args["no-connect-test"] and smoke.connect_test ~= false,
    browser = not ctx.args["no-browser"] and smoke.browser ~= false,
    timeout = smoke.timeout or 10,
    jar = http.cookie_jar(),
  }
  if s.log and not s.log:match("^/") then s.log = (cfg.app_dir or ".") .. "/" .. s.log end
  ctx.smoke = s
  return s
end

local function get(ctx, path, opts)
  local s = settings(ctx)
  local req = { url = s.url .. path, cookies = s.jar, timeout = s.timeout }
  for k, v in pairs(opts or {}) do req[k] = v end
  local res, err = http.request(req)
  if not res then fail(err.message, "is the app running at " .. s.url .. "? (--url sets it)") end
  return res
end

local function expect_page(ctx, path)
  local res = get(ctx, path, { method = "GET" })
  if res.status ~= 200 then
    fail(string.format("GET %s returned %d%s", path, res.status,
      res.status >= 500 and " (server error: see the app log)" or ""))
  end
  if not (res.headers["content-type"] or ""):find("text/html", 1, true) then
    fail("GET " .. path .. " did not return an HTML page (" .. tostring(res.headers["content-type"]) .. ")")
  end
  return res.body
end

local function api(ctx, method, path, body)
  local res = get(ctx, path, { method = method, json = body })
  local data = res:json()
  if res.status ~= 200 then
    fail(string.format("%s %s returned %d: %s", method, path, res.status,
      type(data) == "table" and tostring(data.error or "") or res.body:sub(1, 200)))
  end
  if type(data) ~= "table" then fail(method .. " " .. path .. " did not return JSON") end
  return data
end

-- The HTML of one provider card: from its tag to the next card.
local function card_html(html, slug)
  local at = html and html:find('data-provider="' .. slug .. '"', 1, true)
  if not at then return nil end
  local tag_start = html:sub(1, at):match(".*()<")
  local tag = tag_start and html:match("^<[^>]*>", tag_start) or ""
  if not tag:find('data-testid="provider-card"', 1, true) then return nil end
  local next_card = html:find('data-testid="provider-card"', at + 1, true)
  return html:sub(tag_start, (next_card or #html + 1) - 1)
end

local function card_status(html, slug)
  local card = card_html(html, slug)
  return card and card:match('data%-testid="connection%-status"[^>]*>%s*([^<]-)%s*<')
end

-- (In a dry run nothing has run yet, so no check is skipped for an earlier one.)
local function app_reachable(ctx)
  if ctx.app_down and not ctx.dry_run then return "the app is not reachable (first check failed)" end
end

-- The session the checks use: --user, smoke.user, or the first user who owns a workspace.
local function session_user(ctx)
  local s = settings(ctx)
  if s.user then return s.user end
  local q = ctx.cfg.smoke and ctx.cfg.smoke.user_query
  if q then s.user = ctx.conn:query_value(q) end
  if not s.user then fail("no user for the smoke test", "pass --user EMAIL or set smoke.user in the config") end
  return s.user
end

---------------------------------------------------------------------------

flow:step {
  title = "App is up (GET /health)",
  -- not readonly: the smoke test writes (chat messages, connect/disconnect), so a dry run only lists it
  run = function(ctx)
    local s = settings(ctx)
    -- remember where the app log ends now: section 5 reads only what follows
    s.log_offset = s.log and lfs.attributes(s.log, "size") or nil
    local res, err = http.get(s.url .. "/health", { timeout = s.timeout })
    if not res then
      ctx.app_down = true
      fail(err.message, "start the app, or point --url at it")
    end
    if res.status ~= 200 then
      ctx.app_down = true
      fail("GET /health returned " .. res.status .. ": " .. res.body:sub(1, 200))
    end
    return { summary = "healthy" }
  end,
}

flow:step {
  title = "Session",
  skip = app_reachable,
  run = function(ctx)
    local email = session_user(ctx)
    local data = api(ctx, "POST", "/api/session", { email = email })
    settings(ctx).workspace = data.workspaceId
    ctx.session_ok = true
    return { summary = email .. " in workspace " .. tostring(data.workspaceId) }
  end,
}

local function needs_session(ctx)
  if ctx.dry_run then return nil end
  return app_reachable(ctx) or (not ctx.session_ok and "no session (the Session check failed)") or nil
end

local function needs_overview(ctx)
  if ctx.dry_run then return nil end
  return needs_session(ctx) or (not ctx.overview and "the overview did not load") or nil
end

flow:step {
  title = "1. Overview: /data loads without errors",
  skip = needs_session,
  run = function(ctx)
    ctx.overview = expect_page(ctx, "/data")
    return { summary = #ctx.overview .. " bytes" }
  end,
}

flow:step {
  title = "1. Overview: provider cards visible",
  skip = needs_overview,
  run = function(ctx)
    local missing, connected = {}, {}
    for _, p in ipairs(settings(ctx).providers) do
      if not card_html(ctx.overview, p.slug) then
        missing[#missing + 1] = p.name
      elseif card_status(ctx.overview, p.slug) == "Connected" then
        connected[#connected + 1] = p
      end
    end
    if #missing > 0 then fail("provider card(s) missing on /data: " .. table.concat(missing, ", ")) end
    ctx.connected = connected
    return { summary = #settings(ctx).providers .. " cards, " .. #connected .. " connected" }
  end,
}

flow:step {
  title = "1. Overview: metrics display",
  skip = needs_overview,
  run = function(ctx)
    local n, bad = 0, 0
    for value in ctx.overview:gmatch('data%-testid="metric"[^>]*>([^<]*)<') do
      n = n + 1
      if not value:match("%d") then bad = bad + 1 end
    end
    if n == 0 then fail("no metrics on /data (no data-testid=\"metric\" elements)") end
    if bad > 0 then fail(bad .. " of " .. n .. " metrics on /data show no number") end
    return { summary = n .. " metric values" }
  end,
}

flow:step {
  title = "2. Provider detail: chart and insights",
  skip = needs_session,
  run = function(ctx)
    local pages = { "google-ads" }
    for _, p in ipairs(ctx.connected or {}) do
      if p.slug ~= "google-ads" then pages[#pages + 1] = p.slug end
    end
    for _, slug in ipairs(pages) do
      local body = expect_page(ctx, "/data/" .. slug)
      if not body:find('data-testid="metrics-chart"', 1, true) then
        fail("/data/" .. slug .. ": no metrics chart (data-testid=\"metrics-chart\")")
      end
      if not body:find('data-testid="insights-list"', 1, true) then
        fail("/data/" .. slug .. ": no insights list (data-testid=\"insights-list\")")
      end
    end
    return { summary = #pages .. " detail page(s): /data/" .. table.concat(pages, ", /data/") }
  end,
}

flow:step {
  title = "3. Chat: 'Show me my data' gets an assistant reply",
  skip = needs_session,
  run = function(ctx)
    local data = api(ctx, "POST", "/api/chat", { message = "Show me my data" })
    ctx.chat = data
    if type(data.reply) ~= "string" or data.reply == "" then fail("the chat returned no assistant reply") end
    return { summary = "reply: " .. data.reply:sub(1, 80) }
  end,
}

flow:step {
  title = "3. Chat: messages stored with the session's workspaceId",
  skip = function(ctx)
    if ctx.dry_run then return nil end
    return needs_session(ctx) or (not ctx.chat and "the chat request failed") or nil
  end,
  run = function(ctx)
    local ids = {}
    for _, m in ipairs(ctx.chat.messages or {}) do ids[#ids + 1] = m.id end
    if #ids == 0 then fail("the chat response lists no stored messages") end
    local rollout = ctx.cfg.rollouts and ctx.cfg.rollouts[#ctx.cfg.rollouts]
    local col = rollout and rollout.column or "workspaceId"
    local conn = ctx.conn
    local rows = conn:query(string.format(
      'SELECT id, role::text AS role, %s AS ws FROM "ChatMessage" WHERE id = ANY($1::text[])', conn:quote_ident(col)),
      "{" .. table.concat(ids, ",") .. "}")
    if #rows ~= #ids then fail(string.format("%d of %d chat messages are not in the database", #ids - #rows, #ids)) end
    local want = settings(ctx).workspace
    local roles = {}
    for _, r in ipairs(rows) do
      roles[r.role] = true
      if r.ws == require("dhrun.db").null then fail("ChatMessage " .. r.id .. " was stored with NULL " .. col) end
      if r.ws ~= want then
        fail(string.format("ChatMessage %s was stored with %s %s, not the session's %s", r.id, col, r.ws, want))
      end
    end
    if not roles.USER or not roles.ASSISTANT then
      fail("the user message and the assistant reply were not both stored")
    end
    return { summary = #rows .. " messages in workspace " .. want }
  end,
}

flow:step {
  title = "4. Connect/Disconnect: status flips and is restored",
  skip = function(ctx)
    if not settings(ctx).connect_test then return "--no-connect-test" end
    return needs_session(ctx)
  end,
  run = function(ctx)
    local slug = settings(ctx).connect_provider
    local was = card_status(expect_page(ctx, "/data"), slug)
    local function set(action, want)
      local data = api(ctx, "POST", "/api/connections/" .. slug .. "/" .. action)
      if data.status ~= want then fail(string.format("%s %s: status is %q, expected %q", action, slug,
        tostring(data.status), want)) end
      local shown = card_status(expect_page(ctx, "/data"), slug)
      if shown ~= want then fail(string.format("after %s, /data shows %s as %q, expected %q", action, slug,
        tostring(shown), want)) end
    end
    local ok, err = pcall(function()
      set("connect", "Connected")
      set("disconnect", "Not Connected")
    end)
    -- leave the data as it was found
    if was == "Connected" then pcall(api, ctx, "POST", "/api/connections/" .. slug .. "/connect") end
    if not ok then error(err, 0) end
    return { summary = slug .. ": Connected -> Not Connected, restored to " .. tostring(was or "Not Connected") }
  end,
}

-- What the log check looks for, most specific first; each line counts once.
local LOG_PROBLEMS = {
  { pattern = "null value in column", what = "NOT NULL violation" },
  { pattern = "violates [%w%-]+ constraint", what = "database constraint violation" },
  { pattern = "[Cc]onstraint violat", what = "database constraint violation" },
  { pattern = "%f[%w]23%d%d%d%f[%W]", what = "database constraint violation" },
  { pattern = "[Pp]risma.*workspaceId", what = "Prisma error about workspaceId" },
  { pattern = "workspaceId.*[Pp]risma", what = "Prisma error about workspaceId" },
  { pattern = "%f[%w]ERROR%f[%W]", what = "error" },
}

flow:step {
  title = "5. Logs: no errors since the smoke test started",
  skip = function(ctx)
    if not settings(ctx).log then return "no app log configured (app.log in the config, or --log PATH)" end
    -- as every check after a failed health check (its log is where to look next)
    return app_reachable(ctx)
  end,
  run = function(ctx)
    local s = settings(ctx)
    local f = io.open(s.log, "rb")
    if not f then fail("cannot read the app log " .. s.log) end
    if s.log_offset then f:seek("set", s.log_offset) end
    local text = f:read("a") or ""
    f:close()
    local found, kinds, order, lines = {}, {}, {}, 0
    for line in text:gmatch("[^\n]+") do
      lines = lines + 1
      for _, p in ipairs(LOG_PROBLEMS) do
        if line:find(p.pattern) then
          found[#found + 1] = "a " .. p.what .. ": " .. line:sub(1, 240)
          if not kinds[p.what] then order[#order + 1] = p.what end
          kinds[p.what] = (kinds[p.what] or 0) + 1
          break
        end
      end
    end
    if #found > 0 then
      local counts = {}
      for i, what in ipairs(order) do counts[i] = kinds[what] .. " " .. what .. (kinds[what] > 1 and "s" or "") end
      fail(string.format("%d problem line(s) in %s (%s); first: %s", #found, s.log, table.concat(counts, ", "),
        found[1]))
    end
    return { summary = lines .. " new log line(s), no errors" }
  end,
}

local function find_browser(ctx)
  local configured = ctx.cfg.smoke and ctx.cfg.smoke.browser_path
  if configured then return configured end
  return process.which("chromium", "chromium-browser", "google-chrome")
end

flow:step {
  title = "Browser: /data shows no console errors",
  skip = function(ctx)
    if not settings(ctx).browser then return "--no-browser" end
    if not find_browser(ctx) then return "Chromium is not installed (apt-get install chromium)" end
    return needs_session(ctx)
  end,
  run = function(ctx)
    local s = settings(ctx)
    -- a fresh profile directory, made with a random name and mode 0700 in
    -- one step (no window for another user to plant one)
    local profile, perr = require("dhrun.core.sys").mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/dhrun-chromium.XXXXXX")
    if not profile then fail("cannot create a browser profile directory: " .. perr) end
    -- no password on the browser's command line (ps shows it), and none of
    -- the database's in its environment (nor its crash handler's)
    local url = s.url:gsub("^(%a[%w+.-]*://)[^@/]*@", "%1") .. "/data?session=" .. http.escape(session_user(ctx))
    local r = process.run({ find_browser(ctx), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
      "--user-data-dir=" .. profile, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000",
      "--dump-dom", url }, { timeout = 60, env = { DATABASE_URL = false, PGPASSWORD = false, PGPASSFILE = false } })
    process.run({ "rm", "-rf", profile })
    -- Chromium logs every console message as "...:INFO:CONSOLE:12] "text", source: URL (12)"
    -- without its level, so errors are told apart by their text: uncaught
    -- exceptions, failed loads and console.error output that says "error".
    local console_errors = {}
    for line in r.stderr:gmatch("[^\n]+") do
      local msg = line:match(":CONSOLE[:%(]%d+%)?%]%s*(.*)$")
      if msg and (msg:find("Uncaught", 1, true) or msg:find("[Ee]rror") or msg:find("Failed to load", 1, true)
          or msg:find("[Ee]xception") or msg:find("Refused to", 1, true)) then
        console_errors[#console_errors + 1] = msg
      end
    end
    if #console_errors > 0 then
      fail(#console_errors .. " console error(s) on /data; first: " .. console_errors[1]:sub(1, 240))
    end
    if not r.ok then fail("the browser did not load /data: " .. (r.error or ("exit " .. tostring(r.code)))) end
    if not r.stdout:find('data-testid="provider-card"', 1, true) then
      fail("the page the browser rendered has no provider cards")
    end
    return { summary = "no console errors" }
  end,
}

return flow:run(...)
