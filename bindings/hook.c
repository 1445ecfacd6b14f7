/* hook.c: pivday.core.Hook, the request path of pivday.webhooks in C.
 *
 *   core.hook(opts, on_batch) -> Hook, given to core.server{hook = Hook}
 *     opts: path (the secret), allow (nil, or a list of {bytes, bits} as
 *     pivday.webhooks.cidr.networks gives them), window (a core Window),
 *     journal (boolean), next_id (the journal's), list_mt (pivday.json's
 *     mark for empty lists)
 *   hook:take() -> events, n, lines, nacks, next_id
 *   hook:settle(ok)   hook:kick()   hook:counts() -> received, dups, rejected
 *   hook:queued() -> senders queued for the next take() (with a journal)
 *   hook:close()
 *
 * Every request is handled here, without calling Lua: peer check (403),
 * constant-time path check (404), method (405), the body decoded once into
 * the event table handlers get, its shape checked (400), its dedupe key
 * taken and looked up in the window.  Without a journal the sender gets
 * its 200 at once; with one, the event's journal line is queued and the
 * sender waits for the sync.  One Lua call per loop turn (on_batch, from a
 * uv_idle, like pivday.async's tick) then takes everything the turn
 * queued: per request, a Lua call and the flush task it scheduled were
 * most of the listener's cost.
 *
 * take() hands over the queued events (a list of tables), the journal
 * lines to write (nil without journal), and moves the senders owed an
 * answer into the syncing batch, which settle(true) answers 200 once the
 * lines are on disk, or settle(false) 503 (and the window forgets the
 * batch's new keys: unacknowledged, their retries must count as new).  A
 * take() while a batch is syncing adds to that batch (close() does that,
 * with a blocking sync that covers both).
 *
 * The journal line format is pivday.webhooks.journal's:
 *   {"id":N,"at":T,"event":BODY}\n
 * with the body on one line (CR and LF, whitespace in a body the decoder
 * accepts, become spaces).
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "lpd.h"

typedef struct {
  unsigned char bytes[16];
  int len;   /* 4 or 16 */
  int bits;
} net_t;

/* Senders owed an answer, and the keys of the new events among them. */
typedef struct {
  pd_http_req_t **reqs;
  size_t n, cap;
  unsigned char (*keys)[LPD_KEY_LEN];
  size_t nkeys, kcap;
} owed_t;

struct lpd_hook_s {
  char *path;
  size_t path_len;
  net_t *nets;       /* NULL: any peer */
  size_t nnets;
  int journal;
  lpd_window_t *window;
  int window_ref, list_mt_ref, batch_ref;
  int events_ref;    /* a list of the events queued for Lua */
  lua_Integer nevents, last_batch;
  lua_Integer next_id;
  char *lines;       /* journal lines queued */
  size_t lines_len, lines_cap;
  char *scratch;     /* a body with CR/LF made spaces */
  size_t scratch_cap;
  owed_t queued, syncing;
  lua_Integer received, duplicates, rejected;
  uv_idle_t idle;
  int idle_open;     /* initialised: closed with the struct */
  int closed;
};

static const pd_header_t H_TEXT[] = {
    {"content-type", 12, "text/plain; charset=utf-8", 25}};
static const pd_header_t H_405[] = {
    {"content-type", 12, "text/plain; charset=utf-8", 25}, {"allow", 5, "POST", 4}};

#define TEXT(s) s, sizeof(s) - 1

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 1;
  size_t n = *cap ? *cap : 64;
  while (n < need) n *= 2;
  void *q = realloc(*p, n * size);
  if (q == NULL) return 0;
  *p = q;
  *cap = n;
  return 1;
}

static void answer(pd_http_req_t *r, int status, const char *body, size_t len) {
  pd_http_respond(r, status, status == 405 ? H_405 : H_TEXT, status == 405 ? 2 : 1,
                  body, len);
}

/* Answers every sender in o with status, and empties it. */
static void settle_owed(owed_t *o, int status) {
  size_t n = o->n;
  o->n = 0;
  o->nkeys = 0;
  for (size_t i = 0; i < n; i++) {
    if (status == 200) answer(o->reqs[i], 200, TEXT("ok\n"));
    else if (status == 503) answer(o->reqs[i], 503, TEXT("journal write failed\n"));
    else pd_http_drop(o->reqs[i]);
  }
}

static void owed_free(owed_t *o) {
  free(o->reqs);
  free(o->keys);
  memset(o, 0, sizeof(*o));
}

/* ------------------------------------------------------ the request -- */

static int peer_allowed(const lpd_hook_t *h, const char *peer) {
  unsigned char raw[16];
  int len;
  if (inet_pton(AF_INET, peer, raw) == 1) {
    len = 4;
  } else if (inet_pton(AF_INET6, peer, raw) == 1) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    len = 16;
    if (memcmp(raw, mapped, 12) == 0) { /* a dual-stack socket's IPv4 peer */
      memmove(raw, raw + 12, 4);
      len = 4;
    }
  } else {
    return 0;
  }
  for (size_t i = 0; i < h->nnets; i++) {
    const net_t *n = &h->nets[i];
    if (n->len != len) continue;
    int full = n->bits / 8, rest = n->bits % 8;
    if (memcmp(raw, n->bytes, (size_t)full) != 0) continue;
    if (rest == 0) return 1;
    unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    if ((raw[full] & mask) == (n->bytes[full] & mask)) return 1;
  }
  return 0;
}

/* The path is the credential: compared in time that depends only on its
 * length, so timing tells nothing about how much of a guess was right. */
static int path_matches(const lpd_hook_t *h, const char *p, size_t len) {
  if (len != h->path_len) return 0;
  unsigned char diff = 0;
  for (size_t i = 0; i < len; i++) diff |= (unsigned char)(p[i] ^ h->path[i]);
  return diff == 0;
}

enum { ACCEPT_BAD, ACCEPT_NEW, ACCEPT_DUP };

typedef struct {
  lpd_hook_t *h;
  pd_http_req_t *r;
  int outcome;
  char why[160];  /* ACCEPT_BAD: "bad request: ...\n" */
} accept_t;

static int bad(accept_t *a, const char *why) {
  snprintf(a->why, sizeof(a->why), "bad request: %s\n", why);
  a->outcome = ACCEPT_BAD;
  return 0;
}

/* The body with CR and LF made spaces, in the hook's scratch buffer. */
static const char *one_line(lua_State *L, lpd_hook_t *h, const char *s, size_t len) {
  size_t cap = h->scratch_cap;
  if (!grow((void **)&h->scratch, &cap, len, 1)) luaL_error(L, "pivday: out of memory");
  h->scratch_cap = cap;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (ch == '\r' || ch == '\n') ch = ' ';
    h->scratch[i] = ch;
  }
  return h->scratch;
}

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

static char *put_int(char *p, lua_Integer v) {
  char tmp[24];
  size_t n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u > 0);
  if (v < 0) *p++ = '-';
  while (n > 0) *p++ = tmp[--n];
  return p;
}

/* Under lua_pcall (an allocation may raise): decodes and checks the body,
 * and queues a new event.  Everything that can fail comes before the
 * window remembers the key, so a failed request leaves no trace. */
static int accept_body(lua_State *L) {
  accept_t *a = lua_touserdata(L, 1);
  lpd_hook_t *h = a->h;
  const char *body = a->r->body;
  size_t len = a->r->body_len, pos;
  const char *err;
  int crlf;
  unsigned char key[LPD_KEY_LEN];
  if (len == 0) return bad(a, "empty body (want a JSON event)");
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->list_mt_ref); /* 2 */
  /* Decoded once, the dedupe key taken on the way (lpd_json_push_keyed). */
  if (!lpd_json_push_keyed(L, body, len, 2, &crlf, &err, &pos, key)) {
    /* A raw line break inside a string is not JSON, but cjson (the
     * journal's reader) takes it: decoded after the same change the
     * journal line gets, so the event is the same now and after replay. */
    if (memchr(body, '\n', len) == NULL && memchr(body, '\r', len) == NULL) goto not_json;
    body = one_line(L, h, body, len);
    if (!lpd_json_push_keyed(L, body, len, 2, &crlf, &err, &pos, key)) goto not_json;
  } else if (crlf) {
    body = one_line(L, h, body, len);
  }
  lpd_window_prefetch(h->window, key); /* loads while the shape is checked */
  /* 3: the event */
  if (lua_type(L, 3) != LUA_TTABLE) return bad(a, "body is not a JSON object");
  if (lua_getfield(L, 3, "event_type") != LUA_TSTRING || lua_rawlen(L, 4) == 0)
    return bad(a, "no event_type (want {event_type, timestamp, data})");
  if (lua_getfield(L, 3, "timestamp") != LUA_TSTRING)
    return bad(a, "no timestamp (want {event_type, timestamp, data})");
  if (lua_getfield(L, 3, "data") != LUA_TTABLE || lua_rawgeti(L, 6, 1) != LUA_TNIL)
    return bad(a, "data is not an object");
  int64_t now = (int64_t)time(NULL);
  if (lpd_window_seen(h->window, key, now)) {
    if (h->journal && !grow((void **)&h->queued.reqs, &h->queued.cap, h->queued.n + 1,
                            sizeof(*h->queued.reqs)))
      return luaL_error(L, "pivday: out of memory");
    a->outcome = ACCEPT_DUP;
    return 0;
  }
  lua_Integer id = h->next_id;
  if (h->journal) {
    owed_t *o = &h->queued;
    size_t need = h->lines_len + len + 64;
    if (!grow((void **)&h->lines, &h->lines_cap, need, 1) ||
        !grow((void **)&o->reqs, &o->cap, o->n + 1, sizeof(*o->reqs)) ||
        !grow((void **)&o->keys, &o->kcap, o->nkeys + 1, sizeof(*o->keys)))
      return luaL_error(L, "pivday: out of memory");
  }
  lua_pushinteger(L, id);
  lua_setfield(L, 3, "id");
  lua_pushinteger(L, (lua_Integer)now);
  lua_setfield(L, 3, "received_at");
  lua_pushlstring(L, body, len);
  lua_setfield(L, 3, "raw");
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->events_ref);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, h->nevents + 1);
  /* Nothing below raises. */
  h->nevents++;
  h->next_id = id + 1;
  if (h->journal) {
    char *p = put(h->lines + h->lines_len, TEXT("{\"id\":"));
    p = put_int(p, id);
    p = put(p, TEXT(",\"at\":"));
    p = put_int(p, (lua_Integer)now);
    p = put(p, TEXT(",\"event\":"));
    p = put(p, body, len);
    p = put(p, TEXT("}\n"));
    h->lines_len = (size_t)(p - h->lines);
    memcpy(h->queued.keys[h->queued.nkeys++], key, LPD_KEY_LEN);
  }
  lpd_window_add(h->window, key, now);
  a->outcome = ACCEPT_NEW;
  return 0;

not_json:
  snprintf(a->why, sizeof(a->why), "bad request: body is not JSON: %s at byte %d\n", err,
           (int)pos + 1);
  a->outcome = ACCEPT_BAD;
  return 0;
}

static void on_idle(uv_idle_t *idle);

static void kick(lpd_hook_t *h) {
  if (!h->closed && !lpd_ctx->closing) uv_idle_start(&h->idle, on_idle);
}

static void reject(lpd_hook_t *h, pd_http_req_t *r, int status, const char *body,
                   size_t len) {
  h->rejected++;
  answer(r, status, body, len);
  kick(h);
}

void lpd_hook_request(lpd_hook_t *h, pd_http_req_t *r) {
  if (h->closed) {
    pd_http_drop(r);
    return;
  }
  if (h->nets != NULL && !peer_allowed(h, r->peer))
    return reject(h, r, 403, TEXT("forbidden\n"));
  if (!path_matches(h, r->path, r->path_len))
    return reject(h, r, 404, TEXT("not found\n"));
  if (strcmp(r->method, "POST") != 0)
    return reject(h, r, 405, TEXT("method not allowed (webhooks are POSTed)\n"));
  /* The slot the cap or expiry may free on add: loads while decoding. */
  lpd_window_prefetch_oldest(h->window);
  lua_State *L = lpd_ctx->L;
  int top = lua_gettop(L);
  accept_t a = {h, r, ACCEPT_BAD, ""};
  lua_pushcfunction(L, accept_body);
  lua_pushlightuserdata(L, &a);
  int rc = lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);
  if (rc != LUA_OK) {
    /* Out of memory: not kept, so not acknowledged; the sender retries. */
    answer(r, 503, TEXT("cannot take the event now\n"));
    kick(h);
    return;
  }
  switch (a.outcome) {
    case ACCEPT_BAD:
      return reject(h, r, 400, a.why, strlen(a.why));
    case ACCEPT_DUP:
      h->duplicates++;
      break;
    default:
      h->received++;
  }
  /* With a journal, even a duplicate waits for the next sync: its original
   * may not be on disk yet. */
  if (h->journal) h->queued.reqs[h->queued.n++] = r;
  else answer(r, 200, TEXT("ok\n"));
  kick(h);
}

/* ----------------------------------------------------------- the turn -- */

static void on_idle(uv_idle_t *idle) {
  lpd_hook_t *h = idle->data;
  uv_idle_stop(idle);
  if (h->closed || lpd_ctx->closing) return;
  lua_State *L = lpd_ctx->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->batch_ref);
  lpd_call(L, 0);
}

/* ---------------------------------------------------------------- Lua -- */

static lpd_hook_t *check_hook(lua_State *L) {
  return lpd_checkbox(L, 1, LPD_HOOK);
}

/* Reads allow = {{bytes = raw, bits = n}, ...}; may raise. */
static void read_nets(lua_State *L, lpd_hook_t *h, int idx) {
  size_t n = lua_rawlen(L, idx);
  h->nets = calloc(n ? n : 1, sizeof(*h->nets));
  if (h->nets == NULL) {
    luaL_error(L, "pivday: out of memory");
    return; /* not reached */
  }
  for (size_t i = 0; i < n; i++) {
    net_t *net = &h->nets[i];
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    size_t len;
    lua_getfield(L, -1, "bytes");
    const char *b = lua_tolstring(L, -1, &len);
    if (b == NULL || (len != 4 && len != 16)) {
      luaL_error(L, "allow[%d]: bad address", (int)i + 1);
      return; /* not reached: luaL_error does not return */
    }
    memcpy(net->bytes, b, len);
    net->len = (int)len;
    lua_getfield(L, -2, "bits");
    lua_Integer bits = luaL_checkinteger(L, -1);
    if (bits < 0 || bits > (lua_Integer)len * 8) luaL_error(L, "allow[%d]: bad prefix", (int)i + 1);
    net->bits = (int)bits;
    lua_pop(L, 3);
    h->nnets = i + 1;
  }
}

static void new_events(lua_State *L, lpd_hook_t *h) {
  lua_createtable(L, (int)h->last_batch, 0);
  h->events_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  h->nevents = 0;
}

static void on_closed(uv_handle_t *idle) { free(idle->data); }

/* Releases everything but the struct; anything still owed is dropped. */
static void hook_release(lua_State *L, lpd_hook_t *h) {
  if (h->closed) return;
  h->closed = 1;
  settle_owed(&h->queued, 0);
  settle_owed(&h->syncing, 0);
  if (h->idle_open) uv_idle_stop(&h->idle);
  luaL_unref(L, LUA_REGISTRYINDEX, h->window_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, h->list_mt_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, h->batch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, h->events_ref);
  h->window = NULL;
}

/* hook(opts, on_batch) -> Hook */
static int l_hook(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  size_t plen;
  lua_getfield(L, 1, "path");
  const char *path = luaL_checklstring(L, -1, &plen);
  lua_getfield(L, 1, "window");
  lpd_window_t *w = lpd_checkbox(L, -1, LPD_WINDOW);
  lua_getfield(L, 1, "list_mt");
  luaL_checktype(L, -1, LUA_TTABLE);
  lua_getfield(L, 1, "allow");
  int allow = lua_gettop(L);
  if (!lua_isnil(L, allow)) luaL_checktype(L, allow, LUA_TTABLE);
  lua_Integer next_id = (lua_Integer)lpd_optnumfield(L, 1, "next_id", 1);
  lua_getfield(L, 1, "journal");
  int journal = lua_toboolean(L, -1);
  lua_pop(L, 1);

  void **box = lpd_newbox(L, LPD_HOOK);
  lpd_hook_t *h = calloc(1, sizeof(*h));
  if (h == NULL) return luaL_error(L, "pivday: out of memory");
  h->window_ref = h->list_mt_ref = h->batch_ref = h->events_ref = LUA_NOREF;
  h->closed = 1; /* until fully made: __gc then frees what there is */
  *box = h;
  h->path = malloc(plen + 1);
  if (h->path == NULL) return luaL_error(L, "pivday: out of memory");
  memcpy(h->path, path, plen + 1);
  h->path_len = plen;
  if (!lua_isnil(L, allow)) read_nets(L, h, allow);
  h->window = w;
  h->journal = journal;
  h->next_id = next_id;
  uv_idle_init(&lpd_ctx->loop, &h->idle);
  h->idle.data = h;
  h->idle_open = 1;
  lua_pushvalue(L, allow - 2);
  h->window_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, allow - 1);
  h->list_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  h->batch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  new_events(L, h);
  h->closed = 0;
  return 1;
}

/* take() -> events, n, lines (nil without a journal), nacks, next_id */
static int hook_take(lua_State *L) {
  lpd_hook_t *h = check_hook(L);
  if (h->closed) return luaL_error(L, "attempt to use a closed pivday.Hook");
  owed_t *q = &h->queued, *s = &h->syncing;
  /* Room first: nothing is moved unless all of it can be. */
  if (!grow((void **)&s->reqs, &s->cap, s->n + q->n, sizeof(*s->reqs)) ||
      !grow((void **)&s->keys, &s->kcap, s->nkeys + q->nkeys, sizeof(*s->keys)))
    return luaL_error(L, "pivday: out of memory");
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->events_ref);
  lua_pushinteger(L, h->nevents);
  if (h->journal && h->lines_len > 0) lua_pushlstring(L, h->lines, h->lines_len);
  else lua_pushnil(L);
  luaL_unref(L, LUA_REGISTRYINDEX, h->events_ref);
  h->events_ref = LUA_NOREF;
  h->last_batch = h->nevents;
  new_events(L, h); /* may raise: then the next take() hands these again */
  lua_pushinteger(L, (lua_Integer)s->n + (lua_Integer)q->n);
  lua_pushinteger(L, h->next_id);
  h->lines_len = 0;
  if (h->lines_cap > 65536) { /* a burst's buffer is not kept for ever */
    free(h->lines);
    h->lines = NULL;
    h->lines_cap = 0;
  }
  if (q->n > 0) memcpy(s->reqs + s->n, q->reqs, q->n * sizeof(*q->reqs));
  if (q->nkeys > 0) memcpy(s->keys + s->nkeys, q->keys, q->nkeys * sizeof(*q->keys));
  s->n += q->n;
  s->nkeys += q->nkeys;
  q->n = q->nkeys = 0;
  return 5;
}

/* settle(ok): answers the senders of what take() handed over: 200 when
 * its lines are on disk, else 503, and their new keys are forgotten. */
static int hook_settle(lua_State *L) {
  lpd_hook_t *h = check_hook(L);
  int ok = lua_toboolean(L, 2);
  if (!ok && h->window != NULL) {
    for (size_t i = 0; i < h->syncing.nkeys; i++)
      lpd_window_forget(h->window, h->syncing.keys[i]);
  }
  settle_owed(&h->syncing, ok ? 200 : 503);
  return 0;
}

/* kick(): on_batch runs on the next loop iteration. */
static int hook_kick(lua_State *L) {
  kick(check_hook(L));
  return 0;
}

static int hook_queued(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_hook(L)->queued.n);
  return 1;
}

static int hook_counts(lua_State *L) {
  lpd_hook_t *h = check_hook(L);
  lua_pushinteger(L, h->received);
  lua_pushinteger(L, h->duplicates);
  lua_pushinteger(L, h->rejected);
  return 3;
}

/* close(): later requests are dropped; senders still owed an answer get
 * none (their connection is closed, so they retry). */
static int hook_close(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_HOOK);
  lpd_hook_t *h = *box;
  if (h == NULL) return 0;
  hook_release(L, h);
  return 0;
}

static int hook_gc(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_HOOK);
  lpd_hook_t *h = *box;
  if (h == NULL) return 0;
  *box = NULL;
  hook_release(L, h);
  owed_free(&h->queued);
  owed_free(&h->syncing);
  free(h->path);
  free(h->nets);
  free(h->lines);
  free(h->scratch);
  if (h->idle_open) uv_close((uv_handle_t *)&h->idle, on_closed);
  else free(h);
  return 0;
}

lpd_hook_t *lpd_check_hook(lua_State *L, int arg) {
  return lpd_checkbox(L, arg, LPD_HOOK);
}

void lpd_hook_open(lua_State *L) {
  static const luaL_Reg m[] = {{"take", hook_take},   {"settle", hook_settle},
                               {"kick", hook_kick},   {"counts", hook_counts},
                               {"queued", hook_queued},
                               {"close", hook_close}, {"__gc", hook_gc},
                               {NULL, NULL}};
  lpd_newclass(L, LPD_HOOK, m);
  lua_pushcfunction(L, l_hook);
  lua_setfield(L, -2, "hook");
}
