-- The example Data Hub web app (examples/datahub): built once with npm, run
-- as a real Node process on a fully deployed, seeded database, used over real
-- HTTP (dhrun.http), and checked against the database.
local sh = require "sh"
local dh = require "datahub"
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local lfs = require "lfs"
local cjson = require "cjson"
local http = require "dhrun.http"

local APP = dh.example
local SLUGS = { "google-ads", "meta-ads", "linkedin-ads", "tiktok-ads", "google-analytics", "shopify" }
local ENUM = {
  ["google-ads"] = "GOOGLE_ADS", ["meta-ads"] = "META_ADS", ["linkedin-ads"] = "LINKEDIN_ADS",
  ["tiktok-ads"] = "TIKTOK_ADS", ["google-analytics"] = "GOOGLE_ANALYTICS", shopify = "SHOPIFY",
}
local LOG_LINE = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %u+ "

---------------------------------------------------------------------------
-- The app as a process, HTTP, and reading its pages.

local appproc = require "app"
local start_app, stop_app, app_log = appproc.start, appproc.stop, appproc.log

-- The log once it matches `pattern` (a request's line is written when its
-- connection closes, which can be just after the client has the answer).
local function wait_log(app, pattern)
  local deadline = sys.now() + 5
  while not app_log(app):find(pattern) and sys.now() < deadline do sys.sleep(0.02) end
  return app_log(app)
end

local function lines_of(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- The named columns of a result row (rows also carry them by position).
local function named(row, ...)
  local out = {}
  for _, k in ipairs({ ... }) do out[k] = row[k] end
  return out
end

-- opts: cookie (session user id), as (X-Datahub-User email), json (request body).
-- Returns the dhrun.http response, plus `data` (the decoded body) for JSON.
local function request(app, method, path, opts)
  opts = opts or {}
  local headers = {}
  if opts.cookie then headers.Cookie = "dh_session=" .. opts.cookie end
  if opts.as then headers["X-Datahub-User"] = opts.as end
  local res, err = http.request({ url = app.base .. path, method = method, headers = headers, json = opts.json,
                                  follow_redirects = false, timeout = 30 })
  assert(res, err and err.message)
  if (res.headers["content-type"] or ""):find("application/json", 1, true) then res.data = assert(res:json()) end
  return res
end

-- A raw `curl -i` answer: {status, body, data (decoded JSON body)}.
local function parse_curl(raw)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "not an HTTP response: " .. raw)
  return { status = tonumber(head:match("^HTTP/%S+ (%d+)")), body = body, data = cjson.decode(body) }
end

-- The provider cards of a page: list in page order, and by slug.
local function cards(html)
  local list = {}
  for attrs, inner in html:gmatch('<article[^>]-data%-testid="provider%-card"([^>]*)>(.-)</article>') do
    local card = {
      slug = attrs:match('data%-provider="([^"]+)"'),
      status = inner:match('data%-testid="connection%-status"[^>]*>([^<]*)<'),
      button = inner:match('data%-testid="connection%-button"[^>]*>([^<]*)<'),
      link = inner:match('<a href="([^"]+)"'),
      metrics = {},
    }
    for name, value in inner:gmatch('data%-metric="(%w+)" data%-value="([^"]*)"') do card.metrics[name] = value end
    list[#list + 1] = card
    list[card.slug] = card
  end
  return list
end

-- Inline <script> bodies of a page (the page's own /static/app.js is external).
local function inline_scripts(html)
  local out = {}
  for attrs, text in html:gmatch("<script([^>]*)>(.-)</script>") do
    if not attrs:find("src=", 1, true) then out[#out + 1] = text end
  end
  return out
end

-- Headless Chromium, when installed (tests/helpers/browser.lua).
local browser = require "browser"
local CHROMIUM, browse = browser.path, browser.browse

---------------------------------------------------------------------------
-- The database's view, computed independently of the app.

-- Per provider enum: 30-day totals (the window ends on the workspace's
-- latest metric day), as the strings the page puts in data-value.
local function expected_totals(conn, ws)
  local rows = conn:query([[
    WITH w AS (SELECT max(date) AS hi FROM "MetricDaily" WHERE "workspaceId" = $1)
    SELECT provider::text AS provider, sum(impressions)::text AS impressions, sum(clicks)::text AS clicks,
           sum(spend)::text AS spend, sum(conversions)::text AS conversions
    FROM "MetricDaily", w WHERE "workspaceId" = $1 AND date > w.hi - 30 GROUP BY provider]], ws)
  local by = {}
  for _, r in ipairs(rows) do by[r.provider] = named(r, "impressions", "clicks", "spend", "conversions") end
  return by
end

local function expected_status(conn, user_id, ws, provider)
  local s = conn:query_value([[SELECT status::text FROM "Connection"
    WHERE "userId" = $1 AND "workspaceId" = $2 AND provider = $3::"Provider"]], user_id, ws, provider)
  return s == "CONNECTED" and "Connected" or "Not Connected"
end

local function with_commas(n)
  local s = tostring(n)
  repeat
    local k
    s, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2")
  until k == 0
  return s
end

---------------------------------------------------------------------------

describe("example Data Hub app", function()
  local t, build, app
  -- A: owns a workspace that has metrics and is also a member of B's workspace;
  -- B: the owner of that other workspace.
  local A, B

  setup(function()
    t = dh.create("done")
    build = appproc.build(t.url)
    local pair = t.conn:query([[
      SELECT ua.email AS a_email, ua.id AS a_id, oa."workspaceId" AS a_ws,
             ub.email AS b_email, ub.id AS b_id, mb."workspaceId" AS b_ws, wb.name AS b_name
      FROM "WorkspaceMember" oa
      JOIN "User" ua ON ua.id = oa."userId"
      JOIN "WorkspaceMember" ma ON ma."userId" = oa."userId" AND ma.role <> 'OWNER'
      JOIN "WorkspaceMember" mb ON mb."workspaceId" = ma."workspaceId" AND mb.role = 'OWNER'
      JOIN "User" ub ON ub.id = mb."userId"
      JOIN "Workspace" wb ON wb.id = mb."workspaceId"
      WHERE oa.role = 'OWNER'
        AND EXISTS (SELECT 1 FROM "MetricDaily" d WHERE d."workspaceId" = oa."workspaceId")
        AND EXISTS (SELECT 1 FROM "MetricDaily" d WHERE d."workspaceId" = mb."workspaceId")
      ORDER BY ua.email LIMIT 1]])[1]
    assert(pair, "the seed has an owner who is also a member elsewhere")
    A = { email = pair.a_email, id = pair.a_id, ws = pair.a_ws }
    B = { email = pair.b_email, id = pair.b_id, ws = pair.b_ws, ws_name = pair.b_name }
    app = start_app(t.url)
  end)

  teardown(function()
    stop_app(app)
    if t then dh.drop(t) end
  end)

  it("npm run build prints Compiled successfully, and fails on a type error", function()
    local lines = lines_of(build.stdout)
    assert.are.equal("Compiled successfully", lines[#lines])
    assert.truthy(lfs.attributes(APP .. "/dist/src/server.js"), "the build wrote dist/src/server.js")

    -- A build needs no database: generate and build without DATABASE_URL.
    for _, script in ipairs({ "generate", "build" }) do
      local r = sh.run({ "npm", "run", script }, { cwd = APP, env = { DATABASE_URL = false } })
      assert.are.equal(0, r.code, script .. " without DATABASE_URL:\n" .. r.stdout .. r.stderr)
    end

    -- The same project with one type error: no success line, non-zero exit.
    local copy = sh.tmpdir()
    for _, f in ipairs({ "package.json", "tsconfig.json", "prisma.config.ts", "prisma/schema.prisma" }) do
      sh.write(copy .. "/" .. f, sh.read(APP .. "/" .. f))
    end
    for file in lfs.dir(APP .. "/src") do
      if file:match("%.ts$") then sh.write(copy .. "/src/" .. file, sh.read(APP .. "/src/" .. file)) end
    end
    sh.write(copy .. "/src/broken.ts", 'export const port: number = "3000";\n')
    assert(lfs.link(APP .. "/node_modules", copy .. "/node_modules", true))
    assert.are.equal(0, sh.run({ "npm", "run", "generate" }, { cwd = copy }).code)
    local r = sh.run({ "npm", "run", "build" }, { cwd = copy, env = { DATABASE_URL = t.url } })
    assert.are_not.equal(0, r.code)
    assert.matches("src/broken.ts", r.stdout .. r.stderr, 1, true)
    for _, line in ipairs(lines_of(r.stdout .. r.stderr)) do assert.are_not.equal("Compiled successfully", line) end
  end)

  it("GET /health answers ok after a database round trip, 503 when the database is down", function()
    local r = request(app, "GET", "/health")
    assert.are.equal(200, r.status)
    assert.are.same({ status = "ok", db = "ok" }, r.data)

    local down = start_app("postgresql://postgres@127.0.0.1:1/nowhere")
    finally(function() stop_app(down) end)
    r = request(down, "GET", "/health")
    assert.are.equal(503, r.status)
    assert.are.same({ status = "error" }, r.data)
    assert.matches("ERROR GET /health: database check failed: .*reach database server",
      wait_log(down, "INFO GET /health 503"))
  end)

  it("POST /api/session sets the cookie and picks the user's own workspace", function()
    local r = request(app, "POST", "/api/session", { json = { email = A.email } })
    assert.are.equal(200, r.status)
    assert.are.same({ userId = A.id, workspaceId = A.ws }, r.data)
    assert.matches("^dh_session=" .. A.id:gsub("%p", "%%%0") .. "; Path=/; HttpOnly", r.headers["set-cookie"][1])

    r = request(app, "POST", "/api/session", { json = { email = "nobody@example.com" } })
    assert.are.equal(404, r.status)
    assert.are.equal("unknown email", r.data.error)

    -- No session: 401 for pages and the API; an unknown user id is no session.
    assert.are.equal(401, request(app, "GET", "/data").status)
    assert.are.equal(401, request(app, "POST", "/api/chat", { json = { message = "hi" } }).status)
    assert.are.equal(401, request(app, "GET", "/data", { cookie = "cu-no-such-user" }).status)
    assert.are.equal(200, request(app, "GET", "/data", { cookie = A.id }).status)
    assert.are.equal(200, request(app, "GET", "/data", { as = A.email }).status)
    -- A page URL with ?session=EMAIL signs in (for headless browsers) and sets the cookie.
    r = request(app, "GET", "/data?session=" .. http.escape(B.email))
    assert.are.equal(200, r.status)
    assert.matches("^dh_session=" .. B.id:gsub("%p", "%%%0") .. ";", r.headers["set-cookie"][1])
    assert.matches(B.ws_name, r.body, 1, true)

    -- A user without any workspace (new since the backfill) gets 409.
    t.conn:exec([[INSERT INTO "User" (id, email) VALUES ('u_no_workspace', 'no.workspace@example.com')]])
    r = request(app, "POST", "/api/session", { json = { email = "no.workspace@example.com" } })
    assert.are.equal(409, r.status)
    assert.are.equal("user has no workspace yet (run the backfill)", r.data.error)
    assert.are.equal(409, request(app, "GET", "/data", { cookie = "u_no_workspace" }).status)
  end)

  it("/data shows six provider cards with the session workspace's statuses and metrics only", function()
    local pages = {}
    for _, u in ipairs({ A, B }) do
      local r = request(app, "GET", "/data", { cookie = u.id })
      assert.are.equal(200, r.status)
      local page = cards(r.body)
      assert.are.equal(6, #page)
      local expected = expected_totals(t.conn, u.ws)
      for i, slug in ipairs(SLUGS) do
        local card = page[i]
        assert.are.equal(slug, card.slug)
        assert.are.equal("/data/" .. slug, card.link)
        local status = expected_status(t.conn, u.id, u.ws, ENUM[slug])
        assert.are.equal(status, card.status, slug)
        assert.are.equal(status == "Connected" and "Disconnect" or "Connect", card.button)
        local e = expected[ENUM[slug]] or { impressions = "0", clicks = "0", spend = "0.00", conversions = "0" }
        assert.are.same(e, card.metrics, slug)
      end
      assert.matches('data%-testid="master%-chat"', r.body)
      assert.matches('<form[^>]*data%-testid="chat%-form"', r.body)
      assert.matches('data%-testid="chat%-messages"', r.body)
      pages[#pages + 1] = page
    end
    -- A is also a member of B's workspace, yet sees only A's own workspace.
    local differs = false
    for _, slug in ipairs(SLUGS) do
      if pages[1][slug].metrics.impressions ~= pages[2][slug].metrics.impressions then differs = true end
    end
    assert.is_true(differs, "two workspaces show different numbers")
    assert.is_nil(request(app, "GET", "/data", { cookie = A.id }).body:find(B.ws_name, 1, true))
  end)

  it("/data/<slug> shows the daily metrics chart and the workspace's insights", function()
    local provider = t.conn:query_value([[SELECT provider::text FROM "Insight" WHERE "workspaceId" = $1
      AND provider IS NOT NULL GROUP BY provider ORDER BY count(*) DESC, provider LIMIT 1]], A.ws)
    local slug
    for s, e in pairs(ENUM) do if e == provider then slug = s end end
    local r = request(app, "GET", "/data/" .. slug, { cookie = A.id })
    assert.are.equal(200, r.status)

    local days = {}
    for _, row in ipairs(t.conn:query([[
      WITH w AS (SELECT max(date) AS hi FROM "MetricDaily" WHERE "workspaceId" = $1)
      SELECT to_char(date, 'YYYY-MM-DD') AS day, sum(impressions)::text AS impressions
      FROM "MetricDaily", w WHERE "workspaceId" = $1 AND provider = $2::"Provider" AND date > w.hi - 30
      GROUP BY date ORDER BY date]], A.ws, provider)) do
      days[#days + 1] = named(row, "day", "impressions")
    end
    local svg = r.body:match('<svg[^>]-data%-testid="metrics%-chart".-</svg>')
    assert.truthy(svg, "the page has the metrics chart")
    local points = {}
    for day, n in svg:gmatch('data%-date="([^"]+)" data%-impressions="(%d+)"') do
      points[#points + 1] = { day = day, impressions = n }
    end
    assert.is_true(#days > 0)
    assert.are.same(days, points)

    local ids = {}
    local list = r.body:match('<ul data%-testid="insights%-list".-</ul>')
    for id in list:gmatch('data%-testid="insight" data%-id="([^"]+)"') do ids[#ids + 1] = id end
    local expected = {}
    for _, row in ipairs(t.conn:query([[SELECT id FROM "Insight" WHERE "workspaceId" = $1
        AND provider = $2::"Provider" ORDER BY "createdAt" DESC, id LIMIT 50]], A.ws, provider)) do
      expected[#expected + 1] = row.id
    end
    assert.is_true(#expected > 0)
    assert.are.same(expected, ids)

    r = request(app, "GET", "/data/myspace", { cookie = A.id })
    assert.are.equal(404, r.status)
    assert.matches('data%-testid="not%-found"', r.body)
  end)

  it("POST /api/chat stores the message and the reply with the session's workspaceId", function()
    local r = request(app, "POST", "/api/chat", { cookie = A.id, json = { message = "Show me my data" } })
    assert.are.equal(200, r.status)
    local total = t.conn:query_value([[SELECT sum(impressions) FROM "MetricDaily", (SELECT max(date) AS hi
      FROM "MetricDaily" WHERE "workspaceId" = $1) w WHERE "workspaceId" = $1 AND date > w.hi - 30]], A.ws)
    assert.matches(with_commas(total) .. " impressions", r.data.reply, 1, true)
    assert.are.equal(2, #r.data.messages)
    assert.are.equal("USER", r.data.messages[1].role)
    assert.are.equal("ASSISTANT", r.data.messages[2].role)
    for _, m in ipairs(r.data.messages) do
      assert.are.equal(A.ws, m.workspaceId)
      local row = named(t.conn:query([[SELECT role::text AS role, "workspaceId", "userId", content
        FROM "ChatMessage" WHERE id = $1]], m.id)[1], "role", "workspaceId", "userId", "content")
      assert.are.same({ role = m.role, workspaceId = A.ws, userId = A.id,
                        content = m.role == "USER" and "Show me my data" or r.data.reply }, row)
    end
    -- The overview's chat box lists both.
    local page = request(app, "GET", "/data", { cookie = A.id }).body
    assert.matches('data-role="USER" data-id="' .. r.data.messages[1].id, page, 1, true)
    assert.matches('data-role="ASSISTANT" data-id="' .. r.data.messages[2].id, page, 1, true)

    assert.are.equal(400, request(app, "POST", "/api/chat", { cookie = A.id, json = { message = " " } }).status)
  end)

  it("connect and disconnect flip the connection status in the database and on the page", function()
    local missing = t.conn:query_value([[SELECT p::text FROM unnest(enum_range(NULL::"Provider")) AS p
      WHERE NOT EXISTS (SELECT 1 FROM "Connection" c WHERE c."userId" = $1 AND c.provider = p)
      ORDER BY 1 LIMIT 1]], A.id)
    assert.truthy(missing, "A has a provider without a connection")
    local slug
    for s, e in pairs(ENUM) do if e == missing then slug = s end end
    local function db_status()
      local row = t.conn:query([[SELECT status::text AS status, "workspaceId" FROM "Connection"
        WHERE "userId" = $1 AND provider = $2::"Provider"]], A.id, missing)[1]
      return row and named(row, "status", "workspaceId")
    end

    local r = request(app, "POST", "/api/connections/" .. slug .. "/connect", { cookie = A.id })
    assert.are.equal(200, r.status)
    assert.are.same({ provider = slug, status = "Connected" }, r.data)
    assert.are.same({ status = "CONNECTED", workspaceId = A.ws }, db_status())
    assert.are.equal("Connected", cards(request(app, "GET", "/data", { cookie = A.id }).body)[slug].status)

    r = request(app, "POST", "/api/connections/" .. slug .. "/disconnect", { cookie = A.id })
    assert.are.same({ provider = slug, status = "Not Connected" }, r.data)
    assert.are.same({ status = "NOT_CONNECTED", workspaceId = A.ws }, db_status())
    local card = cards(request(app, "GET", "/data", { cookie = A.id }).body)[slug]
    assert.are.equal("Not Connected", card.status)
    assert.are.equal("Connect", card.button)

    assert.are.equal(404, request(app, "POST", "/api/connections/myspace/connect", { cookie = A.id }).status)
  end)

  it("serves a page script without syntax errors and logs one line per request, no errors", function()
    local r = request(app, "GET", "/static/app.js")
    assert.are.equal(200, r.status)
    assert.matches("^text/javascript", r.headers["content-type"])
    local js = sh.tmpfile("app.js", r.body)
    local check = sh.run({ "node", "--check", js })
    assert.are.equal(0, check.code, check.stderr)
    local page = request(app, "GET", "/data", { cookie = A.id }).body
    assert.matches('<script src="/static/app.js"', page, 1, true)
    assert.are.same({}, inline_scripts(page))

    local log = wait_log(app, "INFO GET /data 200 %d+ms\n$")
    for _, line in ipairs(lines_of(log)) do
      assert.matches(LOG_LINE, line)
      assert.is_nil(line:find(" ERROR ", 1, true), line)
    end
    assert.matches("\n%S+ INFO GET /data 200 %d+ms\n", log)
    assert.matches("\n%S+ INFO POST /api/chat 200 %d+ms\n", log)
  end)

  it("in a browser, /data and a detail page load with no console output and the page script runs", function()
    if not CHROMIUM then pending("Chromium is not installed") return end
    for _, path in ipairs({ "/data", "/data/google-ads" }) do
      local page = browse(app.base .. path .. "?session=" .. http.escape(A.email))
      assert.are.same({}, page.console, path)
      assert.matches('<body data%-ready="true"', page.dom)
      assert.matches('data-testid="provider-card"', page.dom, 1, true)
    end
  end)

  describe("DATAHUB_FAULTS", function()
    it("overview_500: GET /data fails with 500 and an ERROR line", function()
      local f = start_app(t.url, "overview_500")
      finally(function() stop_app(f) end)
      local r = request(f, "GET", "/data", { cookie = A.id })
      assert.are.equal(500, r.status)
      local log = wait_log(f, "INFO GET /data 500")
      assert.matches("\n%S+ ERROR GET /data failed: Error: DATAHUB_FAULTS=overview_500", log)
      assert.matches("\n%S+ INFO GET /data 500 %d+ms", log)
    end)

    it("missing_card:<slug>: that provider's card is not rendered", function()
      local f = start_app(t.url, "missing_card:linkedin-ads")
      finally(function() stop_app(f) end)
      local page = cards(request(f, "GET", "/data", { cookie = A.id }).body)
      assert.are.equal(5, #page)
      assert.is_nil(page["linkedin-ads"])
      assert.truthy(page["google-ads"] and page.shopify)
    end)

    it("no_chat_reply: the user's message is stored, no assistant reply", function()
      local f = start_app(t.url, "no_chat_reply")
      finally(function() stop_app(f) end)
      local r = request(f, "POST", "/api/chat", { cookie = A.id, json = { message = "anyone there?" } })
      assert.are.equal(200, r.status)
      assert.are.equal(cjson.null, r.data.reply)
      assert.are.equal(1, #r.data.messages)
      local created = t.conn:query_value([[SELECT "createdAt" FROM "ChatMessage" WHERE id = $1
        AND content = 'anyone there?' AND "workspaceId" = $2]], r.data.messages[1].id, A.ws)
      assert.truthy(created, "the user's message is stored")
      assert.are.equal(0, t.conn:query_value([[SELECT count(*) FROM "ChatMessage" WHERE "userId" = $1
        AND role = 'ASSISTANT' AND "createdAt" >= $2]], A.id, created))
    end)

    it("chat_null_workspace: the insert fails on NOT NULL (logged); writes NULL when the column allows it", function()
      local f = start_app(t.url, "chat_null_workspace")
      finally(function()
        stop_app(f)
        t.conn:exec([[DELETE FROM "ChatMessage" WHERE "workspaceId" IS NULL]])
        t.conn:exec([[ALTER TABLE "ChatMessage" ALTER COLUMN "workspaceId" SET NOT NULL]])
      end)
      local r = request(f, "POST", "/api/chat", { cookie = A.id, json = { message = "null please" } })
      assert.are.equal(500, r.status)
      local log = wait_log(f, "INFO POST /api/chat 500")
      assert.matches("ERROR POST /api/chat failed: PrismaClientKnownRequestError P2010:", log, 1, true)
      assert.matches('Code: `23502`. Message: `null value in column "workspaceId" of relation "ChatMessage"', log, 1,
        true)
      assert.are.equal(0, t.conn:query_value([[SELECT count(*) FROM "ChatMessage" WHERE content = 'null please']]))

      -- As before the NOT NULL migration: the row really lands with a NULL.
      t.conn:exec([[ALTER TABLE "ChatMessage" ALTER COLUMN "workspaceId" DROP NOT NULL]])
      r = request(f, "POST", "/api/chat", { cookie = A.id, json = { message = "null please" } })
      assert.are.equal(200, r.status)
      assert.are.equal(cjson.null, r.data.messages[1].workspaceId)
      assert.are.equal(2, t.conn:query_value([[SELECT count(*) FROM "ChatMessage" WHERE "userId" = $1
        AND "workspaceId" IS NULL AND id IN ($2, $3)]], A.id, r.data.messages[1].id, r.data.messages[2].id))
    end)

    it("log_constraint_violation: each /data render logs a real constraint violation", function()
      local before = t.conn:query_value([[SELECT count(*) FROM "ChatMessage"]])
      local f = start_app(t.url, "log_constraint_violation")
      finally(function() stop_app(f) end)
      assert.are.equal(200, request(f, "GET", "/data", { cookie = A.id }).status, "the page still renders")
      local log = wait_log(f, "P2003")
      assert.matches("ERROR GET /data: recording the page view failed: PrismaClientKnownRequestError P2003:", log, 1,
        true)
      assert.matches("ChatMessage_workspaceId_fkey", log, 1, true)
      assert.matches('"originalCode":"23503"', log, 1, true)
      assert.are.equal(before, t.conn:query_value([[SELECT count(*) FROM "ChatMessage"]]))
      assert.are.equal(200, request(f, "GET", "/health").status, "the app still serves")
    end)

    it("console_error: the page carries a script that throws an Error", function()
      local f = start_app(t.url, "console_error")
      finally(function() stop_app(f) end)
      local scripts = inline_scripts(request(f, "GET", "/data", { cookie = A.id }).body)
      assert.are.equal(1, #scripts)
      -- Run it: it throws (no DOM needed to throw).
      local r = sh.run({ "node", "-e", scripts[1] })
      assert.are.equal(1, r.code)
      assert.matches("Error: DATAHUB_FAULTS=console_error", r.stderr, 1, true)
      -- And in a real browser, the console shows the uncaught Error.
      if CHROMIUM then
        local page = browse(f.base .. "/data?session=" .. http.escape(A.email))
        assert.matches('^"Uncaught Error: DATAHUB_FAULTS=console_error', page.console[1] or "")
      end
    end)

    it("an unknown fault name stops the app with exit 2", function()
      local r = sh.run({ "node", "dist/src/server.js" }, {
        cwd = APP, env = { DATABASE_URL = t.url, PORT = "0", DATAHUB_FAULTS = "overview_501" } })
      assert.are.equal(2, r.code)
      assert.matches("datahub: DATAHUB_FAULTS: unknown fault 'overview_501'", r.stderr, 1, true)
    end)
  end)

  it("SIGTERM: stops accepting, finishes the request in flight, exits 0", function()
    local f = start_app(t.url)
    local client
    finally(function()
      if client then client:stop(1) end
      stop_app(f)
    end)
    -- A chat request whose body arrives only when this test writes it: curl
    -- streams its stdin, a FIFO, as the body (dhrun.http sends a body at once).
    local argv = { "curl", "-sS", "-i", "--max-time", "60", "-X", "POST", "-T", "-", "-H", "Expect:",
                   "-H", "Content-Type: application/json", "-H", "Cookie: dh_session=" .. A.id, f.base .. "/api/chat" }
    local quoted = {}
    for i, a in ipairs(argv) do quoted[i] = sh.quote(a) end
    local dir = sh.tmpdir()
    local out, fifo = dir .. "/response", dir .. "/body"
    assert.are.equal(0, sh.run({ "mkfifo", fifo }).code)
    client = process.spawn({ "sh", "-c", "exec " .. table.concat(quoted, " ") .. " < " .. sh.quote(fifo) },
      { stdout = out })
    local body = assert(io.open(fifo, "w")) -- returns once curl's shell has opened the other end
    -- wait until the server has accepted curl's connection (ESTABLISHED, local port = the app's)
    local port_hex = string.format(":%04X ", tonumber(f.port))
    local function accepted()
      for line in (sh.read("/proc/net/tcp") or ""):gmatch("[^\n]+") do
        local loc, st = line:match("^%s*%d+: (%x+:%x+) %x+:%x+ (%x%x)")
        if loc and (loc .. " "):find(port_hex, 1, true) and st == "01" then return true end
      end
    end
    local deadline = sys.now() + 20
    while not accepted() and sys.now() < deadline do sys.sleep(0.02) end
    assert.is_true(accepted(), "curl's connection was not accepted")
    assert.is_true(f.proc:kill("TERM"))
    -- the server stops accepting: new connections are refused (waited for, with a deadline)
    -- (while the server closes, a connection may still be accepted and then
    -- dropped: the answer to wait for is "refused")
    local late, err
    deadline = sys.now() + 20
    repeat
      late, err = http.get(f.base .. "/health", { timeout = 5 })
      if late or err.code ~= "refused" then sys.sleep(0.05) end
    until (not late and err.code == "refused") or sys.now() > deadline
    assert.is_nil(late, "a new connection is refused")
    assert.are.equal("refused", err.code, err.message)
    -- now the request in flight gets its body
    body:write('{"message":"in flight"}')
    body:close()

    local c = assert(client:wait(20))
    assert.are.equal(0, c.code)
    local res = parse_curl(sh.read(out))
    assert.are.equal(200, res.status)
    assert.are.equal(A.ws, res.data.messages[1].workspaceId)
    local exit = assert(f.proc:wait(15))
    assert.are.equal(0, exit.code)
    local log = app_log(f)
    assert.matches("INFO SIGTERM: shutting down.-INFO POST /api/chat 200 %d+ms.-INFO stopped\n$", log)
    assert.are.equal(1, t.conn:query_value([[SELECT count(*) FROM "ChatMessage" WHERE content = 'in flight'
      AND "workspaceId" = $1]], A.ws))
  end)
end)
