/* state.c: the `pivday` host's Lua state, with a pooled allocator.
 *
 *   lpd_newstate() -> lua_State* (NULL when out of memory)
 *   lpd_closestate(L)   lua_close, then the pool's memory goes back
 *
 * What luaL_newstate makes (a panic handler, warnings off until "@on"),
 * but Lua's small blocks come from free lists kept per size class, not
 * from malloc.  Every webhook event and every client call makes a handful
 * of short-lived Lua objects (tables, their hash parts, strings), and
 * glibc's malloc + free of them was ~2,700 instructions of a ~31,600
 * instruction event (callgrind, bench row 2); a free-list pop or push is
 * a few.  Lua tells the allocator the old size of every block it frees or
 * resizes, so blocks carry no header: a pooled block is exactly its class.
 *
 * Blocks of up to POOL_MAX bytes, in classes POOL_STEP apart, are carved
 * from CHUNK-sized slabs and, once freed, kept for the next block of their
 * class; slabs go back only when the state closes (a burst's memory stays
 * for the next burst).  Larger blocks are malloc's.  One state per pool
 * and Lua states are single-threaded, so there is no locking.
 *
 * Under AddressSanitizer free blocks and unused slab space are poisoned
 * and a block is unpoisoned to the size asked, so a use after free or an
 * overflow past a block's size is still caught.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define POOL_STEP 16 /* malloc's alignment: every block stays aligned */
#define POOL_MAX 512 /* a table's hash part of 16 nodes is 384 */
#define NCLASS (POOL_MAX / POOL_STEP)
#define CHUNK ((size_t)64 * 1024)
#define CHUNK_HEAD POOL_STEP /* the slab list's link, keeping blocks aligned */

typedef struct block_s {
  struct block_s *next;
} block_t;

typedef struct {
  block_t *free[NCLASS]; /* class c holds blocks of (c + 1) * POOL_STEP bytes */
  char *bump, *end;      /* the current slab's unused part */
  void *slabs;           /* every slab, linked through its first word */
} pool_t;

/* The class of a block of n (1..POOL_MAX) bytes. */
static inline size_t class_of(size_t n) { return (n - 1) / POOL_STEP; }

/* A new slab; the old one's tail becomes a free block of the largest
 * class it holds. */
static int new_slab(pool_t *p) {
  size_t left = (size_t)(p->end - p->bump);
  char *s = malloc(CHUNK);
  if (s == NULL) return 0;
  if (left >= POOL_STEP) {
    size_t c = left / POOL_STEP - 1;
    block_t *b = (block_t *)p->bump;
    UNPOISON(b, sizeof(*b));
    b->next = p->free[c];
    POISON(b, (c + 1) * POOL_STEP);
    p->free[c] = b;
  }
  *(void **)s = p->slabs;
  p->slabs = s;
  p->bump = s + CHUNK_HEAD;
  p->end = s + CHUNK;
  POISON(p->bump, (size_t)(p->end - p->bump));
  return 1;
}

static void *pool_get(pool_t *p, size_t n) {
  size_t c = class_of(n);
  block_t *b = p->free[c];
  if (b != NULL) {
    UNPOISON(b, sizeof(*b));
    p->free[c] = b->next;
    POISON(b, sizeof(*b));
    UNPOISON(b, n);
    return b;
  }
  size_t size = (c + 1) * POOL_STEP;
  if ((size_t)(p->end - p->bump) < size && !new_slab(p)) return NULL;
  b = (block_t *)p->bump;
  p->bump += size;
  UNPOISON(b, n);
  return b;
}

static void pool_put(pool_t *p, void *ptr, size_t n) {
  size_t c = class_of(n);
  block_t *b = ptr;
  UNPOISON(b, sizeof(*b)); /* a block of fewer than 8 bytes */
  b->next = p->free[c];
  POISON(b, (c + 1) * POOL_STEP);
  p->free[c] = b;
}

/* lua_Alloc: osize is the block's size when ptr is not NULL (a type tag
 * otherwise), so a pooled block's class is known from it. */
static void *pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  pool_t *p = ud;
  if (nsize == 0) {
    if (ptr != NULL) {
      if (osize <= POOL_MAX) pool_put(p, ptr, osize);
      else free(ptr);
    }
    return NULL;
  }
  if (ptr == NULL) return nsize <= POOL_MAX ? pool_get(p, nsize) : malloc(nsize);
  if (osize > POOL_MAX) {
    if (nsize > POOL_MAX) return realloc(ptr, nsize);
    void *q = pool_get(p, nsize);
    if (q != NULL) {
      memcpy(q, ptr, nsize);
      free(ptr);
    }
    return q;
  }
  if (nsize <= POOL_MAX && class_of(nsize) == class_of(osize)) {
    POISON(ptr, (class_of(osize) + 1) * POOL_STEP);
    UNPOISON(ptr, nsize);
    return ptr;
  }
  void *q = nsize <= POOL_MAX ? pool_get(p, nsize) : malloc(nsize);
  if (q != NULL) {
    memcpy(q, ptr, osize < nsize ? osize : nsize);
    pool_put(p, ptr, osize);
  }
  return q;
}

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "pivday: PANIC: unprotected error in call to Lua API (%s)\n",
          msg ? msg : "error object is not a string");
  fflush(stderr);
  return 0; /* Lua aborts */
}

/* Warnings as the stand-alone lua's: off until "@on", "@off" mutes them
 * again, and a message given in pieces (tocont) is one line. */
static void warn_off(void *ud, const char *msg, int tocont);
static void warn_on(void *ud, const char *msg, int tocont);

static void warn_more(void *ud, const char *msg, int tocont) {
  fputs(msg, stderr);
  if (tocont) {
    lua_setwarnf(ud, warn_more, ud);
  } else {
    fputs("\n", stderr);
    lua_setwarnf(ud, warn_on, ud);
  }
}

static int warn_control(void *ud, const char *msg, int tocont) {
  if (tocont || msg[0] != '@') return 0;
  if (strcmp(msg, "@off") == 0) lua_setwarnf(ud, warn_off, ud);
  else if (strcmp(msg, "@on") == 0) lua_setwarnf(ud, warn_on, ud);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) {
  warn_control(ud, msg, tocont);
}

static void warn_on(void *ud, const char *msg, int tocont) {
  if (warn_control(ud, msg, tocont)) return;
  fputs("Lua warning: ", stderr);
  warn_more(ud, msg, tocont);
}

lua_State *lpd_newstate(void) {
  pool_t *p = calloc(1, sizeof(*p));
  if (p == NULL) return NULL;
  lua_State *L = lua_newstate(pool_alloc, p);
  if (L == NULL) {
    free(p);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  return L;
}

void lpd_closestate(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  lua_close(L);
  if (f != pool_alloc) return;
  pool_t *p = ud;
  for (void *s = p->slabs; s != NULL;) {
    void *next = *(void **)s;
    free(s);
    s = next;
  }
  free(p);
}
