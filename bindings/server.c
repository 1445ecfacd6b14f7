/* server.c: core.server(opts, cb) over pd_server_t.
 *
 * cb(req) runs from the loop for each complete request with a table
 * {method, path, query, target, headers (lower-cased), body, peer, handle};
 * with opts.lean, cb(id, method, path, body, peer) instead: no table,
 * no headers (the webhook listener needs neither, and building them was a
 * fifth of its per-request cost).
 * `handle` is a pivday.core.Request that must be answered once with
 * handle:respond(status, headers, body) or handle:drop().  An unanswered
 * handle that is collected drops the connection, so nothing leaks.
 * A lean request is an integer id instead, answered once with
 * core.server_respond(id, status, headers, body) or core.server_drop(id):
 * no userdata, no finaliser, no allocation per request (those cost ~2K
 * instructions of the listener's event).  Nothing collects an id, so its
 * owner must answer it; an id answered already (or stale) is refused.
 * Open servers and unanswered requests (both kinds) are listed for module
 * shutdown.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

typedef struct lpd_server_s {
  pd_server_t *s;
  void **box;
  int cb_ref;
  int self_ref;   /* an open server is rooted until closed */
  int lean;       /* cb(handle, method, path, body, peer) */
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

/* Lean requests by id: a slot number in the low 32 bits and a generation
 * in the high ones (31 bits: ids stay positive), so a stale id never
 * reaches the request that reused its slot. */
typedef struct {
  pd_http_req_t *r;
  uint32_t gen;
} lean_slot_t;

static lean_slot_t *lslots;
static uint32_t *lfree;
static uint32_t nlslots, nlfree, lcap;

/* The id of a new lean request, or -1 when out of memory. */
static lua_Integer lean_take(pd_http_req_t *r) {
  if (nlfree == 0 && nlslots == lcap) {
    uint32_t cap = lcap ? lcap * 2 : 64;
    lean_slot_t *ns = realloc(lslots, sizeof(*ns) * cap);
    if (ns == NULL) return -1;
    lslots = ns;
    uint32_t *nf = realloc(lfree, sizeof(*nf) * cap);
    if (nf == NULL) return -1;
    lfree = nf;
    lcap = cap;
  }
  uint32_t slot;
  if (nlfree > 0) {
    slot = lfree[--nlfree];
  } else {
    slot = nlslots++;
    lslots[slot].gen = 0;
  }
  lean_slot_t *e = &lslots[slot];
  e->gen = (e->gen + 1) & 0x7fffffffu;
  if (e->gen == 0) e->gen = 1;
  e->r = r;
  return (lua_Integer)(((uint64_t)e->gen << 32) | slot);
}

/* The request of a live id, or NULL. */
static lean_slot_t *lean_find(lua_Integer id) {
  if (id <= 0) return NULL;
  uint64_t u = (uint64_t)id;
  uint32_t slot = (uint32_t)u;
  if (slot >= nlslots) return NULL;
  lean_slot_t *e = &lslots[slot];
  if (e->r == NULL || e->gen != (uint32_t)(u >> 32)) return NULL;
  return e;
}

static pd_http_req_t *lean_give(lean_slot_t *e) {
  pd_http_req_t *r = e->r;
  e->r = NULL;
  lfree[nlfree++] = (uint32_t)(e - lslots);
  return r;
}

static void request_cb(pd_server_t *s, pd_http_req_t *r, void *arg) {
  (void)s;
  lpd_server_t *srv = arg;
  lua_State *L = lpd_ctx->L;
  if (srv->cb_ref == LUA_NOREF || lpd_ctx->closing) {
    pd_http_drop(r);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->cb_ref);
  if (srv->lean) {
    lua_Integer id = lean_take(r);
    if (id < 0) {
      lua_pop(L, 1);
      pd_http_drop(r);
      return;
    }
    lua_pushinteger(L, id);
    lua_pushstring(L, r->method);
    lua_pushlstring(L, r->path, r->path_len);
    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_pushstring(L, r->peer);
    lpd_call(L, 5);
    return;
  }
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

/* server_respond(id, status, headers, body) -> true, or false when the
 * client had gone away; raises for an id not (or no longer) live. */
static int l_server_respond(lua_State *L) {
  lean_slot_t *e = lean_find(luaL_checkinteger(L, 1));
  if (e == NULL) return luaL_error(L, "pivday: request already answered");
  answer_t a;
  read_answer(L, &a);
  pd_http_req_t *r = lean_give(e);
  int rc = pd_http_respond(r, a.status, a.hs, a.n, a.body, a.blen);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* server_drop(id): closes the connection unanswered; a stale id is a
 * no-op. */
static int l_server_drop(lua_State *L) {
  lean_slot_t *e = lean_find(luaL_checkinteger(L, 1));
  if (e) pd_http_drop(lean_give(e));
  return 0;
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
  srv->cb_ref = srv->self_ref = LUA_NOREF;
  pd_server_close(srv->s, server_closed, srv);
}

/* server{host=, port=, max_header=, max_body=, header_timeout=,
 *        idle_timeout=, max_connections=, lean=}, cb -> Server */
static int l_server(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
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
  lua_getfield(L, 1, "lean");
  int lean = lua_toboolean(L, -1);
  lua_pop(L, 1);

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
  srv->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  srv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->box = box;
  srv->lean = lean;
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
  for (uint32_t i = 0; i < nlslots; i++)
    if (lslots[i].r) pd_http_drop(lean_give(&lslots[i]));
  free(lslots);
  free(lfree);
  lslots = NULL;
  lfree = NULL;
  nlslots = nlfree = lcap = 0;
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
  lua_pushcfunction(L, l_server_respond);
  lua_setfield(L, -2, "server_respond");
  lua_pushcfunction(L, l_server_drop);
  lua_setfield(L, -2, "server_drop");
  return 0;
}
