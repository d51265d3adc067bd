--- dhrun.http: an HTTP client for release scripts (health checks, smoke tests,
-- webhooks), on libcurl (dhrun.core.http).
--
--   local http = require "dhrun.http"
--   local res, err = http.get("http://127.0.0.1:3000/health", { timeout = 5 })
--   if not res then error(err) end            -- a dhrun.Error: exit 1, message says what failed
--   if res.ok then local data = assert(res:json()) end
--
-- http.request(opts) -> response | nil, err
--   opts: url (required, http:// or https://), method ("GET"), headers = {Name = "value" | false},
--     body (string) or json (a value encoded with cjson; sets Content-Type: application/json),
--     timeout (10 s, the whole request; 0 = none), connect_timeout (5 s), follow_redirects (true),
--     max_redirects (5), insecure (false: TLS certificates are verified), cookies (a cookie jar),
--     user_agent ("dhrun/<version>"), max_body (64 MiB: a larger response is an err "too_large").
--   Header values and user_agent must not hold a CR, LF or NUL byte (misuse).
--   A header value false removes a header libcurl would add (e.g. Expect); "" sends it empty.
-- response: status, ok (status 200..299), body, redirects (how many were followed),
--   url (the effective URL after redirects, without a password),
--   headers (names lowercased; values trimmed, a CR or LF inside one replaced with a space; repeated headers
--   joined with ", ", except headers["set-cookie"], always a list), time = {total=, namelookup=, connect=, tls=,
--   starttransfer=} (seconds from the start of the request, as libcurl counts them: each includes the phases before
--   it; tls is 0 for http).
--   response:json() -> value | nil, "invalid JSON: ..."
-- err: a dhrun.Error {kind = "http", exit = 1, code =, curl_code =, method =, url =, message =}
--   where code is "refused", "timeout", "resolve", "tls", "too_many_redirects", "too_large" or "other"
--   and message is one line: "GET http://127.0.0.1:9/data: connection refused (is the app running?)".
--   URLs in errors never show a password (and registered secrets are masked).
--
-- Transport failures are returned, never raised; an HTTP error status (404, 500) is a response.
-- Misuse (unknown option, wrong type, missing url) raises a string error at the caller's line.
-- Ctrl-C aborts the request at once and raises the interrupt error (exit 130).
-- Cookies: without a jar, cookies live only along one request's redirect chain; requests given the
-- same jar share its cookies.
--
-- http.get(url [, opts]), http.post(url [, opts]), http.put(url [, opts]), http.delete(url [, opts])
-- http.cookie_jar() -> jar: jar:list() -> { {domain=, path=, name=, value=, secure=, http_only=,
--   expires=}, ... } sorted by domain, path, name; jar:close() (also <close> and __gc)
-- http.escape(s), http.unescape(s): percent-encoding (libcurl's)
local core = require "dhrun.core.http"
local sys = require "dhrun.core.sys"
local errors = require "dhrun.errors"
local cjson = require "cjson.safe"

local http = {}

local DEFAULTS = {
  method = "GET", timeout = 10, connect_timeout = 5, follow_redirects = true, max_redirects = 5,
  insecure = false, user_agent = core.user_agent, max_body = 64 * 1024 * 1024,
}

---------------------------------------------------------------------------
-- Argument checking: misuse raises a string error at the caller's line.

-- Raises `fname: msg` pointing at the caller's line (errors.misuse).
local misuse = errors.misuse

local function is_number(v) return type(v) == "number" and v >= 0 end
local function is_count(v) return math.type(v) == "integer" and v >= 0 end

local checks = {
  url = { "a string", function(v) return type(v) == "string" end },
  method = { "a string", function(v) return type(v) == "string" end },
  headers = { "a table", function(v) return type(v) == "table" end },
  body = { "a string", function(v) return type(v) == "string" end },
  json = { "a JSON value", function(v) return v ~= nil end },
  timeout = { "a number >= 0", is_number },
  connect_timeout = { "a number >= 0", is_number },
  follow_redirects = { "a boolean", function(v) return type(v) == "boolean" end },
  max_redirects = { "an integer >= 0", is_count },
  insecure = { "a boolean", function(v) return type(v) == "boolean" end },
  cookies = { "a cookie jar (http.cookie_jar())", core.is_jar },
  user_agent = { "a string", function(v) return type(v) == "string" end },
  max_body = { "an integer >= 0", is_count },
}

-- RFC 9110 token characters: method and header names.
local TOKEN = "^[%w!#$%%&'*+.^_`|~-]+$"
-- What libcurl would send as it is and must not be in a header line.
local LINE_BREAK = "[\r\n%z]"

-- The URL as people may see it: no password (libcurl parses it; if it
-- cannot, the user-info is cut out by hand), registered secrets masked.
-- By hand, everything up to the last "@" goes: a password with an unencoded
-- "/", "?", "#" or "@" is what makes libcurl refuse a URL, and it must not
-- show in the error that says so.
local function display_url(url)
  local shown = core.display_url(url) or url:gsub("^(%a[%w+.-]*://).*@", "%1***@")
  return (sys.redact(shown))
end

-- Header lines for libcurl, sorted (stable requests), plus Content-Type
-- for a JSON body unless the caller chose one.
local function header_lines(fname, headers, json)
  local lines, has_type = {}, false
  for name, value in pairs(headers or {}) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      misuse(fname, ("bad header name %q"):format(tostring(name)))
    end
    if math.type(value) == "integer" then value = tostring(value) end
    if value == false then
      lines[#lines + 1] = name .. ":"               -- libcurl: do not send it
    elseif type(value) ~= "string" then
      misuse(fname, ("header '%s' must be a string or false, got %s"):format(name, type(value)))
    elseif value:find(LINE_BREAK) then
      misuse(fname, ("header '%s' contains a line break or a NUL byte"):format(name))
    elseif value == "" then
      lines[#lines + 1] = name .. ";"               -- libcurl: send it empty
    else
      lines[#lines + 1] = name .. ": " .. value
    end
    has_type = has_type or name:lower() == "content-type"
  end
  table.sort(lines)
  if json and not has_type then lines[#lines + 1] = "Content-Type: application/json" end
  return lines
end

-- Checks opts and returns the request for core.perform (a new table).
local function prepare(fname, opts)
  if type(opts) ~= "table" then misuse(fname, "opts must be a table, got " .. type(opts)) end
  local req = {}
  for k, v in pairs(opts) do
    local check = checks[k]
    if not check then misuse(fname, ("unknown option '%s'"):format(tostring(k))) end
    if not check[2](v) then
      misuse(fname, ("option '%s' must be %s, got %s"):format(k, check[1], type(v)))
    end
    req[k] = v
  end
  for k, v in pairs(DEFAULTS) do
    if req[k] == nil then req[k] = v end
  end
  if req.url == nil then misuse(fname, "missing url") end
  if not req.url:find("^[Hh][Tt][Tt][Pp][Ss]?://") then
    misuse(fname, ("url must start with http:// or https://, got '%s'"):format(display_url(req.url)))
  end
  if not req.method:find(TOKEN) then misuse(fname, ("bad method %q"):format(req.method)) end
  if req.user_agent:find(LINE_BREAK) then misuse(fname, "user_agent contains a line break or a NUL byte") end
  req.method = req.method:upper()
  if req.body ~= nil and req.json ~= nil then misuse(fname, "give either body or json, not both") end
  if req.method == "HEAD" and (req.body ~= nil or req.json ~= nil) then
    misuse(fname, "a HEAD request has no body")
  end
  if req.json ~= nil then
    local text, err = cjson.encode(req.json)
    if not text then misuse(fname, "json: " .. err) end
    req.body = text
  end
  req.headers = header_lines(fname, opts.headers, req.json ~= nil)
  req.json = nil
  return req
end

---------------------------------------------------------------------------
-- Responses and errors

local Response = {}
Response.__index = Response

--- response:json() -> value | nil, "invalid JSON: ..."  (JSON null is cjson.null)
function Response:json()
  local value, err = cjson.decode(self.body)
  if err then return nil, "invalid JSON: " .. err end
  return value
end

function Response:__tostring()
  return ("HTTP %d (%d bytes)"):format(self.status, #self.body)
end

local function one_line(s) return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end

-- What went wrong, for people: the part of the message after the URL.
local function explain(f, req)
  local code = f.code
  if code == "refused" then
    return "connection refused (is the app running?)"
  elseif code == "timeout" then
    if f.connected then
      return ("no complete response after %.1f s (timeout = %g)"):format(f.elapsed, req.timeout)
    end
    -- libcurl gives up connecting at the smaller of the two limits
    local by_total = req.connect_timeout == 0 or (req.timeout > 0 and req.timeout < req.connect_timeout)
    local limit = by_total and "timeout" or "connect_timeout"
    return ("could not connect within %.1f s (%s = %g)"):format(f.elapsed, limit, req[limit])
  elseif code == "resolve" then
    return "cannot resolve the host name (" .. f.detail .. ")"
  elseif code == "tls" then
    if f.curl_code == 60 then -- CURLE_PEER_FAILED_VERIFICATION
      return "TLS certificate not trusted: " .. f.detail .. " (insecure = true skips the check, for test servers)"
    elseif f.detail:find("wrong version number", 1, true) then
      return "TLS handshake failed: " .. f.detail .. " (does this port speak https?)"
    end
    return "TLS handshake failed: " .. f.detail
  elseif code == "too_many_redirects" then
    return ("more than %d redirects (max_redirects)"):format(req.max_redirects)
  elseif code == "too_large" then
    return ("response body larger than %d bytes (max_body)"):format(req.max_body)
  end
  return f.detail
end

local function http_error(f, req)
  local url = display_url(req.url)
  local message = sys.redact(one_line(("%s %s: %s"):format(req.method, url, explain(f, req))))
  return errors.new("http", message, { code = f.code, curl_code = f.curl_code, method = req.method, url = url })
end

---------------------------------------------------------------------------
-- Requests

local function perform(fname, opts)
  local req = prepare(fname, opts)
  display_url(req.url) -- registers a password in the URL with the redactor first
  local res, failure = core.perform(req)
  if not res then return nil, http_error(failure, req) end
  res.ok = res.status >= 200 and res.status <= 299
  res.url = core.display_url(res.url) or res.url
  return setmetatable(res, Response)
end

--- http.request(opts) -> response | nil, err
function http.request(opts)
  return perform("http.request", opts)
end

-- http.get(url [, opts]) and friends: opts as http.request, minus url and method.
local function shorthand(method)
  local fname = "http." .. method:lower()
  return function(url, opts)
    if opts ~= nil and type(opts) ~= "table" then misuse(fname, "opts must be a table, got " .. type(opts)) end
    local all = {}
    for k, v in pairs(opts or {}) do
      if k == "url" or k == "method" then misuse(fname, ("option '%s' is not allowed here"):format(k)) end
      all[k] = v
    end
    if type(url) ~= "string" then misuse(fname, "url must be a string, got " .. type(url)) end
    all.url, all.method = url, method
    return perform(fname, all)
  end
end

http.get = shorthand("GET")
http.post = shorthand("POST")
http.put = shorthand("PUT")
http.delete = shorthand("DELETE")

--- http.cookie_jar() -> jar
function http.cookie_jar()
  return core.cookie_jar()
end

--- http.escape(s) -> s percent-encoded (every byte but A-Z a-z 0-9 - . _ ~)
function http.escape(s)
  if type(s) ~= "string" then misuse("http.escape", "expected a string, got " .. type(s)) end
  return core.escape(s)
end

--- http.unescape(s) -> s with %XX sequences decoded
function http.unescape(s)
  if type(s) ~= "string" then misuse("http.unescape", "expected a string, got " .. type(s)) end
  return core.unescape(s)
end

return http
