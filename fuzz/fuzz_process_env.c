/*
 * fuzz_process_env.c - what l_process.c builds before it forks
 * (runtime/l_process.c): prepare_launch() turns core.spawn's argv and opts
 * into the child's argv, its /bin/sh fallback argv, its environment
 * (build_env: inherited minus overridden or removed names, plus the
 * table's values) and the candidate paths of execvp's search (build_paths,
 * from the PATH the child will see).  Nothing is forked.
 *
 * Input: argv words, then env entries (name, and a value or false), then
 * option bytes.  Checks: it refuses exactly what cannot be passed to
 * execve (no argv, a non-string, a zero byte, an empty name or one with
 * '='); otherwise argv is copied exactly, every environment entry is
 * NAME=value with each table name present once (or absent for false) and
 * every other inherited entry kept in order, and there is one candidate per
 * PATH entry, each ending in /argv[0] (argv[0] itself with a slash in it).
 */
#include "../runtime/l_process.c"

#include "fuzz.h"

#define MAX_WORDS 8

struct prep {
    struct launch ln;
    int mode[3];
    const char *file_for[3];
};

static int run_prepare(lua_State *L)
{
    struct prep *p = (struct prep *)lua_touserdata(L, 3);
    lua_settop(L, 2);
    lua_newtable(L);                    /* 3: anchors, as proc_spawn does */
    prepare_launch(L, 3, &p->ln, p->mode, p->file_for);
    /* the anchors must outlive this call: hand them back */
    return 1;
}

static size_t count(char **v)
{
    size_t n = 0;
    while (v[n] != NULL)
        n++;
    return n;
}

/* Is `entry` "name=..." for the Lua string at the top of the stack? */
static int entry_is(const char *entry, lua_State *L, int idx)
{
    size_t len;
    const char *name = lua_tolstring(L, idx, &len);
    return strncmp(entry, name, len) == 0 && entry[len] == '=';
}

static void check_env(lua_State *L, char **envp)
{
    size_t n = count(envp), kept = 0, added = 0;
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(strchr(envp[i], '=') != NULL);
    lua_getfield(L, 2, "env");
    if (lua_isnil(L, -1)) {
        FUZZ_CHECK(envp == environ);
        lua_pop(L, 1);
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {      /* [env, name, value] */
        size_t hits = 0;
        const char *want = NULL;
        if (lua_type(L, -1) == LUA_TSTRING)
            want = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2),
                                   lua_tostring(L, -1));
        else
            lua_pushnil(L);
        for (size_t i = 0; i < n; i++)
            if (entry_is(envp[i], L, -3)) {
                hits++;
                FUZZ_CHECK(want != NULL && strcmp(envp[i], want) == 0);
            }
        FUZZ_CHECK(hits == (want != NULL ? 1u : 0u));
        added += want != NULL;
        lua_pop(L, 2);
    }
    /* the inherited entries not named in the table, in their order */
    for (size_t i = 0; environ[i] != NULL; i++) {
        const char *eq = strchr(environ[i], '=');
        lua_pushlstring(L, environ[i], eq ? (size_t)(eq - environ[i])
                                          : strlen(environ[i]));
        int named = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 1);
        if (!named) {
            FUZZ_CHECK(envp[kept] == environ[i]);
            kept++;
        }
    }
    FUZZ_CHECK(n == kept + added);
    lua_pop(L, 1);
}

static void check_paths(const struct launch *ln, const char *path)
{
    const char *file = ln->argv[0];
    size_t n = count(ln->paths), flen = strlen(file);
    if (*file == '\0') {
        FUZZ_CHECK(n == 0);
        return;
    }
    if (strchr(file, '/') != NULL) {
        FUZZ_CHECK(n == 1 && ln->paths[0] == file);
        return;
    }
    size_t want = 1;
    for (const char *c = path; *c; c++)
        want += *c == ':';
    FUZZ_CHECK(n == want);
    const char *p = path;
    for (size_t i = 0; i < n; i++) {
        size_t dlen = strcspn(p, ":");
        const char *c = ln->paths[i];
        if (dlen == 0) {
            FUZZ_CHECK(strcmp(c, file) == 0);
        } else {
            FUZZ_CHECK(strlen(c) == dlen + 1 + flen);
            FUZZ_CHECK(memcmp(c, p, dlen) == 0 && c[dlen] == '/');
            FUZZ_CHECK(strcmp(c + dlen + 1, file) == 0);
        }
        p += dlen + (p[dlen] == ':');
    }
}

/* Does the env table at the top hold something execve cannot take? */
static int bad_env(lua_State *L)
{
    int bad = 0;
    size_t len;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        const char *name = lua_tolstring(L, -2, &len);  /* keys are strings */
        bad |= len == 0 || memchr(name, '=', len) != NULL ||
               memchr(name, '\0', len) != NULL;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *v = lua_tolstring(L, -1, &len);
            bad |= memchr(v, '\0', len) != NULL;
        } else {
            bad |= lua_toboolean(L, -1);                /* only false */
        }
        lua_pop(L, 1);
    }
    return bad;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    lua_State *L = fz_lua();
    int refuse = 0;
    size_t len;
    const char *s;

    lua_newtable(L);                                    /* 1: argv */
    int argc = fz_u8(&f) % (MAX_WORDS + 1);
    if (argc == 0)
        refuse = 1;
    for (int i = 1; i <= argc; i++) {
        s = fz_str(&f, 32, &len);
        if (len == 1 && s[0] == '\x01') {               /* not a string */
            lua_pushinteger(L, i);
            refuse = 1;
        } else {
            lua_pushlstring(L, s, len);
            refuse |= memchr(s, '\0', len) != NULL;
        }
        lua_rawseti(L, 1, i);
    }

    lua_newtable(L);                                    /* 2: opts */
    uint8_t flags = fz_u8(&f);
    if (flags & 1) {
        lua_newtable(L);
        int nenv = fz_u8(&f) % (MAX_WORDS + 1);
        for (int i = 0; i < nenv; i++) {
            const char *name = fz_str(&f, 12, &len);
            size_t nlen = len;
            uint8_t kind = fz_u8(&f);
            /* names from a small set collide with the real environment */
            static const char *const known[] = {"PATH", "HOME", "LANG", "A"};
            if (kind & 0x80) {
                name = known[kind % 4];
                nlen = strlen(name);
            }
            lua_pushlstring(L, name, nlen);
            if (kind & 1) {
                lua_pushboolean(L, 0);                  /* remove it */
            } else if ((kind & 6) == 6) {
                lua_pushboolean(L, 1);                  /* refused */
            } else {
                s = fz_str(&f, 40, &len);
                lua_pushlstring(L, s, len);
            }
            lua_rawset(L, -3);                          /* a later one wins */
        }
        refuse |= bad_env(L);
        lua_setfield(L, 2, "env");
    }
    if (flags & 2) {
        lua_pushliteral(L, "/tmp");
        lua_setfield(L, 2, "cwd");
    }

    struct prep p;
    memset(&p, 0, sizeof p);
    lua_pushcfunction(L, run_prepare);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushlightuserdata(L, &p);
    int st = lua_pcall(L, 3, 1, 0);                     /* 3: anchors */
    FUZZ_CHECK((st == LUA_OK) == !refuse);
    if (st == LUA_OK) {
        FUZZ_CHECK((int)count(p.ln.argv) == argc);
        FUZZ_CHECK(strcmp(p.ln.sh_argv[0], "/bin/sh") == 0);
        for (int i = 0; i < argc; i++) {
            lua_rawgeti(L, 1, i + 1);
            FUZZ_CHECK(strcmp(p.ln.argv[i], lua_tostring(L, -1)) == 0);
            lua_pop(L, 1);
            if (i > 0)
                FUZZ_CHECK(p.ln.sh_argv[i + 1] == p.ln.argv[i]);
        }
        FUZZ_CHECK(p.ln.sh_argv[argc + 1] == NULL);
        check_env(L, p.ln.envp);
        /* the PATH the child sees: the table's, removed, or inherited */
        const char *path = getenv("PATH");
        lua_getfield(L, 2, "env");
        if (lua_istable(L, -1)) {
            int t = lua_getfield(L, -1, "PATH");
            if (t == LUA_TSTRING)
                path = lua_tostring(L, -1);
            else if (t == LUA_TBOOLEAN)
                path = NULL;
            lua_pop(L, 1);
        }
        check_paths(&p.ln, path ? path : DEFAULT_PATH);
        lua_pop(L, 1);
    }
    lua_close(L);
    return 0;
}
