/* file.c: pivday.core.File, the durable-file primitives Lua's io lacks.
 *
 * A webhook journal must be on disk before the 2xx goes out, and state
 * files must be replaced atomically: that takes write(2), fdatasync(2),
 * flock(2) and a directory fsync, none of which the io library offers.
 * These are plain blocking system calls on local files, kept short (one
 * write, one sync per loop turn at most: the caller batches), except
 * sync_async, which runs the fdatasync in libuv's thread pool so the loop
 * goes on reading and parsing requests while the disk works.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include "lpd.h"

typedef struct {
  int fd;
} lpd_file_t;

static int fail(lua_State *L, const char *what) {
  int e = errno;
  luaL_pushfail(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  return 2;
}

static lpd_file_t *check_file(lua_State *L) {
  lpd_file_t *f = luaL_checkudata(L, 1, LPD_FILE);
  if (f->fd < 0) luaL_error(L, "attempt to use a closed pivday.File");
  return f;
}

/* open_file(path, mode): mode "a" (append, create, 0600), "w" (truncate,
 * create, 0600) or "r".  Returns File, or nil and a message. */
static int l_open_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "a");
  int flags;
  if (strcmp(mode, "a") == 0) flags = O_WRONLY | O_CREAT | O_APPEND;
  else if (strcmp(mode, "w") == 0) flags = O_WRONLY | O_CREAT | O_TRUNC;
  else if (strcmp(mode, "r") == 0) flags = O_RDONLY;
  else return luaL_argerror(L, 2, "mode must be \"a\", \"w\" or \"r\"");
  lpd_file_t *f = lua_newuserdatauv(L, sizeof(*f), 0);
  f->fd = -1;
  luaL_setmetatable(L, LPD_FILE);
  f->fd = open(path, flags | O_CLOEXEC, 0600);
  if (f->fd < 0) return fail(L, path);
  return 1;
}

/* write(s1, s2, ...) -> true: all of them in order with writev, retrying
 * short writes (the journal hands its queued lines as they are, not joined
 * into one more copy). */
#define WRITE_IOV 64

static int file_write(lua_State *L) {
  lpd_file_t *f = check_file(L);
  int last = lua_gettop(L);
  for (int i = 2; i <= last; i++) luaL_checktype(L, i, LUA_TSTRING);
  struct iovec iov[WRITE_IOV];
  for (int arg = 2; arg <= last;) {
    int cnt = 0;
    for (; cnt < WRITE_IOV && arg + cnt <= last; cnt++) {
      size_t len;
      const char *p = lua_tolstring(L, arg + cnt, &len);
      iov[cnt].iov_base = (void *)p;
      iov[cnt].iov_len = len;
    }
    arg += cnt;
    struct iovec *v = iov;
    while (cnt > 0) {
      ssize_t n = writev(f->fd, v, cnt);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(L, "write");
      }
      /* Past what was written; a partial one goes on from where it stopped. */
      while (cnt > 0 && (size_t)n >= v->iov_len) {
        n -= (ssize_t)v->iov_len;
        v++;
        cnt--;
      }
      if (cnt > 0) {
        v->iov_base = (char *)v->iov_base + n;
        v->iov_len -= (size_t)n;
      }
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int file_sync(lua_State *L) {
  lpd_file_t *f = check_file(L);
  if (fdatasync(f->fd) != 0) return fail(L, "fdatasync");
  lua_pushboolean(L, 1);
  return 1;
}

/* An fdatasync in the thread pool.  It works on a dup of the descriptor,
 * so closing (or collecting) the File meanwhile cannot make the pool sync
 * whatever file reuses the number; the dup is closed when it is done.
 * Requests in flight are listed, so module shutdown finds them reachable. */
typedef struct lpd_fsync_s {
  uv_fs_t req;
  int fd;
  int cb_ref;
  struct lpd_fsync_s *next, *prev;
} lpd_fsync_t;

static lpd_fsync_t *fsyncs; /* in flight */

static void fsync_cb(uv_fs_t *req) {
  lpd_fsync_t *s = req->data;
  ssize_t rc = req->result;
  uv_fs_req_cleanup(req);
  close(s->fd);
  if (s->prev) s->prev->next = s->next;
  else fsyncs = s->next;
  if (s->next) s->next->prev = s->prev;
  int ref = s->cb_ref;
  free(s);
  /* During module shutdown, Lua is being closed: no callbacks then. */
  if (lpd_ctx == NULL || lpd_ctx->closing) return;
  lua_State *L = lpd_ctx->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "fdatasync: %s", uv_strerror((int)rc));
  } else {
    lua_pushboolean(L, 1);
    lua_pushnil(L);
  }
  lpd_call(L, 2);
}

/* sync_async(cb) -> true: fdatasyncs in libuv's thread pool, then calls
 * cb(true) from the loop, or cb(nil, message).  Covers what was written
 * before the call.  Returns nil and a message when it could not start (cb
 * is then not called). */
static int file_sync_async(lua_State *L) {
  lpd_file_t *f = check_file(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lpd_fsync_t *s = malloc(sizeof(*s));
  if (s == NULL) return luaL_error(L, "pivday: out of memory");
  s->fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
  if (s->fd < 0) {
    free(s);
    return fail(L, "dup");
  }
  lua_pushvalue(L, 2);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: before the start */
  s->req.data = s;
  int rc = uv_fs_fdatasync(&lpd_ctx->loop, &s->req, s->fd, fsync_cb);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
    close(s->fd);
    free(s);
    luaL_pushfail(L);
    lua_pushfstring(L, "fdatasync: %s", uv_strerror(rc));
    return 2;
  }
  s->prev = NULL;
  s->next = fsyncs;
  if (fsyncs) fsyncs->prev = s;
  fsyncs = s;
  lua_pushboolean(L, 1);
  return 1;
}

/* lock() -> true, or false when another process holds it. */
static int file_lock(lua_State *L) {
  lpd_file_t *f = check_file(L);
  if (flock(f->fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      lua_pushboolean(L, 0);
      return 1;
    }
    return fail(L, "flock");
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int file_size(lua_State *L) {
  lpd_file_t *f = check_file(L);
  struct stat st;
  if (fstat(f->fd, &st) != 0) return fail(L, "fstat");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 1;
}

static int file_close(lua_State *L) {
  lpd_file_t *f = luaL_checkudata(L, 1, LPD_FILE);
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  return 0;
}

/* sync_dir(path_of_a_file): makes a rename in its directory durable. */
static int l_sync_dir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  snprintf(buf, sizeof(buf), "%s", path);
  int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(L, "open directory");
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return fail(L, "fsync directory");
  lua_pushboolean(L, 1);
  return 1;
}

void lpd_file_open(lua_State *L) {
  static const luaL_Reg m[] = {{"write", file_write}, {"sync", file_sync},
                               {"sync_async", file_sync_async},
                               {"lock", file_lock},   {"size", file_size},
                               {"close", file_close}, {"__gc", file_close},
                               {"__close", file_close}, {NULL, NULL}};
  lpd_newclass(L, LPD_FILE, m);
  lua_pushcfunction(L, l_open_file);
  lua_setfield(L, -2, "open_file");
  lua_pushcfunction(L, l_sync_dir);
  lua_setfield(L, -2, "sync_dir");
}
