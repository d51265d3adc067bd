-- dhrun.secret: registers passwords with the output redactor before they can
-- be printed, in every form they may take (as written, percent-decoded,
-- quoted inside a key=value string).
--
--   secret.add(s)                 a password
--   secret.register_url(url)      the password of a postgres:// or http(s):// URL (userinfo, ?password=)
--   secret.register_conninfo(s)   the password of a libpq "key=value" string
--   secret.register_text(s)       any URL with a password inside an argument or a value
--   secret.register_environment() DATABASE_URL's and PGPASSWORD's, at start-up (the prelude calls it)
--   secret.misread_userinfo(url)  the part of a URL libpq would misread (an unencoded '/' or '@'), or nil
--
-- No libpq here: the host registers the environment's password before any
-- script runs, and a script that never connects still prints it masked.
local sys = require "dhrun.core.sys"

local secret = {}

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
secret.pct_decode = pct_decode

function secret.add(s)
  if type(s) ~= "string" or s == "" then return end
  sys.add_secret(s)
  local decoded = pct_decode(s)
  if decoded ~= s then sys.add_secret(decoded) end
  -- as written inside a quoted key=value conninfo value
  for _, form in ipairs({ s, decoded }) do
    local quoted = form:gsub("[\\']", "\\%0")
    if quoted ~= form then sys.add_secret(quoted) end
  end
end

-- A URL's parts: scheme "postgresql://", userinfo (or nil), the rest up to
-- the query, and the raw query items.  Like libpq, userinfo ends at the first
-- '@' met before any '/'.
function secret.split_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then return nil end
  local userinfo, after = rest:match("^([^@/]*)@(.*)$")
  if userinfo then rest = after end
  local main, query = rest:match("^([^?#]*)%??([^#]*)")
  local items = {}
  for item in (query or ""):gmatch("[^&]+") do items[#items + 1] = item end
  return scheme, userinfo, main or "", items
end

-- A password with an unencoded '/' or '@' (a base64 one has '/') makes libpq
-- read the URL as something else (host "user", port "pass..."), and pieces
-- of the password would then reach messages unmasked.  Such a URL has a '/'
-- or '@' ahead of its last '@' (one in a query value aside).  Returns that part and what
-- looks like the password in it (after the first ':'), or nil for a sound URL.
-- is_key(name): whether a query key is a connection parameter (dhrun.db
-- knows libpq's).  Without it, every '@' after a '?' may be the password's.
function secret.misread_userinfo(url, is_key)
  -- up to the URL's last '@': a password may hold '?' or '#' too
  local rest = url:match("^%a[%w+.-]*://(.*)$") or ""
  local before = rest:match("^(.*)@")
  -- unless that '@' is in a query value (?application_name=a@b): every key
  -- between the first '?' and it is a connection parameter
  local query = before and before:match("^[^?]*%?(.*)$")
  if query and is_key then
    local keys = true
    for item in query:gmatch("[^&]+") do
      if not is_key(pct_decode(item:match("^[^=]*"))) then keys = false end
    end
    -- and the text before the '?' reads as user@host:port,...: a '?' in a
    -- password ("pw?host=x@real-host") is followed by a query look-alike
    local head = rest:match("^[^?]*")
    local hosts = (head:match("^[^@/]*@(.*)$") or head):match("^[^/]*")
    for h in (hosts .. ","):gmatch("([^,]*),") do
      if not (h:match("^%[[^%]]*%]:?%d*$") or h:match("^[^:@%[%]]*:?%d*$")) then keys = false end
    end
    if keys then before = head:match("^(.*)@") end
  end
  if before and before:find("[/@]") then return before, before:match("^[^:/@]*:(.*)$") end
end

function secret.register_url(url)
  local scheme, userinfo, _, items = secret.split_url(url)
  if not scheme then return end
  if userinfo then secret.add(userinfo:match("^[^:]*:(.*)$")) end
  for _, item in ipairs(items) do
    if pct_decode(item:match("^[^=]*")) == "password" then secret.add(item:match("^[^=]*=(.*)$")) end
  end
  -- a password with an unencoded '/' or '@' (libpq misreads such a URL):
  -- what looks like it, up to the last '@'
  local misread, password = secret.misread_userinfo(url)
  if misread then secret.add(password) end
end

function secret.register_conninfo(s)
  local pos = 1
  while true do
    local _, e = s:find("password%s*=%s*", pos)
    if not e then return end
    pos = e + 1
    if s:sub(pos, pos) == "'" then
      -- a quoted value: up to the next ' that is not escaped by a backslash
      local i, raw, value = pos + 1, {}, {}
      while i <= #s do
        local c = s:sub(i, i)
        if c == "\\" and i < #s then
          raw[#raw + 1], value[#value + 1] = s:sub(i, i + 1), s:sub(i + 1, i + 1)
          i = i + 2
        elseif c == "'" then
          break
        else
          raw[#raw + 1], value[#value + 1] = c, c
          i = i + 1
        end
      end
      secret.add(table.concat(raw))
      secret.add(table.concat(value))
      pos = i + 1
    else
      local plain = s:match("^[^%s]+", pos)
      if plain then
        secret.add(plain)
        pos = pos + #plain
      end
    end
  end
end

-- Passwords in URLs anywhere in a string (a flow argument such as
-- --url https://user:pw@host).
function secret.register_text(s)
  if type(s) ~= "string" then return end
  for url in s:gmatch("%a[%w+.-]*://[^%s\"'<>]+") do secret.register_url(url) end
  if s:find("password%s*=") then secret.register_conninfo(s) end
end

function secret.register_environment()
  local url = os.getenv("DATABASE_URL")
  if url and url ~= "" then
    if url:find("^%a[%w+.-]*://") then secret.register_url(url) else secret.register_conninfo(url) end
  end
  secret.add(os.getenv("PGPASSWORD"))
end

return secret
