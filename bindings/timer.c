/* timer.c: pivday.core.Timer, Signal and Poll: thin wrappers of uv_timer,
 * uv_signal and uv_poll with one Lua callback each.
 *
 * The userdata holds a pointer to the C struct, so the struct outlives the
 * userdata until its close callback.  While a handle is active it roots its
 * own userdata (self_ref): a sleeping coroutine must not lose its timer to
 * the garbage collector.  __gc and __close are the same idempotent close.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lpd.h"

typedef struct {
  union {
    uv_handle_t handle;
    uv_timer_t timer;
    uv_signal_t signal;
    uv_poll_t poll;
  } u;
  void **box;   /* the userdata's slot, NULL once collected */
  int cb_ref;
  int self_ref;
} lpd_handle_t;

static void handle_close_cb(uv_handle_t *h) { free(h->data); }

static void unroot(lpd_handle_t *w) {
  lua_State *L = lpd_ctx->L;
  luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
  w->self_ref = LUA_NOREF;
}

static void root(lua_State *L, int idx, lpd_handle_t *w) {
  if (w->self_ref != LUA_NOREF) return;
  lua_pushvalue(L, idx);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void set_cb(lua_State *L, int idx, lpd_handle_t *w) {
  luaL_checktype(L, idx, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
  lua_pushvalue(L, idx);
  w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int handle_close(lua_State *L) {
  void **box = lua_touserdata(L, 1);
  if (box == NULL || *box == NULL) return 0;
  lpd_handle_t *w = *box;
  *box = NULL;
  w->box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
  w->cb_ref = w->self_ref = LUA_NOREF;
  if (lpd_ctx && !uv_is_closing(&w->u.handle))
    uv_close(&w->u.handle, handle_close_cb);
  return 0;
}

static lpd_handle_t *new_handle(lua_State *L, const char *mt) {
  void **box = lpd_newbox(L, mt);
  lpd_handle_t *w = calloc(1, sizeof(*w));
  if (w == NULL) luaL_error(L, "pivday: out of memory");
  w->cb_ref = w->self_ref = LUA_NOREF;
  w->u.handle.data = w;
  w->box = box;
  *box = w;
  return w;
}

/* Calls the handle's callback with the given number of pushed args. */
static void call_cb(lpd_handle_t *w, int nargs) {
  lua_State *L = lpd_ctx->L;
  if (w->cb_ref == LUA_NOREF) {
    lua_pop(L, nargs);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->cb_ref);
  lua_insert(L, -(nargs + 1));
  lpd_call(L, nargs);
}

/* ---------------------------------------------------------- timer ---- */

static void timer_cb(uv_timer_t *t) {
  lpd_handle_t *w = t->data;
  lua_State *L = lpd_ctx->L;
  int repeating = uv_timer_get_repeat(t) > 0;
  int cb_ref = w->cb_ref;
  lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
  if (!repeating) {
    /* Drop the roots before calling: the callback may restart us. */
    w->cb_ref = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
    unroot(w);
  }
  lpd_call(L, 0);
}

static uint64_t to_ms(lua_State *L, int idx) {
  lua_Number s = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, s >= 0 && s < 1e9, idx, "seconds out of range");
  return (uint64_t)(s * 1e3 + 0.5);
}

/* timer:start(seconds, repeat_seconds, cb) */
static int timer_start(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_TIMER);
  uint64_t timeout = to_ms(L, 2), repeat = to_ms(L, 3);
  set_cb(L, 4, w);
  root(L, 1, w);
  /* The loop's clock is cached per iteration; a timer started after long
   * Lua work would otherwise fire early by that much. */
  uv_update_time(&lpd_ctx->loop);
  uv_timer_start(&w->u.timer, timer_cb, timeout, repeat);
  return 0;
}

static int timer_stop(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_TIMER);
  uv_timer_stop(&w->u.timer);
  luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
  w->cb_ref = LUA_NOREF;
  unroot(w);
  return 0;
}

static int timer_new(lua_State *L) {
  lpd_handle_t *w = new_handle(L, LPD_TIMER);
  uv_timer_init(&lpd_ctx->loop, &w->u.timer);
  return 1;
}

/* --------------------------------------------------------- signal ---- */

static void signal_cb(uv_signal_t *s, int signum) {
  lpd_handle_t *w = s->data;
  lua_pushinteger(lpd_ctx->L, signum);
  call_cb(w, 1);
}

/* signal:start(signum, cb): repeats until stopped. */
static int signal_start(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_SIGNAL);
  int signum = (int)luaL_checkinteger(L, 2);
  set_cb(L, 3, w);
  root(L, 1, w);
  int rc = uv_signal_start(&w->u.signal, signal_cb, signum);
  if (rc != 0) return luaL_error(L, "signal: %s", uv_strerror(rc));
  return 0;
}

static int signal_stop(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_SIGNAL);
  uv_signal_stop(&w->u.signal);
  unroot(w);
  return 0;
}

static int signal_new(lua_State *L) {
  lpd_handle_t *w = new_handle(L, LPD_SIGNAL);
  uv_signal_init(&lpd_ctx->loop, &w->u.signal);
  return 1;
}

/* ----------------------------------------------------------- poll ---- */

static void poll_cb(uv_poll_t *p, int status, int events) {
  lpd_handle_t *w = p->data;
  lua_State *L = lpd_ctx->L;
  if (status < 0)
    lua_pushstring(L, uv_err_name(status));
  else
    lua_pushnil(L);
  lua_pushinteger(L, events);
  call_cb(w, 2);
}

/* poll(fd) -> Poll; poll:start(cb) watches readability until stopped. */
static int poll_new(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  void **box = lpd_newbox(L, LPD_POLL);
  lpd_handle_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return luaL_error(L, "pivday: out of memory");
  w->cb_ref = w->self_ref = LUA_NOREF;
  int rc = uv_poll_init(&lpd_ctx->loop, &w->u.poll, fd);
  if (rc != 0) {
    free(w);
    return luaL_error(L, "poll(%d): %s", fd, uv_strerror(rc));
  }
  w->u.handle.data = w;
  w->box = box;
  *box = w;
  return 1;
}

static int poll_start(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_POLL);
  set_cb(L, 2, w);
  root(L, 1, w);
  uv_poll_start(&w->u.poll, UV_READABLE, poll_cb);
  return 0;
}

static int poll_stop(lua_State *L) {
  lpd_handle_t *w = lpd_checkbox(L, 1, LPD_POLL);
  uv_poll_stop(&w->u.poll);
  unroot(w);
  return 0;
}

/* read_fd(fd) -> data, or nil at end of file, or false when nothing is
 * available now: one non-blocking read for a readable poll. */
static int l_read_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  char buf[65536];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
  } else if (n == 0) {
    lua_pushnil(L);
  } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    lua_pushboolean(L, 0);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  return 1;
}

/* Active handles keep uv_run from returning; an unref'd one does not
 * (a REPL's stdin or a signal watcher must not keep a script alive). */
static int handle_unref(lua_State *L) {
  void **box = lua_touserdata(L, 1);
  if (box && *box) uv_unref(&((lpd_handle_t *)*box)->u.handle);
  return 0;
}

static int handle_ref(lua_State *L) {
  void **box = lua_touserdata(L, 1);
  if (box && *box) uv_ref(&((lpd_handle_t *)*box)->u.handle);
  return 0;
}

static int handle_active(lua_State *L) {
  void **box = lua_touserdata(L, 1);
  lua_pushboolean(L, box && *box &&
                         uv_is_active(&((lpd_handle_t *)*box)->u.handle));
  return 1;
}

int lpd_timer_open(lua_State *L) {
  static const luaL_Reg timer_m[] = {
      {"start", timer_start}, {"stop", timer_stop},
      {"close", handle_close}, {"unref", handle_unref},
      {"ref", handle_ref},     {"active", handle_active},
      {"__gc", handle_close},  {"__close", handle_close},
      {NULL, NULL}};
  static const luaL_Reg signal_m[] = {
      {"start", signal_start}, {"stop", signal_stop},
      {"close", handle_close}, {"unref", handle_unref},
      {"ref", handle_ref},     {"__gc", handle_close},
      {"__close", handle_close}, {NULL, NULL}};
  static const luaL_Reg poll_m[] = {
      {"start", poll_start},   {"stop", poll_stop},
      {"close", handle_close}, {"unref", handle_unref},
      {"ref", handle_ref},     {"__gc", handle_close},
      {"__close", handle_close}, {NULL, NULL}};
  lpd_newclass(L, LPD_TIMER, timer_m);
  lpd_newclass(L, LPD_SIGNAL, signal_m);
  lpd_newclass(L, LPD_POLL, poll_m);
  lua_pushcfunction(L, timer_new);
  lua_setfield(L, -2, "timer");
  lua_pushcfunction(L, signal_new);
  lua_setfield(L, -2, "signal");
  lua_pushcfunction(L, poll_new);
  lua_setfield(L, -2, "poll");
  lua_pushcfunction(L, l_read_fd);
  lua_setfield(L, -2, "read_fd");
  lua_pushinteger(L, SIGINT);
  lua_setfield(L, -2, "SIGINT");
  lua_pushinteger(L, SIGTERM);
  lua_setfield(L, -2, "SIGTERM");
  lua_pushinteger(L, SIGHUP);
  lua_setfield(L, -2, "SIGHUP");
  return 0;
}
