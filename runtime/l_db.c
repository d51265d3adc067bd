/*
 * l_db.c - dhrun.core.db: the libpq binding under stdlib/core/dhrun/db.lua.
 *
 * One userdata ("dhrun.db.Connection") owns one PGconn.  Every command is
 * sent asynchronously and waited for with poll() on the connection's socket
 * and the host's interrupt pipe, so Ctrl-C during a long statement cancels it
 * on the server (PQcancel), drains the connection and raises the interrupt
 * error instead of leaving a backend running after we exit.
 *
 * Ownership: libpq memory that is alive while Lua may raise (a PGresult being
 * converted, a buffer being pushed) is parked in the connection struct, so a
 * Lua error in the middle (out of memory) cannot leak it: the next command,
 * close() or __gc frees it.
 *
 * The public API (URL handling, transactions, settings, advisory locks, the
 * try_* variants) is in Lua; this file exposes:
 *   core.connect(keys, values [, timeout]) -> conn | nil, errmsg, target
 *   core.conninfo_parse(s)                 -> {key = value} | nil, errmsg
 *   core.conndefaults()                    -> {keyword = default | false}
 *   core.null                              -> the SQL NULL sentinel
 *   core.methods                           -> the connection method table
 */
#define _GNU_SOURCE
#include "dhrun.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define CONN_MT "dhrun.db.Connection"
#define INFO_MT "dhrun.db.Info"

/* Type OIDs of the result columns we convert (catalog/pg_type_d.h is a
 * server header, not shipped with libpq-dev). */
#define BOOLOID 16
#define BYTEAOID 17
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define OIDOID 26
#define FLOAT4OID 700
#define FLOAT8OID 701

#define NOTICE_MAX 1000     /* notices kept per connection (the newest) */
#define CANCEL_GRACE 5.0    /* seconds a cancelled command may take to end */
#define DEFAULT_CONNECT_TIMEOUT 10.0

/* SQL NULL is the NULL lightuserdata, the same value as cjson.null, so rows
 * encode to JSON as they are and JSON nulls bind as SQL NULL. */
#define SQL_NULL ((void *)0)

enum { N_SEVERITY, N_MESSAGE, N_SQLSTATE, N_DETAIL, N_HINT, N_FIELDS };
static const char *const notice_keys[N_FIELDS] = {
    "severity", "message", "sqlstate", "detail", "hint"};

struct notice {
    char *buf;                          /* one allocation for all fields */
    const char *field[N_FIELDS];        /* into buf, or NULL */
};

typedef struct {
    PGconn *pg;                 /* NULL once closed */
    PGresult *res;              /* result being converted or raised */
    void *mem;                  /* PQfreemem() buffer being pushed */
    PQconninfoOption *opts;     /* PQconninfoFree() array being read */
    struct notice *notices;     /* ring of NOTICE_MAX, allocated lazily */
    int nnotices, first;
} dbconn;

/* ------------------------------------------------------------------ */
/* Error locations                                                      */

/* Is `source` the chunk of stdlib/core/dhrun/db.lua (embedded or from a
 * DHRUN_STDLIB_DIR tree)? */
static int is_db_chunk(const char *source)
{
    static const char tail[] = "dhrun/db.lua";
    size_t n = strlen(source), t = sizeof tail - 1;
    return source[0] == '@' && n > t && strcmp(source + n - t, tail) == 0 &&
           (source[n - t - 1] == '/' || source[n - t - 1] == '@');
}

/* Stack level of the script's line that led here: the first Lua frame
 * outside db.lua, so `where` names the caller of conn:transaction() or
 * conn:try_query() rather than a line of the wrapper. */
static int user_level(lua_State *L)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
            continue;
        if (!is_db_chunk(ar.source))
            return level;
    }
    return 1;
}

/* Raises a misuse error (a string) located at the script's line. */
static int misuse(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, user_level(L));
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Pushes s with every run of whitespace (newlines, tabs) turned into one
 * space and the ends trimmed: error messages are one line. */
static void push_one_line(lua_State *L, const char *s)
{
    luaL_Buffer b;
    int space = 0;
    luaL_buffinit(L, &b);
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    for (; *s != '\0'; s++) {
        if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') {
            space = 1;
            continue;
        }
        if (space)
            luaL_addchar(&b, ' ');
        space = 0;
        luaL_addchar(&b, *s);
    }
    luaL_pushresult(&b);
}

/* ------------------------------------------------------------------ */
/* Connection handle                                                    */

static void release_pending(dbconn *c)
{
    if (c->res != NULL) {
        PQclear(c->res);
        c->res = NULL;
    }
    if (c->mem != NULL) {
        PQfreemem(c->mem);
        c->mem = NULL;
    }
    if (c->opts != NULL) {
        PQconninfoFree(c->opts);
        c->opts = NULL;
    }
}

static void clear_notices(dbconn *c)
{
    for (int i = 0; i < c->nnotices; i++)
        free(c->notices[(c->first + i) % NOTICE_MAX].buf);
    c->nnotices = 0;
    c->first = 0;
}

/* Idempotent: used by close(), __close and __gc. */
static void conn_release(dbconn *c)
{
    release_pending(c);
    clear_notices(c);
    free(c->notices);
    c->notices = NULL;
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

/* The open connection at `idx`; raises on a closed one. */
static dbconn *check_open(lua_State *L, int idx)
{
    dbconn *c = (dbconn *)luaL_checkudata(L, idx, CONN_MT);
    if (c->pg == NULL)
        misuse(L, "connection is closed");
    release_pending(c);
    return c;
}

/* libpq calls this for every NOTICE/WARNING the server sends, in the middle
 * of our libpq calls: no Lua here, only C memory. */
static void on_notice(void *arg, const PGresult *r)
{
    dbconn *c = (dbconn *)arg;
    const char *f[N_FIELDS];
    size_t len[N_FIELDS], total = 0;

    f[N_SEVERITY] = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (f[N_SEVERITY] == NULL)
        f[N_SEVERITY] = PQresultErrorField(r, PG_DIAG_SEVERITY);
    f[N_MESSAGE] = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    f[N_SQLSTATE] = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    f[N_DETAIL] = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    f[N_HINT] = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
    if (f[N_MESSAGE] == NULL)
        f[N_MESSAGE] = PQresultErrorMessage(r);
    for (int i = 0; i < N_FIELDS; i++) {
        len[i] = f[i] ? strlen(f[i]) + 1 : 0;
        total += len[i];
    }
    if (c->notices == NULL) {
        c->notices = (struct notice *)calloc(NOTICE_MAX, sizeof *c->notices);
        if (c->notices == NULL)
            return;
    }
    char *buf = (char *)malloc(total ? total : 1);
    if (buf == NULL)
        return;                 /* a lost notice beats a crash */
    struct notice n = {buf, {NULL}};
    for (int i = 0; i < N_FIELDS; i++)
        if (f[i] != NULL) {
            memcpy(buf, f[i], len[i]);
            n.field[i] = buf;
            buf += len[i];
        }
    if (c->nnotices == NOTICE_MAX) {        /* full: drop the oldest */
        free(c->notices[c->first].buf);
        c->notices[c->first] = n;
        c->first = (c->first + 1) % NOTICE_MAX;
    } else {
        c->notices[(c->first + c->nnotices) % NOTICE_MAX] = n;
        c->nnotices++;
    }
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */

/* Pushes a new "db" dhrun.Error whose message is "[SQLSTATE] <first line of
 * msg>" (no prefix without a state), with the sqlstate field set.  [-0, +1, m] */
static void push_db_error(lua_State *L, const char *state, const char *msg)
{
    if (state != NULL)
        lua_pushfstring(L, "[%s] ", state);
    else
        lua_pushliteral(L, "");
    push_one_line(L, msg);
    lua_concat(L, 2);
    dhrun_error_new(L, "db", DHRUN_EXIT_FAILED, lua_tostring(L, -1),
                    user_level(L));
    lua_remove(L, -2);
    if (state != NULL) {
        lua_pushstring(L, state);
        lua_setfield(L, -2, "sqlstate");
    }
}

/* Raises the dhrun.Error for the failed result parked in c->res. */
static int raise_result_error(lua_State *L, dbconn *c)
{
    static const struct {
        int code;
        const char *name;
    } fields[] = {
        {PG_DIAG_MESSAGE_DETAIL, "detail"},
        {PG_DIAG_MESSAGE_HINT, "hint"},
        {PG_DIAG_CONTEXT, "context"},
        {PG_DIAG_SCHEMA_NAME, "schema"},
        {PG_DIAG_TABLE_NAME, "table"},
        {PG_DIAG_COLUMN_NAME, "column"},
        {PG_DIAG_DATATYPE_NAME, "datatype"},
        {PG_DIAG_CONSTRAINT_NAME, "constraint"},
        {PG_DIAG_SEVERITY, "severity_local"},
        {PG_DIAG_INTERNAL_QUERY, "internal_query"},
        {PG_DIAG_SOURCE_FILE, "source_file"},
        {PG_DIAG_SOURCE_FUNCTION, "source_function"},
    };
    static const struct {
        int code;
        const char *name;
    } numbers[] = {
        {PG_DIAG_STATEMENT_POSITION, "position"},
        {PG_DIAG_INTERNAL_POSITION, "internal_position"},
        {PG_DIAG_SOURCE_LINE, "source_line"},
    };
    PGresult *r = c->res;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);

    /* libpq's own errors (connection lost) have no SQLSTATE. */
    if (state == NULL && PQstatus(c->pg) == CONNECTION_BAD)
        state = "08006";
    if (primary == NULL)
        primary = PQresultErrorMessage(r);
    if (primary == NULL || *primary == '\0')
        primary = PQerrorMessage(c->pg);
    if (severity == NULL)
        severity = PQresultErrorField(r, PG_DIAG_SEVERITY);

    push_db_error(L, state, primary);
    lua_pushstring(L, severity ? severity : "ERROR");
    lua_setfield(L, -2, "severity");
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        const char *v = PQresultErrorField(r, numbers[i].code);
        if (v != NULL) {
            lua_pushinteger(L, (lua_Integer)atol(v));
            lua_setfield(L, -2, numbers[i].name);
        }
    }
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const char *v = PQresultErrorField(r, fields[i].code);
        if (v != NULL) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, fields[i].name);
        }
    }
    release_pending(c);
    return lua_error(L);
}

/* Raises the dhrun.Error for a failure without a result (the connection
 * is gone, or libpq refused to send). */
static int raise_conn_error(lua_State *L, dbconn *c)
{
    const char *state = c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD
                            ? "08006" : NULL;
    const char *msg = c->pg ? PQerrorMessage(c->pg) : "";
    if (*msg == '\0')
        msg = "connection to the server was lost";
    push_db_error(L, state, msg);
    lua_pushliteral(L, "FATAL");
    lua_setfield(L, -2, "severity");
    return lua_error(L);
}

/* ------------------------------------------------------------------ */
/* Waiting for the server                                               */

struct waiter {
    int cancelled;          /* Ctrl-C seen, cancel request sent       */
    int gave_up;            /* the cancelled command did not end      */
    double deadline;        /* for gave_up                            */
};

static void send_cancel(PGconn *pg)
{
    char errbuf[256];
    PGcancel *cancel = PQgetCancel(pg);
    if (cancel != NULL) {
        /* Failure is harmless: the drain deadline still bounds the wait. */
        PQcancel(cancel, errbuf, (int)sizeof errbuf);
        PQfreeCancel(cancel);
    }
}

/*
 * Waits until the socket is ready for `events` or Ctrl-C arrives.  On the
 * first Ctrl-C it asks the server to cancel the running command and from
 * then on only waits CANCEL_GRACE seconds more (and no longer watches the
 * interrupt pipe, which stays readable until the interrupt is raised).
 */
static void wait_io(PGconn *pg, short events, struct waiter *w)
{
    struct pollfd p[2];
    int n = 1, ms = -1;

    if (w->cancelled) {
        double left = w->deadline - dhrun_now();
        if (left <= 0) {
            w->gave_up = 1;
            return;
        }
        ms = (int)(left * 1000.0) + 1;
    } else if (dhrun_interrupted()) {
        send_cancel(pg);
        w->cancelled = 1;
        w->deadline = dhrun_now() + CANCEL_GRACE;
        return;
    }
    p[0].fd = PQsocket(pg);
    p[0].events = events;
    p[0].revents = 0;
    if (p[0].fd < 0)
        return;                 /* connection gone: libpq reports it */
    if (!w->cancelled && dhrun_interrupt_fd() >= 0) {
        p[1].fd = dhrun_interrupt_fd();
        p[1].events = POLLIN;
        p[1].revents = 0;
        n = 2;
    }
    if (poll(p, (nfds_t)n, ms) < 0 && errno != EINTR)
        return;
    if (!w->cancelled && dhrun_interrupted()) {
        send_cancel(pg);
        w->cancelled = 1;
        w->deadline = dhrun_now() + CANCEL_GRACE;
    }
}

/* Reads and drops the rows of a COPY ... TO STDOUT: this API has no use
 * for them, and the connection must get past them. */
static void discard_copy_out(PGconn *pg, struct waiter *w)
{
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(pg, &buf, 1);
        if (buf != NULL)
            PQfreemem(buf);
        if (n > 0)
            continue;
        if (n < 0)
            return;             /* -1 done, -2 error: PQgetResult says */
        wait_io(pg, POLLIN, w);
        if (w->gave_up || PQconsumeInput(pg) == 0)
            return;
    }
}

/*
 * Collects every result of the command just sent.  Leaves in c->res the
 * first error result or, without an error, the last result.  Returns 1
 * when Ctrl-C interrupted the command; if the cancelled command did not end
 * within CANCEL_GRACE the connection is closed (c->pg == NULL).
 * Only C here: nothing may raise while results are unowned.
 */
static int collect(dbconn *c)
{
    PGconn *pg = c->pg;
    PGresult *err = NULL, *last = NULL;
    struct waiter w = {0, 0, 0.0};

    for (;;) {
        int flush = PQflush(pg);
        if (PQstatus(pg) != CONNECTION_BAD && (flush == 1 || PQisBusy(pg))) {
            wait_io(pg, (short)(POLLIN | (flush == 1 ? POLLOUT : 0)), &w);
            if (w.gave_up)
                break;
            PQconsumeInput(pg);     /* failure: PQisBusy turns false and
                                       PQgetResult reports it */
            continue;
        }
        PGresult *r = PQgetResult(pg);
        if (r == NULL)
            break;
        switch (PQresultStatus(r)) {
        case PGRES_COPY_IN:
            PQputCopyEnd(pg, "dhrun.db does not support COPY FROM STDIN");
            PQclear(r);
            break;
        case PGRES_COPY_OUT:
            PQclear(r);
            discard_copy_out(pg, &w);
            break;
        case PGRES_BAD_RESPONSE:
        case PGRES_FATAL_ERROR:
            if (err == NULL)
                err = r;
            else
                PQclear(r);
            break;
        default:
            PQclear(last);
            last = r;
            break;
        }
        if (w.gave_up)
            break;
    }
    if (w.gave_up) {
        /* The server did not end the command: the connection is in an
         * unknown state, so close it rather than hang. */
        PQclear(err);
        PQclear(last);
        PQfinish(c->pg);
        c->pg = NULL;
        return 1;
    }
    if (err != NULL) {
        PQclear(last);
        c->res = err;
    } else {
        c->res = last;
    }
    return w.cancelled;
}

/*
 * Runs one command: simple query protocol (several statements) when
 * `values` is NULL and nparams < 0, else the extended protocol with text
 * parameters.  On return c->res holds the successful result; errors and
 * interrupts are raised.
 */
static void run_command(lua_State *L, dbconn *c, const char *sql, int nparams,
                        const char *const *values)
{
    int sent = nparams < 0
                   ? PQsendQuery(c->pg, sql)
                   : PQsendQueryParams(c->pg, sql, nparams, NULL, values, NULL,
                                       NULL, 0);
    if (!sent)
        raise_conn_error(L, c);
    if (collect(c)) {
        release_pending(c);
        dhrun_raise_interrupt(L);
    }
    if (c->res == NULL)
        raise_conn_error(L, c);
    switch (PQresultStatus(c->res)) {
    case PGRES_BAD_RESPONSE:
    case PGRES_FATAL_ERROR:
        raise_result_error(L, c);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Parameters and values                                                */

/*
 * Converts the arguments first..first+n-1 to text parameters.  The array
 * is a userdata and number strings are pushed on the stack, so everything
 * stays alive (and is collected) with the calling C function's frame.
 */
static const char *const *push_params(lua_State *L, int first, int n,
                                      const char *fname)
{
    if (n > 65535)
        misuse(L, "%s: too many parameters (%d; PostgreSQL allows 65535)",
               fname, n);
    luaL_checkstack(L, n + 8, "too many query parameters");
    const char **vals = (const char **)lua_newuserdatauv(
        L, (size_t)(n > 0 ? n : 1) * sizeof *vals, 0);
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        size_t len;
        vals[i] = NULL;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) != SQL_NULL)
                misuse(L, "%s: parameter $%d is a light userdata other than "
                       "db.null", fname, i + 1);
            break;
        case LUA_TBOOLEAN:
            vals[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                vals[i] = lua_pushfstring(L, "%I", lua_tointeger(L, idx));
            } else {
                /* %.17g round-trips every double; PostgreSQL spells the
                 * special values as words. */
                double d = (double)lua_tonumber(L, idx);
                char buf[40];
                if (isnan(d))
                    vals[i] = "NaN";
                else if (isinf(d))
                    vals[i] = d > 0 ? "Infinity" : "-Infinity";
                else {
                    snprintf(buf, sizeof buf, "%.17g", d);
                    vals[i] = lua_pushstring(L, buf);
                }
            }
            break;
        case LUA_TSTRING:
            vals[i] = lua_tolstring(L, idx, &len);
            if (memchr(vals[i], '\0', len) != NULL)
                misuse(L, "%s: parameter $%d contains a zero byte (text "
                       "cannot hold one; pass bytea as hex: '\\x...')",
                       fname, i + 1);
            break;
        default:
            misuse(L, "%s: parameter $%d is a %s (expected nil, db.null, a "
                   "boolean, a number or a string)",
                   fname, i + 1, luaL_typename(L, idx));
        }
    }
    return vals;
}

/* Pushes field (row, col) of c->res converted by its column type. */
static void push_value(lua_State *L, dbconn *c, int row, int col)
{
    PGresult *r = c->res;
    if (PQgetisnull(r, row, col)) {
        lua_pushlightuserdata(L, SQL_NULL);
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    size_t len = (size_t)PQgetlength(r, row, col);
    switch (PQftype(r, col)) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case OIDOID:
        /* Lua's own parser keeps int8's full range, min included. */
        if (lua_stringtonumber(L, v) == 0)
            lua_pushlstring(L, v, len);
        break;
    case FLOAT4OID:
    case FLOAT8OID:
        /* strtod, unlike Lua, reads "NaN" and "[-]Infinity". */
        lua_pushnumber(L, (lua_Number)strtod(v, NULL));
        break;
    case BOOLOID:
        lua_pushboolean(L, v[0] == 't');
        break;
    case BYTEAOID: {
        size_t n = 0;
        c->mem = PQunescapeBytea((const unsigned char *)v, &n);
        if (c->mem == NULL)
            luaL_error(L, "out of memory decoding bytea");
        lua_pushlstring(L, (const char *)c->mem, n);
        PQfreemem(c->mem);
        c->mem = NULL;
        break;
    }
    default:                    /* numeric stays exact as text */
        lua_pushlstring(L, v, len);
        break;
    }
}

/* Pushes row `row` of c->res; `names` is the absolute index of the
 * columns array; `dup` marks columns whose name an earlier one has. */
static void push_row(lua_State *L, dbconn *c, int row, int names,
                     const char *dup)
{
    int ncols = PQnfields(c->res);
    lua_createtable(L, ncols, ncols);
    for (int j = 0; j < ncols; j++) {
        push_value(L, c, row, j);
        if (!dup[j]) {
            lua_rawgeti(L, names, j + 1);
            lua_pushvalue(L, -2);
            lua_rawset(L, -4);
        }
        lua_rawseti(L, -2, j + 1);
    }
}

enum shape { ALL_ROWS, FIRST_ROW, FIRST_VALUE };

/* Pushes c->res as rows (see db.lua), then frees it. */
static void push_result(lua_State *L, dbconn *c, enum shape shape)
{
    PGresult *r = c->res;
    int nrows = PQntuples(r), ncols = PQnfields(r);

    if (shape == FIRST_VALUE) {
        if (nrows > 0 && ncols > 0)
            push_value(L, c, 0, 0);
        else
            lua_pushnil(L);
        release_pending(c);
        return;
    }
    /* Column names, and which repeat an earlier one: row.name is the
     * first column of that name (all of them stay in row[i]). */
    char *dup = (char *)lua_newuserdatauv(L, (size_t)ncols + 1, 0);
    lua_createtable(L, ncols, 0);
    int names = lua_gettop(L);
    lua_createtable(L, 0, ncols);               /* seen names */
    for (int j = 0; j < ncols; j++) {
        lua_pushstring(L, PQfname(r, j));
        lua_pushvalue(L, -1);
        dup[j] = (char)(lua_rawget(L, names + 1) != LUA_TNIL);
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, names + 1);
        lua_rawseti(L, names, j + 1);
    }
    lua_pop(L, 1);

    if (shape == FIRST_ROW) {
        if (nrows > 0)
            push_row(L, c, 0, names, dup);
        else
            lua_pushnil(L);
    } else {
        lua_createtable(L, nrows, 1);
        for (int i = 0; i < nrows; i++) {
            push_row(L, c, i, names, dup);
            lua_rawseti(L, -2, i + 1);
        }
        lua_pushvalue(L, names);
        lua_setfield(L, -2, "columns");
    }
    lua_replace(L, names - 1);                  /* over `dup` */
    lua_settop(L, names - 1);
    release_pending(c);
}

/* ------------------------------------------------------------------ */
/* Connection methods                                                   */

static int query_shape(lua_State *L, enum shape shape, const char *fname)
{
    dbconn *c = check_open(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int n = lua_gettop(L) - 2;
    if (memchr(sql, '\0', len) != NULL)
        luaL_argerror(L, 2, "SQL contains a zero byte");
    const char *const *vals = push_params(L, 3, n, fname);
    run_command(L, c, sql, n, vals);
    push_result(L, c, shape);
    return 1;
}

/* conn:query(sql, ...) -> rows */
static int conn_query(lua_State *L)
{
    return query_shape(L, ALL_ROWS, "query");
}

/* conn:query_one(sql, ...) -> first row | nil */
static int conn_query_one(lua_State *L)
{
    return query_shape(L, FIRST_ROW, "query_one");
}

/* conn:query_value(sql, ...) -> first column of the first row | nil */
static int conn_query_value(lua_State *L)
{
    return query_shape(L, FIRST_VALUE, "query_value");
}

/* conn:exec(sql, ...) -> affected rows (0 for DDL) */
static int conn_exec(lua_State *L)
{
    dbconn *c = check_open(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int n = lua_gettop(L) - 2;
    if (memchr(sql, '\0', len) != NULL)
        luaL_argerror(L, 2, "SQL contains a zero byte");
    const char *const *vals = push_params(L, 3, n, "exec");
    run_command(L, c, sql, n, vals);
    const char *count = PQcmdTuples(c->res);
    lua_pushinteger(L, (lua_Integer)strtoll(count, NULL, 10));
    release_pending(c);
    return 1;
}

/* conn:exec_script(sql) -> nil.  Simple query protocol: the statements run
 * as one implicit transaction unless they manage their own. */
static int conn_exec_script(lua_State *L)
{
    dbconn *c = check_open(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    if (memchr(sql, '\0', len) != NULL)
        luaL_argerror(L, 2, "SQL contains a zero byte");
    run_command(L, c, sql, -1, NULL);
    release_pending(c);
    return 0;
}

/* conn:close() -> true | false, "connection is already closed" */
static int conn_close(lua_State *L)
{
    dbconn *c = (dbconn *)luaL_checkudata(L, 1, CONN_MT);
    if (c->pg == NULL) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "connection is already closed");
        return 2;
    }
    conn_release(c);
    lua_pushboolean(L, 1);
    return 1;
}

/* __gc / __close: close quietly, whatever the state. */
static int conn_gc(lua_State *L)
{
    conn_release((dbconn *)luaL_checkudata(L, 1, CONN_MT));
    return 0;
}

/* conn:notices() -> { {severity=, message=, sqlstate=, detail=, hint=}, ... }
 * received since the last call (the newest NOTICE_MAX); clears them. */
static int conn_notices(lua_State *L)
{
    dbconn *c = check_open(L, 1);
    lua_createtable(L, c->nnotices, 0);
    for (int i = 0; i < c->nnotices; i++) {
        const struct notice *n = &c->notices[(c->first + i) % NOTICE_MAX];
        lua_createtable(L, 0, N_FIELDS);
        for (int k = 0; k < N_FIELDS; k++)
            if (n->field[k] != NULL) {
                lua_pushstring(L, n->field[k]);
                lua_setfield(L, -2, notice_keys[k]);
            }
        lua_rawseti(L, -2, i + 1);
    }
    clear_notices(c);           /* only once the table is complete */
    return 1;
}

static int quote_with(lua_State *L, int literal)
{
    dbconn *c = check_open(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    c->mem = literal ? PQescapeLiteral(c->pg, s, len)
                     : PQescapeIdentifier(c->pg, s, len);
    if (c->mem == NULL) {
        push_one_line(L, PQerrorMessage(c->pg));
        return luaL_argerror(L, 2, lua_tostring(L, -1));
    }
    lua_pushstring(L, (const char *)c->mem);
    release_pending(c);
    return 1;
}

/* conn:quote_ident(s) -> "s" quoted as an SQL identifier */
static int conn_quote_ident(lua_State *L)
{
    return quote_with(L, 0);
}

/* conn:quote_literal(s) -> 's' quoted as an SQL literal */
static int conn_quote_literal(lua_State *L)
{
    return quote_with(L, 1);
}

/* conn:backend_pid() -> integer */
static int conn_backend_pid(lua_State *L)
{
    lua_pushinteger(L, PQbackendPID(check_open(L, 1)->pg));
    return 1;
}

/* conn:server_version() -> integer, e.g. 150018 */
static int conn_server_version(lua_State *L)
{
    lua_pushinteger(L, PQserverVersion(check_open(L, 1)->pg));
    return 1;
}

/* conn:status() -> "idle" | "active" | "in transaction" | "in error" |
 * "unknown" (connection lost) */
static int conn_status(lua_State *L)
{
    dbconn *c = check_open(L, 1);
    const char *s = "unknown";
    if (PQstatus(c->pg) == CONNECTION_OK)
        switch (PQtransactionStatus(c->pg)) {
        case PQTRANS_IDLE:
            s = "idle";
            break;
        case PQTRANS_ACTIVE:
            s = "active";
            break;
        case PQTRANS_INTRANS:
            s = "in transaction";
            break;
        case PQTRANS_INERROR:
            s = "in error";
            break;
        default:
            break;
        }
    lua_pushstring(L, s);
    return 1;
}

/* tostring(conn) -> "dhrun.db connection (URL)" or "... (closed)" */
static int conn_tostring(lua_State *L)
{
    dbconn *c = (dbconn *)luaL_checkudata(L, 1, CONN_MT);
    if (c->pg == NULL) {
        lua_pushliteral(L, "dhrun.db connection (closed)");
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    if (lua_istable(L, -1) && lua_getfield(L, -1, "url") == LUA_TSTRING)
        lua_pushfstring(L, "dhrun.db connection (%s)", lua_tostring(L, -1));
    else
        lua_pushliteral(L, "dhrun.db connection");
    return 1;
}

/* conn.info is a per-connection table (the user value); other keys are
 * methods. */
static int conn_index(lua_State *L)
{
    luaL_checkudata(L, 1, CONN_MT);
    if (lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "info") == 0) {
        lua_getiuservalue(L, 1, 1);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* conn:info() -> conn.info (the table answers calls with itself) */
static int info_call(lua_State *L)
{
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Connecting                                                           */

/* Pushes {host=, hostaddr=, port=, dbname=, user=, connect_timeout=} from
 * an option array; port is an integer when it is one.  c->opts owns `opts`
 * meanwhile. */
static void push_target(lua_State *L, dbconn *c, PQconninfoOption *opts)
{
    static const char *const keys[] = {"host", "hostaddr", "port", "dbname",
                                       "user", "connect_timeout"};
    c->opts = opts;
    lua_createtable(L, 0, 6);
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            if (o->val == NULL || *o->val == '\0' ||
                strcmp(o->keyword, keys[i]) != 0)
                continue;
            if (strcmp(keys[i], "port") != 0 ||
                lua_stringtonumber(L, o->val) == 0)
                lua_pushstring(L, o->val);
            lua_setfield(L, -2, keys[i]);
        }
    release_pending(c);
}

/* The connect timeout: the caller's, else the connection string's (or
 * $PGCONNECT_TIMEOUT), else the default; <= 0 means none. libpq applies
 * connect_timeout only in blocking PQconnectdb, so we do it here. */
static double connect_timeout(lua_State *L, dbconn *c)
{
    double t = DEFAULT_CONNECT_TIMEOUT;
    if (!lua_isnoneornil(L, 3))
        return (double)luaL_checknumber(L, 3);
    c->opts = PQconninfo(c->pg);
    for (PQconninfoOption *o = c->opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL &&
            *o->val != '\0')
            t = atof(o->val);
    release_pending(c);
    return t;
}

/* Drives PQconnectPoll to the end.  Returns 1 connected, 0 failed (or timed
 * out: *timed_out), raises the interrupt on Ctrl-C. */
static int connect_poll(lua_State *L, dbconn *c, double timeout,
                        int *timed_out)
{
    double deadline = dhrun_now() + timeout;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p[2] = {
            {PQsocket(c->pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
             0},
            {dhrun_interrupt_fd(), POLLIN, 0}};
        int ms = -1;
        if (timeout > 0) {
            double left = deadline - dhrun_now();
            if (left <= 0) {
                *timed_out = 1;
                return 0;
            }
            ms = (int)(left * 1000.0) + 1;
        }
        if (dhrun_interrupted()) {
            conn_release(c);
            dhrun_raise_interrupt(L);
        }
        int rc = poll(p, p[1].fd >= 0 ? 2 : 1, ms);
        if (dhrun_interrupted()) {
            conn_release(c);
            dhrun_raise_interrupt(L);
        }
        if (rc == 0 || (rc < 0 && errno == EINTR))
            continue;
        st = PQconnectPoll(c->pg);
    }
    return st == PGRES_POLLING_OK;
}

/* core.connect(keys, values [, timeout]) -> conn
 *   | nil, libpq's message, {host=, port=, dbname=, user=} (what was tried)
 * keys/values are PQconnectStartParams's arrays; a "dbname" value may be
 * a whole connection string (expand_dbname), later keys override it. */
static int db_connect(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    luaL_argcheck(L, luaL_len(L, 2) == n, 2, "as many values as keys");
    const char **kw = (const char **)lua_newuserdatauv(
        L, (size_t)(n + 1) * sizeof *kw, 0);
    const char **val = (const char **)lua_newuserdatauv(
        L, (size_t)(n + 1) * sizeof *val, 0);
    for (int i = 0; i < n; i++) {
        /* The strings stay referenced by the argument tables. */
        lua_rawgeti(L, 1, i + 1);
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "connect: keys and values must be strings");
        kw[i] = lua_tostring(L, -2);
        val[i] = lua_tostring(L, -1);
        lua_pop(L, 2);
    }
    kw[n] = val[n] = NULL;

    dbconn *c = (dbconn *)lua_newuserdatauv(L, sizeof *c, 1);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, CONN_MT);
    c->pg = PQconnectStartParams(kw, val, 1);
    if (c->pg == NULL)
        return luaL_error(L, "connect: out of memory");
    PQsetNoticeReceiver(c->pg, on_notice, c);

    int timed_out = 0;
    int ok = PQstatus(c->pg) != CONNECTION_BAD &&
             connect_poll(L, c, connect_timeout(L, c), &timed_out);
    if (!ok) {
        luaL_pushfail(L);
        if (timed_out)
            lua_pushliteral(L, "timeout expired");
        else
            lua_pushstring(L, PQerrorMessage(c->pg));
        push_target(L, c, PQconninfo(c->pg));
        conn_release(c);
        return 3;
    }
    /* Non-blocking sends: a large statement cannot block us outside
     * poll(), where Ctrl-C would go unnoticed. */
    PQsetnonblocking(c->pg, 1);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, PQhost(c->pg));
    lua_setfield(L, -2, "host");
    if (lua_stringtonumber(L, PQport(c->pg)) == 0)
        lua_pushstring(L, PQport(c->pg));
    lua_setfield(L, -2, "port");
    lua_pushstring(L, PQdb(c->pg));
    lua_setfield(L, -2, "dbname");
    lua_pushstring(L, PQuser(c->pg));
    lua_setfield(L, -2, "user");
    luaL_setmetatable(L, INFO_MT);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* core.conninfo_parse(s) -> {keyword = value} | nil, libpq's message */
static int db_conninfo_parse(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1);
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(s, &err);
    if (opts == NULL) {
        luaL_pushfail(L);
        if (err == NULL)
            return luaL_error(L, "conninfo_parse: out of memory");
        lua_pushstring(L, err);     /* no Lua error until err is freed */
        PQfreemem(err);
        return 2;
    }
    /* Park the array in a throwaway handle so a Lua error cannot leak it. */
    dbconn *tmp = (dbconn *)lua_newuserdatauv(L, sizeof *tmp, 0);
    memset(tmp, 0, sizeof *tmp);
    luaL_setmetatable(L, CONN_MT);
    tmp->opts = opts;
    lua_newtable(L);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL) {
            lua_pushstring(L, o->val);
            lua_setfield(L, -2, o->keyword);
        }
    release_pending(tmp);
    return 1;
}

/* core.conndefaults() -> {keyword = default value | false}: every option
 * libpq knows, with its default from the PG* environment. */
static int db_conndefaults(lua_State *L)
{
    dbconn *tmp = (dbconn *)lua_newuserdatauv(L, sizeof *tmp, 0);
    memset(tmp, 0, sizeof *tmp);
    luaL_setmetatable(L, CONN_MT);
    tmp->opts = PQconndefaults();
    if (tmp->opts == NULL)
        return luaL_error(L, "conndefaults: out of memory");
    lua_newtable(L);
    for (PQconninfoOption *o = tmp->opts; o->keyword != NULL; o++) {
        if (o->val != NULL)
            lua_pushstring(L, o->val);
        else
            lua_pushboolean(L, 0);
        lua_setfield(L, -2, o->keyword);
    }
    release_pending(tmp);
    return 1;
}

/* tostring(db.null) -> "NULL"; other light userdata print as usual. */
static int light_tostring(lua_State *L)
{
    void *p = lua_touserdata(L, 1);
    if (p == SQL_NULL)
        lua_pushliteral(L, "NULL");
    else
        lua_pushfstring(L, "userdata: %p", p);
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"backend_pid", conn_backend_pid},
    {"close", conn_close},
    {"exec", conn_exec},
    {"exec_script", conn_exec_script},
    {"notices", conn_notices},
    {"query", conn_query},
    {"query_one", conn_query_one},
    {"query_value", conn_query_value},
    {"quote_ident", conn_quote_ident},
    {"quote_literal", conn_quote_literal},
    {"server_version", conn_server_version},
    {"status", conn_status},
    {NULL, NULL}
};

static const luaL_Reg db_funcs[] = {
    {"conndefaults", db_conndefaults},
    {"conninfo_parse", db_conninfo_parse},
    {"connect", db_connect},
    {NULL, NULL}
};

DHRUN_MODULE_STAMP(db);

int luaopen_dhrun_core_db(lua_State *L)
{
    luaL_newlib(L, db_funcs);

    luaL_newlib(L, conn_methods);               /* [core, methods] */
    if (luaL_newmetatable(L, CONN_MT)) {
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, conn_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, conn_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, conn_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, conn_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_setfield(L, -2, "methods");

    if (luaL_newmetatable(L, INFO_MT)) {
        lua_pushcfunction(L, info_call);
        lua_setfield(L, -2, "__call");
    }
    lua_pop(L, 1);

    /* All light userdata share one metatable; add __tostring only if no
     * other module has set one. */
    lua_pushlightuserdata(L, SQL_NULL);
    if (!lua_getmetatable(L, -1))
        lua_newtable(L);
    if (lua_getfield(L, -1, "__tostring") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushcfunction(L, light_tostring);
        lua_setfield(L, -2, "__tostring");
    } else {
        lua_pop(L, 1);
    }
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "null");
    return 1;
}
