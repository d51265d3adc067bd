/*
 * http_server.h - the HTTP "server" of the fuzz_http* harnesses: it answers
 * each connection with bytes the harness chose, without network or threads.
 *
 * A harness includes runtime/host.c, then this file, then runtime/l_http.c:
 * this file defines DHRUN_HTTP_TEST_SOCKETS, so l_http.c's http_perform
 * calls server_setup() on each transfer.  That sends every connection
 * libcurl opens, to any host, to a listening Unix socket of the harness
 * (CURLOPT_ABSTRACT_UNIX_SOCKET: no DNS, no TCP, no file).  A Unix socket's
 * connect() completes at once, so just before the request goes
 * (CURLOPT_PREREQFUNCTION) the connection is there to accept: the server
 * writes all of that connection's bytes and ends its stream.  (libcurl 7.88
 * cannot take a socketpair from CURLOPT_OPENSOCKETFUNCTION: it connect()s
 * even an "already connected" socket, curl issue 10626.)
 *
 * Per input: server_begin(), server_add() for each connection in order,
 * check_begin() (a Lua state and the harness's check chunk), the chunk's
 * arguments, check_end() (runs it: the request(s), server_received() to
 * see what the client sent, then server_end()).
 *
 * Include fuzz.h before this file.
 */
#ifndef DHRUN_FUZZ_HTTP_SERVER_H
#define DHRUN_FUZZ_HTTP_SERVER_H

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>

#define SERVER_MAX_CONNS 8

static struct {
    const char *data[SERVER_MAX_CONNS];
    size_t len[SERVER_MAX_CONNS];
    int count, next;
    int peer[SERVER_MAX_CONNS];     /* the server's ends of the connections */
    int listener;                   /* for the whole run */
    char name[64];                  /* abstract socket name */
} server = {.listener = -1};

static inline void server_listen_once(void)
{
    if (server.listener >= 0)
        return;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(server.name, sizeof server.name, "dhrun-fuzz-http-%ld", (long)getpid());
    size_t n = strlen(server.name);
    memcpy(a.sun_path + 1, server.name, n);     /* sun_path[0] = 0: abstract */
    server.listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (server.listener < 0 ||
        bind(server.listener, (struct sockaddr *)&a,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) != 0 ||
        listen(server.listener, 64) != 0)
        abort();
}

static inline void server_begin(void)
{
    server.count = server.next = 0;
}

/* The next connection gets these bytes (not copied: keep them alive). */
static inline void server_add(const char *data, size_t len)
{
    if (server.count == SERVER_MAX_CONNS)
        return;
    server.data[server.count] = data;
    server.len[server.count] = len;
    server.count++;
}

/* Answers every connection libcurl has made since the last call; one past
 * the harness's list is closed at once (end of stream, no bytes). */
static inline void server_serve(void)
{
    int fd;
    while ((fd = accept4(server.listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        if (server.next >= server.count) {
            close(fd);
            continue;
        }
        int i = server.next++;
        /* The inputs are far smaller than a socket buffer: all fits. */
        for (size_t off = 0; off < server.len[i];) {
            ssize_t n = write(fd, server.data[i] + off, server.len[i] - off);
            if (n <= 0)
                abort();
            off += (size_t)n;
        }
        shutdown(fd, SHUT_WR);          /* the server is done talking */
        server.peer[i] = fd;
    }
}

/* Pushes what the client sent on connection i (0 = the first), or nil if
 * it never connected.  Call it once the transfer is over. */
static inline void server_received(lua_State *L, int i)
{
    if (i >= server.next) {
        lua_pushnil(L);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char buf[4096];
    ssize_t n;
    while ((n = read(server.peer[i], buf, sizeof buf)) > 0)
        luaL_addlstring(&b, buf, (size_t)n);
    luaL_pushresult(&b);
}

/* Closes every connection of the input. */
static inline void server_end(void)
{
    server.count = 0;
    server_serve();                     /* closes any not yet accepted */
    for (int i = 0; i < server.next; i++)
        close(server.peer[i]);
    server.next = 0;
}

/* CURLOPT_PREREQFUNCTION: a connection is made (or reused); the request is
 * about to go. */
static inline int server_before_request(void *arg, char *ip, char *local_ip, int port, int local_port)
{
    (void)arg;
    (void)ip;
    (void)local_ip;
    (void)port;
    (void)local_port;
    server_serve();
    return CURL_PREREQFUNC_OK;
}

/* Run by http_perform after its own options.  http only: a TLS handshake
 * would wait for a server hello until the timeout (the bytes go out only
 * once the request is due), and TLS parsing is OpenSSL's, not dhrun's. */
static inline CURLcode server_setup(CURL *e)
{
    server_listen_once();
    CURLcode rc = curl_easy_setopt(e, CURLOPT_ABSTRACT_UNIX_SOCKET, server.name);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, server_before_request);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http");
    if (rc == CURLE_OK)                 /* no proxy from the environment */
        rc = curl_easy_setopt(e, CURLOPT_PROXY, "");
    return rc;
}

#define DHRUN_HTTP_TEST_SOCKETS(e) server_setup(e)

/* A fresh state with dhrun's modules (the embedded stdlib) and the
 * harness's check chunk pushed; its arguments go on top. */
static inline lua_State *check_begin(const char *chunk, size_t len, const char *name)
{
    lua_State *L = fz_lua();
    register_modules(L, NULL);
    fz_link_modules(L);
    if (luaL_loadbuffer(L, chunk, len, name) != LUA_OK) {
        fprintf(stderr, "%s: %s\n", name + 1, lua_tostring(L, -1));
        abort();
    }
    return L;
}

/* Runs the chunk: any error is a finding.  Then closes the state and the
 * input's connections. */
static inline void check_end(lua_State *L, int nargs, const char *name)
{
    if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
        fprintf(stderr, "%s: %s\n", name + 1, luaL_tolstring(L, -1, NULL));
        abort();
    }
    lua_close(L);
    server_end();
}

#endif
