/* client.c: core.request(opts, cb) over the shared pd_client_t.
 *
 * cb(res) gets {status, headers (lower-cased names), body, elapsed}; on
 * failure cb(nil, err) gets a pivday.Error table {kind, code, message,
 * sent}.  The callback runs from the loop after libcurl has returned.
 *
 * core.request returns an integer id, not a userdata: a userdata with a
 * finalizer per request cost an allocation, a metatable lookup and a
 * finalizer call in the GC on the hot path, and nobody needs more than
 * "cancel this one".  core.cancel(id) cancels the transfer and drops its
 * callback (it will not be called: the canceller already knows); an id
 * that has finished, been cancelled or never existed is ignored.  Ids are
 * a slot number in the low 32 bits and a generation in the high ones, so a
 * stale id never reaches the transfer that reused its slot.  Dropping the
 * id does not cancel (the callback keeps the work alive).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

typedef struct {
  pd_transfer_t *t;
  lua_Integer id;
  uint32_t slot;
  int cb_ref;
  int api;        /* sent by core.api_send: answered the API way */
} lpd_xfer_t;

/* In-flight transfers by slot, with a stack of free slots.  Only cancel
 * looks them up; a request takes a slot and its callback gives it back. */
static lpd_xfer_t **slots;
static uint32_t *free_slots;
static uint32_t nslots, nfree, slots_cap;
static uint32_t generation;

static int slot_take(lpd_xfer_t *x) {
  if (nfree == 0 && nslots == slots_cap) {
    uint32_t cap = slots_cap ? slots_cap * 2 : 64;
    lpd_xfer_t **ns = realloc(slots, sizeof(*ns) * cap);
    if (ns == NULL) return -1;
    slots = ns;
    uint32_t *nf = realloc(free_slots, sizeof(*nf) * cap);
    if (nf == NULL) return -1;
    free_slots = nf;
    slots_cap = cap;
  }
  x->slot = nfree > 0 ? free_slots[--nfree] : nslots++;
  /* 31 bits of generation: ids stay positive integers. */
  generation = (generation + 1) & 0x7fffffffu;
  if (generation == 0) generation = 1;
  x->id = (lua_Integer)(((uint64_t)generation << 32) | x->slot);
  slots[x->slot] = x;
  return 0;
}

/* Frees the slot arrays once the module is closing and nothing is in
 * flight (the module is unloaded after that: nothing may stay behind). */
static void slots_release(void) {
  if (nfree != nslots) return;
  free(slots);
  free(free_slots);
  slots = NULL;
  free_slots = NULL;
  nslots = nfree = slots_cap = 0;
}

static void slot_give(lpd_xfer_t *x) {
  slots[x->slot] = NULL;
  free_slots[nfree++] = x->slot;
  if (lpd_ctx->closing) slots_release();
}

#define MAX_STACK_HEADERS 32

/* Response headers are made into a table only when res.headers is first
 * read: the client's success path never looks at them, and the table (a
 * lower-cased, interned string per name and value) was ~4,500 instructions
 * of every request.  Until then res holds the response head (the
 * "Name: value\n" lines pd_response_t gives) as one string under a light
 * userdata key, and a shared metatable materialises `headers` on first
 * access (__index), on pairs(res) (__pairs), and drops the head when the
 * field is assigned first (__newindex): res.headers is the same plain table
 * with lower-cased names as before, and pairs(res) sees the same four
 * fields. */
static const char raw_headers_key = 0;   /* its address is the key */
#define RAW_KEY ((void *)&raw_headers_key)
static int response_mt_ref = LUA_NOREF;

/* Pushes the headers table of the head b[0..len). */
static void push_headers_table(lua_State *L, const char *b, size_t len) {
  const char *p = b, *end = b + len;
  pd_header_t h;
  int n = 0;
  while (pd_head_next(&p, end, &h)) n++;
  lua_createtable(L, 0, n);
  char name[128];
  for (p = b; pd_head_next(&p, end, &h);) {
    size_t k = h.name_len < sizeof(name) ? h.name_len : sizeof(name);
    for (size_t j = 0; j < k; j++) name[j] = (char)tolower((unsigned char)h.name[j]);
    lua_pushlstring(L, name, k);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      /* A repeated header: join the values as HTTP allows. */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h.value, h.value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h.value, h.value_len);
    }
    lua_rawset(L, -3);
  }
}

/* Builds res.headers (res at idx) from its block, if it still has one. */
static void materialise(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, idx, RAW_KEY) != LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  }
  size_t len;
  const char *b = lua_tolstring(L, -1, &len);
  lua_pushliteral(L, "headers");
  push_headers_table(L, b, len);
  lua_rawset(L, idx);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, idx, RAW_KEY);
}

/* __index(res, k) */
static int res_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "headers") == 0) {
    materialise(L, 1);
    lua_rawget(L, 1);
    return 1;
  }
  return 0;
}

/* __newindex(res, k, v): assigning headers first drops the block. */
static int res_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "headers") == 0) {
    lua_pushnil(L);
    lua_rawsetp(L, 1, RAW_KEY);
  }
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

/* next(res, k), as the base library's next. */
static int res_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

/* __pairs(res): the plain fields, headers included. */
static int res_pairs(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  materialise(L, 1);
  lua_pushcfunction(L, res_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static void push_response(lua_State *L, const pd_response_t *res) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, res->status);
  lua_setfield(L, -2, "status");
  lua_pushnumber(L, res->elapsed);
  lua_setfield(L, -2, "elapsed");
  lua_pushlstring(L, res->body ? res->body : "", res->body_len);
  lua_setfield(L, -2, "body");
  lua_pushlstring(L, res->head, res->head_len);
  lua_rawsetp(L, -2, RAW_KEY);
  lua_rawgeti(L, LUA_REGISTRYINDEX, response_mt_ref);
  lua_setmetatable(L, -2);
}

static void push_failure(lua_State *L, const pd_response_t *res) {
  const char *kind = "transport", *code = res->err_name;
  if (res->err == PD_ECANCELED) {
    kind = "cancelled";
    code = "CANCELLED";
  } else if (res->err == PD_ETIMEDOUT) {
    kind = "timeout";
    code = "TIMEOUT";
  } else if (res->err == PD_ETOOBIG) {
    code = "RESPONSE_TOO_LARGE";
  }
  lpd_push_error(L, kind, code ? code : pd_err_name(res->err),
                 res->err_msg ? res->err_msg : pd_strerror(res->err));
  lua_pushboolean(L, res->request_sent);
  lua_setfield(L, -2, "sent");
  if (res->err_name && res->err != PD_ETRANSPORT) {
    lua_pushstring(L, res->err_name);
    lua_setfield(L, -2, "curl_code");
  }
}

/* The API envelope core.api_send unwraps, set by core.api_setup. */
static struct {
  char flag[32], member[32];
  int list_mt_ref;
} envelope = {"", "", LUA_NOREF};

/* What a meta blob starts with: then the header block. */
typedef struct {
  lua_Integer status;
  double elapsed;
} meta_head_t;

/* core.api_send's answer: cb(data, meta) when the body is an envelope
 * whose flag is true and whose member is a table (the member, decoded in
 * one pass, no table for the envelope, nor for the response or its body);
 * cb(false, res) for anything else, res as core.request gives it. */
static void api_answer(lua_State *L, const pd_response_t *res) {
  if (res->status >= 200 && res->status < 300 && res->body_len > 0) {
    int top = lua_gettop(L);
    int mt = 0;
    if (envelope.list_mt_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, envelope.list_mt_ref);
      mt = lua_gettop(L);
    }
    if (lpd_json_push_member(L, res->body, res->body_len, mt, envelope.flag,
                             envelope.member)) {
      /* The meta string: status and elapsed, then the head. */
      meta_head_t head = {res->status, res->elapsed};
      luaL_Buffer b;
      char *o = luaL_buffinitsize(L, &b, sizeof(head) + res->head_len);
      memcpy(o, &head, sizeof(head));
      memcpy(o + sizeof(head), res->head, res->head_len);
      luaL_pushresultsize(&b, sizeof(head) + res->head_len);
      if (mt) lua_remove(L, mt);
      lpd_deliver(L, 2);
      return;
    }
    lua_settop(L, top);
  }
  lua_pushboolean(L, 0);
  push_response(L, res);
  lpd_deliver(L, 2);
}

static void response_cb(pd_transfer_t *t, const pd_response_t *res,
                        void *arg) {
  (void)t;
  lpd_xfer_t *x = arg;
  lua_State *L = lpd_ctx->L;
  lpd_ctx->inflight--;
  slot_give(x);
  int cb_ref = x->cb_ref, api = x->api;
  free(x);
  if (cb_ref == LUA_NOREF) return;       /* cancelled through core.cancel */
  lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
  if (res->err != 0) {
    lua_pushnil(L);
    push_failure(L, res);
    lpd_deliver(L, 2);
  } else if (api) {
    api_answer(L, res);
  } else {
    push_response(L, res);
    lpd_deliver(L, 1);
  }
}

static const char *str_field(lua_State *L, int idx, const char *k,
                             const char *def, size_t *len) {
  const char *s = def;
  if (len) *len = def ? strlen(def) : 0;
  int t = lua_getfield(L, idx, k);
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING) luaL_error(L, "field '%s' must be a string", k);
    s = lua_tolstring(L, -1, len);
  }
  /* The string stays referenced by the options table while we use it. */
  lua_pop(L, 1);
  return s;
}

static pd_client_t *shared_client(lua_State *L) {
  if (lpd_ctx->client == NULL) {
    pd_client_opts_t o = {0};
    int rc = pd_client_new(&lpd_ctx->loop, &o, &lpd_ctx->client);
    if (rc < 0) luaL_error(L, "pivday: cannot start the HTTP client: %s",
                           pd_strerror(rc));
  }
  return lpd_ctx->client;
}

/* Sends req with the function at stack index cb as its callback; pushes
 * the id.  Returns 0, or a PD_E* code with nothing pushed (a Lua error for
 * no memory: the caller may hold memory to free first, hence the code). */
static int send_request(lua_State *L, const pd_request_t *req, int cb, int api) {
  pd_client_t *c = shared_client(L);
  lpd_xfer_t *x = malloc(sizeof(*x));
  if (x == NULL || slot_take(x) < 0) {
    free(x);
    return PD_ENOMEM;
  }
  x->api = api;
  lua_pushvalue(L, cb);
  x->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int rc = pd_client_send(c, req, response_cb, x, &x->t);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, x->cb_ref);
    slot_give(x);
    free(x);
    return rc;
  }
  lpd_ctx->inflight++;
  lua_pushinteger(L, x->id);
  return 0;
}

/* request({method=, url=, headers={}, body=, timeout=, connect_timeout=,
 *         max_body=, no_resend=, insecure=}, ..., cb) -> id */
static int l_request(lua_State *L) {
  /* The callback is the last argument: async.await_op passes nils in
   * between. */
  int cb = lua_gettop(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, cb >= 2 && (lua_type(L, cb) == LUA_TFUNCTION ||
                                   lua_type(L, cb) == LUA_TTHREAD), 2, "function");
  if (lpd_ctx->closing) return luaL_error(L, "pivday: shutting down");
  pd_request_t req = {0};
  req.method = str_field(L, 1, "method", "GET", NULL);
  req.url = str_field(L, 1, "url", NULL, NULL);
  if (req.url == NULL) return luaL_error(L, "field 'url' is required");
  req.body = str_field(L, 1, "body", NULL, &req.body_len);
  req.timeout = lpd_optnumfield(L, 1, "timeout", 0);
  req.connect_timeout = lpd_optnumfield(L, 1, "connect_timeout", 0);
  req.max_response_body = (size_t)lpd_optnumfield(L, 1, "max_body", 0);
  lua_getfield(L, 1, "no_resend");
  req.no_resend = lua_toboolean(L, -1);
  lua_getfield(L, 1, "insecure");
  req.insecure = lua_toboolean(L, -1);
  lua_pop(L, 2);

  pd_header_t stack_h[MAX_STACK_HEADERS], *h = stack_h;
  size_t nh = 0, cap = MAX_STACK_HEADERS;
  int htype = lua_getfield(L, 1, "headers");
  int hidx = lua_gettop(L);
  if (htype == LUA_TTABLE) {
    /* Numbers converted to strings are kept in `anchor` so their bytes
     * stay valid until pd_client_send has copied them; made on the first
     * number only (headers are nearly always strings). */
    int anchor = 0;
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      int vt = lua_type(L, -1);
      if (lua_type(L, -2) != LUA_TSTRING ||
          (vt != LUA_TSTRING && vt != LUA_TNUMBER)) {
        if (h != stack_h) free(h);
        return luaL_error(L, "headers: names and values must be strings");
      }
      if (nh == cap) {
        pd_header_t *nhp = malloc(sizeof(*nhp) * cap * 2);
        if (nhp == NULL) {
          if (h != stack_h) free(h);
          return luaL_error(L, "pivday: out of memory");
        }
        memcpy(nhp, h, sizeof(*h) * nh);
        if (h != stack_h) free(h);
        h = nhp;
        cap *= 2;
      }
      h[nh].name = lua_tolstring(L, -2, &h[nh].name_len);
      if (vt == LUA_TNUMBER) {
        if (anchor == 0) {
          /* Below the key and value lua_next is using: move it there. */
          lua_newtable(L);
          lua_insert(L, -3);
          anchor = lua_gettop(L) - 2;
        }
        lua_pushvalue(L, -1);
        h[nh].value = lua_tolstring(L, -1, &h[nh].value_len);
        lua_rawseti(L, anchor, (lua_Integer)nh + 1);
      } else {
        h[nh].value = lua_tolstring(L, -1, &h[nh].value_len);
      }
      nh++;
      lua_pop(L, 1);
    }
  } else if (htype != LUA_TNIL) {
    return luaL_error(L, "field 'headers' must be a table");
  }
  req.headers = h;
  req.nheaders = nh;

  int rc = send_request(L, &req, cb, 0);
  if (h != stack_h) free(h);
  return rc < 0 ? luaL_error(L, "pivday: request: %s", pd_strerror(rc)) : 1;
}

/* ------------------------------------------------- the API fast path -- */

/* What every call of one API client sends alike, read once instead of
 * from a request table per call: the headers (checked and made into
 * libcurl's list once: pd_headers_new), the connect timeout, the body cap,
 * TLS checking. */
typedef struct {
  pd_headers_t *hs;
  double connect_timeout;
  size_t max_body;
  int insecure;
} api_conf_t;

#define LPD_API_CONF "pivday.core.ApiConf"

static int api_conf_gc(lua_State *L) {
  api_conf_t *c = luaL_checkudata(L, 1, LPD_API_CONF);
  pd_headers_unref(c->hs);
  c->hs = NULL;
  return 0;
}

/* api_conf{headers=, connect_timeout=, max_body=, insecure=} -> conf */
static int l_api_conf(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  api_conf_t *c = lua_newuserdatauv(L, sizeof(*c), 0);
  memset(c, 0, sizeof(*c));
  luaL_setmetatable(L, LPD_API_CONF);
  int cidx = lua_gettop(L);
  pd_header_t h[MAX_STACK_HEADERS];
  size_t nh = 0;
  lua_getfield(L, 1, "headers");
  int hidx = lua_gettop(L);
  if (!lua_isnil(L, hidx)) {
    luaL_argexpected(L, lua_istable(L, hidx), 1, "headers as a table");
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "headers: names and values must be strings");
      if (nh == MAX_STACK_HEADERS)
        return luaL_error(L, "headers: at most %d", MAX_STACK_HEADERS);
      /* The strings stay in the options table until pd_headers_new has
       * copied them. */
      h[nh].name = lua_tolstring(L, -2, &h[nh].name_len);
      h[nh].value = lua_tolstring(L, -1, &h[nh].value_len);
      nh++;
      lua_pop(L, 1);
    }
  }
  int rc = pd_headers_new(h, nh, &c->hs);
  if (rc < 0)
    return luaL_error(L, rc == PD_EINVAL ? "headers: a name is not a token or a value holds CR, LF or NUL"
                                         : "pivday: out of memory");
  c->connect_timeout = lpd_optnumfield(L, 1, "connect_timeout", 0);
  c->max_body = (size_t)lpd_optnumfield(L, 1, "max_body", 0);
  lua_getfield(L, 1, "insecure");
  c->insecure = lua_toboolean(L, -1);
  lua_settop(L, cidx);
  return 1;
}

/* api_setup{flag=, member=, list_mt=}: the envelope api_send unwraps (see
 * api_answer) and the metatable its empty lists get. */
static int l_api_setup(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t fn = 0, mn = 0;
  const char *f = str_field(L, 1, "flag", "", &fn);
  const char *m = str_field(L, 1, "member", "", &mn);
  luaL_argcheck(L, fn < sizeof(envelope.flag) && mn < sizeof(envelope.member), 1,
                "flag and member must be under 32 bytes");
  memcpy(envelope.flag, f, fn + 1);
  memcpy(envelope.member, m, mn + 1);
  lua_getfield(L, 1, "list_mt");
  luaL_unref(L, LUA_REGISTRYINDEX, envelope.list_mt_ref);
  envelope.list_mt_ref = lua_istable(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : LUA_NOREF;
  return 0;
}

/* api_send(conf, method, url, body|nil, timeout, no_resend, cb) -> id.
 * cb(data, meta) for an envelope with its flag true and a table member;
 * cb(false, res) for any other answer; cb(nil, err) when there was none.
 * meta is a string for core.api_meta. */
static int l_api_send(lua_State *L) {
  const api_conf_t *c = luaL_checkudata(L, 1, LPD_API_CONF);
  pd_request_t req = {0};
  req.method = luaL_checkstring(L, 2);
  req.url = luaL_checkstring(L, 3);
  if (!lua_isnil(L, 4)) req.body = luaL_checklstring(L, 4, &req.body_len);
  req.timeout = luaL_optnumber(L, 5, 0);
  req.no_resend = lua_toboolean(L, 6);
  luaL_argexpected(L, lua_type(L, 7) == LUA_TFUNCTION || lua_type(L, 7) == LUA_TTHREAD, 7,
                   "function or waiting task");
  if (lpd_ctx->closing) return luaL_error(L, "pivday: shutting down");
  if (c->hs == NULL) return luaL_argerror(L, 1, "closed conf");
  req.prepared = c->hs;
  req.connect_timeout = c->connect_timeout;
  req.max_response_body = c->max_body;
  req.insecure = c->insecure;
  int rc = send_request(L, &req, 7, 1);
  return rc < 0 ? luaL_error(L, "pivday: request: %s", pd_strerror(rc)) : 1;
}

/* api_meta(meta) -> status, elapsed, headers (a table, as res.headers) */
static int l_api_meta(lua_State *L) {
  size_t len;
  const char *b = luaL_checklstring(L, 1, &len);
  meta_head_t head;
  luaL_argcheck(L, len >= sizeof(head), 1, "not a meta string");
  memcpy(&head, b, sizeof(head));
  lua_pushinteger(L, head.status);
  lua_pushnumber(L, head.elapsed);
  push_headers_table(L, b + sizeof(head), len - sizeof(head));
  return 3;
}

/* cancel(id): cancels the transfer and drops its callback.  The transfer
 * itself finishes (CANCELLED) on the next loop iteration, unseen. */
static int l_cancel(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  uint32_t slot = (uint32_t)((uint64_t)id & 0xffffffffu);
  if (id > 0 && slot < nslots && slots[slot] != NULL && slots[slot]->id == id) {
    lpd_xfer_t *x = slots[slot];
    if (x->cb_ref != LUA_NOREF) {
      luaL_unref(L, LUA_REGISTRYINDEX, x->cb_ref);
      x->cb_ref = LUA_NOREF;
    }
    pd_transfer_cancel(x->t);
  }
  return 0;
}

/* ------------------------------------------------ JSON post-passes -- */

/* pivday.json's fix-up after cjson (which decodes every number as a
 * float): integral floats become integers, in place, in nested tables.
 * Done here because a Lua loop pays a call into `next` per field, which
 * cost more than the decode itself.  Same rule as math.tointeger. */
static void fix_numbers(lua_State *L, int idx, int depth) {
  if (depth > 1000) luaL_error(L, "pivday.json: nesting too deep");
  luaL_checkstack(L, 4, "pivday.json: nesting too deep");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER) {
      int ok = 0;
      if (!lua_isinteger(L, -1)) {
        lua_Integer i = lua_tointegerx(L, -1, &ok);
        if (ok) {
          lua_pushvalue(L, -2);
          lua_pushinteger(L, i);
          lua_rawset(L, idx);        /* an existing key: allowed in next */
        }
      }
    } else if (t == LUA_TTABLE) {
      fix_numbers(L, lua_gettop(L), depth + 1);
    }
    lua_pop(L, 1);
  }
}

/* fix_numbers(v) -> v */
static int l_fix_numbers(lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) fix_numbers(L, 1, 0);
  lua_settop(L, 1);
  return 1;
}

/* The client's strip_nulls: fields equal to `null` are removed from
 * objects, recursively; lists (a first key that is an integer: cjson gives
 * objects string keys only) keep theirs, so `#` and ipairs still work. */
static void strip_nulls(lua_State *L, int idx, int null, int depth) {
  int first = 1, is_list = 0;
  if (depth > 1000) luaL_error(L, "pivday: nesting too deep");
  luaL_checkstack(L, 4, "pivday: nesting too deep");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (first) {
      is_list = lua_isinteger(L, -2);
      first = 0;
    }
    if (lua_rawequal(L, -1, null)) {
      if (!is_list) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, idx);          /* clearing a field: allowed in next */
      }
    } else if (lua_type(L, -1) == LUA_TTABLE) {
      strip_nulls(L, lua_gettop(L), null, depth + 1);
    }
    lua_pop(L, 1);
  }
}

/* strip_nulls(v, null) -> v */
static int l_strip_nulls(lua_State *L) {
  lua_settop(L, 2);
  if (lua_type(L, 1) == LUA_TTABLE) strip_nulls(L, 1, 2, 0);
  lua_settop(L, 1);
  return 1;
}

static int l_inflight(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lpd_ctx->inflight);
  return 1;
}

static void client_closed(void *arg) { (void)arg; }

void lpd_client_shutdown(void) {
  if (lpd_ctx->client) {
    /* Pending callbacks fire with CANCELLED during the close; nothing may
     * call into Lua any more, so detach them first by running the close
     * with the state still valid: callbacks are plain pcalls. */
    pd_client_close(lpd_ctx->client, client_closed, NULL);
    lpd_ctx->client = NULL;
  }
  /* Cancelled transfers still to call back free them from slot_give. */
  slots_release();
}

int lpd_client_open(lua_State *L) {
  lua_createtable(L, 0, 4);
  lua_pushcfunction(L, res_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, res_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, res_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushliteral(L, "pivday.http.response");
  lua_setfield(L, -2, "__name");
  response_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_newmetatable(L, LPD_API_CONF);
  lua_pushcfunction(L, api_conf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_request);
  lua_setfield(L, -2, "request");
  lua_pushcfunction(L, l_api_conf);
  lua_setfield(L, -2, "api_conf");
  lua_pushcfunction(L, l_api_setup);
  lua_setfield(L, -2, "api_setup");
  lua_pushcfunction(L, l_api_send);
  lua_setfield(L, -2, "api_send");
  lua_pushcfunction(L, l_api_meta);
  lua_setfield(L, -2, "api_meta");
  lua_pushcfunction(L, l_cancel);
  lua_setfield(L, -2, "cancel");
  lua_pushcfunction(L, l_fix_numbers);
  lua_setfield(L, -2, "json_fix_numbers");
  lua_pushcfunction(L, l_strip_nulls);
  lua_setfield(L, -2, "json_strip_nulls");
  lua_pushcfunction(L, l_inflight);
  lua_setfield(L, -2, "inflight");
  return 0;
}
