/*
 * fuzz_db_result.c - the db module's result conversion (runtime/l_db.c):
 * push_result() turns a PGresult into Lua rows, converting each text value
 * by its column's type OID (integers, floats, booleans, bytea unescaped,
 * numeric and the rest as text) and naming columns (duplicates included).
 *
 * The PGresult is built client-side with libpq's PQmakeEmptyPGresult /
 * PQsetResultAttrs / PQsetvalue, so any bytes can sit in any column type.
 * Input: ncols, then per column a type byte and a name byte, nrows, then
 * per cell a length byte (255 = SQL NULL) and the bytes.
 */
#include "../runtime/l_db.c"

#include "fuzz.h"

static const Oid TYPES[] = {BOOLOID,   BYTEAOID,  INT8OID, INT2OID,
                            INT4OID,   OIDOID,    FLOAT4OID, FLOAT8OID,
                            1700 /* numeric */, 25 /* text */, 114 /* json */};
static const char *const NAMES[] = {"id", "name", "id", "", "?column?", "x"};

struct call {
    dbconn *c;
    enum shape shape;
};

static int run_push(lua_State *L)
{
    struct call *k = (struct call *)lua_touserdata(L, 1);
    push_result(L, k->c, k->shape);
    return 1;
}

/* Reference bytea decoder for the hex format ("\x" + pairs of hex digits):
 * returns the decoded length, or -1 when `v` is not well-formed hex. */
static long hex_decode(const char *v, size_t len, unsigned char *out)
{
    if (len < 2 || v[0] != '\\' || v[1] != 'x' || (len - 2) % 2 != 0)
        return -1;
    for (size_t i = 2; i < len; i += 2) {
        int hi, lo;
        char a = v[i], b = v[i + 1];
        hi = a >= '0' && a <= '9' ? a - '0' : a >= 'a' && a <= 'f' ? a - 'a' + 10
             : a >= 'A' && a <= 'F' ? a - 'A' + 10 : -1;
        lo = b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10
             : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
        if (hi < 0 || lo < 0)
            return -1;
        out[(i - 2) / 2] = (unsigned char)(hi * 16 + lo);
    }
    return (long)(len - 2) / 2;
}

/* The Lua value at the top of the stack is what cell (row, col) must give. */
static void check_value(lua_State *L, const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        FUZZ_CHECK(lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL);
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    size_t len = (size_t)PQgetlength(r, row, col), got;
    switch (PQftype(r, col)) {
    case BOOLOID:
        FUZZ_CHECK(lua_isboolean(L, -1) && lua_toboolean(L, -1) == (v[0] == 't'));
        break;
    case INT2OID: case INT4OID: case INT8OID: case OIDOID:
        /* a number exactly when Lua reads the text as one, else the text */
        if (lua_type(L, -1) == LUA_TNUMBER) {
            FUZZ_CHECK(lua_stringtonumber(L, v) != 0);
            FUZZ_CHECK(lua_rawequal(L, -1, -2));
            lua_pop(L, 1);
        } else {
            const char *s = lua_tolstring(L, -1, &got);
            FUZZ_CHECK(s != NULL && got == len && memcmp(s, v, len) == 0);
        }
        break;
    case FLOAT4OID: case FLOAT8OID:
        FUZZ_CHECK(lua_type(L, -1) == LUA_TNUMBER);
        break;
    case BYTEAOID: {
        unsigned char *want = malloc(len / 2 + 1);
        long n = want ? hex_decode(v, len, want) : -1;
        const char *s = lua_tolstring(L, -1, &got);
        FUZZ_CHECK(s != NULL);
        if (n >= 0)
            FUZZ_CHECK(got == (size_t)n && memcmp(s, want, got) == 0);
        free(want);
        break;
    }
    default: {                /* the exact bytes, zero bytes included */
        const char *s = lua_tolstring(L, -1, &got);
        FUZZ_CHECK(s != NULL && got == len && memcmp(s, v, len) == 0);
    }
    }
}

static void check_rows(lua_State *L, const PGresult *r, int nrows, int ncols)
{
    FUZZ_CHECK(lua_istable(L, -1) && (int)lua_rawlen(L, -1) == nrows);
    lua_getfield(L, -1, "columns");
    FUZZ_CHECK((int)lua_rawlen(L, -1) == ncols);
    lua_pop(L, 1);
    for (int i = 0; i < nrows; i++) {
        lua_rawgeti(L, -1, i + 1);
        FUZZ_CHECK((int)lua_rawlen(L, -1) == ncols);
        for (int j = 0; j < ncols; j++) {
            lua_rawgeti(L, -1, j + 1);
            check_value(L, r, i, j);
            /* row.name is the first column of that name */
            int first = j;
            for (int k = 0; k < j; k++)
                if (strcmp(PQfname(r, k), PQfname(r, j)) == 0) {
                    first = k;
                    break;
                }
            if (first == j) {
                lua_getfield(L, -2, PQfname(r, j));
                FUZZ_CHECK(lua_rawequal(L, -1, -2) ||
                           (lua_type(L, -1) == LUA_TNUMBER &&
                            lua_tonumber(L, -1) != lua_tonumber(L, -1)));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    int ncols = fz_u8(&f) % 7;
    PGresAttDesc attrs[8];
    memset(attrs, 0, sizeof attrs);
    for (int j = 0; j < ncols; j++) {
        uint8_t t = fz_u8(&f);
        attrs[j].name = (char *)NAMES[fz_u8(&f) % 6];
        /* mostly known types; sometimes any OID at all */
        attrs[j].typid = t < 240 ? TYPES[t % (sizeof TYPES / sizeof *TYPES)]
                                 : (Oid)fz_u64(&f);
        attrs[j].typlen = -1;
        attrs[j].atttypmod = -1;
    }
    int nrows = fz_u8(&f) % 6;
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    if (r == NULL || !PQsetResultAttrs(r, ncols, ncols ? attrs : NULL))
        abort();
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++) {
            uint8_t l = fz_u8(&f);
            size_t len = l == 255 ? 0 : (l < f.n ? l : f.n);
            if (!PQsetvalue(r, i, j, l == 255 ? NULL : (char *)f.p,
                            l == 255 ? -1 : (int)len))
                abort();
            if (l != 255) {
                f.p += len;
                f.n -= len;
            }
        }
    if (ncols == 0)
        nrows = 0;                  /* no cells: PQsetvalue never ran */

    lua_State *L = fz_lua();
    for (int shape = ALL_ROWS; shape <= FIRST_VALUE; shape++) {
        /* push_result frees c->res; each shape gets its own copy */
        PGresult *copy = PQcopyResult(r, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
        if (copy == NULL)
            abort();
        dbconn c;
        memset(&c, 0, sizeof c);
        c.res = copy;
        struct call k = {&c, (enum shape)shape};
        lua_pushcfunction(L, run_push);
        lua_pushlightuserdata(L, &k);
        FUZZ_CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
        FUZZ_CHECK(c.res == NULL && c.mem == NULL);    /* released */
        if (shape == ALL_ROWS) {
            check_rows(L, r, nrows, ncols);
        } else if (shape == FIRST_ROW) {
            FUZZ_CHECK(nrows > 0 ? lua_istable(L, -1) : lua_isnil(L, -1));
        } else if (nrows > 0 && ncols > 0) {
            check_value(L, r, 0, 0);
        } else {
            FUZZ_CHECK(lua_isnil(L, -1));
        }
        lua_settop(L, 0);
    }
    lua_close(L);
    PQclear(r);
    return 0;
}
