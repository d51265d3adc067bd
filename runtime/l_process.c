/*
 * l_process.c - dhrun.core.process: child processes, without a shell.
 *
 * core.spawn(argv, opts) forks a child in its own process group and returns
 * a handle.  The Lua side (stdlib/core/dhrun/process.lua) drives the handle with
 * h:step(wait): one poll() loop over the child's stdout and stderr pipes,
 * the stdin writer, a pidfd for exit detection and dhrun's interrupt
 * self-pipe, returning the chunks it read.  Line splitting, streaming,
 * redaction, capture limits and timeouts are done in Lua; this file never
 * writes to dhrun's own stdout/stderr.
 *
 * Ownership: the handle (a full userdata, metatable "dhrun.Process") owns
 * the child (until it is reaped) and our ends of its pipes.  h:close(),
 * __close and __gc all end in proc_release(): a child still running is
 * sent SIGTERM, given `grace` seconds, then SIGKILLed with its group and
 * reaped; every descriptor is closed once.
 */
#define _GNU_SOURCE
#include "dhrun.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROC_MT "dhrun.Process"
#define CHUNK 65536   /* bytes read per stream per poll round            */
#define LINGER 0.2    /* seconds to wait for EOF once the child is reaped */
#define TICK 0.05     /* waitpid polling interval when there is no pidfd  */
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin" /* when PATH is unset */

enum { IN = 0, OUT = 1, ERR = 2 };

typedef struct {
    pid_t pid;           /* the child; also its process group id           */
    int reaped;          /* waitpid() has collected it                      */
    int lost;            /* ...or someone else did: status unknown          */
    int status;          /* wait status, once reaped                        */
    int sweep;           /* SIGKILL the rest of the group when it exits     */
    int pidfd;           /* -1: closed, or pidfd_open() unsupported         */
    int fd[3];           /* our ends of its stdin/stdout/stderr pipes or -1 */
    size_t in_off;       /* stdin bytes written so far                      */
    size_t in_len;       /* stdin bytes to write (data: user value 1)       */
    double started, ended, linger_until;
    double grace;        /* seconds between SIGTERM and SIGKILL on release  */
} Proc;

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int ms_until(double deadline)
{
    double left = deadline - dhrun_now();
    if (left <= 0)
        return 0;
    if (left > 3600)
        return 3600 * 1000;
    return (int)(left * 1000.0 + 0.999);
}

/* Signal name or number -> number; 0 if unknown.  Accepts "TERM",
 * "SIGTERM" and 15. */
static int signal_number(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, idx);
        return n > 0 && n < NSIG ? (int)n : 0;
    }
    const char *name = luaL_checkstring(L, idx);
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (int s = 1; s < NSIG; s++) {
        const char *abbrev = sigabbrev_np(s);
        if (abbrev != NULL && strcmp(abbrev, name) == 0)
            return s;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reaping                                                              */

static void mark_reaped(Proc *p, int status, int lost)
{
    p->reaped = 1;
    p->lost = lost;
    p->status = status;
    p->ended = dhrun_now();
    p->linger_until = p->ended + LINGER;
    close_fd(&p->pidfd);
    close_fd(&p->fd[IN]);      /* nobody is left to read it */
    dhrun_child_unregister(p->pid);
}

/*
 * Collects the child if it has exited (block: wait until it has).  The
 * exit is first observed with WNOWAIT so that, when the group is doomed
 * (p->sweep), the leftover grandchildren are SIGKILLed while the zombie
 * still holds the group id: the id cannot have been reused yet.
 */
static void try_reap(Proc *p, int block)
{
    siginfo_t si;
    int st = 0, r;
    if (p->reaped)
        return;
    memset(&si, 0, sizeof si);
    do
        r = waitid(P_PID, (id_t)p->pid, &si,
                   WEXITED | WNOWAIT | (block ? 0 : WNOHANG));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == ECHILD)   /* reaped behind our back (SIGCHLD ignored) */
            mark_reaped(p, 0, 1);
        return;
    }
    if (si.si_pid == 0)
        return;                /* still running */
    if (p->sweep)
        kill(-p->pid, SIGKILL);
    pid_t w;
    do
        w = waitpid(p->pid, &st, 0);
    while (w < 0 && errno == EINTR);
    mark_reaped(p, st, w != p->pid);
}

/* Reads one chunk from our end of a child's output pipe into buf.
 * Returns bytes read; closes the pipe at EOF or on a read error. */
static size_t read_chunk(int *fd, char *buf, size_t cap)
{
    ssize_t n;
    do
        n = read(*fd, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        return (size_t)n;
    if (n == 0 || errno != EAGAIN)
        close_fd(fd);
    return 0;
}

/* Writes as much of the stdin data as the pipe accepts; closes the pipe
 * when all is written or the child stopped reading (EPIPE: SIGPIPE is
 * ignored by the host, so the write fails instead of killing us). */
static void write_input(Proc *p, const char *data)
{
    while (p->fd[IN] >= 0 && p->in_off < p->in_len) {
        size_t left = p->in_len - p->in_off;
        ssize_t w = write(p->fd[IN], data + p->in_off,
                          left < CHUNK ? left : CHUNK);
        if (w > 0)
            p->in_off += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && errno == EAGAIN)
            return;
        else
            break;
    }
    close_fd(&p->fd[IN]);
}

/*
 * Sends `sig` to the child's group, gives it `grace` seconds to exit
 * (reading and dropping its output, so a full pipe cannot keep it from
 * exiting), then SIGKILLs the group and reaps the child.  Whatever is left
 * of the group dies with it (p->sweep).
 */
static void terminate(Proc *p, int sig, double grace)
{
    char scratch[4096];
    if (p->reaped)
        return;
    p->sweep = 1;
    kill(-p->pid, sig);
    double deadline = dhrun_now() + (grace > 0 ? grace : 0);
    while (!p->reaped && dhrun_now() < deadline) {
        struct pollfd pf[3];
        nfds_t n = 0;
        double until = deadline;
        if (p->pidfd >= 0)
            pf[n++] = (struct pollfd){p->pidfd, POLLIN, 0};
        else if (until > dhrun_now() + TICK)
            until = dhrun_now() + TICK;
        for (int i = OUT; i <= ERR; i++)
            if (p->fd[i] >= 0)
                pf[n++] = (struct pollfd){p->fd[i], POLLIN, 0};
        poll(pf, n, ms_until(until));
        for (int i = OUT; i <= ERR; i++)
            if (p->fd[i] >= 0)
                read_chunk(&p->fd[i], scratch, sizeof scratch);
        try_reap(p, 0);
    }
    if (!p->reaped) {
        kill(-p->pid, SIGKILL);
        try_reap(p, 1);
    }
}

/* Terminates a child still running, then closes everything.  Idempotent:
 * the one cleanup path of h:close(), __close and __gc. */
static void proc_release(Proc *p)
{
    terminate(p, SIGTERM, p->grace);
    close_fd(&p->pidfd);
    for (int i = 0; i < 3; i++)
        close_fd(&p->fd[i]);
}

/* ------------------------------------------------------------------ */
/* Spawning                                                             */

/* Everything the child needs, prepared before fork(): between fork and
 * exec only async-signal-safe calls are allowed, so no allocation. */
struct launch {
    char **argv;
    char **envp;
    char **paths;     /* candidate executables, NULL-terminated          */
    char **sh_argv;   /* {"/bin/sh", <path>, argv[1..]} for ENOEXEC      */
    const char *cwd;
    int src[3];       /* fd to become the child's 0/1/2; -1 = inherit    */
    int errpipe;      /* write end of the CLOEXEC exec-error pipe        */
    int maxfd;        /* fallback bound when close_range() is missing    */
};

/* What the child reports through the error pipe when it cannot exec. */
enum { STAGE_SETUP = 1, STAGE_CWD, STAGE_EXEC };
struct exec_failure {
    int stage;
    int err;
};

static _Noreturn void child_fail(const struct launch *ln, int stage)
{
    struct exec_failure f = {stage, errno};
    ssize_t w = write(ln->errpipe, &f, sizeof f);
    (void)w;
    _exit(127);
}

/* Runs in the child: async-signal-safe calls only. */
static _Noreturn void child_exec(struct launch *ln)
{
    struct sigaction dfl;
    sigset_t none;
    int src[3];

    /* dhrun's handlers must not run here, and an ignored SIGPIPE would
     * survive exec: every signal back to its default.  (All signals are
     * blocked since before fork, so none can arrive in between.) */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &dfl, NULL);   /* fails harmlessly for KILL/STOP */

    /* Own process group, so a timeout or Ctrl-C reaches grandchildren
     * too (the parent also calls setpgid, whichever runs first wins). */
    setpgid(0, 0);

    /* Move sources sitting on another standard fd out of the way first,
     * so one dup2 cannot clobber the next one's source (happens when
     * dhrun itself was started with a standard fd closed). */
    for (int i = 0; i < 3; i++) {
        src[i] = ln->src[i];
        if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
            src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
            if (src[i] < 0)
                child_fail(ln, STAGE_SETUP);
        }
    }
    for (int i = 0; i < 3; i++) {
        if (src[i] == i) {
            if (fcntl(i, F_SETFD, 0) != 0)      /* keep it across exec */
                child_fail(ln, STAGE_SETUP);
        } else if (src[i] >= 0 && dup2(src[i], i) < 0) {
            child_fail(ln, STAGE_SETUP);
        }
    }
    /* dhrun opens its own fds O_CLOEXEC, but Lua's io.open does not:
     * mark everything above stderr close-on-exec (not closed yet: the
     * error pipe must stay usable until exec). */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = 3; fd < ln->maxfd; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);

    if (ln->cwd != NULL && chdir(ln->cwd) != 0)
        child_fail(ln, STAGE_CWD);

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* execvp's search, on the candidates the parent computed from the
     * child's PATH: EACCES is remembered while later directories are
     * tried; a file without #! is handed to /bin/sh. */
    int err = ENOENT;
    for (char **p = ln->paths; *p != NULL; p++) {
        execve(*p, ln->argv, ln->envp);
        if (errno == ENOEXEC) {
            ln->sh_argv[1] = *p;
            execve("/bin/sh", ln->sh_argv, ln->envp);
            errno = ENOEXEC;
        }
        if (errno == EACCES)
            err = EACCES;
        else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE &&
                 errno != ENODEV && errno != ETIMEDOUT) {
            err = errno;
            break;
        }
    }
    errno = err;
    child_fail(ln, STAGE_EXEC);
}

/* Anchors the string on top of the stack in the table at index `a` (so it
 * lives until spawn returns) and returns it. */
static char *anchor(lua_State *L, int a)
{
    char *s = (char *)lua_tostring(L, -1);
    lua_rawseti(L, a, (lua_Integer)lua_rawlen(L, a) + 1);
    return s;
}

/* Pushes a NULL-terminated array of n+1 pointers, anchored at `a`. */
static char **new_ptr_array(lua_State *L, int a, size_t n)
{
    char **v = (char **)lua_newuserdatauv(L, (n + 1) * sizeof(char *), 0);
    lua_rawseti(L, a, (lua_Integer)lua_rawlen(L, a) + 1);
    memset(v, 0, (n + 1) * sizeof(char *));
    return v;
}

static const char *checked_string(lua_State *L, int idx, const char *what)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s must be a string, got %s", what,
                   luaL_typename(L, idx));
    const char *s = lua_tolstring(L, idx, &len);
    if (strlen(s) != len)
        luaL_error(L, "%s contains a NUL byte", what);
    return s;
}

/* Builds envp: the inherited environment minus every name in the table
 * at `env`, plus its string values.  Returns the PATH the child will see
 * (NULL when unset). */
static const char *build_env(lua_State *L, int env, int a, struct launch *ln)
{
    const char *path = getenv("PATH");
    size_t n = 0, extra = 0, k = 0;
    if (lua_isnil(L, env)) {
        ln->envp = environ;
        return path;
    }
    luaL_checktype(L, env, LUA_TTABLE);
    while (environ[n] != NULL)
        n++;
    lua_pushnil(L);
    while (lua_next(L, env) != 0) {
        const char *name = checked_string(L, -2, "env name");
        if (*name == '\0' || strchr(name, '=') != NULL)
            luaL_error(L, "env name '%s' is not a variable name", name);
        if (lua_type(L, -1) == LUA_TSTRING)
            checked_string(L, -1, "env value");
        else if (!(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
            luaL_error(L, "env value for '%s' must be a string or false",
                       name);
        extra++;
        lua_pop(L, 1);
    }
    ln->envp = new_ptr_array(L, a, n + extra);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        lua_pushlstring(L, environ[i], len);
        int overridden = lua_rawget(L, env) != LUA_TNIL;
        lua_pop(L, 1);
        if (!overridden)
            ln->envp[k++] = environ[i];
    }
    lua_pushnil(L);
    while (lua_next(L, env) != 0) {
        const char *name = lua_tostring(L, -2);
        int is_path = strcmp(name, "PATH") == 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushfstring(L, "%s=%s", name, lua_tostring(L, -1));
            ln->envp[k] = anchor(L, a);
            if (is_path)
                path = ln->envp[k] + 5;
            k++;
        } else if (is_path) {
            path = NULL;
        }
        lua_pop(L, 1);
    }
    return path;
}

/* Candidate paths for argv[0], in execvp's order. */
static void build_paths(lua_State *L, int a, const char *file,
                        const char *path, struct launch *ln)
{
    size_t n = 1;
    if (strchr(file, '/') != NULL || *file == '\0') {
        ln->paths = new_ptr_array(L, a, 1);
        if (*file != '\0')
            ln->paths[0] = (char *)file;
        return;
    }
    if (path == NULL)
        path = DEFAULT_PATH;
    for (const char *c = path; *c; c++)
        n += *c == ':';
    ln->paths = new_ptr_array(L, a, n);
    n = 0;
    for (const char *p = path;;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)                          /* empty entry: cwd */
            lua_pushstring(L, file);
        else
            lua_pushfstring(L, "%s/%s", lua_pushlstring(L, p, len), file);
        ln->paths[n++] = anchor(L, a);
        if (len > 0)
            lua_pop(L, 1);                     /* the directory */
        if (end == NULL)
            break;
        p = end + 1;
    }
}

static const char *const MODES[] = {"pipe", "null", "inherit", "file", NULL};
enum { M_PIPE, M_NULL, M_INHERIT, M_FILE };

static int mode_opt(lua_State *L, int opts, const char *key, int def)
{
    int mode = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL)
        mode = luaL_checkoption(L, -1, NULL, MODES);
    lua_pop(L, 1);
    return mode;
}

static const char *string_opt(lua_State *L, int opts, const char *key)
{
    const char *s = NULL;
    if (lua_getfield(L, opts, key) != LUA_TNIL)
        s = checked_string(L, -1, key);
    lua_pop(L, 1);     /* still referenced by opts, so s stays valid */
    return s;
}

/* Closes the fds opened for a launch that will not happen (or did). */
static void close_child_ends(struct launch *ln)
{
    for (int i = 0; i < 3; i++)
        if (ln->src[i] >= 0)
            close_fd(&ln->src[i]);
}

/*
 * Opens the child's end of stream i (and our end, for a pipe).  Returns 0,
 * or -1 with errno set; `what` then names the failing step.
 */
static int open_stream(Proc *p, struct launch *ln, int i, int mode,
                       const char *file, const char **what)
{
    int fds[2];
    switch (mode) {
    case M_INHERIT:
        return 0;
    case M_NULL:
        *what = "/dev/null";
        ln->src[i] = open("/dev/null", (i == IN ? O_RDONLY : O_WRONLY) |
                                           O_CLOEXEC);
        return ln->src[i] < 0 ? -1 : 0;
    case M_FILE:
        *what = file;
        ln->src[i] = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                          0666);
        return ln->src[i] < 0 ? -1 : 0;
    default:
        *what = "pipe";
        if (pipe2(fds, O_CLOEXEC) != 0)
            return -1;
        /* Our end never blocks: one poll loop serves all three pipes. */
        ln->src[i] = fds[i == IN ? 0 : 1];
        p->fd[i] = fds[i == IN ? 1 : 0];
        fcntl(p->fd[i], F_SETFL, O_NONBLOCK);
        return 0;
    }
}

/* Pushes fail, code, "cannot run '<file>': <fmt...>" and returns 3. */
static int cannot_run(lua_State *L, const char *file, int code,
                      const char *fmt, ...)
{
    va_list ap;
    luaL_pushfail(L);
    lua_pushinteger(L, code);
    lua_pushfstring(L, "cannot run '%s': ", file);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return 3;
}

/* Reads core.spawn's arguments (argv at 1, opts at 2) into ln, mode and
 * file_for; strings and arrays are anchored in the table at `a`. */
static void prepare_launch(lua_State *L, int a, struct launch *ln,
                           int mode[3], const char *file_for[3])
{
    size_t argc = lua_rawlen(L, 1);
    luaL_argcheck(L, argc > 0, 1, "argv must not be empty");
    ln->argv = new_ptr_array(L, a, argc);
    ln->sh_argv = new_ptr_array(L, a, argc + 1);
    ln->sh_argv[0] = (char *)"/bin/sh";
    for (size_t i = 0; i < argc; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        lua_pushfstring(L, "argv[%d]", (int)i + 1);
        ln->argv[i] = (char *)checked_string(L, -2, lua_tostring(L, -1));
        lua_pop(L, 1);
        anchor(L, a);
        if (i > 0)
            ln->sh_argv[i + 1] = ln->argv[i];
    }
    lua_getfield(L, 2, "env");
    const char *path = build_env(L, lua_gettop(L), a, ln);
    build_paths(L, a, ln->argv[0], path, ln);
    lua_pop(L, 1);
    ln->cwd = string_opt(L, 2, "cwd");
    mode[IN] = mode_opt(L, 2, "stdin", M_NULL);
    mode[OUT] = mode_opt(L, 2, "stdout", M_PIPE);
    mode[ERR] = mode_opt(L, 2, "stderr", M_PIPE);
    luaL_argcheck(L, mode[IN] != M_FILE, 2, "stdin cannot be \"file\"");
    file_for[OUT] = string_opt(L, 2, "stdout_file");
    file_for[ERR] = string_opt(L, 2, "stderr_file");
    for (int i = OUT; i <= ERR; i++)
        luaL_argcheck(L, (mode[i] == M_FILE) == (file_for[i] != NULL), 2,
                      "a \"file\" stream needs stdout_file/stderr_file");
    struct rlimit rl;
    ln->maxfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536
                    ? (int)rl.rlim_cur : 65536;
}

/* Creates the handle (not started yet), keeping the stdin data as its
 * user value.  Exists before any fd is opened, so that a Lua error
 * cannot leak our pipe ends: its __gc closes them. */
static Proc *new_proc(lua_State *L, int stdin_mode)
{
    Proc *p = (Proc *)lua_newuserdatauv(L, sizeof(Proc), 1);
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->reaped = 1;                    /* nothing to reap until fork works */
    p->pidfd = p->fd[IN] = p->fd[OUT] = p->fd[ERR] = -1;
    lua_getfield(L, 2, "grace");
    p->grace = luaL_optnumber(L, -1, 3.0);
    lua_pop(L, 1);
    luaL_setmetatable(L, PROC_MT);
    if (stdin_mode == M_PIPE) {
        lua_getfield(L, 2, "input");   /* any bytes, NULs included */
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2,
                      "stdin \"pipe\" needs input = string");
        lua_tolstring(L, -1, &p->in_len);
        lua_setiuservalue(L, -2, 1);
    }
    return p;
}

/* The child reported why it could not exec: pushes fail, code, message. */
static int exec_failed(lua_State *L, const struct launch *ln,
                       const struct exec_failure *f)
{
    const char *file = ln->argv[0];
    if (f->stage == STAGE_CWD)
        return cannot_run(L, file, 126, "cwd %s: %s", ln->cwd,
                          strerror(f->err));
    if (f->stage == STAGE_SETUP)
        return cannot_run(L, file, 126, "setting up the child: %s",
                          strerror(f->err));
    if (f->err == ENOENT && strchr(file, '/') == NULL)
        return cannot_run(L, file, 127, "not found in PATH");
    return cannot_run(L, file,
                      f->err == ENOENT || f->err == ENOTDIR ? 127 : 126,
                      "%s", strerror(f->err));
}

/*
 * core.spawn(argv, opts) -> handle | fail, code, message
 * opts: cwd, env = {NAME = "value" | false}, grace (seconds, default 3),
 *       stdin = "null" (default) | "inherit" | "pipe" with input = string,
 *       stdout / stderr = "pipe" (default) | "null" | "inherit" | "file"
 *       with stdout_file / stderr_file = path (opened for appending).
 * Returns fail, 127 (not found) or 126, message when the program cannot
 * be started.
 */
static int proc_spawn(lua_State *L)
{
    struct launch ln;
    int mode[3];
    const char *file_for[3] = {NULL, NULL, NULL};

    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_newtable(L);                  /* 3: anchors for the launch strings */
    memset(&ln, 0, sizeof ln);
    ln.src[0] = ln.src[1] = ln.src[2] = -1;
    prepare_launch(L, 3, &ln, mode, file_for);
    Proc *p = new_proc(L, mode[IN]);
    const char *input = NULL;
    if (lua_getiuservalue(L, -1, 1) == LUA_TSTRING)
        input = lua_tostring(L, -1);  /* anchored by the user value */
    lua_pop(L, 1);

    /* From here until fork: no Lua allocation (a raise would leak the
     * child-side fds); failures are reported after closing them. */
    int errpipe[2];
    const char *what = NULL;
    for (int i = 0; i < 3; i++)
        if (open_stream(p, &ln, i, mode[i], file_for[i], &what) != 0) {
            int e = errno;
            close_child_ends(&ln);
            proc_release(p);
            return cannot_run(L, ln.argv[0], 126, "%s %s: %s",
                              i == IN ? "stdin" : i == OUT ? "stdout"
                                                           : "stderr",
                              what, strerror(e));
        }
    if (pipe2(errpipe, O_CLOEXEC) != 0) {
        int e = errno;
        close_child_ends(&ln);
        proc_release(p);
        return cannot_run(L, ln.argv[0], 126, "pipe: %s", strerror(e));
    }
    ln.errpipe = errpipe[1];

    /* Signals stay blocked across fork so that dhrun's handler cannot run
     * in the child before child_exec has reset it. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    p->started = dhrun_now();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(&ln);
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close_child_ends(&ln);
    close(errpipe[1]);
    if (pid < 0) {
        close(errpipe[0]);
        proc_release(p);
        return cannot_run(L, ln.argv[0], 126, "fork: %s",
                          strerror(fork_errno));
    }
    p->pid = pid;
    p->reaped = 0;
    setpgid(pid, pid);                /* see child_exec; races are fine */
    dhrun_child_register(pid);

    /* EOF on the error pipe means exec succeeded (the pipe is CLOEXEC). */
    struct exec_failure f;
    size_t got = 0;
    while (got < sizeof f) {
        ssize_t n = read(errpipe[0], (char *)&f + got, sizeof f - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || errno != EINTR)
            break;
    }
    close(errpipe[0]);
    if (got == sizeof f) {
        try_reap(p, 1);
        proc_release(p);
        return exec_failed(L, &ln, &f);
    }
    p->pidfd = pidfd_open(pid, 0);    /* -1 on old kernels: we poll then */
    if (input != NULL)
        write_input(p, input);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Handle methods                                                       */

static Proc *check_proc(lua_State *L)
{
    return (Proc *)luaL_checkudata(L, 1, PROC_MT);
}

static int finished(const Proc *p)
{
    return p->reaped && p->fd[OUT] < 0 && p->fd[ERR] < 0;
}

/*
 * h:step(wait) -> out_chunk | nil, err_chunk | nil, finished
 * Waits up to `wait` seconds for output or the child's exit, writing
 * stdin as the pipe accepts it.  Returns as soon as something was read.
 * `finished`: the child is reaped and both pipes are at EOF (or were
 * given up LINGER seconds after the exit, when a grandchild holds them).
 * On Ctrl-C: forwards the signal to the group, waits `grace`, SIGKILLs,
 * reaps, then raises dhrun's interrupt error.
 */
static int proc_step(lua_State *L)
{
    Proc *p = check_proc(L);
    double wait = luaL_checknumber(L, 2);
    double deadline = dhrun_now() + (wait > 0 ? wait : 0);
    char buf[2][CHUNK];
    size_t got[2] = {0, 0};
    const char *input = NULL;

    if (lua_getiuservalue(L, 1, 1) == LUA_TSTRING)
        input = lua_tostring(L, -1);  /* anchored by the user value */
    lua_pop(L, 1);
    for (;;) {
        int sig = dhrun_interrupted();
        if (sig) {
            terminate(p, sig, p->grace);
            proc_release(p);
            return dhrun_raise_interrupt(L);
        }
        if (p->reaped && dhrun_now() >= p->linger_until) {
            close_fd(&p->fd[OUT]);
            close_fd(&p->fd[ERR]);
        }
        if (finished(p) || got[0] + got[1] > 0)
            break;

        struct pollfd pf[5];
        int who[5];
        nfds_t n = 0;
        double until = deadline;
        for (int i = 0; i < 3; i++)
            if (p->fd[i] >= 0) {
                who[n] = i;
                pf[n++] = (struct pollfd){p->fd[i], i == IN ? POLLOUT
                                                            : POLLIN, 0};
            }
        if (!p->reaped && p->pidfd >= 0) {
            who[n] = -1;
            pf[n++] = (struct pollfd){p->pidfd, POLLIN, 0};
        }
        if (dhrun_interrupt_fd() >= 0) {
            who[n] = -2;
            pf[n++] = (struct pollfd){dhrun_interrupt_fd(), POLLIN, 0};
        }
        if (p->reaped && p->linger_until < until)
            until = p->linger_until;
        if (!p->reaped && p->pidfd < 0 && dhrun_now() + TICK < until)
            until = dhrun_now() + TICK;
        int r = poll(pf, n, ms_until(until));
        if (r < 0 && errno != EINTR)
            return luaL_error(L, "poll: %s", strerror(errno));
        for (nfds_t k = 0; r > 0 && k < n; k++) {
            int i = who[k];
            if (pf[k].revents == 0 || i < 0)
                continue;
            if (i == IN)
                write_input(p, input);
            else
                got[i - 1] += read_chunk(&p->fd[i], buf[i - 1] + got[i - 1],
                                         CHUNK - got[i - 1]);
        }
        try_reap(p, 0);
        if (got[0] + got[1] == 0 && !finished(p) && dhrun_now() >= deadline)
            break;
    }
    for (int i = 0; i < 2; i++)
        if (got[i] > 0)
            lua_pushlstring(L, buf[i], got[i]);
        else
            lua_pushnil(L);
    lua_pushboolean(L, finished(p));
    return 3;
}

/* h:pid() -> integer */
static int proc_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_proc(L)->pid);
    return 1;
}

/* h:running() -> boolean (false once the child has been reaped) */
static int proc_running(lua_State *L)
{
    Proc *p = check_proc(L);
    try_reap(p, 0);
    lua_pushboolean(L, !p->reaped);
    return 1;
}

/*
 * h:status() -> code | nil, signal | nil, signame | nil, duration
 * code is nil while running, when killed by a signal, or when the status
 * was lost; duration runs from spawn to reap (or to now, while running).
 */
static int proc_status(lua_State *L)
{
    Proc *p = check_proc(L);
    try_reap(p, 0);
    double end = p->reaped ? p->ended : dhrun_now();
    if (p->reaped && !p->lost && WIFEXITED(p->status))
        lua_pushinteger(L, WEXITSTATUS(p->status));
    else
        lua_pushnil(L);
    if (p->reaped && !p->lost && WIFSIGNALED(p->status)) {
        int sig = WTERMSIG(p->status);
        const char *abbrev = sigabbrev_np(sig);
        lua_pushinteger(L, sig);
        if (abbrev != NULL)
            lua_pushfstring(L, "SIG%s", abbrev);
        else
            lua_pushfstring(L, "signal %d", sig);
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
    }
    lua_pushnumber(L, end - p->started);
    return 4;
}

/*
 * h:kill(sig = "TERM" | "SIGTERM" | 15 [, doom]) -> boolean
 * Signals the child's whole process group.  With doom = true, whatever is
 * left of the group is SIGKILLed when the child exits (timeouts, stop).
 * Returns false when the child was already reaped (nothing is sent: its
 * group id may be free for reuse by then).
 */
static int proc_kill(lua_State *L)
{
    Proc *p = check_proc(L);
    int sig = signal_number(L, 2);
    luaL_argcheck(L, sig > 0, 2, "unknown signal");
    try_reap(p, 0);
    if (p->reaped) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (lua_toboolean(L, 3))
        p->sweep = 1;
    lua_pushboolean(L, kill(-p->pid, sig) == 0);
    return 1;
}

/* h:close() -> nil.  Also __close and __gc: stops a child still running
 * (SIGTERM, `grace` seconds, SIGKILL) and closes every descriptor. */
static int proc_close(lua_State *L)
{
    proc_release(check_proc(L));
    return 0;
}

static int proc_tostring(lua_State *L)
{
    Proc *p = check_proc(L);
    lua_pushfstring(L, "process %d (%s)", (int)p->pid,
                    p->reaped ? "exited" : "running");
    return 1;
}

static const luaL_Reg proc_methods[] = {
    {"close", proc_close},
    {"kill", proc_kill},
    {"pid", proc_pid},
    {"running", proc_running},
    {"status", proc_status},
    {"step", proc_step},
    {NULL, NULL}
};

static const luaL_Reg proc_meta[] = {
    {"__close", proc_close},
    {"__gc", proc_close},
    {"__tostring", proc_tostring},
    {NULL, NULL}
};

static const luaL_Reg process_funcs[] = {
    {"spawn", proc_spawn},
    {NULL, NULL}
};

int luaopen_dhrun_core_process(lua_State *L)
{
    if (luaL_newmetatable(L, PROC_MT)) {
        luaL_setfuncs(L, proc_meta, 0);
        luaL_newlib(L, proc_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, process_funcs);
    return 1;
}
