/* readline.c: pivday.readline, libedit's callback interface for the REPL.
 *
 * The REPL (lua/pivday/repl.lua) polls stdin on the event loop and calls
 * read_char() when it is readable, so timers, requests and webhooks keep
 * running while the prompt waits.  libedit is BSD-licensed, which keeps
 * pivday MIT.  Only the host links it; libedit keeps global state, so one
 * line handler is active at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <editline/readline.h>

#include <lua.h>
#include <lauxlib.h>

static lua_State *rl_L = NULL;
static int line_ref = LUA_NOREF;
static int complete_ref = LUA_NOREF;

/* Runs from rl_callback_read_char, itself called from Lua: a plain call is
 * fine (errors propagate to the caller's pcall). */
static void line_handler(char *line) {
  lua_State *L = rl_L;
  if (L == NULL || line_ref == LUA_NOREF) {
    free(line);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, line_ref);
  if (line) lua_pushstring(L, line);
  else lua_pushnil(L);
  free(line);
  lua_call(L, 1, 0);
}

/* start(prompt, on_line): installs the handler; on_line(nil) on EOF. */
static int l_start(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, line_ref);
  lua_pushvalue(L, 2);
  line_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rl_L = L;
  rl_callback_handler_install(prompt, line_handler);
  return 0;
}

static int l_read_char(lua_State *L) {
  rl_L = L;
  rl_callback_read_char();
  return 0;
}

static int l_stop(lua_State *L) {
  (void)L;
  rl_callback_handler_remove();
  return 0;
}

/* Prints text above the prompt without losing what the user typed. */
static int l_print_above(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  int saved_point = rl_point;
  char *saved = rl_copy_text(0, rl_end);
  rl_save_prompt();
  rl_replace_line("", 0);
  rl_redisplay();
  fputs("\r\033[K", stdout);
  fputs(text, stdout);
  if (text[0] && text[strlen(text) - 1] != '\n') fputc('\n', stdout);
  fflush(stdout);
  rl_restore_prompt();
  rl_replace_line(saved ? saved : "", 0);
  rl_point = saved_point;
  free(saved);
  rl_forced_update_display();
  return 0;
}

static int l_add_history(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_read_history(lua_State *L) {
  lua_pushboolean(L, read_history(luaL_checkstring(L, 1)) == 0);
  return 1;
}

static int l_write_history(lua_State *L) {
  lua_pushboolean(L, write_history(luaL_checkstring(L, 1)) == 0);
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 0)));
  return 1;
}

/* Completion: the Lua function gets the word and the whole line and
 * returns a list of candidates. */
static char **candidates = NULL;
static int ncand = 0, cand_pos = 0;

static char *generator(const char *text, int state) {
  (void)text;
  if (state == 0) cand_pos = 0;
  if (candidates == NULL || cand_pos >= ncand) return NULL;
  return strdup(candidates[cand_pos++]);
}

static void free_candidates(void) {
  for (int i = 0; i < ncand; i++) free(candidates[i]);
  free(candidates);
  candidates = NULL;
  ncand = 0;
}

static char **attempt(const char *text, int start, int end) {
  (void)start;
  (void)end;
  lua_State *L = rl_L;
  rl_attempted_completion_over = 1;
  /* "api.numbers" is followed by ".get", not a space. */
  rl_completion_append_character = '\0';
  free_candidates();
  if (L == NULL || complete_ref == LUA_NOREF) return NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, complete_ref);
  lua_pushstring(L, text);
  lua_pushstring(L, rl_line_buffer);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  int n = (int)luaL_len(L, -1);
  candidates = calloc((size_t)n + 1, sizeof(char *));
  for (int i = 1; candidates && i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *s = lua_tostring(L, -1);
    if (s) candidates[ncand++] = strdup(s);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return rl_completion_matches(text, generator);
}

static int l_set_completer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, complete_ref);
  lua_pushvalue(L, 1);
  complete_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rl_L = L;
  rl_attempted_completion_function = attempt;
  rl_basic_word_break_characters = " \t\n\"'([{,=+-*/<>~";
  return 0;
}

int luaopen_pivday_readline(lua_State *L) {
  static const luaL_Reg funcs[] = {{"start", l_start},
                                   {"read_char", l_read_char},
                                   {"stop", l_stop},
                                   {"print_above", l_print_above},
                                   {"add_history", l_add_history},
                                   {"read_history", l_read_history},
                                   {"write_history", l_write_history},
                                   {"isatty", l_isatty},
                                   {"set_completer", l_set_completer},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
