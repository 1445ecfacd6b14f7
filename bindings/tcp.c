/* tcp.c: pivday.core.Stream, a raw TCP client on uv_tcp.
 *
 * For what HTTP cannot say: probing a listener's reachability (doctor) and
 * speaking broken HTTP to our own server in the specs (trickled headers,
 * garbage, idle connections).  connect(host, port, cb) calls cb(stream) or
 * cb(nil, err); stream:read_start(cb) calls cb(data) per chunk and cb(nil,
 * reason) at EOF or error; write(data) queues bytes (copied).
 */
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  void **box;
  int cb_ref;       /* connect callback, then read callback */
  int self_ref;     /* rooted while connecting or reading */
  int closed;
} lpd_stream_t;

typedef struct {
  uv_write_t req;
  char data[];
} lpd_write_t;

static void stream_close_cb(uv_handle_t *h) { free(h->data); }

static void stream_release(lpd_stream_t *s) {
  lua_State *L = lpd_ctx->L;
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->cb_ref = s->self_ref = LUA_NOREF;
  if (!s->closed) {
    s->closed = 1;
    uv_close((uv_handle_t *)&s->tcp, stream_close_cb);
  }
}

static int stream_close(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_STREAM);
  if (*box == NULL) return 0;
  lpd_stream_t *s = *box;
  *box = NULL;
  s->box = NULL;
  stream_release(s);
  return 0;
}

static void push_cb(lpd_stream_t *s) {
  lua_rawgeti(lpd_ctx->L, LUA_REGISTRYINDEX, s->cb_ref);
}

static void connect_cb(uv_connect_t *req, int status) {
  lpd_stream_t *s = req->data;
  lua_State *L = lpd_ctx->L;
  int cb_ref = s->cb_ref;
  s->cb_ref = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->self_ref = LUA_NOREF;
  if (s->box == NULL) {  /* closed while connecting */
    luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
  if (status < 0) {
    lua_pushnil(L);
    lpd_push_error(L, "transport", status == UV_ECONNREFUSED
                                       ? "COULDNT_CONNECT" : uv_err_name(status),
                   uv_strerror(status));
    lpd_call(L, 2);
    return;
  }
  /* Push the stream userdata itself: it is still referenced by box. */
  lua_pushboolean(L, 1);
  lpd_call(L, 1);
}

/* connect(host, port, cb) -> Stream; cb(true) or cb(nil, err) later. */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
    return luaL_error(L, "connect: '%s' is not an IP address", host);
  void **box = lpd_newbox(L, LPD_STREAM);
  lpd_stream_t *s = calloc(1, sizeof(*s));
  if (s == NULL) return luaL_error(L, "pivday: out of memory");
  uv_tcp_init(&lpd_ctx->loop, &s->tcp);
  s->tcp.data = s;
  s->connect.data = s;
  s->box = box;
  *box = s;
  lua_pushvalue(L, 3);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int rc = uv_tcp_connect(&s->connect, &s->tcp, (struct sockaddr *)&addr,
                          connect_cb);
  if (rc != 0) {
    *box = NULL;
    s->box = NULL;
    stream_release(s);
    return luaL_error(L, "connect: %s", uv_strerror(rc));
  }
  return 1;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  lpd_stream_t *s = st->data;
  lua_State *L = lpd_ctx->L;
  if (n == 0 || s->cb_ref == LUA_NOREF) {
    free(buf->base);
    return;
  }
  push_cb(s);
  if (n > 0) {
    lua_pushlstring(L, buf->base, (size_t)n);
    free(buf->base);
    lpd_call(L, 1);
    return;
  }
  free(buf->base);
  uv_read_stop(st);
  lua_pushnil(L);
  lua_pushstring(L, n == UV_EOF ? "eof" : uv_err_name((int)n));
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->self_ref = LUA_NOREF;
  lpd_call(L, 2);
}

static int stream_read_start(lua_State *L) {
  lpd_stream_t *s = lpd_checkbox(L, 1, LPD_STREAM);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
  lua_pushvalue(L, 2);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (s->self_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  int rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
  if (rc != 0) return luaL_error(L, "read: %s", uv_strerror(rc));
  return 0;
}

static void write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* write(data) -> true, or nil and a message. */
static int stream_write(lua_State *L) {
  lpd_stream_t *s = lpd_checkbox(L, 1, LPD_STREAM);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lpd_write_t *w = malloc(sizeof(*w) + len);
  if (w == NULL) return luaL_error(L, "pivday: out of memory");
  memcpy(w->data, data, len);
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &buf, 1, write_cb);
  if (rc != 0) {
    free(w);
    luaL_pushfail(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

void lpd_tcp_open(lua_State *L) {
  static const luaL_Reg m[] = {{"read_start", stream_read_start},
                               {"write", stream_write},
                               {"close", stream_close},
                               {"__gc", stream_close},
                               {"__close", stream_close},
                               {NULL, NULL}};
  lpd_newclass(L, LPD_STREAM, m);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
}
