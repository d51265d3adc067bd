/*
 * l_sys.c - dhrun.core.sys: small system primitives the stdlib needs
 * (clocks, interruptible sleep, tty detection, identity, hashing, random
 * ids) and the secret-redaction registry.
 */
#define _GNU_SOURCE
#include "dhrun.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

/* ------------------------------------------------------------------ */
/* Redaction registry: an array of secrets in the registry, longest
 * first, so that a secret containing another is masked whole.        */

static const char SECRETS_KEY = 's';

static void push_secrets(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SECRETS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &SECRETS_KEY);
    }
}

void dhrun_redact_add(lua_State *L, const char *secret, size_t len)
{
    if (len == 0)
        return;
    push_secrets(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_Integer pos = n + 1;
    for (lua_Integer i = 1; i <= n; i++) {
        size_t l;
        lua_rawgeti(L, -1, i);
        const char *s = lua_tolstring(L, -1, &l);
        int same = l == len && memcmp(s, secret, len) == 0;
        lua_pop(L, 1);
        if (same) {
            lua_pop(L, 1);
            return;
        }
        if (l < len && pos > i)
            pos = i;
    }
    for (lua_Integer i = n; i >= pos; i--) {   /* shift to keep order */
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushlstring(L, secret, len);
    lua_rawseti(L, -2, pos);
    lua_pop(L, 1);
}

/* A secret shorter than this is masked only where it stands as a word of
 * its own (a URL's ":pw@", "password=pw", "echo pw"), never inside other
 * text: masked everywhere, a one-letter password would turn every such
 * letter of the output into "***" ("p***rmission"), mangling it and giving
 * the password away. */
#define SHORT_SECRET 8

static int word_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80;
}

/* Does the short secret at hit (sl bytes) in [start, end) stand alone: no
 * letter, digit or '_' right before or after it? */
static int stands_as_password(const char *start, const char *end,
                              const char *hit, size_t sl)
{
    const char *after = hit + sl;
    int before_ok = hit == start || !word_char((unsigned char)hit[-1]);
    int after_ok = after == end || !word_char((unsigned char)*after);
    return before_ok && after_ok;
}

const char *dhrun_redact(lua_State *L, const char *s, size_t len,
                         size_t *outlen)
{
    push_secrets(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushlstring(L, s, len);                 /* [secrets, cur] */
    for (lua_Integer i = 1; i <= n; i++) {
        size_t sl, cl;
        lua_rawgeti(L, -2, i);
        const char *sec = lua_tolstring(L, -1, &sl);
        const char *cur = lua_tolstring(L, -2, &cl);
        const char *end = cur + cl;
        const char *hit = memmem(cur, cl, sec, sl);
        if (sl < SHORT_SECRET)
            while (hit != NULL && !stands_as_password(cur, end, hit, sl))
                hit = memmem(hit + 1, (size_t)(end - hit - 1), sec, sl);
        if (hit == NULL) {
            lua_pop(L, 1);
            continue;
        }
        luaL_Buffer b;
        luaL_buffinit(L, &b);                   /* [secrets, cur, sec, ...] */
        const char *p = cur;
        while (hit != NULL) {
            luaL_addlstring(&b, p, (size_t)(hit - p));
            luaL_addstring(&b, "***");
            p = hit + sl;
            hit = memmem(p, (size_t)(end - p), sec, sl);
            if (sl < SHORT_SECRET)
                while (hit != NULL && !stands_as_password(cur, end, hit, sl))
                    hit = memmem(hit + 1, (size_t)(end - hit - 1), sec, sl);
        }
        luaL_addlstring(&b, p, (size_t)(end - p));
        luaL_pushresult(&b);                    /* [secrets, cur, sec, new] */
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);                          /* drop secrets */
    return lua_tolstring(L, -1, outlen);
}

/* sys.add_secret(s) -> nil.  Registers a value to mask in all output. */
static int sys_add_secret(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    dhrun_redact_add(L, s, len);
    return 0;
}

/* sys.redact(s) -> s with every registered secret replaced by "***". */
static int sys_redact(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    dhrun_redact(L, s, len, &len);
    return 1;
}

/* sys.secret_count() -> number of registered secrets (for tests). */
static int sys_secret_count(lua_State *L)
{
    push_secrets(L);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

/* ------------------------------------------------------------------ */
/* Clocks and sleep                                                     */

/* sys.now() -> monotonic seconds (for durations). */
static int sys_now(lua_State *L)
{
    lua_pushnumber(L, dhrun_now());
    return 1;
}

/* sys.time() -> wall-clock seconds since the epoch, with fraction. */
static int sys_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

/* sys.sleep(seconds) -> true.  Raises the interrupt error on Ctrl-C. */
static int sys_sleep(lua_State *L)
{
    double secs = luaL_checknumber(L, 1);
    double deadline = dhrun_now() + (secs > 0 ? secs : 0);
    for (;;) {
        if (dhrun_interrupted())
            return dhrun_raise_interrupt(L);
        double left = deadline - dhrun_now();
        if (left <= 0)
            break;
        struct pollfd pfd = {dhrun_interrupt_fd(), POLLIN, 0};
        int ms = left > 1e6 ? 1000000000 : (int)(left * 1000.0 + 0.999);
        poll(&pfd, pfd.fd >= 0 ? 1 : 0, ms);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Process and machine identity                                         */

static int fd_arg(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        static const char *const names[] = {"stdin", "stdout", "stderr", NULL};
        return luaL_checkoption(L, idx, NULL, names);
    }
    return (int)luaL_checkinteger(L, idx);
}

/* sys.isatty(fd | "stdin" | "stdout" | "stderr") -> boolean */
static int sys_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(fd_arg(L, 1)));
    return 1;
}

static int sys_hostname(lua_State *L)
{
    char buf[HOST_NAME_MAX + 1];
    if (gethostname(buf, sizeof buf) != 0)
        lua_pushliteral(L, "unknown");
    else {
        buf[HOST_NAME_MAX] = '\0';
        lua_pushstring(L, buf);
    }
    return 1;
}

static int sys_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* sys.alive(pid) -> boolean: whether a process with this pid exists
 * (kill(pid, 0); a process of another user counts as alive). */
static int sys_alive(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid out of range");
    lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno == EPERM);
    return 1;
}

/* sys.user() -> name of the effective user ($USER if the passwd lookup
 * fails, "unknown" last). */
static int sys_user(lua_State *L)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &res) == 0 && res)
        lua_pushstring(L, res->pw_name);
    else if (getenv("USER") != NULL)
        lua_pushstring(L, getenv("USER"));
    else
        lua_pushliteral(L, "unknown");
    return 1;
}

static int sys_uid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

/* sys.setenv(name, value | nil) -> true, or fail, message */
static int sys_setenv(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int rc = lua_isnoneornil(L, 2) ? unsetenv(name)
                                   : setenv(name, luaL_checkstring(L, 2), 1);
    if (rc != 0) {
        luaL_pushfail(L);
        lua_pushfstring(L, "setenv %s: %s", name, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.exepath() -> absolute path of the running dhrun binary, or fail */
static int sys_exepath(lua_State *L)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0) {
        luaL_pushfail(L);
        return 1;
    }
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

/* Closes a file made by sys.mkstemp (the io library's handle protocol). */
static int mkstemp_close(lua_State *L)
{
    luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
    int ok = fclose(p->f) == 0;
    return luaL_fileresult(L, ok, NULL);
}

/* sys.mkstemp(template) -> file, path | fail, message.  Creates a new file
 * from template (ending in XXXXXX) with a random name, exclusively (a file
 * or a planted symlink of that name is never opened) and mode 0600, and
 * returns it open for writing as an io file.  The handle is made closed
 * before the file exists, so nothing leaks if an allocation fails. */
static int sys_mkstemp(lua_State *L)
{
    size_t n;
    const char *tmpl = luaL_checklstring(L, 1, &n);
    if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0)
        return luaL_argerror(L, 1, "template must end in XXXXXX");
    luaL_Stream *p = (luaL_Stream *)lua_newuserdatauv(L, sizeof *p, 0);
    p->f = NULL;
    p->closef = NULL;           /* "closed" until the file is open */
    luaL_setmetatable(L, LUA_FILEHANDLE);
    char *path = (char *)lua_newuserdatauv(L, n + 1, 0);
    memcpy(path, tmpl, n + 1);
    int fd = mkstemp(path);
    if (fd < 0) {
        int err = errno;
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", tmpl, strerror(err));
        return 2;
    }
    p->f = fdopen(fd, "wb");
    if (p->f == NULL) {
        int err = errno;
        close(fd);
        unlink(path);
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", path, strerror(err));
        return 2;
    }
    p->closef = &mkstemp_close;
    lua_pushstring(L, path);
    lua_remove(L, -2);          /* the path buffer */
    return 2;
}

/* sys.mkdtemp(template) -> path | fail, message: a new directory, mode
 * 0700, with a random name (template ends in XXXXXX). */
static int sys_mkdtemp(lua_State *L)
{
    size_t n;
    const char *tmpl = luaL_checklstring(L, 1, &n);
    if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0)
        return luaL_argerror(L, 1, "template must end in XXXXXX");
    char *path = (char *)lua_newuserdatauv(L, n + 1, 0);
    memcpy(path, tmpl, n + 1);
    if (mkdtemp(path) == NULL) {
        int err = errno;
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", tmpl, strerror(err));
        return 2;
    }
    lua_pushstring(L, path);
    return 1;
}

/* sys.trusted(path) -> true | fail, reason: path is a file that only root
 * or this user could have written (it and every directory above it). */
static int sys_trusted(lua_State *L)
{
    const char *p = luaL_checkstring(L, 1);
    if (dhrun_check_trusted(L, p) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
}

/* sys.realpath(p) -> absolute path, or fail, message */
static int sys_realpath(lua_State *L)
{
    const char *p = luaL_checkstring(L, 1);
    char *r = realpath(p, NULL);
    if (r == NULL) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", p, strerror(errno));
        return 2;
    }
    lua_pushstring(L, r);
    free(r);
    return 1;
}

/* sys.maxrss() -> peak resident set size of this process, in KiB */
static int sys_maxrss(lua_State *L)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lua_pushinteger(L, (lua_Integer)ru.ru_maxrss);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Hashing and random ids (OpenSSL's libcrypto)                         */

/* sys.sha256(s) -> 64 lowercase hex digits */
static int sys_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    if (!EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL))
        return luaL_error(L, "sha256: libcrypto failed");
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)mdlen);
    return 1;
}

static int fill_random(unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* sys.uuid4() -> random (version 4) UUID, lowercase and hyphenated, as
 * Prisma writes into _prisma_migrations.id */
static int sys_uuid4(lua_State *L)
{
    unsigned char b[16];
    char out[37];
    if (fill_random(b, sizeof b) != 0)
        return luaL_error(L, "uuid4: getrandom: %s", strerror(errno));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, sizeof out,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
    lua_pushstring(L, out);
    return 1;
}

/* sys.random(n) -> n random bytes */
static int sys_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 65536, 1, "must be 0..65536");
    luaL_Buffer b;
    unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
    if (fill_random(p, (size_t)n) != 0)
        return luaL_error(L, "random: getrandom: %s", strerror(errno));
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Host state                                                           */

/* sys.interrupted() -> signal number of an undelivered interrupt, or false */
static int sys_interrupted(lua_State *L)
{
    int sig = dhrun_interrupted();
    if (sig)
        lua_pushinteger(L, sig);
    else
        lua_pushboolean(L, 0);
    return 1;
}

/* sys.check_interrupt() -> nothing; raises the interrupt error if a
 * Ctrl-C arrived and was not yet delivered. */
static int sys_check_interrupt(lua_State *L)
{
    if (dhrun_interrupted())
        return dhrun_raise_interrupt(L);
    return 0;
}

/* sys.options() -> {verbose=, version=, progname=} */
static int sys_options(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "dhrun.options") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    return 1;
}

/* sys.error(kind, exit, message [, fields]) -> error object (not raised) */
static int sys_error(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    int code = (int)luaL_checkinteger(L, 2);
    const char *msg = luaL_checkstring(L, 3);
    dhrun_error_new(L, kind, code, msg, 0);
    if (lua_istable(L, 4)) {
        lua_pushnil(L);
        while (lua_next(L, 4) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, -4);
        }
    }
    return 1;
}

static const luaL_Reg sys_funcs[] = {
    {"add_secret", sys_add_secret},
    {"alive", sys_alive},
    {"check_interrupt", sys_check_interrupt},
    {"error", sys_error},
    {"exepath", sys_exepath},
    {"hostname", sys_hostname},
    {"interrupted", sys_interrupted},
    {"isatty", sys_isatty},
    {"maxrss", sys_maxrss},
    {"mkdtemp", sys_mkdtemp},
    {"mkstemp", sys_mkstemp},
    {"now", sys_now},
    {"options", sys_options},
    {"pid", sys_pid},
    {"random", sys_random},
    {"realpath", sys_realpath},
    {"redact", sys_redact},
    {"secret_count", sys_secret_count},
    {"setenv", sys_setenv},
    {"sha256", sys_sha256},
    {"sleep", sys_sleep},
    {"time", sys_time},
    {"trusted", sys_trusted},
    {"uid", sys_uid},
    {"user", sys_user},
    {"uuid4", sys_uuid4},
    {NULL, NULL}
};

int luaopen_dhrun_core_sys(lua_State *L)
{
    luaL_newlib(L, sys_funcs);
    luaL_getmetatable(L, DHRUN_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    return 1;
}
