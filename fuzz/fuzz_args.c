/*
 * fuzz_args.c - the host's command line: parse_args() over any argv, and the
 * $DHRUN_PATH splitting of push_search_path() (runtime/host.c).
 *
 * Input: words separated by NUL bytes; the first is $DHRUN_PATH, the others
 * are argv[1..].  host.c is included to reach its static functions.
 */
#include "../runtime/host.c"

#include "fuzz.h"

#define MAX_ARGS 256    /* dhrun_main refuses more, before parse_args */

/* Is p inside one of the argv strings? (-e CODE points into argv) */
static int points_into(const char *p, char **argv, int argc)
{
    for (int i = 0; i < argc; i++)
        if (p >= argv[i] && p <= argv[i] + strlen(argv[i]))
            return 1;
    return 0;
}

static void check_parse(int argc, char **argv)
{
    const char *exec[MAX_ARGS];
    struct options o;
    memset(&o, 0, sizeof o);
    o.exec = exec;
    int code = parse_args(&o, argc, argv);
    FUZZ_CHECK(code == 0 || code == -1 || code == DHRUN_EXIT_USAGE);
    if (code != 0)
        return;
    FUZZ_CHECK(o.nexec >= 0 && o.nexec < argc);
    for (int i = 0; i < o.nexec; i++)
        FUZZ_CHECK(points_into(exec[i], argv, argc));
    FUZZ_CHECK(o.script == 0 || (o.script >= 1 && o.script < argc));
    FUZZ_CHECK(o.script != 0 || o.nexec > 0 || o.list);
    if (o.script > 1) {
        /* SCRIPT is the first word that is not an option, or follows "--" */
        const char *s = argv[o.script];
        FUZZ_CHECK(s[0] != '-' || strcmp(s, "-") == 0 ||
                   strcmp(argv[o.script - 1], "--") == 0);
    }
}

/* Every directory of $DHRUN_PATH, in order and without empty entries,
 * between ./scripts and the installed share directory. */
static void check_search_path(const char *env)
{
    lua_State *L = fz_lua();
    push_search_path(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_rawgeti(L, -1, 1);
    FUZZ_CHECK(strcmp(lua_tostring(L, -1), "./scripts") == 0);
    lua_pop(L, 1);
    lua_Integer k = 2;
    const char *p = env;
    while (*p != '\0') {
        size_t len = strcspn(p, ":");
        if (len > 0) {
            size_t got;
            FUZZ_CHECK(k < n);
            lua_rawgeti(L, -1, k++);
            const char *dir = lua_tolstring(L, -1, &got);
            FUZZ_CHECK(got == len && memcmp(dir, p, len) == 0);
            lua_pop(L, 1);
        }
        p += len;
        if (*p == ':')
            p++;
    }
    FUZZ_CHECK(k == n);
    lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a NUL-terminated copy, so every word is a C string */
    char *buf = malloc(size + 1);
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *env = buf;
    char *p = buf + strlen(buf);
    argv[argc++] = (char *)"dhrun";
    while (p < buf + size && argc < MAX_ARGS) {
        p++;                          /* past the NUL */
        argv[argc++] = p;
        p += strlen(p);
    }
    argv[argc] = NULL;
    check_parse(argc, argv);
    if (setenv("DHRUN_PATH", env, 1) == 0)
        check_search_path(env);
    free(buf);
    return 0;
}
