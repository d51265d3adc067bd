/*
 * l_sql.c - dhrun.core.sql: PostgreSQL's own SQL scanner and parser
 * (libpg_query, Debian's libpg-query-dev: PostgreSQL 15's grammar), so that
 * migration files are split into statements as the server would read them:
 * DO $$ ... $$ blocks, strings, quoted identifiers and nested comments
 * included.  Built as lib/dhrun/sql.so and opened on first require.
 *
 *   sql.split(text)  -> { {start, len}, ... } | fail, message, position
 *                       byte offsets (1-based start) of each statement,
 *                       from the scanner, so text the parser rejects still
 *                       splits
 *   sql.parse(text)  -> JSON parse tree (string) | fail, message, position
 *
 * libpg_query allocates its results itself; each is parked in a userdata
 * whose __gc frees it, and freed as soon as its Lua copy is made.
 */
#include "dhrun.h"

#include <string.h>

#include <pg_query.h>

/* Pushes fail, message, position (1-based byte) for a libpg_query error. */
static int push_error(lua_State *L, const PgQueryError *e)
{
    luaL_pushfail(L);
    lua_pushstring(L, e->message ? e->message : "syntax error");
    if (e->cursorpos > 0)
        lua_pushinteger(L, e->cursorpos);
    else
        lua_pushnil(L);
    return 3;
}

/* libpg_query needs a NUL-terminated string without embedded NULs. */
static const char *check_text(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (strlen(s) != len)
        luaL_argerror(L, 1, "SQL text contains a NUL byte");
    return s;
}

/* A libpg_query result parked in a userdata, so that it is freed by __gc
 * if building the Lua result raises (out of memory); freed at once
 * otherwise. */
#define SPLIT_MT "dhrun.sql.split"
#define PARSE_MT "dhrun.sql.parse"

typedef struct {
    PgQuerySplitResult r;
    int held;
} SplitBox;

typedef struct {
    PgQueryParseResult r;
    int held;
} ParseBox;

static int split_gc(lua_State *L)
{
    SplitBox *b = (SplitBox *)luaL_checkudata(L, 1, SPLIT_MT);
    if (b->held) {
        b->held = 0;
        pg_query_free_split_result(b->r);
    }
    return 0;
}

static int parse_gc(lua_State *L)
{
    ParseBox *b = (ParseBox *)luaL_checkudata(L, 1, PARSE_MT);
    if (b->held) {
        b->held = 0;
        pg_query_free_parse_result(b->r);
    }
    return 0;
}

static int sql_split(lua_State *L)
{
    const char *s = check_text(L);
    SplitBox *b = (SplitBox *)lua_newuserdatauv(L, sizeof *b, 0);
    b->held = 0;                                /* owned from here on */
    luaL_setmetatable(L, SPLIT_MT);
    b->r = pg_query_split_with_scanner(s);
    b->held = 1;
    if (b->r.error != NULL)
        return push_error(L, b->r.error);       /* __gc frees it */
    lua_createtable(L, b->r.n_stmts, 0);
    for (int i = 0; i < b->r.n_stmts; i++) {
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, (lua_Integer)b->r.stmts[i]->stmt_location + 1);
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, (lua_Integer)b->r.stmts[i]->stmt_len);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    b->held = 0;
    pg_query_free_split_result(b->r);
    return 1;
}

static int sql_parse(lua_State *L)
{
    const char *s = check_text(L);
    ParseBox *b = (ParseBox *)lua_newuserdatauv(L, sizeof *b, 0);
    b->held = 0;
    luaL_setmetatable(L, PARSE_MT);
    b->r = pg_query_parse(s);
    b->held = 1;
    if (b->r.error != NULL)
        return push_error(L, b->r.error);
    lua_pushstring(L, b->r.parse_tree);
    b->held = 0;
    pg_query_free_parse_result(b->r);
    return 1;
}

static const luaL_Reg sql_funcs[] = {
    {"parse", sql_parse},
    {"split", sql_split},
    {NULL, NULL}
};

DHRUN_MODULE_STAMP(sql);

int luaopen_dhrun_core_sql(lua_State *L)
{
    if (luaL_newmetatable(L, SPLIT_MT)) {
        lua_pushcfunction(L, split_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, PARSE_MT)) {
        lua_pushcfunction(L, parse_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, sql_funcs);
    return 1;
}
