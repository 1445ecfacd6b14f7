/* startup.c: the do-nothing baseline of the start-up row.
 *
 * Linked against the same libraries as the pivday host (Lua 5.4, libuv,
 * libcurl, libedit, libm), so `pivday -e ''` divided by this program's wall
 * time is pivday's own start-up work, not the dynamic linker's.  It only
 * takes the libraries' addresses (so no linker drops them) and exits.
 */
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>
#include <curl/curl.h>

int main(void) {
  void *volatile keep[] = {(void *)luaL_newstate, (void *)uv_version,
                           (void *)curl_version};
  return keep[0] == 0;
}
