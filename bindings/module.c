/* module.c: luaopen_pivday_core, the loop it owns, and loop control.
 *
 * One loop per process.  Lua drives it through run/step; the scheduler in
 * lua/pivday/async.lua registers a tick function that runs on the next loop
 * iteration after wakeup() (a uv_idle that stops itself: a 0 ms uv_timer
 * spins on libuv 1.44).  A sentinel userdata created first is finalized
 * last at lua_close: it closes servers, the client and every handle, and
 * runs the loop until uv_loop_close succeeds.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "lpd.h"

lpd_ctx_t *lpd_ctx = NULL;

static int report_plain(lua_State *L) {
  const char *msg = luaL_tolstring(L, 1, NULL);
  fprintf(stderr, "pivday: %s\n", msg);
  return 0;
}

static int msgh(lua_State *L) {
  /* Keep error objects intact (tables print through __tostring later);
   * add a traceback to strings. */
  if (lua_type(L, 1) == LUA_TSTRING)
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

void lpd_call(lua_State *L, int nargs) {
  int base = lua_gettop(L) - nargs; /* the function's index */
  lua_pushcfunction(L, msgh);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, 0, base) != LUA_OK) {
    if (lpd_ctx->reporter_ref != LUA_NOREF)
      lua_rawgeti(L, LUA_REGISTRYINDEX, lpd_ctx->reporter_ref);
    else
      lua_pushcfunction(L, report_plain);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "pivday: error in error reporter: %s\n",
              lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1); /* msgh */
}

/* Direct resumes (lpd_deliver): the value a task yields while it waits,
 * and the Lua function told about any other outcome. */
static const void *wait_ptr;
static int wait_ref = LUA_NOREF, odd_ref = LUA_NOREF;

void lpd_deliver(lua_State *L, int nargs) {
  int base = lua_gettop(L) - nargs;
  if (lua_type(L, base) != LUA_TTHREAD) {
    lpd_call(L, nargs);
    return;
  }
  /* A waiting task: resumed here, rather than by a Lua callback that
   * resumes it (a pcall, two Lua calls and coroutine.resume saved per
   * completion).  The thread stays on L's stack meanwhile, so it cannot
   * be collected. */
  lua_State *co = lua_tothread(L, base);
  int nres;
  lua_xmove(L, co, nargs);
  int st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_OK || (st == LUA_YIELD && nres == 1 && lua_topointer(co, -1) == wait_ptr)) {
    /* Waiting again, or finished (the task's body recorded how). */
    lua_pop(co, nres);
    lua_settop(L, base - 1);
    return;
  }
  if (odd_ref == LUA_NOREF) {
    lua_pop(co, nres);
    lua_settop(L, base - 1);
    return;
  }
  if (st == LUA_YIELD) {
    lua_pushboolean(L, 1);    /* a yield that is not pivday's: (co, true, values) */
  } else {
    lua_pushboolean(L, 0);    /* an error: (co, false, err) */
    nres = 1;
  }
  lua_xmove(co, L, nres);
  lua_rawgeti(L, LUA_REGISTRYINDEX, odd_ref);
  lua_insert(L, base);        /* odd(co, ok, ...) */
  lpd_call(L, nres + 2);
  lua_settop(L, base - 1);
}

/* set_resumer(WAIT, odd): see lpd_deliver. */
static int l_set_resumer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, wait_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, odd_ref);
  wait_ptr = lua_topointer(L, 1);
  lua_pushvalue(L, 1);
  wait_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  odd_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

void lpd_push_error(lua_State *L, const char *kind, const char *code,
                    const char *message) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (lpd_ctx->error_mt_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lpd_ctx->error_mt_ref);
    lua_setmetatable(L, -2);
  }
}

void lpd_push_headers(lua_State *L, const pd_header_t *hs, size_t n) {
  lua_createtable(L, 0, (int)n);
  char name[256];
  for (size_t i = 0; i < n; i++) {
    const pd_header_t *h = &hs[i];
    size_t len = h->name_len < sizeof(name) ? h->name_len : sizeof(name);
    for (size_t j = 0; j < len; j++)
      name[j] = (char)tolower((unsigned char)h->name[j]);
    lua_pushlstring(L, name, len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
}

void **lpd_newbox(lua_State *L, const char *mt) {
  void **box = lua_newuserdatauv(L, sizeof(void *), 1);
  *box = NULL;
  luaL_setmetatable(L, mt);
  return box;
}

void *lpd_checkbox(lua_State *L, int arg, const char *mt) {
  void **box = luaL_checkudata(L, arg, mt);
  if (*box == NULL) {
    const char *name = strrchr(mt, '.');
    luaL_error(L, "attempt to use a closed pivday.%s", name ? name + 1 : mt);
  }
  return *box;
}

void lpd_newclass(lua_State *L, const char *name, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

double lpd_optnumfield(lua_State *L, int idx, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, idx, k) != LUA_TNIL) {
    int ok;
    v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "field '%s' must be a number", k);
  }
  lua_pop(L, 1);
  return v;
}

/* ------------------------------------------------------------ run ---- */

static int l_run(lua_State *L) {
  static const char *const modes[] = {"default", "once", "nowait", NULL};
  static const uv_run_mode umodes[] = {UV_RUN_DEFAULT, UV_RUN_ONCE,
                                       UV_RUN_NOWAIT};
  int m = luaL_checkoption(L, 1, "once", modes);
  if (lpd_ctx->running)
    return luaL_error(L, "pivday: the event loop is already running "
                         "(wait from a coroutine pivday manages: "
                         "pivday.run or pivday.spawn)");
  lpd_ctx->running = 1;
  int alive = uv_run(&lpd_ctx->loop, umodes[m]);
  lpd_ctx->running = 0;
  lua_pushboolean(L, alive);
  return 1;
}

static void step_timer_cb(uv_timer_t *t) { (void)t; }

/* step(timeout): one loop iteration waiting at most timeout seconds, for
 * apps that drive our loop from theirs. */
static int l_step(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, 0);
  if (lpd_ctx->running)
    return luaL_error(L, "pivday: the event loop is already running");
  lpd_ctx->running = 1;
  int alive;
  if (timeout <= 0) {
    alive = uv_run(&lpd_ctx->loop, UV_RUN_NOWAIT);
  } else {
    uv_timer_start(&lpd_ctx->step_timer, step_timer_cb,
                   (uint64_t)(timeout * 1e3 + 0.5), 0);
    alive = uv_run(&lpd_ctx->loop, UV_RUN_ONCE);
    uv_timer_stop(&lpd_ctx->step_timer);
  }
  lpd_ctx->running = 0;
  lua_pushboolean(L, alive);
  return 1;
}

static int l_running(lua_State *L) {
  lua_pushboolean(L, lpd_ctx->running);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, pd_hrtime());
  return 1;
}

static int l_loop_now(lua_State *L) {
  lua_pushnumber(L, pd_now(&lpd_ctx->loop));
  return 1;
}

static int l_backend_fd(lua_State *L) {
  lua_pushinteger(L, uv_backend_fd(&lpd_ctx->loop));
  return 1;
}

static int l_backend_timeout(lua_State *L) {
  if (uv_is_active((uv_handle_t *)&lpd_ctx->tick)) {
    lua_pushnumber(L, 0);
    return 1;
  }
  int ms = uv_backend_timeout(&lpd_ctx->loop);
  if (ms < 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, ms / 1e3);
  return 1;
}

/* ----------------------------------------------------------- tick ---- */

static void tick_cb(uv_idle_t *h) {
  uv_idle_stop(h);
  if (lpd_ctx->tick_ref == LUA_NOREF) return;
  lua_State *L = lpd_ctx->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lpd_ctx->tick_ref);
  lpd_call(L, 0);
}

static int l_set_tick(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, lpd_ctx->tick_ref);
  lua_pushvalue(L, 1);
  lpd_ctx->tick_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_wakeup(lua_State *L) {
  (void)L;
  if (!lpd_ctx->closing) uv_idle_start(&lpd_ctx->tick, tick_cb);
  return 0;
}

static int set_ref(lua_State *L, int *ref, int type) {
  luaL_checktype(L, 1, type);
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  lua_pushvalue(L, 1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_set_error_metatable(lua_State *L) {
  return set_ref(L, &lpd_ctx->error_mt_ref, LUA_TTABLE);
}

static int l_set_reporter(lua_State *L) {
  return set_ref(L, &lpd_ctx->reporter_ref, LUA_TFUNCTION);
}

/* stat_mode(path) -> permission bits, or nil, message: for refusing a key
 * file that others can read. */
static int l_stat_mode(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, st.st_mode & 07777);
  return 1;
}

/* ------------------------------------------------------- shutdown ---- */

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  /* Timers, signals and polls free their structs in their own close
   * callbacks; anything left here is module-internal and static. */
  if (!uv_is_closing(h) && h->close_cb == NULL) uv_close(h, NULL);
}

static int l_shutdown(lua_State *L) {
  (void)L;
  if (lpd_ctx == NULL || lpd_ctx->closing) return 0;
  lpd_ctx->closing = 1;
  lpd_server_shutdown();
  lpd_client_shutdown();
  if (!uv_is_closing((uv_handle_t *)&lpd_ctx->tick))
    uv_close((uv_handle_t *)&lpd_ctx->tick, NULL);
  if (!uv_is_closing((uv_handle_t *)&lpd_ctx->step_timer))
    uv_close((uv_handle_t *)&lpd_ctx->step_timer, NULL);
  /* Bounded: each round closes what is left and lets close callbacks run. */
  for (int i = 0; i < 1000; i++) {
    uv_run(&lpd_ctx->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&lpd_ctx->loop) == 0) {
      free(lpd_ctx);
      lpd_ctx = NULL;
      return 0;
    }
    uv_walk(&lpd_ctx->loop, close_walk_cb, NULL);
  }
  /* Something refuses to close: leave the loop rather than free it under
   * a live handle. */
  return 0;
}

static const luaL_Reg funcs[] = {
    {"run", l_run},
    {"step", l_step},
    {"running", l_running},
    {"now", l_now},
    {"loop_now", l_loop_now},
    {"backend_fd", l_backend_fd},
    {"backend_timeout", l_backend_timeout},
    {"set_tick", l_set_tick},
    {"set_resumer", l_set_resumer},
    {"wakeup", l_wakeup},
    {"set_error_metatable", l_set_error_metatable},
    {"set_reporter", l_set_reporter},
    {"stat_mode", l_stat_mode},
    {"shutdown", l_shutdown},
    {NULL, NULL}};

int luaopen_pivday_core(lua_State *L) {
  if (lpd_ctx == NULL) {
    lpd_ctx = calloc(1, sizeof(*lpd_ctx));
    if (lpd_ctx == NULL) return luaL_error(L, "pivday: out of memory");
    int rc = uv_loop_init(&lpd_ctx->loop);
    if (rc != 0) {
      free(lpd_ctx);
      lpd_ctx = NULL;
      return luaL_error(L, "pivday: uv_loop_init: %s", uv_strerror(rc));
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lpd_ctx->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    lpd_ctx->tick_ref = LUA_NOREF;
    lpd_ctx->error_mt_ref = LUA_NOREF;
    lpd_ctx->reporter_ref = LUA_NOREF;
    uv_idle_init(&lpd_ctx->loop, &lpd_ctx->tick);
    uv_timer_init(&lpd_ctx->loop, &lpd_ctx->step_timer);
    uv_unref((uv_handle_t *)&lpd_ctx->step_timer);

    /* The sentinel: finalized after everything created later. */
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_shutdown);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "pivday.core.sentinel");
  } else if (lpd_ctx->L != L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    int same = lua_tothread(L, -1) == lpd_ctx->L;
    lua_pop(L, 1);
    if (!same)
      return luaL_error(L, "pivday.core: already loaded by another Lua state");
  }

  luaL_newlib(L, funcs);
  lpd_client_open(L);
  lpd_server_open(L);
  lpd_timer_open(L);
  lpd_tcp_open(L);
  lpd_file_open(L);
  lpd_canon_open(L);
  lpd_dedupe_open(L);
  lpd_hook_open(L);
  lua_pushliteral(L, PIVDAY_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
