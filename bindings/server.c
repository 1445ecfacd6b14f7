/* server.c: core.server(opts, cb) over pd_server_t.
 *
 * cb(req) runs from the loop for each complete request with a table
 * {method, path, query, target, headers (lower-cased), body, peer, handle}.
 * `handle` is a pivday.core.Request that must be answered once with
 * handle:respond(status, headers, body) or handle:drop().  An unanswered
 * handle that is collected drops the connection, so nothing leaks.
 * With opts.hook (a pivday.core.Hook, bindings/hook.c) there is no cb:
 * the hook handles every request in C (the webhook listener).
 * Open servers and unanswered requests are listed for module shutdown.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

typedef struct lpd_server_s {
  pd_server_t *s;
  void **box;
  int cb_ref;
  int self_ref;   /* an open server is rooted until closed */
  lpd_hook_t *hook; /* handles the requests instead of cb */
  int hook_ref;
  struct lpd_server_s *next, *prev;
} lpd_server_t;

typedef struct lpd_req_s {
  pd_http_req_t *r;
  void **box;
  struct lpd_req_s *next, *prev;
} lpd_req_t;

#define LINK(head, x)                                                         \
  do {                                                                        \
    (x)->prev = NULL;                                                         \
    (x)->next = (head);                                                       \
    if (head) (head)->prev = (x);                                             \
    (head) = (x);                                                             \
  } while (0)
#define UNLINK(head, x)                                                       \
  do {                                                                        \
    if ((x)->prev) (x)->prev->next = (x)->next;                               \
    else (head) = (x)->next;                                                  \
    if ((x)->next) (x)->next->prev = (x)->prev;                               \
  } while (0)

/* Pushes a new handle for r; NULL (nothing pushed, r dropped) when out of
 * memory. */
static lpd_req_t *push_handle(lua_State *L, pd_http_req_t *r) {
  void **box = lpd_newbox(L, LPD_REQUEST);
  lpd_req_t *q = malloc(sizeof(*q));
  if (q == NULL) {
    lua_pop(L, 1);
    pd_http_drop(r);
    return NULL;
  }
  q->r = r;
  q->box = box;
  LINK(lpd_ctx->reqs, q);
  *box = q;
  return q;
}

static void request_cb(pd_server_t *s, pd_http_req_t *r, void *arg) {
  (void)s;
  lpd_server_t *srv = arg;
  lua_State *L = lpd_ctx->L;
  if (srv->self_ref == LUA_NOREF || lpd_ctx->closing) {
    pd_http_drop(r);
    return;
  }
  if (srv->hook) {
    lpd_hook_request(srv->hook, r);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->cb_ref);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, r->path, r->path_len);
  lua_setfield(L, -2, "path");
  lua_pushlstring(L, r->query, r->query_len);
  lua_setfield(L, -2, "query");
  lua_pushlstring(L, r->target, r->target_len);
  lua_setfield(L, -2, "target");
  lua_pushlstring(L, r->body ? r->body : "", r->body_len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, r->peer);
  lua_setfield(L, -2, "peer");
  lpd_push_headers(L, r->headers, r->nheaders);
  lua_setfield(L, -2, "headers");
  if (push_handle(L, r) == NULL) {
    lua_pop(L, 2);
    return;
  }
  lua_setfield(L, -2, "handle");
  lpd_call(L, 1);
}

static lpd_req_t *check_req(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_REQUEST);
  if (*box == NULL) luaL_error(L, "pivday: request already answered");
  return *box;
}

static void req_release(lpd_req_t *q) {
  UNLINK(lpd_ctx->reqs, q);
  if (q->box) *q->box = NULL;
  free(q);
}

#define MAX_STACK_HEADERS 32

/* Reads (status, headers, body) at 2, 3, 4 into hs/n/status/body; values
 * converted from numbers are kept in a table at 5, made when first needed.
 * May raise (before anything is answered). */
typedef struct {
  int status;
  const char *body;
  size_t blen;
  pd_header_t hs[MAX_STACK_HEADERS];
  size_t n;
} answer_t;

static void read_answer(lua_State *L, answer_t *a) {
  a->status = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, a->status >= 100 && a->status <= 999, 2, "bad HTTP status");
  a->blen = 0;
  a->body = luaL_optlstring(L, 4, "", &a->blen);
  a->n = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 4);
    int anchor = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      size_t n = a->n;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "headers: names must be strings");
      if (n == MAX_STACK_HEADERS)
        luaL_error(L, "headers: at most %d", MAX_STACK_HEADERS);
      a->hs[n].name = lua_tolstring(L, -2, &a->hs[n].name_len);
      if (lua_type(L, -1) == LUA_TSTRING) {
        a->hs[n].value = lua_tolstring(L, -1, &a->hs[n].value_len);
      } else {
        if (!anchor) {
          lua_newtable(L);
          lua_insert(L, 5); /* under the key and the value */
          anchor = 1;
        }
        a->hs[n].value = luaL_tolstring(L, -1, &a->hs[n].value_len);
        lua_rawseti(L, 5, (lua_Integer)n + 1);
      }
      a->n = n + 1;
      lua_pop(L, 1);
    }
  }
}

/* handle:respond(status, headers, body) -> true, or false when the client
 * had gone away. */
static int req_respond(lua_State *L) {
  lpd_req_t *q = check_req(L);
  answer_t a;
  read_answer(L, &a);
  pd_http_req_t *r = q->r;
  req_release(q);
  int rc = pd_http_respond(r, a.status, a.hs, a.n, a.body, a.blen);
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int req_drop(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_REQUEST);
  if (*box == NULL) return 0;
  lpd_req_t *q = *box;
  pd_http_req_t *r = q->r;
  req_release(q);
  pd_http_drop(r);
  return 0;
}

/* ------------------------------------------------------------ server -- */

static void server_closed(void *arg) { free(arg); }

static void server_close(lpd_server_t *srv) {
  lua_State *L = lpd_ctx->L;
  UNLINK(lpd_ctx->servers, srv);
  if (srv->box) *srv->box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, srv->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, srv->self_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, srv->hook_ref);
  srv->cb_ref = srv->self_ref = srv->hook_ref = LUA_NOREF;
  srv->hook = NULL;
  pd_server_close(srv->s, server_closed, srv);
}

/* server{host=, port=, max_header=, max_body=, header_timeout=,
 *        idle_timeout=, max_connections=, hook=}, cb -> Server
 * (cb only without hook) */
static int l_server(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "hook");
  lpd_hook_t *hook = lua_isnil(L, -1) ? NULL : lpd_check_hook(L, -1);
  lua_pop(L, 1);
  if (hook == NULL) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  pd_server_opts_t o = {0};
  lua_getfield(L, 1, "host");
  o.host = luaL_optstring(L, -1, "127.0.0.1");
  o.port = (int)lpd_optnumfield(L, 1, "port", 0);
  o.max_header_bytes = (size_t)lpd_optnumfield(L, 1, "max_header", 0);
  o.max_body_bytes = (size_t)lpd_optnumfield(L, 1, "max_body", 0);
  o.header_timeout = lpd_optnumfield(L, 1, "header_timeout", 0);
  o.idle_timeout = lpd_optnumfield(L, 1, "idle_timeout", 0);
  o.max_connections = (int)lpd_optnumfield(L, 1, "max_connections", 0);
  o.backlog = (int)lpd_optnumfield(L, 1, "backlog", 0);
  if (o.port < 0 || o.port > 65535)
    return luaL_error(L, "port out of range: %d", o.port);

  void **box = lpd_newbox(L, LPD_SERVER);
  lpd_server_t *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) return luaL_error(L, "pivday: out of memory");
  int rc = pd_server_listen(&lpd_ctx->loop, &o, request_cb, srv, &srv->s);
  if (rc < 0) {
    free(srv);
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot listen on %s:%d: %s", o.host, o.port,
                    pd_strerror(rc));
    return 2;
  }
  lua_pushvalue(L, 2);
  srv->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* LUA_REFNIL with a hook */
  lua_getfield(L, 1, "hook");
  srv->hook_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->hook = hook;
  lua_pushvalue(L, -1);
  srv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->box = box;
  *box = srv;
  LINK(lpd_ctx->servers, srv);
  return 1;
}

static int server_port(lua_State *L) {
  lpd_server_t *srv = lpd_checkbox(L, 1, LPD_SERVER);
  lua_pushinteger(L, pd_server_port(srv->s));
  return 1;
}

static int server_connections(lua_State *L) {
  lpd_server_t *srv = lpd_checkbox(L, 1, LPD_SERVER);
  lua_pushinteger(L, pd_server_connections(srv->s));
  return 1;
}

static int server_gc(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_SERVER);
  if (*box) server_close(*box);
  return 0;
}

void lpd_server_shutdown(void) {
  while (lpd_ctx->reqs) {
    lpd_req_t *q = lpd_ctx->reqs;
    pd_http_req_t *r = q->r;
    req_release(q);
    pd_http_drop(r);
  }
  while (lpd_ctx->servers) server_close(lpd_ctx->servers);
}

int lpd_server_open(lua_State *L) {
  static const luaL_Reg server_m[] = {{"port", server_port},
                                      {"connections", server_connections},
                                      {"close", server_gc},
                                      {"__gc", server_gc},
                                      {"__close", server_gc},
                                      {NULL, NULL}};
  static const luaL_Reg req_m[] = {{"respond", req_respond},
                                   {"drop", req_drop},
                                   {"__gc", req_drop},
                                   {"__close", req_drop},
                                   {NULL, NULL}};
  lpd_newclass(L, LPD_SERVER, server_m);
  lpd_newclass(L, LPD_REQUEST, req_m);
  lua_pushcfunction(L, l_server);
  lua_setfield(L, -2, "server");
  return 0;
}
