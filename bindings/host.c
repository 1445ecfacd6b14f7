/* host.c: main() of the `pivday` executable, modelled on lua.c.
 *
 *   pivday [--sandbox] script.lua [args]   run a script (global `arg`)
 *   pivday [--sandbox] -e CODE             run CODE
 *   pivday -                               run stdin as a script
 *   pivday [--sandbox]                     the REPL (also when stdin is a pipe)
 *   pivday COMMAND ...                     subcommands, handled in Lua
 *   pivday --version | --help
 *
 * The host embeds pivday.core (package.preload), finds the Lua files of the
 * build tree or of the install prefix next to itself, and leaves everything
 * that knows piv.day to lua/pivday.  Start-up stays cheap: no module is
 * loaded before a script asks for it (the global `pivday` loads on first
 * use).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_pivday_core(lua_State *L);
int luaopen_pivday_readline(lua_State *L);
lua_State *lpd_newstate(void);           /* state.c */
void lpd_closestate(lua_State *L);

static const char *progname = "pivday";

static const char usage_text[] =
    "usage: pivday [options] [script [args]]\n"
    "       pivday COMMAND [args]\n"
    "\n"
    "Runs Lua 5.4 scripts with the pivday library loaded: every API call\n"
    "yields to an event loop inside pivday.run/spawn and simply waits\n"
    "elsewhere.  With no script it starts a REPL.\n"
    "\n"
    "options:\n"
    "  -e CODE        run CODE\n"
    "  -              run the script read from stdin\n"
    "  --sandbox      talk to an in-process sandbox (never the live service)\n"
    "  --version      print the version\n"
    "  --help         this text\n"
    "\n"
    "commands (each has --help):\n"
    "  sandbox        run the local emulator of the API\n"
    "  listen         receive webhooks and print them\n"
    "  events         list or replay the webhook journal\n"
    "  trigger        make the sandbox send an event\n"
    "  call           call one API method\n"
    "  doctor         check key, reachability, clock and listener\n";

static void l_message(const char *msg) {
  fprintf(stderr, "%s: %s\n", progname, msg);
  fflush(stderr);
}

/* Error objects print through __tostring; strings get a traceback. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") &&
        lua_type(L, -1) == LUA_TSTRING) {
      msg = lua_tostring(L, -1);
    } else {
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
    }
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    l_message(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return status;
}

static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

/* Lets the host's own scheduler finish what scripts spawned, if the
 * runtime was loaded at all. */
static int finish(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_getfield(L, -1, "pivday.async") == LUA_TTABLE;
  lua_remove(L, -2);
  if (!loaded) {
    lua_pop(L, 1);
    return LUA_OK;
  }
  lua_getfield(L, -1, "finish");
  lua_remove(L, -2);
  return report(L, docall(L, 0, 0));
}

/* Calls require(mod)[fn](...) with the arguments from argv[first..]. */
static int call_lua(lua_State *L, const char *mod, const char *fn, int argc,
                    char **argv, int first) {
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  int status = docall(L, 1, 1);
  if (status != LUA_OK) return report(L, status);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_createtable(L, argc - first, 0);
  for (int i = first; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first + 1);
  }
  status = docall(L, 1, 1);
  if (status != LUA_OK) return report(L, status);
  /* A number result is the exit status. */
  int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return code;
}

/* The global `arg`, as lua5.4 builds it: script at 0, args from 1. */
static void create_arg(lua_State *L, int argc, char **argv, int script) {
  lua_createtable(L, argc - script, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Directory of the running executable, for finding our Lua files. */
static int exe_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash == NULL) return -1;
  *slash = '\0';
  return 0;
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* Build tree (build/bin/pivday -> lua/) first, then the install prefix
 * (bin/pivday -> share/lua/5.4); an explicit LUA_PATH still comes after. */
static void set_paths(lua_State *L) {
  char dir[PATH_MAX], probe[PATH_MAX + 64];
  if (exe_dir(dir, sizeof(dir)) != 0) return;
  /* build/bin/pivday, or build/<variant>/bin/pivday (sanitizer builds). */
  static const char *const trees[] = {"/../../lua", "/../../../lua", NULL};
  const char *tree = "/../share/lua/5.4";
  for (int i = 0; trees[i]; i++) {
    snprintf(probe, sizeof(probe), "%s%s/pivday/init.lua", dir, trees[i]);
    if (file_exists(probe)) {
      tree = trees[i];
      break;
    }
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s%s/?.lua;%s%s/?/init.lua;%s", dir, tree, dir, tree,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/../lib/lua/5.4/?.so;%s", dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 2);
}

/* The global `pivday` is loaded on first use, so `pivday -e ''` costs
 * nothing beyond the Lua state. */
static int lazy_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING &&
      strcmp(lua_tostring(L, 2), "pivday") == 0) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pivday");
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "pivday");
    return 1;
  }
  return 0;
}

static void set_lazy_global(lua_State *L) {
  lua_pushglobaltable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}

/* 1000 concurrent requests must not depend on `ulimit -n`. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int is_command(const char *s) {
  static const char *const cmds[] = {"sandbox", "listen", "events", "trigger",
                                     "call",    "doctor", NULL};
  for (int i = 0; cmds[i]; i++)
    if (strcmp(s, cmds[i]) == 0) return 1;
  return 0;
}

static int run_chunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  if (status == LUA_OK) status = finish(L);
  else report(L, status);
  return status;
}

int main(int argc, char **argv) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);

  lua_State *L = lpd_newstate();
  if (L == NULL) {
    l_message("cannot create state: not enough memory");
    return 1;
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_pivday_core);
  lua_setfield(L, -2, "pivday.core");
  lua_pushcfunction(L, luaopen_pivday_readline);
  lua_setfield(L, -2, "pivday.readline");
  lua_pop(L, 1);
  set_paths(L);
  set_lazy_global(L);

  int i = 1, status = LUA_OK, sandbox = 0;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--sandbox") == 0) sandbox = 1;
    else break;
  }

  int code = 0;
  if (sandbox) {
    /* Set up before anything else runs, so a sandbox run can never reach
     * the live service whatever the environment says. */
    code = call_lua(L, "pivday.cli", "use_sandbox", argc, argv, argc);
    if (code != 0) goto done;
  }

  if (i >= argc) {
    create_arg(L, argc, argv, 0);
    code = call_lua(L, "pivday.repl", "main", argc, argv, argc);
  } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
    printf("pivday %s (%s)\n", PIVDAY_VERSION, LUA_RELEASE);
  } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
    fputs(usage_text, stdout);
  } else if (strcmp(argv[i], "-e") == 0) {
    if (i + 1 >= argc) {
      l_message("'-e' needs an argument");
      code = 2;
      goto done;
    }
    create_arg(L, argc, argv, i + 1);
    status = luaL_loadbuffer(L, argv[i + 1], strlen(argv[i + 1]), "=(command line)");
    status = run_chunk(L, status);
  } else if (strcmp(argv[i], "-") == 0) {
    create_arg(L, argc, argv, i);
    status = run_chunk(L, luaL_loadfile(L, NULL));
  } else if (argv[i][0] == '-') {
    fprintf(stderr, "%s: unknown option '%s'\n%s", progname, argv[i], usage_text);
    code = 2;
  } else if (is_command(argv[i]) && !file_exists(argv[i])) {
    create_arg(L, argc, argv, i);
    code = call_lua(L, "pivday.cli", argv[i], argc, argv, i + 1);
  } else {
    create_arg(L, argc, argv, i);
    status = run_chunk(L, luaL_loadfile(L, argv[i]));
  }
  if (status != LUA_OK && code == 0) code = 1;

done:
  lpd_closestate(L);
  return code;
}
