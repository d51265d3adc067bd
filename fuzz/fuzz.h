/*
 * fuzz.h - what the libFuzzer harnesses in fuzz/ share: the entry point's
 * prototype, a reader that turns the fuzzer's bytes into small values, and a
 * fresh Lua state per input (closed again, so LeakSanitizer sees every
 * allocation that outlives an input).
 *
 * A harness that needs a runtime file's static functions #includes that .c
 * file first (it defines _GNU_SOURCE before any system header); fuzz.mk
 * then leaves the file's object out of the link.
 */
#ifndef DHRUN_FUZZ_H
#define DHRUN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "dhrun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failed: abort, so libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            abort();                                                         \
        }                                                                    \
    } while (0)

struct fz {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_u64(struct fz *f)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | fz_u8(f);
    return v;
}

/* Up to `max` bytes (a length byte first); *len gets the count. */
static inline const char *fz_str(struct fz *f, size_t max, size_t *len)
{
    size_t want = fz_u8(f) % (max + 1);
    const char *s = (const char *)f->p;
    *len = want < f->n ? want : f->n;
    f->p += *len;
    f->n -= *len;
    return s;
}

/* The rest of the input. */
static inline const char *fz_rest(struct fz *f, size_t *len)
{
    const char *s = (const char *)f->p;
    *len = f->n;
    f->p += f->n;
    f->n = 0;
    return s;
}

/* The fuzz targets link the db and http modules in, where the host opens
 * lib/dhrun/{db,http}.so: after register_modules, point their preload
 * entries at the linked openers. */
static inline void fz_link_modules(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_dhrun_core_db);
    lua_setfield(L, -2, "dhrun.core.db");
    lua_pushcfunction(L, luaopen_dhrun_core_http);
    lua_setfield(L, -2, "dhrun.core.http");
    lua_pop(L, 1);
}

/* A new state with the standard libraries and the dhrun.Error metatable. */
static inline lua_State *fz_lua(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        abort();
    luaL_openlibs(L);
    dhrun_error_setup(L);
    return L;
}

#endif
