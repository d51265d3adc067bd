/*
 * host.c - the dhrun host: one lua_State, the module list, the embedded
 * stdlib, signal handling and the mapping from errors to exit codes.
 *
 * Everything that can raise runs inside lua_pcall (pmain), as lua.c does, so
 * a Lua error never escapes as a panic and every resource is released by
 * lua_close on every exit path.
 */
#define _GNU_SOURCE
#include "dhrun.h"
#include "stdlib_blob.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#ifndef DHRUN_SHARE_DIR
#define DHRUN_SHARE_DIR "/usr/local/share/dhrun"
#endif

/* Modules linked from Debian's packages. */
int luaopen_lfs(lua_State *L);
int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

static const luaL_Reg c_modules[] = {
    {"cjson", luaopen_cjson},
    {"cjson.safe", luaopen_cjson_safe},
    {"dhrun.core.process", luaopen_dhrun_core_process},
    {"dhrun.core.sys", luaopen_dhrun_core_sys},
    {"lfs", luaopen_lfs},
    {NULL, NULL}
};

/* ------------------------------------------------------------------ */
/* Structured errors                                                   */

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (lua_getfield(L, 1, "where") == LUA_TSTRING)
        luaL_addvalue(&b);
    else
        lua_pop(L, 1);
    if (lua_getfield(L, 1, "message") == LUA_TSTRING)
        luaL_addvalue(&b);
    else {
        lua_pop(L, 1);
        luaL_addstring(&b, "error");
    }
    luaL_pushresult(&b);
    return 1;
}

void dhrun_error_setup(lua_State *L)
{
    if (luaL_newmetatable(L, DHRUN_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}

void dhrun_error_new(lua_State *L, const char *kind, int exit_code,
                     const char *message, int level)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, exit_code);
    lua_setfield(L, -2, "exit");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    if (level > 0) {
        luaL_where(L, level);          /* [err, where] */
        if (lua_rawlen(L, -1) > 0)
            lua_setfield(L, -2, "where");
        else
            lua_pop(L, 1);
    }
    luaL_setmetatable(L, DHRUN_ERROR_MT);
}

/* ------------------------------------------------------------------ */
/* Signals                                                              */

static volatile sig_atomic_t sig_pending;   /* signal not yet delivered */
static volatile sig_atomic_t sig_count;     /* signals received so far  */
static volatile sig_atomic_t sig_last;
static int sig_pipe[2] = {-1, -1};
static lua_State *volatile signal_L;

#define MAX_CHILDREN 64
static volatile sig_atomic_t children[MAX_CHILDREN];

void dhrun_child_register(pid_t pgid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = (sig_atomic_t)pgid;
            return;
        }
}

void dhrun_child_unregister(pid_t pgid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == (sig_atomic_t)pgid)
            children[i] = 0;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (sig_pending)
        dhrun_raise_interrupt(L);
    lua_sethook(L, NULL, 0, 0);
}

static void on_signal(int sig)
{
    int saved = errno;
    sig_count = sig_count + 1;
    if (sig_count > 1) {
        /* Second signal: the user insists.  Take the children down with
         * us and leave now; only async-signal-safe calls here. */
        for (int i = 0; i < MAX_CHILDREN; i++)
            if (children[i] > 0)
                kill(-(pid_t)children[i], SIGKILL);
        static const char msg[] = "\ndhrun: second interrupt, exiting now\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(128 + sig);
    }
    sig_last = sig;
    sig_pending = sig;
    if (sig_pipe[1] >= 0) {
        char c = (char)sig;
        ssize_t w = write(sig_pipe[1], &c, 1);
        (void)w;
    }
    if (signal_L != NULL)
        lua_sethook(signal_L, interrupt_hook,
                    LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    errno = saved;
}

static void signals_setup(lua_State *L)
{
    struct sigaction sa;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        sig_pipe[0] = sig_pipe[1] = -1;
    signal_L = L;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* writes to a closed pipe return EPIPE */
}

static void signals_teardown(void)
{
    signal_L = NULL;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    for (int i = 0; i < 2; i++)
        if (sig_pipe[i] >= 0) {
            close(sig_pipe[i]);
            sig_pipe[i] = -1;
        }
}

int dhrun_interrupted(void) { return (int)sig_pending; }
int dhrun_interrupt_fd(void) { return sig_pipe[0]; }

void dhrun_interrupt_reset(void)
{
    char buf[64];
    sig_pending = 0;
    sig_count = 0;
    if (sig_pipe[0] >= 0)
        while (read(sig_pipe[0], buf, sizeof buf) > 0) {
        }
}

int dhrun_raise_interrupt(lua_State *L)
{
    char buf[64];
    int sig = sig_pending ? (int)sig_pending : (int)sig_last;
    if (sig == 0)
        sig = SIGINT;
    /* Delivered once: later cleanup (journal writes, rollback of the open
     * transaction) must be able to use the database again.  A second
     * signal still forces an immediate exit (on_signal). */
    sig_pending = 0;
    if (sig_pipe[0] >= 0)
        while (read(sig_pipe[0], buf, sizeof buf) > 0) {
        }
    lua_sethook(L, NULL, 0, 0);
    dhrun_error_new(L, "interrupted", 128 + sig,
                    sig == SIGTERM ? "interrupted (SIGTERM)"
                                   : "interrupted (Ctrl-C)", 0);
    lua_pushinteger(L, sig);
    lua_setfield(L, -2, "signal");
    return lua_error(L);
}

double dhrun_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* Embedded stdlib                                                      */

static int embedded_loader(lua_State *L)
{
    size_t i = (size_t)lua_tointeger(L, lua_upvalueindex(1));
    const struct dhrun_embedded *m = &dhrun_stdlib[i];
    /* Bytecode compiled at build time by tools/embed.c. */
    if (luaL_loadbufferx(L, (const char *)m->data, m->size, m->chunkname,
                         "b") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_pushstring(L, m->chunkname + 1);
    lua_call(L, 2, 1);
    return 1;
}

/* Searcher used in development mode: the embedded copy is the fallback
 * for modules the source tree does not have. */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (size_t i = 0; i < dhrun_stdlib_count; i++)
        if (strcmp(dhrun_stdlib[i].name, name) == 0) {
            lua_pushinteger(L, (lua_Integer)i);
            lua_pushcclosure(L, embedded_loader, 1);
            lua_pushstring(L, dhrun_stdlib[i].chunkname + 1);
            return 2;
        }
    lua_pushfstring(L, "no embedded module '%s'", name);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Loadable modules                                                     */

/* libpq and libcurl pull in some 30 shared libraries (Kerberos, LDAP,
 * GnuTLS, ...) whose loading costs more than the whole Lua start-up, so
 * their modules are shared objects opened on first require: a script
 * that never touches the database or HTTP starts like lua5.4 (bench B4). */
static const struct dl_module {
    const char *name;       /* require name                          */
    const char *file;       /* under lib/dhrun/                       */
    const char *open;       /* luaopen_ function                      */
    const char *stamp;      /* version stamp (DHRUN_MODULE_STAMP)     */
} dl_modules[] = {
    {"dhrun.core.db", "db.so", "luaopen_dhrun_core_db", "dhrun_module_db"},
    {"dhrun.core.http", "http.so", "luaopen_dhrun_core_http",
     "dhrun_module_http"},
    {"dhrun.core.sql", "sql.so", "luaopen_dhrun_core_sql", "dhrun_module_sql"},
};

#define DL_HANDLES "dhrun.dlhandles"

/* __gc of the handle table.  It is created before any module is opened,
 * so lua_close finalizes it after every object whose __gc lives in one. */
static int dl_close_all(lua_State *L)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    for (lua_Integer i = n; i >= 1; i--) {
        if (lua_rawgeti(L, 1, i) == LUA_TLIGHTUSERDATA)
            dlclose(lua_touserdata(L, -1));
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_rawseti(L, 1, i);
    }
    return 0;
}

/* The directories searched, in order: next to the binary (the build tree:
 * build/lib/dhrun), the installed layout (PREFIX/bin/../lib/dhrun), and the
 * PREFIX this binary was built for.  Pushes the module's path and returns 1,
 * or pushes the list of the directories tried and returns 0. */
/* The directory of the running binary, in buf; 0 when /proc cannot say. */
static int exe_dir(char *buf, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    return 1;
}

static int dl_find(lua_State *L, const char *file)
{
    int base = lua_gettop(L);
    char exe[PATH_MAX];
    if (exe_dir(exe, sizeof exe)) {
        lua_pushfstring(L, "%s/lib/dhrun", exe);
        lua_pushfstring(L, "%s/../lib/dhrun", exe);
    }                           /* no /proc: the PREFIX directory only */
    lua_pushstring(L, DHRUN_LIB_DIR);
    int top = lua_gettop(L);
    for (int i = base + 1; i <= top; i++) {
        const char *path = lua_pushfstring(L, "%s/%s", lua_tostring(L, i), file);
        if (access(path, F_OK) == 0) {
            lua_copy(L, -1, base + 1);
            lua_settop(L, base + 1);
            return 1;
        }
        lua_pop(L, 1);
    }
    /* [dir...] -> "dir1, dir2 or dir3" */
    for (int i = base + 1; i < top; i++) {
        lua_pushstring(L, i + 1 < top ? ", " : " or ");
        lua_insert(L, i + (i - base));
    }
    lua_concat(L, lua_gettop(L) - base);
    return 0;
}

/* Nobody but root or this user could have written st: owned by either and
 * not writable by group or others (a sticky directory such as /tmp is
 * fine: others cannot replace what is in it). */
static int dl_trusted(const struct stat *st)
{
    if (st->st_uid != 0 && st->st_uid != geteuid())
        return 0;
    return (st->st_mode & (S_IWGRP | S_IWOTH)) == 0 ||
           (S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX) != 0);
}

/* Loads a module only from a file that nobody but root or this user could
 * have put there: the file and every directory above it must pass
 * dl_trusted.  So a copy of the binary in /tmp does not load a
 * /tmp/lib/dhrun/db.so planted by another user.  Returns 0, or -1 with the
 * reason pushed.  Scripts and configs are code too: the same rule applies
 * to them (resolve_script, sys.trusted). */
int dhrun_check_trusted(lua_State *L, const char *path)
{
    char real[PATH_MAX];
    struct stat st;
    if (realpath(path, real) == NULL || stat(real, &st) != 0) {
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || !dl_trusted(&st)) {
        lua_pushfstring(L, "refusing %s: it must be a file owned by root or "
                           "you and writable by nobody else", real);
        return -1;
    }
    for (char *slash = strrchr(real, '/'); slash != NULL;
         slash = strrchr(real, '/')) {
        *slash = '\0';
        const char *dir = slash == real ? "/" : real;
        if (stat(dir, &st) != 0 || !dl_trusted(&st)) {
            lua_pushfstring(L, "refusing %s: directory %s can be written by "
                               "other users", path, dir);
            return -1;
        }
    }
    return 0;
}

#define DL_HINT_REBUILD "this dhrun binary needs the modules built with " \
    "it: run `make` (build tree) or `make install` again"
#define DL_HINT_PERMS "make the module and the directories above it " \
    "writable by root or you only (chmod go-w), or `make install` again"

static int dl_fail(lua_State *L, const char *msg, const char *hint)
{
    dhrun_error_new(L, "install", DHRUN_EXIT_USAGE, msg, 0);
    lua_pushstring(L, hint);
    lua_setfield(L, -2, "hint");
    return lua_error(L);
}

static int dl_loader(lua_State *L)
{
    const struct dl_module *m =
        &dl_modules[lua_tointeger(L, lua_upvalueindex(1))];
    if (!dl_find(L, m->file)) {
        lua_pushfstring(L, "module %s not found: no %s in %s", m->name,
                        m->file, lua_tostring(L, -1));
        return dl_fail(L, lua_tostring(L, -1), DL_HINT_REBUILD);
    }
    const char *path = lua_tostring(L, -1);
    /* The handle table is fetched before dlopen; only an out-of-memory
     * error in lua_rawseti below could still leave h unowned. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, DL_HANDLES);
    lua_insert(L, -2);                                  /* [handles, path] */
    if (dhrun_check_trusted(L, path) != 0)
        return dl_fail(L, lua_tostring(L, -1), DL_HINT_PERMS);
    /* NODELETE: libcurl may leave a resolver thread running libcurl code
     * after a cancelled transfer; the code stays mapped until exit. */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (h == NULL) {
        lua_pushfstring(L, "cannot load module %s (%s): %s", m->name, path,
                        dlerror());
        return dl_fail(L, lua_tostring(L, -1), DL_HINT_REBUILD);
    }
    const char *stamp = (const char *)dlsym(h, m->stamp);
    if (stamp == NULL || strcmp(stamp, DHRUN_MODULE_ID) != 0) {
        lua_pushfstring(L, "module %s (%s) was built for dhrun %s, not %s",
                        m->name, path, stamp ? stamp : "(unknown)",
                        DHRUN_MODULE_ID);
        dlclose(h);
        return dl_fail(L, lua_tostring(L, -1), DL_HINT_REBUILD);
    }
    /* The handle table owns h from here on. */
    lua_pushlightuserdata(L, h);                        /* [handles, path, h] */
    lua_rawseti(L, -3, (lua_Integer)lua_rawlen(L, -3) + 1);
    void *sym = dlsym(h, m->open);
    if (sym == NULL) {
        lua_pushfstring(L, "module %s has no %s", path, m->open);
        return dl_fail(L, lua_tostring(L, -1), DL_HINT_REBUILD);
    }
    lua_CFunction open;
    memcpy(&open, &sym, sizeof open);   /* POSIX: dlsym returns code too */
    lua_pushcfunction(L, open);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static void dl_register(lua_State *L)
{
    /* [preload] */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, dl_close_all);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, DL_HANDLES);
    for (size_t i = 0; i < sizeof dl_modules / sizeof dl_modules[0]; i++) {
        lua_pushinteger(L, (lua_Integer)i);
        lua_pushcclosure(L, dl_loader, 1);
        lua_setfield(L, -2, dl_modules[i].name);
    }
}

static void register_modules(lua_State *L, const char *stdlib_dir)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    dl_register(L);
    for (const luaL_Reg *m = c_modules; m->name != NULL; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    if (stdlib_dir == NULL) {
        for (size_t i = 0; i < dhrun_stdlib_count; i++) {
            lua_pushinteger(L, (lua_Integer)i);
            lua_pushcclosure(L, embedded_loader, 1);
            lua_setfield(L, -2, dhrun_stdlib[i].name);
        }
    }
    lua_pop(L, 1);
    if (stdlib_dir != NULL) {
        /* Development switch: load the stdlib from the source tree. */
        lua_getglobal(L, "package");
        /* DIR/core and DIR/recipes are the stdlib's two layers; DIR/?.lua
         * lets a developer drop a module straight into DIR. */
        lua_pushfstring(L, "%s/core/?.lua;%s/recipes/?.lua;%s/?.lua;%s/?/init.lua;",
                        stdlib_dir, stdlib_dir, stdlib_dir, stdlib_dir);
        lua_getfield(L, -2, "path");
        lua_concat(L, 2);
        lua_setfield(L, -2, "path");
        lua_getfield(L, -1, "searchers");
        lua_pushcfunction(L, embedded_searcher);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 2);
    }
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */

struct options {
    int verbose;
    int list;
    int nexec;
    const char **exec;       /* -e chunks, in order              */
    int script;              /* argv index of the script, or 0   */
    int argc;
    char **argv;
};

static void usage(FILE *f)
{
    fputs(
        "usage: dhrun [options] SCRIPT [ARGS...]\n"
        "       dhrun [options] -e CODE [-e CODE...]\n"
        "\n"
        "Runs a Lua 5.4 script with dhrun's database, process, check and log\n"
        "modules.  SCRIPT is a file, or a NAME looked up as NAME.lua in\n"
        "./scripts, then each directory of $DHRUN_PATH, then the flows installed\n"
        "with dhrun (PREFIX/share/dhrun/scripts, found next to the binary).\n"
        "\n"
        "options:\n"
        "  -e CODE        run CODE (before SCRIPT, if one is given)\n"
        "  -v, --verbose  show a traceback on errors and debug log lines\n"
        "  -l, --list     list the scripts found on the search path\n"
        "  -h, --help     show this help\n"
        "  -V, --version  show the version\n"
        "  --             stop reading options; the next word is SCRIPT\n"
        "  -              read SCRIPT from standard input\n"
        "\n"
        "Options after SCRIPT belong to the script (try: dhrun deploy --help).\n"
        "exit codes: 0 ok, 1 a step or check failed, 2 usage/config/script\n"
        "error, 3 another run holds the release lock, 4 database unreachable,\n"
        "130 interrupted (Ctrl-C; 143 for SIGTERM).\n",
        f);
}

/* Returns 0 on success, or an exit code after printing the problem. */
static int parse_args(struct options *o, int argc, char **argv)
{
    int i;
    o->argc = argc;
    o->argv = argv;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || strcmp(a, "-") == 0)
            break;
        if (strcmp(a, "-e") == 0) {
            if (i + 1 >= argc) {
                fputs("dhrun: option -e needs CODE (see dhrun --help)\n",
                      stderr);
                return DHRUN_EXIT_USAGE;
            }
            o->exec[o->nexec++] = argv[++i];
        } else if (strncmp(a, "-e", 2) == 0) {
            o->exec[o->nexec++] = a + 2;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose = 1;
        } else if (strcmp(a, "-l") == 0 || strcmp(a, "--list") == 0) {
            o->list = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("dhrun %s (%s)\n", DHRUN_VERSION, LUA_RELEASE);
            return -1;
        } else {
            fprintf(stderr, "dhrun: unknown option '%s' (see dhrun --help)\n",
                    a);
            return DHRUN_EXIT_USAGE;
        }
    }
    o->script = i < argc ? i : 0;
    if (o->script == 0 && o->nexec == 0 && !o->list) {
        fputs("dhrun: no script given (usage: dhrun SCRIPT [ARGS...]; "
              "dhrun --list shows the scripts, dhrun --help the options)\n",
              stderr);
        return DHRUN_EXIT_USAGE;
    }
    return 0;
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Pushes the search path as a Lua array of directories. [-0, +1, m]
 * ./scripts, each directory of $DHRUN_PATH, then the flows that came with
 * this binary, found from where it is at run time: PREFIX/share/dhrun/scripts
 * for an installed one (bin/../share/dhrun/scripts, whatever PREFIX it was
 * built with), the checkout's scripts/ for one in a build tree
 * (build/../scripts, next to stdlib/core), and last the PREFIX compiled in. */
static void push_search_path(lua_State *L)
{
    int n = 0;
    const char *env = getenv("DHRUN_PATH");
    lua_newtable(L);
    lua_pushstring(L, "./scripts");
    lua_rawseti(L, -2, ++n);
    if (env != NULL && *env != '\0') {
        const char *p = env;
        while (*p != '\0') {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len > 0) {
                lua_pushlstring(L, p, len);
                lua_rawseti(L, -2, ++n);
            }
            p += len;
            if (*p == ':')
                p++;
        }
    }
    char exe[PATH_MAX];
    int found = 0;
    if (exe_dir(exe, sizeof exe)) {
        const char *installed = lua_pushfstring(L, "%s/../share/dhrun/scripts", exe);
        if (is_dir(installed)) {
            lua_rawseti(L, -2, ++n);
            found = 1;
        } else {
            lua_pop(L, 1);
        }
        const char *tree = lua_pushfstring(L, "%s/../stdlib/core", exe);
        int in_tree = is_dir(tree);
        lua_pop(L, 1);
        if (!found && in_tree) {
            lua_pushfstring(L, "%s/../scripts", exe);
            lua_rawseti(L, -2, ++n);
            found = 1;
        }
    }
    if (!found) {
        lua_pushstring(L, DHRUN_SHARE_DIR "/scripts");
        lua_rawseti(L, -2, ++n);
    }
}

/* Resolves SCRIPT to a path; pushes it, or raises a usage error. */
static void script_trusted(lua_State *L, const char *path)
{
    if (strcmp(path, "-") == 0 || dhrun_check_trusted(L, path) == 0)
        return;
    dhrun_error_new(L, "script", DHRUN_EXIT_USAGE, "", 0);
    lua_insert(L, -2);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, "a script is code that runs with your rights: make it and "
                      "the directories above it writable by root or you only "
                      "(chmod go-w)");
    lua_setfield(L, -2, "hint");
    lua_error(L);
}

/* A NAME without '/' or ".lua" is a flow on the search path, never a file
 * of that name in the working directory (which would beat the installed
 * flow); "./deploy", a path, or "deploy.lua" is that file. */
static void resolve_script(lua_State *L, const char *name)
{
    size_t len = strlen(name);
    int has_ext = len > 4 && strcmp(name + len - 4, ".lua") == 0;
    int is_path = strchr(name, '/') != NULL || has_ext;
    if (strcmp(name, "-") == 0 || (is_path && is_file(name))) {
        script_trusted(L, name);
        lua_pushstring(L, name);
        return;
    }
    if (strchr(name, '/') == NULL) {
        push_search_path(L);
        int n = (int)lua_rawlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            lua_pushfstring(L, "%s/%s%s", lua_tostring(L, -1), name,
                            has_ext ? "" : ".lua");
            if (is_file(lua_tostring(L, -1))) {
                lua_replace(L, -3);   /* [path, dir] -> drop array */
                lua_pop(L, 1);
                script_trusted(L, lua_tostring(L, -1));
                return;
            }
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    }
    /* "did you mean": the closest flow name on the search path */
    const char *near = NULL;
    lua_getglobal(L, "require");
    lua_pushstring(L, "dhrun.searchpath");
    if (!has_ext && lua_pcall(L, 1, 1, 0) == LUA_OK) {
        lua_getfield(L, -1, "suggest");
        lua_pushstring(L, name);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1))
            near = lua_tostring(L, -1);     /* stays on the stack */
    }
    dhrun_error_new(L, "usage", DHRUN_EXIT_USAGE, "", 0);
    if (near != NULL)
        lua_pushfstring(L, "no flow '%s' (did you mean '%s'?)", name, near);
    else
        lua_pushfstring(L,
                        "no script '%s': not a file, and no %s%s on the search path "
                        "(./scripts, $DHRUN_PATH, the installed flows)",
                        name, name, has_ext ? "" : ".lua");
    lua_setfield(L, -2, "message");
    lua_pushstring(L, "dhrun --list shows the flows there are");
    lua_setfield(L, -2, "hint");
    lua_error(L);
}

/* dhrun --list: the flows on the search path (dhrun.searchpath).  Pushes
 * whether any was found. */
static int list_scripts(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "dhrun.searchpath");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "print_list");
    lua_call(L, 0, 1);
    lua_remove(L, -2);
    return 1;
}

/* Message handler: adds a traceback when verbose. */
static int msghandler(lua_State *L)
{
    int verbose = (int)lua_toboolean(L, lua_upvalueindex(1));
    if (!verbose)
        return 1;
    if (lua_type(L, 1) == LUA_TTABLE) {
        luaL_traceback(L, L, NULL, 1);
        lua_setfield(L, 1, "traceback");
        lua_settop(L, 1);
        return 1;
    }
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int docall(lua_State *L, int narg, int nres, int verbose)
{
    int base = lua_gettop(L) - narg;
    lua_pushboolean(L, verbose);
    lua_pushcclosure(L, msghandler, 1);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

/* Turns the chunk's return values into an exit code. */
static int result_code(lua_State *L, int nres)
{
    int code = DHRUN_EXIT_OK;
    if (nres > 0) {
        int idx = lua_gettop(L) - nres + 1;
        if (lua_isinteger(L, idx))
            code = (int)lua_tointeger(L, idx);
        else if (lua_isboolean(L, idx) && !lua_toboolean(L, idx))
            code = DHRUN_EXIT_FAILED;
    }
    lua_pop(L, nres);
    return code;
}

static int pmain(lua_State *L)
{
    struct options *o = (struct options *)lua_touserdata(L, 1);
    const char *stdlib_dir = getenv("DHRUN_STDLIB_DIR");
    int code = DHRUN_EXIT_OK;

    luaL_checkversion(L);
    luaL_openlibs(L);
    dhrun_error_setup(L);
    if (stdlib_dir != NULL && *stdlib_dir == '\0')
        stdlib_dir = NULL;
    register_modules(L, stdlib_dir);

    /* Host options, readable through dhrun.core.sys.options(). */
    lua_createtable(L, 0, 3);
    lua_pushboolean(L, o->verbose);
    lua_setfield(L, -2, "verbose");
    lua_pushstring(L, DHRUN_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, o->argv[0]);
    lua_setfield(L, -2, "progname");
    lua_pushstring(L, DHRUN_SHARE_DIR);
    lua_setfield(L, -2, "share_dir");
    push_search_path(L);
    lua_setfield(L, -2, "search_path");
    lua_setfield(L, LUA_REGISTRYINDEX, "dhrun.options");

    /* The prelude makes print/io.write redacting and os.exit close the
     * state, so __gc/__close handlers run on every exit path. */
    lua_getglobal(L, "require");
    lua_pushstring(L, "dhrun.prelude");
    lua_call(L, 1, 0);

    /* arg table, as lua.c builds it. */
    int script = o->script;
    int base = script ? script : o->argc;
    lua_createtable(L, o->argc - base, base + 1);
    for (int i = 0; i < o->argc; i++) {
        lua_pushstring(L, o->argv[i]);
        lua_rawseti(L, -2, i - base);
    }
    lua_setglobal(L, "arg");

    if (o->list) {
        list_scripts(L);
        int found = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (script == 0 && o->nexec == 0) {
            lua_pushinteger(L, found ? DHRUN_EXIT_OK : DHRUN_EXIT_FAILED);
            return 1;
        }
    }

    for (int i = 0; i < o->nexec; i++) {
        if (luaL_loadbuffer(L, o->exec[i], strlen(o->exec[i]),
                            "=(command line)") != LUA_OK)
            return lua_error(L);
        int top = lua_gettop(L) - 1;
        if (docall(L, 0, LUA_MULTRET, o->verbose) != LUA_OK)
            return lua_error(L);
        code = result_code(L, lua_gettop(L) - top);
        if (code != DHRUN_EXIT_OK) {
            lua_pushinteger(L, code);
            return 1;
        }
    }

    if (script) {
        resolve_script(L, o->argv[script]);
        const char *path = lua_tostring(L, -1);
        /* sys.options().script: the file that runs (flow:include_next
         * starts looking after it). */
        lua_getfield(L, LUA_REGISTRYINDEX, "dhrun.options");
        lua_pushvalue(L, -2);
        lua_setfield(L, -2, "script");
        lua_pop(L, 1);
        int st = strcmp(path, "-") == 0 ? luaL_loadfilex(L, NULL, "t")
                                        : luaL_loadfilex(L, path, "t");
        if (st != LUA_OK) {
            /* Syntax errors and unreadable files are script errors. */
            dhrun_error_new(L, "script", DHRUN_EXIT_USAGE,
                            lua_tostring(L, -1), 0);
            return lua_error(L);
        }
        lua_remove(L, -2);            /* drop path */
        int nargs = o->argc - script - 1;
        luaL_checkstack(L, nargs + 3, "too many arguments to script");
        for (int i = script + 1; i < o->argc; i++)
            lua_pushstring(L, o->argv[i]);
        int top = lua_gettop(L) - nargs - 1;
        if (docall(L, nargs, LUA_MULTRET, o->verbose) != LUA_OK)
            return lua_error(L);
        code = result_code(L, lua_gettop(L) - top);
    }
    lua_pushinteger(L, code);
    return 1;
}

/* Prints an error value, redacted; returns the exit code it stands for. */
/* Writes s with control bytes as visible escapes (\x1b), as dhrun.log
 * does: an error message may carry text from a database or a file name.
 * A newline stays a newline, but the next line is indented, so that no line
 * of an error can pass for one of dhrun's own ("dhrun: ..."). */
static void put_escaped(FILE *f, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\n  ", f);
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
                 (unsigned char)s[i + 1] <= 0x9f)
            fprintf(f, "\\u{%x}", (unsigned char)s[++i]);
        else
            fputc(c, f);
    }
}

static int report_error(lua_State *L, int verbose)
{
    int code = DHRUN_EXIT_USAGE;
    size_t len;
    const char *msg;

    if (lua_type(L, -1) == LUA_TTABLE) {
        if (lua_getfield(L, -1, "exit") == LUA_TNUMBER)
            code = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (!luaL_callmeta(L, -1, "__tostring")) {
        if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
            lua_pushvalue(L, -1);
        else
            lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, -1));
    }
    msg = lua_tolstring(L, -1, &len);
    msg = dhrun_redact(L, msg, len, &len);
    fputs("dhrun: ", stderr);
    put_escaped(stderr, msg, len);
    fputc('\n', stderr);
    lua_pop(L, 2);

    if (lua_type(L, -1) == LUA_TTABLE) {
        static const char *const extra[] = {"detail", "hint", "traceback"};
        for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
            if (!verbose && i == 2)
                break;
            if (lua_getfield(L, -1, extra[i]) == LUA_TSTRING) {
                msg = lua_tolstring(L, -1, &len);
                msg = dhrun_redact(L, msg, len, &len);
                fprintf(stderr, "dhrun: %s: ", extra[i]);
                put_escaped(stderr, msg, len);
                fputc('\n', stderr);
                lua_pop(L, 1);          /* redacted copy */
            }
            lua_pop(L, 1);              /* field */
        }
    }
    return code;
}

int dhrun_main(int argc, char **argv)
{
    const char *exec[256];
    struct options o;
    int code;

    memset(&o, 0, sizeof o);
    o.exec = exec;
    if (argc > 256) {
        fputs("dhrun: too many arguments\n", stderr);
        return DHRUN_EXIT_USAGE;
    }
    code = parse_args(&o, argc, argv);
    if (code != 0)
        return code < 0 ? DHRUN_EXIT_OK : code;

    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fputs("dhrun: cannot create Lua state: not enough memory\n", stderr);
        return DHRUN_EXIT_FAILED;
    }
    signals_setup(L);
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &o);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        code = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    } else {
        code = report_error(L, o.verbose);
    }
    signal_L = NULL;            /* no hooks on a state being closed */
    lua_close(L);
    signals_teardown();
    /* Output that could not be written is a failure, as in coreutils
     * (dhrun status > /dev/full). */
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int err = errno;
        fprintf(stderr, "dhrun: cannot write to standard output: %s\n",
                err ? strerror(err) : "write error");
        if (code == DHRUN_EXIT_OK)
            code = DHRUN_EXIT_FAILED;
    }
    return code;
}
