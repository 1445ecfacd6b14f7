/* lpd.h: what the files of the pivday.core Lua module share.
 *
 * The module owns one libuv loop per process, the shared HTTP client (so
 * every request reuses the same connections) and the Lua state that loaded
 * it.  Everything runs on the loop's thread.  C never resumes coroutines:
 * it calls Lua callbacks (under pcall) once libcurl/llhttp have returned,
 * and lua/pivday/async.lua does the scheduling; the one exception is a
 * request's completion, which resumes the waiting task itself
 * (lpd_deliver).
 */
#ifndef LPD_H
#define LPD_H

#include <lua.h>
#include <lauxlib.h>
#include "pd.h"

#define LPD_TRANSFER "pivday.core.Transfer"
#define LPD_SERVER "pivday.core.Server"
#define LPD_REQUEST "pivday.core.Request"
#define LPD_TIMER "pivday.core.Timer"
#define LPD_SIGNAL "pivday.core.Signal"
#define LPD_POLL "pivday.core.Poll"
#define LPD_STREAM "pivday.core.Stream"
#define LPD_FILE "pivday.core.File"
#define LPD_WINDOW "pivday.core.Window"
#define LPD_HOOK "pivday.core.Hook"

typedef struct {
  uv_loop_t loop;
  lua_State *L;          /* the main thread of the state that loaded us */
  pd_client_t *client;   /* created on the first request */
  int running;           /* inside uv_run */
  int closing;           /* module shutdown in progress */
  uv_idle_t tick;        /* runs the scheduler's tick on the next iteration */
  int tick_ref;          /* the Lua tick function */
  int error_mt_ref;      /* metatable given to errors (pivday.Error) */
  int reporter_ref;      /* Lua function reporting callback errors */
  uv_timer_t step_timer; /* bounds pivday.step(timeout) */
  struct lpd_server_s *servers; /* open servers, for shutdown */
  struct lpd_req_s *reqs;       /* unanswered server requests */
  size_t inflight;       /* transfers started, callbacks not yet run */
} lpd_ctx_t;

extern lpd_ctx_t *lpd_ctx;

/* Calls a function pushed before its nargs arguments, under pcall; a raised
 * error goes to the reporter (a traceback on stderr by default).  Pops the
 * function and the arguments. */
void lpd_call(lua_State *L, int nargs);
/* Like lpd_call, for a completion: when the value below the nargs
 * arguments is a thread (a task waiting in async.await_op) it is resumed
 * with them directly; an outcome other than waiting again or finishing
 * goes to the Lua function given to core.set_resumer. */
void lpd_deliver(lua_State *L, int nargs);
/* Pushes a pivday.Error-shaped table {kind, code, message}. */
void lpd_push_error(lua_State *L, const char *kind, const char *code,
                    const char *message);
/* Pushes a table of headers: names lower-cased, repeated ones joined with
 * ", " as HTTP allows. */
void lpd_push_headers(lua_State *L, const pd_header_t *hs, size_t n);
/* Creates a userdata holding one pointer, with the named metatable. */
void **lpd_newbox(lua_State *L, const char *mt);
/* Checks arg as a non-closed box of the named type. */
void *lpd_checkbox(lua_State *L, int arg, const char *mt);
/* Registers a metatable with methods (and __index to itself). */
void lpd_newclass(lua_State *L, const char *name, const luaL_Reg *methods);
/* Reads an optional numeric field. */
double lpd_optnumfield(lua_State *L, int idx, const char *k, double def);

int lpd_client_open(lua_State *L);   /* registers request/Transfer */
int lpd_server_open(lua_State *L);   /* registers server/respond */
int lpd_timer_open(lua_State *L);    /* registers timer, signal, poll */
void lpd_tcp_open(lua_State *L);     /* registers connect/Stream */
void lpd_file_open(lua_State *L);    /* registers open_file/File */
void lpd_canon_open(lua_State *L);   /* registers json_decode, canon_key */
/* Decodes the JSON text s[0..len) and pushes the value as core.json_decode
 * gives it (empty lists get the metatable at stack index list_mt, if not
 * 0).  Returns 1, or 0 with nothing pushed, *err the reason and *pos the
 * byte offset.  *crlf (if given): the text held a CR or LF. */
int lpd_json_push(lua_State *L, const char *s, size_t len, int list_mt,
                  int *crlf, const char **err, size_t *pos);
/* Decodes s[0..len), an object, and pushes its member `member` (null
 * object members left out, at every depth) when that is a table and the
 * member `flag` is true: an API envelope's data.  Returns 1, or 0 with
 * nothing pushed for any other text. */
int lpd_json_push_member(lua_State *L, const char *s, size_t len, int list_mt,
                         const char *flag, const char *member);
/* The listener's dedupe key of (event type, timestamp, data) at the given
 * stack indexes: 16 bytes, as core.canon_key returns them. */
void lpd_canon_key(lua_State *L, int t, int ts, int data, unsigned char out[16]);
/* The same key read from an event's JSON text s[0..len) (an object; its
 * members event_type, timestamp and data): 1, or 0 if the text is not
 * JSON.  Equal to lpd_canon_key of the decoded values, but for texts whose
 * nested objects repeat a member name (the table keeps one of them). */
int lpd_event_key(const char *s, size_t len, unsigned char out[16]);
/* lpd_json_push that also gives the text's event key (as lpd_event_key),
 * from digests taken while decoding. */
int lpd_json_push_keyed(lua_State *L, const char *s, size_t len, int list_mt,
                        int *crlf, const char **err, size_t *pos, unsigned char key[16]);
/* The webhook listener's dedupe window (dedupe.c) and request path
 * (hook.c): see those files. */
#define LPD_KEY_LEN 16
typedef struct lpd_window_s lpd_window_t;
typedef struct lpd_hook_s lpd_hook_t;
void lpd_dedupe_open(lua_State *L); /* registers dedupe_window/Window */
void lpd_hook_open(lua_State *L);   /* registers hook/Hook */
int lpd_window_seen(lpd_window_t *w, const unsigned char *key, int64_t now);
/* Remembers key as arrived at now; 0 when out of memory. */
int lpd_window_add(lpd_window_t *w, const unsigned char *key, int64_t now);
void lpd_window_forget(lpd_window_t *w, const unsigned char *key);
/* Cache hints, no effect on what the window holds: the slot of key, and
 * the slot the oldest arrival's key holds (the next add may drop it). */
void lpd_window_prefetch(const lpd_window_t *w, const unsigned char *key);
void lpd_window_prefetch_oldest(const lpd_window_t *w);
lpd_hook_t *lpd_check_hook(lua_State *L, int arg);
/* Handles a request to a server that has a hook: answers it, or keeps it
 * until the journal sync. */
void lpd_hook_request(lpd_hook_t *h, pd_http_req_t *r);
void lpd_client_shutdown(void);
void lpd_server_shutdown(void);

#endif
