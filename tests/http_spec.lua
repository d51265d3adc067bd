-- dhrun.http against a real local HTTP server (tests/helpers/httpd.js, Node)
-- and real failures: a closed port, an unknown host, TLS to a plain port,
-- a slow endpoint; Ctrl-C through a dhrun subprocess.
local cjson = require "cjson"
local http = require "dhrun.http"
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local httpd = require "httpd"
local sh = require "sh"

local server

setup(function() server = httpd.start() end)
teardown(function() server:stop() end)

local function url(path) return server.url .. path end

-- The /echo endpoint's view of the request.
local function echoed(res)
  assert.are.equal(200, res.status)
  return cjson.decode(res.body)
end

-- Sorted "k=v" items of a Cookie header.
local function cookie_items(s)
  local items = {}
  for item in s:gmatch("[^;%s]+") do items[#items + 1] = item end
  table.sort(items)
  return items
end

-- Calls fn expecting a string error; returns it.
local function misuse(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.are.equal("string", type(err))
  return err
end

describe("http requests", function()
  it("GET, POST, PUT and DELETE reach the server with their method and body", function()
    local res = assert(http.get(url("/echo?q=1")))
    assert.are.same({ 200, true }, { res.status, res.ok })
    assert.are.same({ "GET", "/echo?q=1", "" }, { echoed(res).method, echoed(res).url, echoed(res).body })

    local e = echoed(assert(http.post(url("/echo"), { body = "raw body" })))
    assert.are.same({ "POST", "raw body" }, { e.method, e.body })
    e = echoed(assert(http.put(url("/echo"), { body = "new" })))
    assert.are.same({ "PUT", "new", "3" }, { e.method, e.body, e.headers["content-length"] })
    e = echoed(assert(http.delete(url("/echo"))))
    assert.are.same({ "DELETE", "" }, { e.method, e.body })
    e = echoed(assert(http.request { method = "patch", url = url("/echo"), body = "p" }))
    assert.are.same({ "PATCH", "p" }, { e.method, e.body })
    e = echoed(assert(http.post(url("/echo"))))
    assert.are.same({ "POST", "0" }, { e.method, e.headers["content-length"] })
  end)

  it("sends JSON and decodes JSON responses", function()
    local e = echoed(assert(http.post(url("/echo"), { json = { name = "dhrun", list = { 1, 2 } } })))
    assert.are.equal("application/json", e.headers["content-type"])
    assert.are.same({ name = "dhrun", list = { 1, 2 } }, cjson.decode(e.body))

    local res = assert(http.get(url("/json")))
    assert.are.equal("application/json", res.headers["content-type"])
    assert.are.same({ name = "dhrun", list = { 1, 2, 3 }, ok = true, none = cjson.null }, res:json())

    local value, err = assert(http.get(url("/badjson"))):json()
    assert.is_nil(value)
    assert.matches("^invalid JSON: ", err)
  end)

  it("sends headers and returns the response's, lowercased, repeats joined, set-cookie as a list", function()
    local e = echoed(assert(http.get(url("/echo"), { headers = { ["X-Request-Id"] = "r-42", Accept = false } })))
    assert.are.equal("r-42", e.headers["x-request-id"])
    assert.is_nil(e.headers.accept) -- false removes the header libcurl sends by default
    assert.are.equal("dhrun/0.1.0", e.headers["user-agent"])
    e = echoed(assert(http.get(url("/echo"), { user_agent = "release-bot/2" })))
    assert.are.equal("release-bot/2", e.headers["user-agent"])
    e = echoed(assert(http.post(url("/echo"), { json = {}, headers = { ["content-type"] = "application/vnd+json" } })))
    assert.are.same({ "application/vnd+json", "{}" }, { e.headers["content-type"], e.body })

    local res = assert(http.get(url("/headers"), { headers = { ["X-Request-Id"] = 7 } }))
    assert.are.equal("a, b", res.headers["x-multi"])
    assert.are.same({ "one=1; Path=/", "two=2, with comma; Path=/" }, res.headers["set-cookie"])
    assert.are.equal("7", res.headers["x-request-id"])
    assert.are.equal("text/plain", res.headers["content-type"])
    assert.is_nil(res.headers["X-Multi"])
  end)

  it("trims header values and never returns a line break in one (an empty value is \"\")", function()
    local res = assert(http.get(url("/raw-headers")))
    local h = res.headers
    assert.are.same({ "", "", "first continued", "continued", "ok" },
      { h["x-empty"], h["x-blank"], h["x-folded"], h["x-fold-empty"], res.body })
  end)

  it("returns error statuses as responses, not errors", function()
    local res, err = http.get(url("/status/500"))
    assert.is_nil(err)
    assert.are.same({ 500, false, "status 500" }, { res.status, res.ok, res.body })
    res = assert(http.get(url("/nowhere")))
    assert.are.same({ 404, false }, { res.status, res.ok })
    assert.are.same({ 204, true }, { assert(http.get(url("/status/204"))).status, true })
    assert.are.equal("HTTP 500 (10 bytes)", tostring(assert(http.get(url("/status/500")))))
  end)

  it("follows redirects, counts them, and stops at max_redirects", function()
    local res = assert(http.get(url("/redirect/3")))
    assert.are.same({ 200, "arrived", 3, url("/redirect/0") }, { res.status, res.body, res.redirects, res.url })

    res = assert(http.get(url("/redirect/3"), { follow_redirects = false }))
    assert.are.same({ 302, "/redirect/2", 0 }, { res.status, res.headers.location, res.redirects })

    assert.are.equal(2, assert(http.get(url("/redirect/2"), { max_redirects = 2 })).redirects)
    local none, err = http.get(url("/redirect/3"), { max_redirects = 2 })
    assert.is_nil(none)
    assert.are.same({ "http", 1, "too_many_redirects" }, { err.kind, err.exit, err.code })
    assert.are.equal("GET " .. url("/redirect/3") .. ": more than 2 redirects (max_redirects)", err.message)
  end)

  it("keeps cookies in a jar across requests, and only there", function()
    local jar <close> = http.cookie_jar()
    assert(http.get(url("/set-cookie?a=1&b=2"), { cookies = jar }))
    assert.are.same({ "a=1", "b=2" }, cookie_items(assert(http.get(url("/cookies"), { cookies = jar })).body))
    assert.are.equal("", assert(http.get(url("/cookies"))).body)

    local list = jar:list()
    assert.are.same({ "127.0.0.1", "/", "a", "1", false }, { list[1].domain, list[1].path, list[1].name,
      list[1].value, list[1].secure })
    assert.are.same({ "b", "2" }, { list[2].name, list[2].value })
    assert.are.equal(2, #list)

    -- A cookie set along a redirect chain reaches the next hop even without
    -- a jar, but is forgotten afterwards.
    assert.are.equal("session=s3cr3t", assert(http.get(url("/login"))).body)
    assert.are.equal("", assert(http.get(url("/cookies"))).body)
    assert(http.get(url("/login"), { cookies = jar }))
    assert.are.same({ "a=1", "b=2", "session=s3cr3t" },
      cookie_items(assert(http.get(url("/cookies"), { cookies = jar })).body))
    assert.is_true(jar:list()[3].http_only)

    jar:close()
    jar:close()
    assert.matches("cookie jar is closed", misuse(function() http.get(url("/cookies"), { cookies = jar }) end))
  end)

  it("reports timing phases in order, and a plausible total", function()
    local res = assert(http.get(url("/slow?ms=300")))
    local t = res.time
    assert.is_true(t.namelookup >= 0 and t.namelookup <= t.connect, "namelookup <= connect")
    assert.is_true(t.connect > 0 and t.connect <= t.starttransfer, "connect <= starttransfer")
    assert.is_true(t.starttransfer <= t.total, "starttransfer <= total")
    assert.is_true(t.total >= 0.3 and t.total < 2, "total " .. t.total)
    assert.are.equal(0, t.tls)
  end)

  it("bounds the body with max_body", function()
    assert.are.equal(1000, #assert(http.get(url("/bytes?n=1000"), { max_body = 1000 })).body)
    for _, path in ipairs({ "/bytes?n=1001", "/bytes?n=100000&chunked=1" }) do
      local res, err = http.get(url(path), { max_body = 1000 })
      assert.is_nil(res)
      assert.are.equal("too_large", err.code)
      assert.are.equal("GET " .. url(path) .. ": response body larger than 1000 bytes (max_body)", err.message)
    end
    assert.are.equal(200000, #assert(http.get(url("/bytes?n=200000&chunked=1"))).body)
  end)

  it("percent-encodes and decodes", function()
    assert.are.equal("a%20b%26c%2F%C3%BC~", http.escape("a b&c/ü~"))
    assert.are.equal("a b&c/ü\0", http.unescape("a%20b%26c%2F%C3%BC%00"))
  end)
end)

describe("http failures are returned as dhrun.Error values", function()
  it("connection refused", function()
    local target = ("http://127.0.0.1:%d/data"):format(server.closed_port)
    local res, err = http.get(target)
    assert.is_nil(res)
    assert.are.equal(sys.error_mt, getmetatable(err))
    assert.are.same({ "http", 1, "refused", 7, "GET", target },
      { err.kind, err.exit, err.code, err.curl_code, err.method, err.url })
    assert.are.equal("GET " .. target .. ": connection refused (is the app running?)", err.message)
  end)

  it("a timeout, after about the timeout", function()
    local t0 = sys.now()
    local res, err = http.get(url("/slow?ms=5000"), { timeout = 0.5 })
    local took = sys.now() - t0
    assert.is_nil(res)
    assert.are.equal("timeout", err.code)
    assert.is_true(took >= 0.45 and took < 1.5, "took " .. took)
    assert.matches("^GET http://127%.0%.0%.1:%d+/slow%?ms=5000: no complete response after 0%.%d s %(timeout = 0%.5%)$",
      err.message)
  end)

  it("an unknown host", function()
    local res, err = http.get("http://dhrun-test.invalid/health")
    assert.is_nil(res)
    assert.are.equal("resolve", err.code)
    assert.matches("^GET http://dhrun%-test%.invalid/health: cannot resolve the host name", err.message)
  end)

  it("https to a port that speaks plain HTTP: a clear one-line TLS error", function()
    local target = ("https://127.0.0.1:%d/"):format(server.port)
    local res, err = http.get(target)
    assert.is_nil(res)
    assert.is_truthy(err.code == "tls" or err.code == "other")
    assert.are.equal(target, err.url)
    assert.matches("^GET " .. target:gsub("%p", "%%%0") .. ": TLS handshake failed: ", err.message)
    assert.is_nil(err.message:find("\n"))
    -- insecure turns verification off, it does not make plain HTTP speak TLS
    assert.are.equal("tls", select(2, http.get(target, { insecure = true })).code)
  end)

  it("verifies TLS certificates unless insecure = true", function()
    local tls = httpd.start({ tls = true })
    finally(function() tls:stop() end)
    local res, err = http.get(tls.url .. "/status/200")
    assert.is_nil(res)
    assert.are.same({ "tls", 60 }, { err.code, err.curl_code })
    assert.matches("^GET https://127%.0%.0%.1:%d+/status/200: TLS certificate not trusted: .*insecure = true",
      err.message)
    res = assert(http.get(tls.url .. "/status/200", { insecure = true }))
    assert.are.same({ 200, "status 200" }, { res.status, res.body })
    assert.is_true(res.time.tls > 0 and res.time.tls >= res.time.connect and res.time.tls <= res.time.total)
  end)

  it("never shows a password of the URL", function()
    local res = assert(http.get(("http://deploy:hunter2@127.0.0.1:%d/echo"):format(server.port)))
    assert.are.equal(("http://deploy@127.0.0.1:%d/echo"):format(server.port), res.url)
    assert.matches("^Basic ", echoed(res).headers.authorization) -- but it is used
    local _, err = http.get(("http://deploy:s3cret%%21@127.0.0.1:%d/x"):format(server.closed_port))
    assert.are.equal(("http://deploy@127.0.0.1:%d/x"):format(server.closed_port), err.url)
    assert.is_nil(err.message:find("s3cret", 1, true))
    assert.are.equal("token ***, ***", sys.redact("token s3cret%21, s3cret!"))
    -- an unencoded "/" or "?" in the password: libcurl refuses the URL, and the error must not show it
    for _, pw in ipairs({ "pa/ss", "pa?ss", "pa#ss" }) do
      _, err = http.get(("http://deploy:%s@127.0.0.1:%d/x"):format(pw, server.port))
      assert.are.equal(("http://***@127.0.0.1:%d/x"):format(server.port), err.url)
      assert.is_nil(err.message:find(pw, 1, true), err.message)
    end
  end)

  it("is what the user sees when a script asserts on it: exit 1, one line", function()
    local target = ("http://127.0.0.1:%d/health"):format(server.closed_port)
    local r = sh.dhrun({ "-e", ("assert(require('dhrun.http').get(%q))"):format(target) })
    assert.are.equal(1, r.code)
    assert.are.equal("dhrun: GET " .. target .. ": connection refused (is the app running?)\n", r.stderr)
  end)
end)

describe("Ctrl-C during a request", function()
  it("aborts it at once; dhrun exits 130", function()
    local dir = sh.tmpdir()
    local proc = process.spawn({ sh.bin, "-e", ([[
      require("dhrun.http").get(%q, { timeout = 60 })
      print("not reached")]]):format(url("/slow?ms=30000")) },
      { stdout = dir .. "/out", stderr = dir .. "/err" })
    local deadline = sys.now() + 5
    while assert(http.get(url("/inflight"))).body ~= "1" do
      assert.is_true(sys.now() < deadline, "the request never arrived")
      sys.sleep(0.02)
    end
    local t0 = sys.now()
    proc:kill("INT")
    local r = assert(proc:wait(5))
    assert.is_true(sys.now() - t0 < 1, "took " .. (sys.now() - t0))
    assert.are.equal(130, r.code)
    assert.are.equal("dhrun: interrupted (Ctrl-C)\n", sh.read(dir .. "/err"))
    assert.are.equal("", sh.read(dir .. "/out"))
    -- the connection was closed: the server no longer waits to answer it
    deadline = sys.now() + 2
    while assert(http.get(url("/inflight"))).body ~= "0" and sys.now() < deadline do sys.sleep(0.02) end
    assert.are.equal("0", assert(http.get(url("/inflight"))).body)
  end)
end)

describe("http misuse", function()
  it("raises a string error naming the problem, at the caller's line", function()
    assert.matches("^.-http_spec%.lua:%d+: http%.request: missing url",
      misuse(function() http.request {} end))
    assert.matches("http.request: opts must be a table, got string",
      misuse(function() http.request("http://x") end), 1, true)
    assert.matches("^.-http_spec%.lua:%d+: http%.get: unknown option 'tiemout'",
      misuse(function() http.get(url("/"), { tiemout = 1 }) end))
    assert.matches("http.get: option 'timeout' must be a number >= 0, got string",
      misuse(function() http.get(url("/"), { timeout = "1" }) end), 1, true)
    assert.matches("http.get: url must be a string, got nil",
      misuse(function() http.get() end), 1, true)
    assert.matches("http.get: option 'url' is not allowed here",
      misuse(function() http.get(url("/"), { url = "x" }) end), 1, true)
    assert.matches("http.get: url must start with http:// or https://, got 'ftp://u@h/'",
      misuse(function() http.get("ftp://u:not-a-real-pw@h/") end), 1, true)
    assert.matches("http.post: give either body or json, not both",
      misuse(function() http.post(url("/"), { body = "", json = {} }) end), 1, true)
    assert.matches("http.post: json: Cannot serialise function",
      misuse(function() http.post(url("/"), { json = { f = print } }) end), 1, true)
    assert.matches("http.get: header 'X-A' contains a line break or a NUL byte",
      misuse(function() http.get(url("/"), { headers = { ["X-A"] = "a\r\nX-B: b" } }) end), 1, true)
    assert.matches("http.get: user_agent contains a line break or a NUL byte",
      misuse(function() http.get(url("/"), { user_agent = "bot/1\r\nX-Injected: 1" }) end), 1, true)
    assert.matches('http.get: bad header name "X A"',
      misuse(function() http.get(url("/"), { headers = { ["X A"] = "1" } }) end), 1, true)
    assert.matches("http.get: option 'cookies' must be a cookie jar (http.cookie_jar()), got table",
      misuse(function() http.get(url("/"), { cookies = {} }) end), 1, true)
    assert.matches("http.request: a HEAD request has no body",
      misuse(function() http.request { url = url("/"), method = "HEAD", body = "x" } end), 1, true)
  end)
end)
