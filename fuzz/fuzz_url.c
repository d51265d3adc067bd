/*
 * fuzz_url.c - connection strings shown to people (stdlib/core/dhrun/db.lua,
 * through the embedded stdlib as the host loads it): db.display_url()
 * prints DATABASE_URL (a postgres[ql]:// URL or a libpq key=value string)
 * in headers and error messages, and must never show its password.
 *
 * Input: the connection string, where every 0x01 byte stands for a marker
 * password.  When the marker occurs once and sits where a password goes -
 * libpq's own parse (PQconninfoParse) says it is the password, or, in a
 * URL, it comes between the first ':' and the last '@' before the query
 * (a password with an unencoded '/' or '@', which libpq misreads) - the
 * displayed string must not contain it.  display_url must never raise.
 * DHRUN_STDLIB_DIR=stdlib fuzzes the source tree instead of the copy
 * compiled in, as it does for the host.
 */
#include "../runtime/host.c"

#include "fuzz.h"

#define MARKER "Mk7pSecret"

static const char CHECK[] =
    "local db, core = require 'dhrun.db', require 'dhrun.core.db'\n"
    "local marker = ...\n"
    "return function(u)\n"
    "  local shown = db.display_url(u)\n"
    "  assert(type(shown) == 'string')\n"
    "  local _, n = u:gsub(marker, '')\n"
    "  if n ~= 1 then return end\n"
    "  local secret = false\n"
    "  local parsed = core.conninfo_parse(u)\n"
    "  if parsed and parsed.password and parsed.password:find(marker, 1, true) then secret = true end\n"
    "  local rest = u:match('^postgres[a-z]*://([^?]*)')\n"
    "  local before = rest and rest:match('^(.*)@')\n"
    "  local pw = before and before:match('^[^:/@]*:(.*)$')\n"
    "  if pw and pw:find(marker, 1, true) then secret = true end\n"
    "  if secret and shown:find(marker, 1, true) then\n"
    "    error('display_url shows the password: ' .. u .. ' -> ' .. shown)\n"
    "  end\n"
    "end\n";

static lua_State *L;

static int init(void)
{
    const char *dir = getenv("DHRUN_STDLIB_DIR"); /* as the host: a tree */
    L = fz_lua();
    register_modules(L, dir != NULL && *dir != '\0' ? dir : NULL);
    fz_link_modules(L);
    if (luaL_loadbuffer(L, CHECK, sizeof CHECK - 1, "=fuzz_url") != LUA_OK)
        return 0;
    lua_pushliteral(L, MARKER);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_url: %s\n", lua_tostring(L, -1));
        return 0;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_url.check");
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL && !init())
        abort();
    luaL_Buffer b;
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_url.check");
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < size; i++)
        if (data[i] == 1)
            luaL_addstring(&b, MARKER);
        else
            luaL_addchar(&b, (char)data[i]);
    luaL_pushresult(&b);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_url: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    return 0;
}
