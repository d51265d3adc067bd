/*
 * fuzz_http_request.c - what a script or a config file can put in
 * http.request's options: url, method, headers (any names; values strings,
 * integers, false or ""), body or json, timeout and connect_timeout (any
 * number: NaN, infinities, huge), max_body and max_redirects (any integer),
 * user_agent.  stdlib/core/dhrun/http.lua checks and completes them (prepare,
 * header_lines, display_url); runtime/l_http.c makes libcurl options of
 * them (http_perform: opt_*, to_ms, set_method, the header list).  A fixed
 * 200 response answers (fuzz/http_server.h).
 *
 * Checks: http.request either raises a misuse error (a string naming
 * http.request at the caller's line), or returns a response or a
 * dhrun.Error with a known code and a one-line message; nothing else (an
 * internal "http: req.x" error, a crash).  The server receives one
 * well-formed request: "METHOD TARGET HTTP/1.1" with the method asked for,
 * then "Name: value" lines holding no CR, LF or NUL of their own and naming
 * only headers the caller gave or libcurl adds, an empty line, and the body
 * with its Content-Length.  When the URL's user-info holds the marker
 * password - by libcurl's parse, or, if libcurl cannot parse the URL,
 * anywhere between the first ':' after the user name and the last '@' - no
 * error shows it.
 *
 * Input (struct fz, fuzz.h): a flags byte, then the values in the order of
 * read_opts() below: strings as a length byte and the bytes, numbers as 8
 * bytes.  0x01 bytes in the URL stand for the marker password.
 */
#include "../runtime/host.c"

#include "fuzz.h"
#include "http_server.h"

#include "../runtime/l_http.c"

#define MARKER "Mk7pSecret"

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static const char CHECK[] =
    "local http, cjson = require 'dhrun.http', require 'cjson.safe'\n"
    "local opts, marker, received, curl_password = ...\n"
    "local CODES = {refused = 1, timeout = 1, resolve = 1, tls = 1,\n"
    "               too_many_redirects = 1, too_large = 1, other = 1}\n"
    "-- Does the URL hold the marker as its password?\n"
    "local secret = false\n"
    "local url = opts.url\n"
    "if marker and select(2, url:gsub(marker, '')) == 1 then\n"
    "  local parsed, pw = curl_password(url)\n"
    "  if not parsed then\n"
    "    local before = (url:match('^%a[%w+.-]*://(.*)$') or ''):match('^(.*)@')\n"
    "    pw = before and before:match('^[^:/@]*:(.*)$')\n"
    "  end\n"
    "  secret = pw ~= nil and pw:find(marker, 1, true) ~= nil\n"
    "end\n"
    "local function no_secret(s, what)\n"
    "  if secret and s and s:find(marker, 1, true) then error(what .. ' shows the password: ' .. s) end\n"
    "end\n"
    "-- called from a Lua function, not a tail call: misuse names its line\n"
    "local ok, res, err = pcall(function() local r, e = http.request(opts) return r, e end)\n"
    "if not ok then\n"
    "  assert(type(res) == 'string', 'raised a ' .. type(res))\n"
    "  assert(res:find('^fuzz_http_request:%d+: http%.request: '), 'not a misuse error: ' .. res)\n"
    "  no_secret(res, 'the misuse error')\n"
    "  return\n"
    "end\n"
    "if res then\n"
    "  local head = (opts.method or ''):upper() == 'HEAD'\n"
    "  assert(res.status == 200 and (res.body == 'ok' or head and res.body == ''), 'the response')\n"
    "else\n"
    "  assert(getmetatable(err) and err.kind == 'http' and err.exit == 1, 'error object')\n"
    "  assert(CODES[err.code], 'error code')\n"
    "  assert(type(err.message) == 'string' and not err.message:find('\\n'), 'message on one line')\n"
    "  no_secret(err.message, 'err.message')\n"
    "  no_secret(err.url, 'err.url')\n"
    "end\n"
    "local got = received()\n"
    "if not got or got == '' then return end     -- never sent (URL refused, timeout)\n"
    "local head, sent_body = got:match('^(.-)\\r\\n\\r\\n(.*)$')\n"
    "assert(head, 'a request without the empty line: ' .. got)\n"
    "local lines = {}\n"
    "for line in (head .. '\\r\\n'):gmatch('(.-)\\r\\n') do lines[#lines + 1] = line end\n"
    "for _, l in ipairs(lines) do\n"
    "  assert(not l:find('[\\r\\n%z]'), 'a CR, LF or NUL inside a request line: ' .. l)\n"
    "end\n"
    "local method = lines[1]:match('^(%S+) %S+ HTTP/1%.1$')\n"
    "assert(method, 'request line: ' .. lines[1])\n"
    "assert(method == (opts.method or 'GET'):upper(), 'method ' .. method)\n"
    "local allowed = {host = 1, ['user-agent'] = 1, accept = 1, authorization = 1,\n"
    "                 ['content-length'] = 1, ['content-type'] = 1, expect = 1}\n"
    "local removed, framing = {}, false\n"
    "for name, v in pairs(opts.headers or {}) do\n"
    "  local n = name:lower()\n"
    "  if v == false then removed[n] = true else allowed[n] = 1 end\n"
    "  framing = framing or n == 'content-length' or n == 'transfer-encoding' or n == 'expect'\n"
    "end\n"
    "local cl\n"
    "for i = 2, #lines do\n"
    "  local name = lines[i]:match(\"^([!#$%%&'*+.^_`|~%w-]+):\")\n"
    "  assert(name, 'not a header line: ' .. lines[i])\n"
    "  name = name:lower()\n"
    "  assert(allowed[name] and not removed[name], 'a header nobody asked for: ' .. lines[i])\n"
    "  if name == 'content-length' then cl = tonumber(lines[i]:match(':%s*(%d+)$')) end\n"
    "end\n"
    "local body = opts.body or (opts.json ~= nil and cjson.encode(opts.json)) or nil\n"
    "if body and not framing then\n"
    "  assert(cl == #body and sent_body == body, 'body sent: ' .. sent_body)\n"
    "elseif not framing then\n"
    "  assert(sent_body == '', 'a body nobody asked for')\n"
    "end\n";

/* received([i]) -> what the server got on connection i (0: the first) */
static int l_received(lua_State *L)
{
    server_received(L, (int)luaL_optinteger(L, 1, 0));
    return 1;
}

/* curl_password(url) -> parsed, password | nil (libcurl's reading, as
 * core.display_url does it) */
static int l_curl_password(lua_State *L)
{
    const char *u = luaL_checkstring(L, 1);
    CURLU *h = curl_url();
    char *pw = NULL;
    int parsed = h != NULL && curl_url_set(h, CURLUPART_URL, u, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK;
    lua_pushboolean(L, parsed);
    if (parsed && curl_url_get(h, CURLUPART_PASSWORD, &pw, 0) == CURLUE_OK)
        lua_pushstring(L, pw);
    else
        lua_pushnil(L);
    curl_free(pw);
    curl_url_cleanup(h);
    return 2;
}

static void set_fz_string(lua_State *L, struct fz *f, const char *k, size_t max)
{
    size_t len;
    const char *s = fz_str(f, max, &len);
    lua_pushlstring(L, s, len);
    lua_setfield(L, -2, k);
}

/* Any double at all, from its bits. */
static void set_fz_number(lua_State *L, struct fz *f, const char *k)
{
    uint64_t bits = fz_u64(f);
    double d;
    memcpy(&d, &bits, sizeof d);
    lua_pushnumber(L, d);
    lua_setfield(L, -2, k);
}

static void set_fz_integer(lua_State *L, struct fz *f, const char *k)
{
    lua_pushinteger(L, (lua_Integer)fz_u64(f));
    lua_setfield(L, -2, k);
}

/* Pushes the options table the input describes. */
static void read_opts(lua_State *L, struct fz *f)
{
    uint8_t flags = fz_u8(f);
    lua_createtable(L, 0, 12);

    /* The URL, usually after "http://" (else any scheme, or none). */
    size_t len;
    const char *u = fz_str(f, 120, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (flags & 1)
        luaL_addstring(&b, "http://");
    for (size_t i = 0; i < len; i++)
        if (u[i] == 1)
            luaL_addstring(&b, MARKER);
        else
            luaL_addchar(&b, u[i]);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "url");

    if (flags & 2)
        set_fz_string(L, f, "method", 16);
    if (flags & 4)
        set_fz_string(L, f, "body", 64);
    if (flags & 8) {                    /* json = {s = "..."} */
        lua_createtable(L, 0, 1);
        set_fz_string(L, f, "s", 32);
        lua_setfield(L, -2, "json");
    }
    if (flags & 16)
        set_fz_string(L, f, "user_agent", 64);
    if (flags & 32) {
        set_fz_number(L, f, "timeout");
        set_fz_number(L, f, "connect_timeout");
    } else {
        lua_pushinteger(L, 5);          /* a bug that waits is not a hang */
        lua_setfield(L, -2, "timeout");
    }
    if (flags & 64) {
        set_fz_integer(L, f, "max_body");
        set_fz_integer(L, f, "max_redirects");
    }

    int n = fz_u8(f) % 5;
    if (n > 0 || (flags & 128)) {
        lua_createtable(L, 0, n);
        for (int i = 0; i < n; i++) {
            const char *name = fz_str(f, 24, &len);
            lua_pushlstring(L, name, len);
            switch (fz_u8(f) % 4) {
            case 0: lua_pushboolean(L, 0); break;
            case 1: lua_pushliteral(L, ""); break;
            case 2: lua_pushinteger(L, fz_u8(f)); break;
            default: {
                const char *v = fz_str(f, 48, &len);
                lua_pushlstring(L, v, len);
            }
            }
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "headers");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    server_begin();
    server_add(RESPONSE, sizeof RESPONSE - 1);

    lua_State *L = check_begin(CHECK, sizeof CHECK - 1, "=fuzz_http_request");
    read_opts(L, &f);
    /* The marker is only a secret if nothing else in the input spells it. */
    if (memmem(data, size, MARKER, sizeof MARKER - 1) == NULL)
        lua_pushliteral(L, MARKER);
    else
        lua_pushnil(L);
    lua_pushcfunction(L, l_received);
    lua_pushcfunction(L, l_curl_password);
    check_end(L, 4, "=fuzz_http_request");
    return 0;
}
