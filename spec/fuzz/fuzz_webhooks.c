/* fuzz_webhooks.c: libFuzzer target for webhook envelope decoding and
 * dispatch.
 *
 * A Lua 5.4 state with pivday.core linked in (package.preload) loads
 * spec/fuzz/webhooks_harness.lua, which opens a real pivday.webhooks
 * listener with a journal and returns feed(body).  Each input is one
 * delivery body: JSON decoding (lua-cjson + pivday.json), envelope checks,
 * the dedupe key, the journal append/flush/compaction, the answer, and the
 * dispatch to handlers all run for real; the harness checks the invariants
 * and calls fuzz_abort() when one breaks.
 *
 * Run from the repository root (lua/ and spec/fuzz/ are found relative to
 * it).  FUZZ_TMPDIR is where the journal lives.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_pivday_core(lua_State *L);

static lua_State *L;

/* Lua-level coverage for libFuzzer: a line hook bumps a counter per (chunk,
 * function, line), so inputs that reach new Lua code are kept like inputs
 * that reach new C code.  libFuzzer reads this section as extra counters. */
enum { COV_SIZE = 1 << 16 };
__attribute__((section("__libfuzzer_extra_counters")))
static unsigned char lua_cov[COV_SIZE];

static void cov_hook(lua_State *S, lua_Debug *ar) {
  uintptr_t h;

  if (!lua_getinfo(S, "S", ar))
    return;
  h = (uintptr_t)ar->source * 31u + (uintptr_t)ar->linedefined * 131u +
      (uintptr_t)ar->currentline * 2654435761u;
  h ^= h >> 16;
  lua_cov[h % COV_SIZE]++;
}
static int feed_ref = LUA_NOREF;

static int l_fuzz_abort(lua_State *S) {
  fprintf(stderr, "fuzz_webhooks: %s\n", luaL_tolstring(S, 1, NULL));
  abort();
  return 0;
}

static int msgh(lua_State *S) {
  luaL_traceback(S, S, luaL_tolstring(S, 1, NULL), 1);
  return 1;
}

/* At exit: close the state (pivday.core's shutdown closes the loop, its
 * servers and files), so LSan's final check sees only real leaks. */
static void close_state(void) {
  if (L != NULL) {
    lua_close(L);
    L = NULL;
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  atexit(close_state);
  if (getenv("FUZZ_TMPDIR") == NULL)
    setenv("FUZZ_TMPDIR", "/tmp", 0);
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_pivday_core);
  lua_setfield(L, -2, "pivday.core");
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushstring(L, "lua/?.lua;lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_fuzz_abort);
  lua_setglobal(L, "fuzz_abort");
  lua_pushcfunction(L, msgh);
  if (luaL_loadfile(L, "spec/fuzz/webhooks_harness.lua") != LUA_OK ||
      lua_pcall(L, 0, 1, -2) != LUA_OK) {
    fprintf(stderr, "fuzz_webhooks: harness: %s\n", lua_tostring(L, -1));
    abort();
  }
  feed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  if (getenv("FUZZ_NO_LUA_COV") == NULL)
    lua_sethook(L, cov_hook, LUA_MASKLINE, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  int top = lua_gettop(L);

  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, LUA_REGISTRYINDEX, feed_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
    fprintf(stderr, "fuzz_webhooks: feed raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, top);
  /* A full cycle now and then keeps LSan's view of the heap honest and
   * catches __gc bugs in the C userdata. */
  if (lua_gc(L, LUA_GCCOUNT) > 64 * 1024)
    lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
