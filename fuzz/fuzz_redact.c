/*
 * fuzz_redact.c - secret redaction (runtime/l_sys.c): dhrun_redact_add()
 * registers secrets, dhrun_redact() masks each with "***", longest first.
 *
 * Input: a count byte, that many secrets (a length byte and the bytes, any
 * bytes, repeats and overlaps included), then the text to redact.
 * Checks: the registry holds each distinct non-empty secret once, longest
 * first; without secrets the text is unchanged; when no secret contains
 * '*' (which "***" could recreate) no secret survives in the output, and
 * redacting the output again changes nothing.
 */
#define _GNU_SOURCE /* memmem */
#include "fuzz.h"

#define MAX_SECRETS 8

struct secret {
    const char *s;
    size_t len;
};

/* Does h contain the (non-empty) string n? */
static int contains(const char *h, size_t hl, const char *n, size_t nl)
{
    return nl > 0 && memmem(h, hl, n, nl) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    struct secret sec[MAX_SECRETS];
    int nsec = fz_u8(&f) % (MAX_SECRETS + 1), distinct = 0, star = 0;
    lua_State *L = fz_lua();

    for (int i = 0; i < nsec; i++) {
        sec[i].s = fz_str(&f, 24, &sec[i].len);
        dhrun_redact_add(L, sec[i].s, sec[i].len);
        int seen = sec[i].len == 0;
        for (int j = 0; j < i && !seen; j++)
            seen = sec[j].len == sec[i].len &&
                   memcmp(sec[j].s, sec[i].s, sec[i].len) == 0;
        distinct += !seen;
        star |= memchr(sec[i].s, '*', sec[i].len) != NULL;
    }
    size_t tlen, olen, again_len;
    const char *text = fz_rest(&f, &tlen);
    const char *out = dhrun_redact(L, text, tlen, &olen);

    /* the registered count, through the Lua API the stdlib uses */
    luaL_requiref(L, "dhrun.core.sys", luaopen_dhrun_core_sys, 0);
    lua_getfield(L, -1, "secret_count");
    lua_call(L, 0, 1);
    FUZZ_CHECK(lua_tointeger(L, -1) == distinct);
    lua_pop(L, 2);

    if (distinct == 0)
        FUZZ_CHECK(olen == tlen && memcmp(out, text, tlen) == 0);
    if (!star) {
        for (int i = 0; i < nsec; i++)
            FUZZ_CHECK(!contains(out, olen, sec[i].s, sec[i].len));
        const char *again = dhrun_redact(L, out, olen, &again_len);
        FUZZ_CHECK(again_len == olen && memcmp(again, out, olen) == 0);
    }
    lua_close(L);
    return 0;
}
