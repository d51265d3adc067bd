/*
 * dhrun.h - what the C modules of the dhrun host share.
 *
 * The host (runtime/host.c) owns the lua_State, the signal handlers and the
 * list of modules.  Every C module is a luaopen_dhrun_core_<name> function
 * registered in package.preload as "dhrun.core.<name>"; the public Lua API
 * lives in stdlib/dhrun/<name>.lua, which wraps the core module.
 *
 * Error contract (see README, "Errors and exit codes"):
 *   - misuse (wrong argument type, closed handle) raises a string error via
 *     luaL_argerror/luaL_error;
 *   - failures caused by the environment (SQL error, connection refused,
 *     interrupt) raise a structured error table made by dhrun_error_new().
 */
#ifndef DHRUN_H
#define DHRUN_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>

#define DHRUN_VERSION "0.1.0"

/* Exit codes: the one table, documented in README.md. */
enum dhrun_exit {
    DHRUN_EXIT_OK = 0,          /* everything passed                        */
    DHRUN_EXIT_FAILED = 1,      /* a step or a check failed                 */
    DHRUN_EXIT_USAGE = 2,       /* usage, config or script error            */
    DHRUN_EXIT_LOCKED = 3,      /* another run holds the release lock       */
    DHRUN_EXIT_UNREACHABLE = 4, /* could not connect to the database        */
    DHRUN_EXIT_INTERRUPTED = 130 /* SIGINT (SIGTERM gives 143)              */
};

/* Registry name of the metatable shared by all structured errors. */
#define DHRUN_ERROR_MT "dhrun.Error"

/*
 * dhrun_error_new  [-0, +1, m]
 * Pushes a new error table {kind=, exit=, message=, where=} with the shared
 * metatable.  `level` is passed to luaL_where (1 = the Lua function that
 * called the C function raising the error; 0 = no location).  The caller may
 * add fields, then lua_error().
 */
void dhrun_error_new(lua_State *L, const char *kind, int exit_code,
                     const char *message, int level);

/* Creates the dhrun.Error metatable if it does not exist yet. [-0, +0, m] */
void dhrun_error_setup(lua_State *L);

/*
 * Interrupts.  The host's SIGINT/SIGTERM handler records the signal and
 * writes a byte to a self-pipe.  Blocking C primitives add
 * dhrun_interrupt_fd() to their poll set and check dhrun_interrupted();
 * when it is set they clean up and call dhrun_raise_interrupt().
 */
int dhrun_interrupted(void);          /* signal number, or 0              */
int dhrun_interrupt_fd(void);         /* read end of the self-pipe, or -1 */
int dhrun_raise_interrupt(lua_State *L); /* raises; never returns      */
void dhrun_interrupt_reset(void);     /* for tests (dhrun.core.sys)       */

/*
 * Child process groups that must die with us.  l_process.c registers every
 * spawned group; a second Ctrl-C (or a fatal signal) SIGKILLs them all before
 * dhrun exits, so no orphan keeps running a migration.
 */
void dhrun_child_register(pid_t pgid);
void dhrun_child_unregister(pid_t pgid);

/*
 * Secret redaction.  Secrets live in a table in the Lua registry (one owner:
 * the lua_State).  dhrun_redact pushes `s` with every registered secret
 * replaced by "***".  [-0, +1, m]
 */
void dhrun_redact_add(lua_State *L, const char *secret, size_t len);
const char *dhrun_redact(lua_State *L, const char *s, size_t len, size_t *outlen);

/* Monotonic clock in seconds. */
double dhrun_now(void);

/* Module openers (registered in package.preload by host.c). */
int luaopen_dhrun_core_sys(lua_State *L);
/* 0 when nobody but root or this user could have written path (the file
 * and every directory above it); else -1 with the reason pushed. */
int dhrun_check_trusted(lua_State *L, const char *path);
int luaopen_dhrun_core_db(lua_State *L);
int luaopen_dhrun_core_process(lua_State *L);
int luaopen_dhrun_core_http(lua_State *L);
int luaopen_dhrun_core_sql(lua_State *L);

/*
 * dhrun.core.db, dhrun.core.http and dhrun.core.sql are built as shared
 * objects (lib/dhrun/db.so, http.so, sql.so) and opened on first require.  Each stamps the
 * version and header hash it was built for; the host refuses any other.
 */
#ifndef DHRUN_ABI          /* the Makefile passes a hash of this header */
#define DHRUN_ABI "dev"
#endif
#define DHRUN_MODULE_ID DHRUN_VERSION "+" DHRUN_ABI
#define DHRUN_MODULE_STAMP(name) \
    const char dhrun_module_##name[] = DHRUN_MODULE_ID
extern const char dhrun_module_db[];
extern const char dhrun_module_http[];
extern const char dhrun_module_sql[];

/* Host entry point used by main.c; returns the process exit code. */
int dhrun_main(int argc, char **argv);

#endif
