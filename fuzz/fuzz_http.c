/*
 * fuzz_http.c - what a hostile HTTP server can send to dhrun.http: status
 * lines, header lines (any names and values, folding, duplicates,
 * set-cookie), bodies (chunked, cut short, over max_body), redirects and
 * cookies.  libcurl parses the bytes; runtime/l_http.c turns them into the
 * response (on_body, push_headers, push_response), the failure
 * (push_failure, failure_code) and jar:list() (split_cookie_line,
 * cmp_rows); stdlib/core/dhrun/http.lua into what a script sees.  The request
 * goes through http.request, as a script calls it.
 *
 * No network: fuzz/http_server.h answers each connection libcurl opens
 * (to any host) with the next connection's bytes of the input.
 *
 * Input: a first line of option letters, then what each connection
 * receives, connections separated by "\n@@\n" (fuzz/http.dict has the
 * tokens).  Letters: H HEAD, P POST with a body, U PUT, D DELETE (else
 * GET); N do not follow redirects; R max_redirects = 1 (else 3); S
 * max_body = 16, L max_body = 0 "no limit" (else 1024); J a cookie jar,
 * listed after the request.  The URL carries a password.  libcurl sees
 * unread bytes on an idle connection as a dead one and connects again, so
 * the responses of a redirect chain go one per connection.
 *
 * Checks: http.request never raises; a response has an integer status, ok
 * agreeing with it, a body within max_body, no more redirects than allowed,
 * lowercase header names (a line with nothing before its colon gives "")
 * with string values free of line breaks (set-cookie: a list of them), a
 * url without the password; res:json() does not raise.  A failure is a dhrun.Error (kind "http", exit 1) with a
 * known code and a one-line message without the password.  jar:list() rows
 * have their fields' types and come sorted by domain, path and name.
 */
#include "../runtime/host.c"

#include "fuzz.h"
#include "http_server.h"

#include "../runtime/l_http.c"

#define SEPARATOR "\n@@\n"
#define PASSWORD "Mk7pSecret"

static const char CHECK[] =
    "local http = require 'dhrun.http'\n"
    "local opts, use_jar, password = ...\n"
    "local CODES = {refused = 1, timeout = 1, resolve = 1, tls = 1,\n"
    "               too_many_redirects = 1, too_large = 1, other = 1}\n"
    "local function no_password(s, what)\n"
    "  if password and s:find(password, 1, true) then error(what .. ' shows the password: ' .. s) end\n"
    "end\n"
    "local jar = use_jar and http.cookie_jar() or nil\n"
    "opts.cookies = jar\n"
    "local res, err = http.request(opts)\n"
    "if res then\n"
    "  assert(math.type(res.status) == 'integer', 'status')\n"
    "  assert(res.ok == (res.status >= 200 and res.status <= 299), 'ok')\n"
    "  assert(type(res.body) == 'string', 'body')\n"
    "  assert(opts.max_body == 0 or #res.body <= opts.max_body, 'body over max_body')\n"
    "  assert(math.type(res.redirects) == 'integer' and res.redirects >= 0, 'redirects')\n"
    "  assert(res.redirects <= (opts.follow_redirects and opts.max_redirects or 0), 'too many redirects')\n"
    "  assert(type(res.url) == 'string', 'url')\n"
    "  no_password(res.url, 'res.url')\n"
    "  for k, v in pairs(res.headers) do\n"
    "    assert(type(k) == 'string' and k == k:lower(), 'header name')\n"
    "    local values = v\n"
    "    if k ~= 'set-cookie' then values = {v} end\n"
    "    assert(type(values) == 'table', 'set-cookie is a list')\n"
    "    for _, x in ipairs(values) do\n"
    "      assert(type(x) == 'string', 'header value')\n"
    "      assert(not x:find('[\\r\\n]'), 'line break in the value of header ' .. k)\n"
    "    end\n"
    "  end\n"
    "  for _, k in ipairs({'total', 'namelookup', 'connect', 'tls', 'starttransfer'}) do\n"
    "    assert(type(res.time[k]) == 'number', 'time')\n"
    "  end\n"
    "  res:json()\n"
    "  assert(type(tostring(res)) == 'string')\n"
    "else\n"
    "  assert(getmetatable(err) and err.kind == 'http' and err.exit == 1, 'error object')\n"
    "  assert(CODES[err.code], 'error code')\n"
    "  assert(type(err.message) == 'string' and err.message ~= '', 'message')\n"
    "  assert(not err.message:find('\\n'), 'message on one line')\n"
    "  no_password(err.message, 'err.message')\n"
    "  no_password(err.url, 'err.url')\n"
    "end\n"
    "if jar then\n"
    "  local prev\n"
    "  for _, c in ipairs(jar:list()) do\n"
    "    for _, f in ipairs({'domain', 'path', 'name', 'value'}) do\n"
    "      assert(type(c[f]) == 'string', 'cookie ' .. f)\n"
    "    end\n"
    "    assert(type(c.secure) == 'boolean' and type(c.http_only) == 'boolean', 'cookie flags')\n"
    "    assert(math.type(c.expires) == 'integer', 'cookie expires')\n"
    "    if prev then\n"
    "      local a = {prev.domain, prev.path, prev.name}\n"
    "      local b = {c.domain, c.path, c.name}\n"
    "      local i = 1\n"
    "      while i < 3 and a[i] == b[i] do i = i + 1 end\n"
    "      assert(a[i] <= b[i], 'cookies not sorted')\n"
    "    end\n"
    "    prev = c\n"
    "  end\n"
    "  jar:close()\n"
    "end\n";

static void set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_integer(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* Gives the server the input after its first line, connection by
 * connection. */
static void split_connections(const char *p, size_t n)
{
    size_t sep = sizeof SEPARATOR - 1;
    server_begin();
    for (;;) {
        const char *end = memmem(p, n, SEPARATOR, sep);
        size_t len = end != NULL ? (size_t)(end - p) : n;
        server_add(p, len);
        if (end == NULL)
            break;
        p += len + sep;
        n -= len + sep;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size);
    size_t optlen = nl != NULL ? (size_t)(nl - in) : size;
    if (optlen > 16)
        return -1;                      /* not an option line: not kept */
    int has = 0;
    for (size_t i = 0; i < optlen; i++)
        if (in[i] >= 'A' && in[i] <= 'Z')
            has |= 1 << (in[i] - 'A');
#define HAS(c) (has & (1 << ((c) - 'A')))
    split_connections(in + optlen + (nl != NULL), size - optlen - (nl != NULL));

    lua_State *L = check_begin(CHECK, sizeof CHECK - 1, "=fuzz_http");
    lua_createtable(L, 0, 8);
    set_string(L, "url", "http://user:" PASSWORD "@dhrun.test/start");
    set_string(L, "method", HAS('H') ? "HEAD" : HAS('P') ? "POST" : HAS('U') ? "PUT"
                          : HAS('D') ? "DELETE" : "GET");
    if (!HAS('H') && (HAS('P') || HAS('U')))
        set_string(L, "body", "{\"release\": 42}");
    lua_pushboolean(L, !HAS('N'));
    lua_setfield(L, -2, "follow_redirects");
    set_integer(L, "max_redirects", HAS('R') ? 1 : 3);
    set_integer(L, "max_body", HAS('S') ? 16 : HAS('L') ? 0 : 1024);
    /* Every byte is there at once: nothing should wait, but a bug that
     * waits must not look like a hang. */
    set_integer(L, "timeout", 5);
    lua_pushboolean(L, HAS('J') != 0);
    /* The password is only a secret if the server's bytes do not hold it. */
    if (memmem(data, size, PASSWORD, sizeof PASSWORD - 1) == NULL)
        lua_pushliteral(L, PASSWORD);
    else
        lua_pushnil(L);
#undef HAS
    check_end(L, 3, "=fuzz_http");
    return 0;
}
