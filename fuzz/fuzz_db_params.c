/*
 * fuzz_db_params.c - the db module's parameter conversion (runtime/l_db.c):
 * push_params() turns Lua values into the text parameters of a query.
 *
 * Input: a list of tagged values (nil, db.null, booleans, integers, any
 * double bit pattern, strings with any bytes, and values it must refuse: a
 * table, a light userdata other than db.null).  Checks: it refuses exactly
 * the values it cannot send, and what it sends reads back as the value:
 * integers and doubles round-trip exactly through strtoll/strtod (which is
 * how PostgreSQL's int8in/float8in read them), strings are unchanged.
 */
#include "../runtime/l_db.c"

#include <math.h>

#include "fuzz.h"

#define MAX_PARAMS 24

enum { T_NIL, T_NULL, T_BOOL, T_INT, T_FLOAT, T_STRING, T_TABLE, T_LIGHT, T_N };

/* What parameter i (0-based, the Lua value at stack index i + 1) was sent
 * as: `v`, NULL for SQL NULL. */
static void check_sent(lua_State *L, int i, const char *v)
{
    int idx = i + 1;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TLIGHTUSERDATA:
        FUZZ_CHECK(v == NULL);
        break;
    case LUA_TBOOLEAN:
        FUZZ_CHECK(strcmp(v, lua_toboolean(L, idx) ? "true" : "false") == 0);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            char *end;
            errno = 0;
            long long got = strtoll(v, &end, 10);
            FUZZ_CHECK(errno == 0 && *end == '\0' &&
                       got == (long long)lua_tointeger(L, idx));
        } else {
            double want = (double)lua_tonumber(L, idx);
            if (isnan(want)) {
                FUZZ_CHECK(strcmp(v, "NaN") == 0);
            } else if (isinf(want)) {
                FUZZ_CHECK(strcmp(v, want > 0 ? "Infinity" : "-Infinity") == 0);
            } else {
                char *end;
                double got = strtod(v, &end);
                FUZZ_CHECK(*end == '\0' && memcmp(&got, &want, sizeof got) == 0);
            }
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        FUZZ_CHECK(strlen(v) == len && memcmp(v, s, len) == 0);
        break;
    }
    default:
        abort();
    }
}

/* pcall'd with the n values as arguments; checks the array while the
 * strings it points to are still on this frame's stack. */
static int run_params(lua_State *L)
{
    int n = lua_gettop(L);
    const char *const *vals = push_params(L, 1, n, "query");
    for (int i = 0; i < n; i++)
        check_sent(L, i, vals[i]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    lua_State *L = fz_lua();
    int n = 0, refuse = 0;
    static char dummy;

    lua_newtable(L);                              /* 1: the values, in order */
    while (f.n > 0 && n < MAX_PARAMS) {
        int tag = fz_u8(&f) % T_N;
        uint64_t bits;
        double d;
        size_t len;
        const char *s;
        switch (tag) {
        case T_NIL: lua_pushnil(L); break;
        case T_NULL: lua_pushlightuserdata(L, NULL); break;
        case T_BOOL: lua_pushboolean(L, fz_u8(&f) & 1); break;
        case T_INT: lua_pushinteger(L, (lua_Integer)fz_u64(&f)); break;
        case T_FLOAT:
            bits = fz_u64(&f);
            memcpy(&d, &bits, sizeof d);
            lua_pushnumber(L, d);
            break;
        case T_STRING:
            s = fz_str(&f, 64, &len);
            lua_pushlstring(L, s, len);
            if (memchr(s, '\0', len) != NULL)
                refuse = 1;                       /* text cannot hold one */
            break;
        case T_TABLE: lua_newtable(L); refuse = 1; break;
        default: lua_pushlightuserdata(L, &dummy); refuse = 1; break;
        }
        lua_rawseti(L, 1, ++n);
    }

    lua_pushcfunction(L, run_params);
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, 1, i);
    int st = lua_pcall(L, n, 0, 0);
    FUZZ_CHECK((st == LUA_OK) == !refuse);
    if (st != LUA_OK)                             /* names the parameter */
        FUZZ_CHECK(strstr(lua_tostring(L, -1), "query: parameter $") != NULL);
    lua_close(L);
    return 0;
}

