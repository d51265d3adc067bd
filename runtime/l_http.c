/*
 * l_http.c - dhrun.core.http: the libcurl binding under stdlib/core/dhrun/http.lua.
 *
 * A request is one curl easy handle driven by its own multi handle, so the
 * wait is our loop: curl_multi_poll() with the host's interrupt pipe among
 * its file descriptors.  Ctrl-C therefore wakes the wait at once, whatever
 * thread the signal landed on (libcurl resolves names on a thread of its
 * own), and we raise the interrupt only after both handles are freed.
 * Nothing raises while libcurl is on the stack: the callbacks only touch C
 * memory and set flags (a longjmp across libcurl would leak its state).
 *
 * Ownership: every libcurl object is owned by a userdata with __gc, so a Lua
 * error at any point (out of memory while pushing a result) cannot leak it:
 *   "dhrun.http.Request"    easy + multi handle, header list, body buffer
 *   "dhrun.http.CookieJar"  a share handle holding the cookies of a jar
 *   "dhrun.http.Scratch"    a CURLU or a curl-allocated string being pushed
 * Each has an idempotent release function used by the normal path and __gc.
 *
 * Option checking, defaults and the wording of error messages are in Lua;
 * this file exposes:
 *   core.perform(req)      -> response | nil, failure   (req: see http_perform)
 *   core.cookie_jar()      -> jar          jar:list(), jar:close(), <close>
 *   core.is_jar(v)         -> boolean
 *   core.display_url(url)  -> url without its password | nil
 *   core.escape(s), core.unescape(s)
 *   core.user_agent        -> "dhrun/<version>"
 */
#define _GNU_SOURCE
#include "dhrun.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define REQUEST_MT "dhrun.http.Request"
#define JAR_MT "dhrun.http.CookieJar"
#define SCRATCH_MT "dhrun.http.Scratch"

#define BODY_INITIAL_CAP 16384

/* ------------------------------------------------------------------ */
/* Scratch: curl-allocated memory alive while Lua may raise             */

typedef struct {
    CURLU *url;
    char *str;      /* curl_free() */
} scratch;

static void scratch_release(scratch *s)
{
    if (s->str != NULL) {
        curl_free(s->str);
        s->str = NULL;
    }
    if (s->url != NULL) {
        curl_url_cleanup(s->url);
        s->url = NULL;
    }
}

static int scratch_gc(lua_State *L)
{
    scratch_release((scratch *)luaL_checkudata(L, 1, SCRATCH_MT));
    return 0;
}

/* Pushes an empty scratch box (it stays on the stack until the caller
 * has pushed what the box holds, then releases it). */
static scratch *scratch_new(lua_State *L)
{
    scratch *s = (scratch *)lua_newuserdatauv(L, sizeof *s, 0);
    s->url = NULL;
    s->str = NULL;
    luaL_setmetatable(L, SCRATCH_MT);
    return s;
}

/* core.escape(s) -> percent-encoded s (curl_easy_escape) */
static int http_escape(lua_State *L)
{
    size_t len;
    const char *in = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len <= INT_MAX, 1, "string too long");
    scratch *s = scratch_new(L);
    s->str = curl_easy_escape(NULL, in, (int)len);
    if (s->str == NULL)
        return luaL_error(L, "http.escape: out of memory");
    lua_pushstring(L, s->str);
    scratch_release(s);
    return 1;
}

/* core.unescape(s) -> s with %XX sequences decoded (curl_easy_unescape) */
static int http_unescape(lua_State *L)
{
    size_t len;
    int outlen = 0;
    const char *in = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len <= INT_MAX, 1, "string too long");
    scratch *s = scratch_new(L);
    s->str = curl_easy_unescape(NULL, in, (int)len, &outlen);
    if (s->str == NULL)
        return luaL_error(L, "http.unescape: out of memory");
    lua_pushlstring(L, s->str, (size_t)outlen);
    scratch_release(s);
    return 1;
}

/* Registers a URL part (user-info password) with the redactor, both as it
 * is written in the URL and percent-decoded, if it is not empty. */
static void redact_url_part(lua_State *L, scratch *s, CURLUPart part)
{
    for (unsigned flags = 0; flags <= CURLU_URLDECODE; flags += CURLU_URLDECODE) {
        if (curl_url_get(s->url, part, &s->str, flags) == CURLUE_OK)
            dhrun_redact_add(L, s->str, strlen(s->str));
        curl_free(s->str);
        s->str = NULL;
    }
}

/* core.display_url(url) -> the URL without the password of its user-info
 * (the password is registered with the redactor), or nil when libcurl
 * cannot parse it.  A URL without a password comes back unchanged. */
static int http_display_url(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    scratch *s = scratch_new(L);
    s->url = curl_url();
    if (s->url == NULL)
        return luaL_error(L, "http: out of memory");
    if (curl_url_set(s->url, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        scratch_release(s);
        lua_pushnil(L);
        return 1;
    }
    if (curl_url_get(s->url, CURLUPART_PASSWORD, &s->str, 0) != CURLUE_OK) {
        scratch_release(s);     /* no password: nothing to hide */
        lua_pushvalue(L, 1);
        return 1;
    }
    curl_free(s->str);
    s->str = NULL;
    redact_url_part(L, s, CURLUPART_PASSWORD);
    if (curl_url_set(s->url, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
        curl_url_get(s->url, CURLUPART_URL, &s->str, 0) != CURLUE_OK) {
        scratch_release(s);
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, s->str);
    scratch_release(s);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Cookie jar: a share handle that shares only cookies                  */

/* Netscape cookie-file fields, as CURLINFO_COOKIELIST writes them. */
enum { C_DOMAIN, C_TAILMATCH, C_PATH, C_SECURE, C_EXPIRES, C_NAME, C_VALUE, C_FIELDS };

struct cookie_row {
    char *f[C_FIELDS];          /* into a line of cookie_jar.lines */
};

typedef struct {
    CURLSH *share;              /* NULL once freed */
    int closed;                 /* close() called: no more requests */
    struct curl_slist *lines;   /* CURLINFO_COOKIELIST being pushed */
    struct cookie_row *rows;    /* the lines split into fields */
} cookie_jar;

static void jar_release_pending(cookie_jar *j)
{
    free(j->rows);
    j->rows = NULL;
    curl_slist_free_all(j->lines);
    j->lines = NULL;
}

/* Idempotent.  curl_share_cleanup refuses (CURLSHE_IN_USE) while an easy
 * handle still uses the share: only a request userdata left behind by an
 * error and not yet collected can.  Such a request keeps the jar alive
 * (its user value), so it is finalized before the jar, whose __gc then
 * frees the share even if close() could not. */
static void jar_release(cookie_jar *j)
{
    jar_release_pending(j);
    j->closed = 1;
    if (j->share != NULL && curl_share_cleanup(j->share) == CURLSHE_OK)
        j->share = NULL;
}

static cookie_jar *check_jar(lua_State *L, int idx)
{
    cookie_jar *j = (cookie_jar *)luaL_checkudata(L, idx, JAR_MT);
    if (j->closed)
        luaL_error(L, "http: the cookie jar is closed");
    return j;
}

/* core.cookie_jar() -> jar */
static int http_cookie_jar(lua_State *L)
{
    cookie_jar *j = (cookie_jar *)lua_newuserdatauv(L, sizeof *j, 0);
    memset(j, 0, sizeof *j);
    luaL_setmetatable(L, JAR_MT);
    j->share = curl_share_init();
    if (j->share == NULL ||
        curl_share_setopt(j->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE) != CURLSHE_OK)
        return luaL_error(L, "http.cookie_jar: out of memory");
    return 1;
}

/* core.is_jar(v) -> boolean */
static int http_is_jar(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, JAR_MT) != NULL);
    return 1;
}

#define HTTPONLY_PREFIX "#HttpOnly_"

static const char *bare_domain(const char *d)
{
    size_t n = sizeof HTTPONLY_PREFIX - 1;
    return strncmp(d, HTTPONLY_PREFIX, n) == 0 ? d + n : d;
}

static int cmp_rows(const void *a, const void *b)
{
    const struct cookie_row *x = (const struct cookie_row *)a;
    const struct cookie_row *y = (const struct cookie_row *)b;
    int c = strcmp(bare_domain(x->f[C_DOMAIN]), bare_domain(y->f[C_DOMAIN]));
    if (c == 0)
        c = strcmp(x->f[C_PATH], y->f[C_PATH]);
    if (c == 0)
        c = strcmp(x->f[C_NAME], y->f[C_NAME]);
    return c;
}

/* Splits a cookie line in place into its fields; 0 if malformed. */
static int split_cookie_line(char *line, char **f)
{
    for (int i = 0; i < C_VALUE; i++) {
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            return 0;
        *tab = '\0';
        f[i] = line;
        line = tab + 1;
    }
    f[C_VALUE] = line;          /* the value is the rest */
    return 1;
}

/* jar:list() -> { {domain=, path=, name=, value=, secure=, http_only=,
 *                  expires= (epoch seconds, 0 for a session cookie)}, ... }
 * sorted by domain, path and name. */
static int jar_list(lua_State *L)
{
    cookie_jar *j = check_jar(L, 1);
    jar_release_pending(j);

    /* CURLINFO_COOKIELIST needs an easy handle; one attached to the share
     * sees the jar's cookies without performing anything. */
    CURL *e = curl_easy_init();
    CURLcode rc = e == NULL ? CURLE_OUT_OF_MEMORY : curl_easy_setopt(e, CURLOPT_SHARE, j->share);
    if (rc == CURLE_OK)
        rc = curl_easy_getinfo(e, CURLINFO_COOKIELIST, &j->lines);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK)
        return luaL_error(L, "jar:list: %s", curl_easy_strerror(rc));

    size_t n = 0;
    for (struct curl_slist *l = j->lines; l != NULL; l = l->next)
        n++;
    j->rows = (struct cookie_row *)calloc(n + 1, sizeof *j->rows);
    if (j->rows == NULL)
        return luaL_error(L, "jar:list: out of memory");
    size_t rows = 0;
    for (struct curl_slist *l = j->lines; l != NULL; l = l->next)
        if (split_cookie_line(l->data, j->rows[rows].f))
            rows++;
    qsort(j->rows, rows, sizeof *j->rows, cmp_rows);

    lua_createtable(L, (int)rows, 0);
    for (size_t i = 0; i < rows; i++) {
        char **f = j->rows[i].f;
        lua_createtable(L, 0, 7);
        lua_pushstring(L, bare_domain(f[C_DOMAIN]));
        lua_setfield(L, -2, "domain");
        lua_pushstring(L, f[C_PATH]);
        lua_setfield(L, -2, "path");
        lua_pushstring(L, f[C_NAME]);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, f[C_VALUE]);
        lua_setfield(L, -2, "value");
        lua_pushboolean(L, strcmp(f[C_SECURE], "TRUE") == 0);
        lua_setfield(L, -2, "secure");
        lua_pushboolean(L, bare_domain(f[C_DOMAIN]) != f[C_DOMAIN]);
        lua_setfield(L, -2, "http_only");
        lua_pushinteger(L, (lua_Integer)strtoll(f[C_EXPIRES], NULL, 10));
        lua_setfield(L, -2, "expires");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    jar_release_pending(j);
    return 1;
}

/* jar:close() -> nothing.  Forgets the cookies; idempotent. */
static int jar_close(lua_State *L)
{
    jar_release((cookie_jar *)luaL_checkudata(L, 1, JAR_MT));
    return 0;
}

static int jar_tostring(lua_State *L)
{
    cookie_jar *j = (cookie_jar *)luaL_checkudata(L, 1, JAR_MT);
    lua_pushfstring(L, "http cookie jar (%s)", j->closed ? "closed" : "open");
    return 1;
}

/* ------------------------------------------------------------------ */
/* Request                                                              */

typedef struct {
    CURLM *multi;
    CURL *easy;                 /* added to `multi` by run_transfer */
    struct curl_slist *headers;
    char *body;                 /* response body received so far */
    size_t len, cap, max;
    int too_large;              /* the body went over `max` */
    int no_memory;              /* the body buffer could not grow */
    char errbuf[CURL_ERROR_SIZE];
} request;

/* Idempotent: the normal path, every error path and __gc. */
static void request_release(request *r)
{
    if (r->easy != NULL) {
        if (r->multi != NULL)
            curl_multi_remove_handle(r->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    if (r->multi != NULL) {
        curl_multi_cleanup(r->multi);
        r->multi = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

static int request_gc(lua_State *L)
{
    request_release((request *)luaL_checkudata(L, 1, REQUEST_MT));
    return 0;
}

/* CURLOPT_WRITEFUNCTION: appends to the body buffer.  Returning less than
 * `n` makes libcurl stop with CURLE_WRITE_ERROR; the flags say why. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    request *r = (request *)arg;
    size_t n = size * nmemb;
    if (n > r->max - r->len) {
        r->too_large = 1;
        return 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : BODY_INITIAL_CAP;
        while (cap < r->len + n)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        char *p = (char *)realloc(r->body, cap);
        if (p == NULL) {
            r->no_memory = 1;
            return 0;
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return n;
}

/* Fields of the request table (at index 1).  It comes from http.lua,
 * which has checked it: these errors are internal misuse. */

static const char *opt_string(lua_State *L, const char *k, int required)
{
    /* Strings only: a number converted here would be a new string that
     * nothing references once popped. */
    int type = lua_getfield(L, 1, k);
    const char *s = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (s == NULL && (required || type != LUA_TNIL))
        luaL_error(L, "http: req.%s must be a string", k);
    lua_pop(L, 1);      /* still referenced by the table: s stays valid */
    return s;
}

static lua_Integer opt_integer(lua_State *L, const char *k, lua_Integer dflt)
{
    int isnum = 1;
    lua_getfield(L, 1, k);
    lua_Integer v = lua_isnil(L, -1) ? dflt : lua_tointegerx(L, -1, &isnum);
    if (!lua_isnil(L, -1) && !isnum)
        luaL_error(L, "http: req.%s must be an integer", k);
    lua_pop(L, 1);
    return v;
}

static double opt_number(lua_State *L, const char *k, double dflt)
{
    int isnum = 1;
    lua_getfield(L, 1, k);
    double v = lua_isnil(L, -1) ? dflt : (double)lua_tonumberx(L, -1, &isnum);
    if (!lua_isnil(L, -1) && !isnum)
        luaL_error(L, "http: req.%s must be a number", k);
    lua_pop(L, 1);
    return v;
}

static int opt_boolean(lua_State *L, const char *k)
{
    lua_getfield(L, 1, k);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Which of the error codes of the Lua API a libcurl failure is. */
static const char *failure_code(CURLcode rc, long os_errno, const request *r)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "resolve";
    case CURLE_COULDNT_CONNECT:
        /* Also "no route to host" and the like: only a refusal is "refused". */
        return os_errno == ECONNREFUSED ? "refused" : "other";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_TOO_MANY_REDIRECTS:
        return "too_many_redirects";
    case CURLE_FILESIZE_EXCEEDED:   /* Content-Length over CURLOPT_MAXFILESIZE */
        return "too_large";
    case CURLE_WRITE_ERROR:
        return r->too_large ? "too_large" : "other";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    default:
        return "other";
    }
}

static double seconds_info(CURL *e, CURLINFO info)
{
    curl_off_t us = 0;
    curl_easy_getinfo(e, info, &us);
    return (double)us / 1e6;
}

/* Pushes the failure table: {code=, curl_code=, detail=, os_errno=,
 * connected= (got as far as a TCP connection), elapsed= (seconds)}.
 * `detail` is libcurl's own one-line explanation. */
static void push_failure(lua_State *L, request *r, CURLcode rc)
{
    long os_errno = 0;
    curl_off_t connect_us = 0;
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
    curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, failure_code(rc, os_errno, r));
    lua_setfield(L, -2, "code");
    lua_pushinteger(L, (lua_Integer)rc);
    lua_setfield(L, -2, "curl_code");
    if (r->no_memory)
        lua_pushliteral(L, "out of memory for the response body");
    else if (r->errbuf[0] != '\0')
        lua_pushstring(L, r->errbuf);
    else
        lua_pushstring(L, curl_easy_strerror(rc));
    lua_setfield(L, -2, "detail");
    lua_pushinteger(L, (lua_Integer)os_errno);
    lua_setfield(L, -2, "os_errno");
    lua_pushboolean(L, connect_us > 0);
    lua_setfield(L, -2, "connected");
    lua_pushnumber(L, seconds_info(r->easy, CURLINFO_TOTAL_TIME_T));
    lua_setfield(L, -2, "elapsed");
}

/* Pushes a header value as RFC 9110 (5.5) wants it: white space trimmed at
 * both ends, a CR or LF inside replaced with a space.  libcurl's header API
 * trims blanks but leaves the CR of an empty value ("X-A: \r\n" gives
 * "\r") and unfolds an obsolete folded line around a bare CR (libcurl 7.88):
 * a script would compare, print or log such a value with a line break. */
static void push_header_value(lua_State *L, const char *v)
{
    size_t n = strlen(v);
    while (n > 0 && strchr(" \t\r\n", v[n - 1]) != NULL)
        n--;
    while (n > 0 && strchr(" \t\r\n", v[0]) != NULL) {
        v++;
        n--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++)
        luaL_addchar(&b, v[i] == '\r' || v[i] == '\n' ? ' ' : v[i]);
    luaL_pushresult(&b);
}

/* Pushes the final response's headers: names lowercased, repeated headers
 * joined with ", ", except set-cookie, always a list (its values may
 * contain commas).  libcurl's header API keeps the headers of each response
 * of a redirect chain apart; request -1 is the last one. */
static void push_headers(lua_State *L, CURL *e)
{
    struct curl_header *h = NULL;
    lua_newtable(L);                                /* [t] */
    while ((h = curl_easy_nextheader(e, CURLH_HEADER, -1, h)) != NULL) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *p = h->name; *p != '\0'; p++)
            luaL_addchar(&b, (char)tolower((unsigned char)*p));
        luaL_pushresult(&b);                        /* [t, name] */
        int cookie = strcmp(lua_tostring(L, -1), "set-cookie") == 0;
        lua_pushvalue(L, -1);
        int old = lua_rawget(L, -3);                /* [t, name, old] */
        if (cookie) {
            if (old == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);                    /* [t, name, list] */
                lua_pushvalue(L, -2);
                lua_pushvalue(L, -2);
                lua_rawset(L, -5);                  /* t[name] = list */
            }
            push_header_value(L, h->value);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            lua_pop(L, 2);                          /* [t] */
        } else {
            if (old == LUA_TNIL) {
                lua_pop(L, 1);
                push_header_value(L, h->value);
            } else {
                lua_pushliteral(L, ", ");
                push_header_value(L, h->value);
                lua_concat(L, 3);                   /* [t, name, old..", "..value] */
            }
            lua_rawset(L, -3);                      /* [t] */
        }
    }
}

/* The request loop: drives the transfer until it ends or Ctrl-C.
 * Returns 1 if interrupted; else sets *rc to the transfer's result. */
static int run_transfer(request *r, CURLcode *rc)
{
    int running = 1;
    CURLMcode mc = curl_multi_add_handle(r->multi, r->easy);
    while (mc == CURLM_OK) {
        mc = curl_multi_perform(r->multi, &running);
        if (mc != CURLM_OK || !running)
            break;
        if (dhrun_interrupted())
            return 1;
        /* The self-pipe becomes readable on SIGINT/SIGTERM: wake now. */
        struct curl_waitfd wfd = {dhrun_interrupt_fd(), CURL_WAIT_POLLIN, 0};
        mc = curl_multi_poll(r->multi, &wfd, wfd.fd >= 0 ? 1 : 0, 1000, NULL);
    }
    if (mc != CURLM_OK) {
        snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_multi_strerror(mc));
        *rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
        return 0;
    }
    int left;
    CURLMsg *m;
    *rc = CURLE_GOT_NOTHING;
    while ((m = curl_multi_info_read(r->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == r->easy)
            *rc = m->data.result;
    return 0;
}

/* Seconds to libcurl's milliseconds; 0 stays 0 (no limit), and a tiny
 * positive value does not round down to "no limit". */
static long to_ms(double secs)
{
    if (secs <= 0)
        return 0;
    if (secs >= (double)(LONG_MAX / 1000))
        return LONG_MAX / 1000;
    long ms = (long)(secs * 1000.0 + 0.5);
    return ms > 0 ? ms : 1;
}

/* curl_easy_setopt on r->easy, skipped once one has failed: the first
 * failure stays in `rc`. */
#define SET(opt, val)                                   \
    do {                                                \
        if (rc == CURLE_OK)                             \
            rc = curl_easy_setopt(r->easy, opt, val);   \
    } while (0)

/* Sets the method and the request body.  POST uses libcurl's own POST
 * (so a 301/302/303 redirect turns it into a GET, as browsers do); other
 * methods with CUSTOMREQUEST, which libcurl keeps across redirects. */
static CURLcode set_method(request *r, const char *method, const char *body, size_t len)
{
    CURLcode rc = CURLE_OK;
    if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
        return rc;
    }
    if (strcmp(method, "GET") == 0 && body == NULL) {
        SET(CURLOPT_HTTPGET, 1L);
        return rc;
    }
    if (strcmp(method, "POST") != 0)
        SET(CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL || strcmp(method, "POST") == 0) {
        /* Not copied: the string is in the request table, which the
         * caller holds until we return. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        SET(CURLOPT_POSTFIELDS, body != NULL ? body : "");
    }
    return rc;
}

/* Pushes the successful response: {status=, headers=, body=, url=,
 * redirects=, time={total=, namelookup=, connect=, tls=, starttransfer=}}. */
static void push_response(lua_State *L, request *r)
{
    long status = 0, redirects = 0;
    char *url = NULL;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);

    lua_createtable(L, 0, 6);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, r->easy);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body != NULL ? r->body : "", r->len);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, url != NULL ? url : "");
    lua_setfield(L, -2, "url");
    lua_pushinteger(L, redirects);
    lua_setfield(L, -2, "redirects");

    static const struct {
        const char *name;
        CURLINFO info;
    } times[] = {
        {"total", CURLINFO_TOTAL_TIME_T},
        {"namelookup", CURLINFO_NAMELOOKUP_TIME_T},
        {"connect", CURLINFO_CONNECT_TIME_T},
        {"tls", CURLINFO_APPCONNECT_TIME_T},
        {"starttransfer", CURLINFO_STARTTRANSFER_TIME_T},
    };
    lua_createtable(L, 0, 5);
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        lua_pushnumber(L, seconds_info(r->easy, times[i].info));
        lua_setfield(L, -2, times[i].name);
    }
    lua_setfield(L, -2, "time");
}

/*
 * core.perform(req) -> response | nil, failure
 * req (checked and completed by http.lua): method, url, headers (array of
 * libcurl header lines), body (string or nil), timeout, connect_timeout
 * (seconds, 0 = none), follow_redirects, max_redirects, insecure,
 * cookies (jar or nil), user_agent, max_body (bytes).
 * Transport failures return nil and {code=, curl_code=, detail=, os_errno=,
 * connected=, elapsed=}; Ctrl-C raises the interrupt error.
 */
static int http_perform(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *url = opt_string(L, "url", 1);
    const char *method = opt_string(L, "method", 1);
    const char *agent = opt_string(L, "user_agent", 0);
    double timeout = opt_number(L, "timeout", 0);
    double connect_timeout = opt_number(L, "connect_timeout", 0);
    lua_Integer max_redirects = opt_integer(L, "max_redirects", 5);
    lua_Integer max_body = opt_integer(L, "max_body", 64 * 1024 * 1024);
    int follow = opt_boolean(L, "follow_redirects");
    int insecure = opt_boolean(L, "insecure");
    size_t body_len = 0;
    const char *body = NULL;
    int type = lua_getfield(L, 1, "body");
    if (type == LUA_TSTRING)
        body = lua_tolstring(L, -1, &body_len);
    else if (type != LUA_TNIL)
        return luaL_error(L, "http: req.body must be a string");
    lua_pop(L, 1);      /* the table keeps it alive */
    if (max_body < 0 || max_redirects < 0)
        return luaL_error(L, "http: req.max_body and req.max_redirects must be >= 0");

    request *r = (request *)lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REQUEST_MT);
    cookie_jar *jar = NULL;
    if (lua_getfield(L, 1, "cookies") != LUA_TNIL) {
        jar = check_jar(L, -1);
        lua_setiuservalue(L, -2, 1);    /* the jar outlives the request */
    } else
        lua_pop(L, 1);
    r->max = (size_t)max_body;
    r->easy = curl_easy_init();
    r->multi = curl_multi_init();
    if (r->easy == NULL || r->multi == NULL)
        return luaL_error(L, "http: out of memory");

    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *line = lua_tostring(L, -1);
            if (line == NULL)
                return luaL_error(L, "http: req.headers[%d] must be a string", (int)i);
            struct curl_slist *l = curl_slist_append(r->headers, line);
            if (l == NULL)
                return luaL_error(L, "http: out of memory");
            r->headers = l;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    CURLcode rc = CURLE_OK;
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_NOSIGNAL, 1L);          /* signals are the host's business */
    /* Ctrl-C during a slow DNS lookup must not wait for the resolver
     * thread: libcurl leaves it to finish on its own (7.87+; an older
     * libcurl refuses the option, which changes nothing else). */
    (void)curl_easy_setopt(r->easy, CURLOPT_QUICK_EXIT, 1L);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, r);
    if (max_body > 0)                   /* 0 means "no limit" to libcurl */
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
    SET(CURLOPT_TIMEOUT_MS, to_ms(timeout));
    SET(CURLOPT_CONNECTTIMEOUT_MS, to_ms(connect_timeout));
    SET(CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)max_redirects);
    if (agent != NULL)
        SET(CURLOPT_USERAGENT, agent);
    SET(CURLOPT_HTTPHEADER, r->headers);
    /* The cookie engine is on for every request, so cookies set along a
     * redirect chain (a login) reach its next hops; without a jar they are
     * forgotten with the request. */
    SET(CURLOPT_COOKIEFILE, "");
    if (jar != NULL)
        SET(CURLOPT_SHARE, jar->share);
    if (insecure) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (rc == CURLE_OK)
        rc = set_method(r, method, body, body_len);
#ifdef DHRUN_HTTP_TEST_SOCKETS
    /* Only in the fuzz targets' build (fuzz/http_server.h): the transfer
     * goes to the harness's own server, not to the network. */
    if (rc == CURLE_OK)
        rc = DHRUN_HTTP_TEST_SOCKETS(r->easy);
#endif

    if (rc == CURLE_OK && run_transfer(r, &rc)) {
        request_release(r);
        return dhrun_raise_interrupt(L);
    }
    if (rc != CURLE_OK) {
        lua_pushnil(L);
        push_failure(L, r, rc);
        request_release(r);
        return 2;
    }
    push_response(L, r);
    request_release(r);
    return 1;
}

#undef SET

/* ------------------------------------------------------------------ */
/* Module                                                               */

static const luaL_Reg http_funcs[] = {
    {"cookie_jar", http_cookie_jar},
    {"display_url", http_display_url},
    {"escape", http_escape},
    {"is_jar", http_is_jar},
    {"perform", http_perform},
    {"unescape", http_unescape},
    {NULL, NULL}
};

static const luaL_Reg jar_methods[] = {
    {"close", jar_close},
    {"list", jar_list},
    {NULL, NULL}
};

DHRUN_MODULE_STAMP(http);

int luaopen_dhrun_core_http(lua_State *L)
{
    /* Once per process (it is not thread-safe, and we have one thread);
     * curl_global_cleanup at exit is not needed. */
    static int curl_ready = 0;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return luaL_error(L, "http: libcurl failed to initialize");
        curl_ready = 1;
    }

    if (luaL_newmetatable(L, REQUEST_MT)) {
        lua_pushcfunction(L, request_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SCRATCH_MT)) {
        lua_pushcfunction(L, scratch_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, JAR_MT)) {
        luaL_newlib(L, jar_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, jar_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, jar_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, jar_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);

    luaL_newlib(L, http_funcs);
    lua_pushliteral(L, "dhrun/" DHRUN_VERSION);
    lua_setfield(L, -2, "user_agent");
    return 1;
}
