/* l_process.c - dhrun.core.process: child processes (placeholder). */
#include "dhrun.h"

static const luaL_Reg process_funcs[] = {{NULL, NULL}};

int luaopen_dhrun_core_process(lua_State *L)
{
    luaL_newlib(L, process_funcs);
    return 1;
}
