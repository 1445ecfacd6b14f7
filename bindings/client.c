/* client.c: core.request(opts, cb) over the shared pd_client_t.
 *
 * cb(res) gets {status, headers (lower-cased names), body, elapsed}; on
 * failure cb(nil, err) gets a pivday.Error table {kind, code, message,
 * sent}.  The callback runs from the loop after libcurl has returned.  The
 * returned Transfer userdata can cancel; dropping it does not cancel (the
 * callback keeps the work alive).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

typedef struct {
  pd_transfer_t *t;
  void **box;   /* the Transfer userdata's slot, NULL once collected */
  int cb_ref;
} lpd_xfer_t;

#define MAX_STACK_HEADERS 32

static void push_response(lua_State *L, const pd_response_t *res) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, res->status);
  lua_setfield(L, -2, "status");
  lua_pushnumber(L, res->elapsed);
  lua_setfield(L, -2, "elapsed");
  lua_pushlstring(L, res->body ? res->body : "", res->body_len);
  lua_setfield(L, -2, "body");
  lua_createtable(L, 0, (int)res->nheaders);
  char name[128];
  for (size_t i = 0; i < res->nheaders; i++) {
    const pd_header_t *h = &res->headers[i];
    size_t n = h->name_len < sizeof(name) ? h->name_len : sizeof(name);
    for (size_t j = 0; j < n; j++) name[j] = (char)tolower((unsigned char)h->name[j]);
    lua_pushlstring(L, name, n);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      /* A repeated header: join the values as HTTP allows. */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
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

static void response_cb(pd_transfer_t *t, const pd_response_t *res,
                        void *arg) {
  (void)t;
  lpd_xfer_t *x = arg;
  lua_State *L = lpd_ctx->L;
  lpd_ctx->inflight--;
  if (x->box) *x->box = NULL;
  int cb_ref = x->cb_ref;
  free(x);
  if (cb_ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
  if (res->err == 0) {
    push_response(L, res);
    lpd_call(L, 1);
  } else {
    lua_pushnil(L);
    push_failure(L, res);
    lpd_call(L, 2);
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

/* request{method=, url=, headers={}, body=, timeout=, connect_timeout=,
 *         max_body=, no_resend=, insecure=}, cb -> Transfer */
static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
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
     * stay valid until pd_client_send has copied them. */
    lua_newtable(L);
    int anchor = lua_gettop(L);
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

  pd_client_t *c = shared_client(L);
  void **box = lpd_newbox(L, LPD_TRANSFER);
  lpd_xfer_t *x = malloc(sizeof(*x));
  if (x == NULL) {
    if (h != stack_h) free(h);
    return luaL_error(L, "pivday: out of memory");
  }
  lua_pushvalue(L, 2);
  x->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  x->box = box;
  int rc = pd_client_send(c, &req, response_cb, x, &x->t);
  if (h != stack_h) free(h);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, x->cb_ref);
    free(x);
    return luaL_error(L, "pivday: request: %s", pd_strerror(rc));
  }
  lpd_ctx->inflight++;
  *box = x;
  return 1;
}

static int xfer_cancel(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_TRANSFER);
  if (*box) pd_transfer_cancel(((lpd_xfer_t *)*box)->t);
  return 0;
}

static int xfer_gc(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_TRANSFER);
  if (*box) ((lpd_xfer_t *)*box)->box = NULL;
  *box = NULL;
  return 0;
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
}

int lpd_client_open(lua_State *L) {
  static const luaL_Reg m[] = {{"cancel", xfer_cancel},
                               {"__gc", xfer_gc},
                               {"__close", xfer_gc},
                               {NULL, NULL}};
  lpd_newclass(L, LPD_TRANSFER, m);
  lua_pushcfunction(L, l_request);
  lua_setfield(L, -2, "request");
  lua_pushcfunction(L, l_inflight);
  lua_setfield(L, -2, "inflight");
  return 0;
}
