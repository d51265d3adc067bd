/* l_http.c - dhrun.core.http: HTTP client on libcurl (placeholder). */
#include "dhrun.h"

static const luaL_Reg http_funcs[] = {{NULL, NULL}};

int luaopen_dhrun_core_http(lua_State *L)
{
    luaL_newlib(L, http_funcs);
    return 1;
}
