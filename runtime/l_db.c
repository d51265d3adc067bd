/* l_db.c - dhrun.core.db: libpq binding (placeholder until written). */
#include "dhrun.h"

static const luaL_Reg db_funcs[] = {{NULL, NULL}};

int luaopen_dhrun_core_db(lua_State *L)
{
    luaL_newlib(L, db_funcs);
    return 1;
}
