/* dedupe.c: pivday.core.Window, the webhook listener's memory of recent
 * deliveries (see lua/pivday/webhooks/dedupe.lua for what a key is).
 *
 *   core.dedupe_window(seconds [, cap]) -> Window
 *   w:seen_or_add(key, now) -> boolean   w:seen(key, now) -> boolean
 *   w:add(key, now)   w:forget(key)   w:count() -> n
 *
 * Keys are the 16-byte digests core.canon_key makes; times are epoch
 * seconds (wall clock: the journal persists arrival times and the window is
 * rebuilt from them after a restart).  A key is seen while it arrived less
 * than `seconds` before `now`.  At most `cap` arrivals are remembered: a
 * flood evicts the oldest first, so memory stays bounded.
 *
 * In C because the listener asks on every delivery, from its C request path
 * (bindings/hook.c): a Lua table keyed by 16-byte strings cost a string
 * per event to intern and collect.
 *
 * Arrivals are a ring (the FIFO that expiry and the cap pop from), each
 * numbered by a 32-bit sequence whose low bits are its ring position.  The
 * key -> latest arrival map is an open-addressing table (linear probing,
 * backward-shift deletion, so no tombstones) of 8-byte slots: the arrival's
 * number and the key's first 32 bits, which are its hash (keys are uniform
 * digests) and place it without reading the ring.  A full window of 100,000
 * keys is a 2 MB table, not the 8 MB that slots holding the keys took: the
 * two random probes of a delivery (its key, and the key the cap evicts) hit
 * a cache far more often (bench row 2).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

#define DEFAULT_CAP 100000
#define MAX_CAP ((lua_Integer)1 << 30) /* sequence numbers are 32-bit */

typedef struct {
  uint32_t seq; /* the key's latest arrival */
  uint32_t tag; /* the key's hash; 0: a free slot */
} slot_t;

typedef struct {
  unsigned char key[LPD_KEY_LEN];
  int64_t at;
} arrival_t;

struct lpd_window_s {
  double seconds;
  size_t cap;         /* most arrivals remembered */
  slot_t *slots;      /* key -> latest arrival; a power of two, <= half full */
  size_t nslots, count;
  arrival_t *fifo;    /* ring of arrivals; arrival n is at n & (fifo_cap - 1) */
  size_t fifo_cap;    /* a power of two */
  uint32_t head;      /* the oldest arrival's number */
  size_t len;
};

/* The key's hash: its first 32 bits, 0 (a free slot's tag) made 1. */
static uint32_t key_hash(const unsigned char *key) {
  uint32_t h;
  memcpy(&h, key, 4);
  return h ? h : 1;
}

static arrival_t *arrival(const lpd_window_t *w, uint32_t seq) {
  return &w->fifo[seq & (w->fifo_cap - 1)];
}

/* Where key's probe run starts; w has slots. */
static size_t home_slot(const lpd_window_t *w, uint32_t h) {
  return h & (w->nslots - 1);
}

static slot_t *find(lpd_window_t *w, const unsigned char *key) {
  if (w->nslots == 0) return NULL;
  size_t mask = w->nslots - 1;
  uint32_t h = key_hash(key);
  for (size_t i = home_slot(w, h);; i = (i + 1) & mask) {
    slot_t *s = &w->slots[i];
    if (s->tag == 0) return NULL;
    if (s->tag == h && memcmp(arrival(w, s->seq)->key, key, LPD_KEY_LEN) == 0) return s;
  }
}

/* Removes slot s, moving later members of its probe run back into the
 * gap so lookups never stop early. */
static void remove_slot(lpd_window_t *w, slot_t *s) {
  size_t mask = w->nslots - 1;
  size_t gap = (size_t)(s - w->slots);
  for (size_t i = (gap + 1) & mask; w->slots[i].tag; i = (i + 1) & mask) {
    size_t home = w->slots[i].tag & mask;
    /* Movable when the gap lies between its home and i (cyclically). */
    if (((i - home) & mask) >= ((i - gap) & mask)) {
      w->slots[gap] = w->slots[i];
      gap = i;
    }
  }
  w->slots[gap].tag = 0;
  w->count--;
}

static int grow_slots(lpd_window_t *w) {
  size_t n = w->nslots ? w->nslots * 2 : 256;
  slot_t *ns = calloc(n, sizeof(*ns));
  if (ns == NULL) return 0;
  slot_t *old = w->slots;
  size_t oldn = w->nslots;
  w->slots = ns;
  w->nslots = n;
  for (size_t i = 0; i < oldn; i++) {
    if (old[i].tag == 0) continue;
    size_t j = old[i].tag & (n - 1);
    while (ns[j].tag) j = (j + 1) & (n - 1);
    ns[j] = old[i];
  }
  free(old);
  return 1;
}

/* Drops the oldest arrival; its key goes unless it arrived again since. */
static void pop_oldest(lpd_window_t *w) {
  slot_t *s = find(w, arrival(w, w->head)->key);
  if (s != NULL && s->seq == w->head) remove_slot(w, s);
  w->head++;
  w->len--;
}

/* Drops arrivals `seconds` or more before now. */
static void expire(lpd_window_t *w, int64_t now) {
  double limit = (double)now - w->seconds;
  while (w->len > 0 && (double)arrival(w, w->head)->at <= limit) pop_oldest(w);
}

/* Doubles the ring; an arrival keeps its number, so slots stay valid. */
static int grow_fifo(lpd_window_t *w) {
  size_t n = w->fifo_cap ? w->fifo_cap * 2 : 256;
  arrival_t *nf = malloc(n * sizeof(*nf));
  if (nf == NULL) return 0;
  for (size_t i = 0; i < w->len; i++) {
    uint32_t seq = w->head + (uint32_t)i;
    nf[seq & (n - 1)] = *arrival(w, seq);
  }
  free(w->fifo);
  w->fifo = nf;
  w->fifo_cap = n;
  return 1;
}

int lpd_window_seen(lpd_window_t *w, const unsigned char *key, int64_t now) {
  slot_t *s = find(w, key);
  return s != NULL && (double)arrival(w, s->seq)->at > (double)now - w->seconds;
}

int lpd_window_add(lpd_window_t *w, const unsigned char *key, int64_t now) {
  expire(w, now);
  if (w->len == w->cap) pop_oldest(w);
  if (w->len == w->fifo_cap && !grow_fifo(w)) return 0;
  uint32_t seq = w->head + (uint32_t)w->len;
  slot_t *s = find(w, key);
  if (s == NULL) {
    if ((w->count + 1) * 2 > w->nslots && !grow_slots(w)) return 0;
    size_t mask = w->nslots - 1;
    uint32_t h = key_hash(key);
    size_t i = h & mask;
    while (w->slots[i].tag) i = (i + 1) & mask;
    s = &w->slots[i];
    s->tag = h;
    w->count++;
  }
  s->seq = seq;
  arrival_t *a = arrival(w, seq);
  memcpy(a->key, key, LPD_KEY_LEN);
  a->at = now;
  w->len++;
  return 1;
}

/* The slots are a table of megabytes probed at random: a lookup that
 * waits for memory was the listener's costliest C function under load
 * (~3 % of its CPU, perf, bench row 2).  The request path asks for the
 * slots early, the oldest arrival's before decoding a body and the body's
 * own once its key is known, so the loads overlap other work. */
void lpd_window_prefetch(const lpd_window_t *w, const unsigned char *key) {
  if (w->nslots > 0) __builtin_prefetch(&w->slots[home_slot(w, key_hash(key))]);
}

void lpd_window_prefetch_oldest(const lpd_window_t *w) {
  if (w->len > 0) lpd_window_prefetch(w, arrival(w, w->head)->key);
}

static int seen_or_add(lpd_window_t *w, const unsigned char *key, int64_t now) {
  if (lpd_window_seen(w, key, now)) return 1;
  /* Out of memory: the key is not remembered, so a retry would be
   * delivered again, which handlers must tolerate anyway. */
  lpd_window_add(w, key, now);
  return 0;
}

void lpd_window_forget(lpd_window_t *w, const unsigned char *key) {
  slot_t *s = find(w, key);
  if (s != NULL) remove_slot(w, s);
}

/* ---------------------------------------------------------------- Lua -- */

static lpd_window_t *check_window(lua_State *L, int arg) {
  return lpd_checkbox(L, arg, LPD_WINDOW);
}

static const unsigned char *check_key(lua_State *L, int arg) {
  size_t n;
  const char *k = luaL_checklstring(L, arg, &n);
  if (n != LPD_KEY_LEN)
    luaL_argerror(L, arg, "a 16-byte key expected (pivday.webhooks.dedupe.key)");
  return (const unsigned char *)k;
}

static int64_t check_time(lua_State *L, int arg) {
  lua_Number t = luaL_checknumber(L, arg);
  return (int64_t)t;
}

/* dedupe_window(seconds [, cap]) -> Window */
static int l_window(lua_State *L) {
  lua_Number seconds = luaL_checknumber(L, 1);
  lua_Integer cap = luaL_optinteger(L, 2, DEFAULT_CAP);
  luaL_argcheck(L, seconds >= 0, 1, "seconds must be >= 0");
  luaL_argcheck(L, cap >= 1 && cap <= MAX_CAP, 2, "cap must be 1 to 2^30");
  void **box = lpd_newbox(L, LPD_WINDOW);
  lpd_window_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return luaL_error(L, "pivday: out of memory");
  w->seconds = seconds;
  w->cap = (size_t)cap;
  *box = w;
  return 1;
}

static int w_seen_or_add(lua_State *L) {
  lpd_window_t *w = check_window(L, 1);
  lua_pushboolean(L, seen_or_add(w, check_key(L, 2), check_time(L, 3)));
  return 1;
}

static int w_seen(lua_State *L) {
  lpd_window_t *w = check_window(L, 1);
  const unsigned char *key = check_key(L, 2);
  int64_t now = check_time(L, 3);
  int seen = lpd_window_seen(w, key, now);
  if (!seen) expire(w, now);
  lua_pushboolean(L, seen);
  return 1;
}

static int w_add(lua_State *L) {
  lpd_window_t *w = check_window(L, 1);
  if (!lpd_window_add(w, check_key(L, 2), check_time(L, 3)))
    return luaL_error(L, "pivday: out of memory");
  return 0;
}

static int w_forget(lua_State *L) {
  lpd_window_forget(check_window(L, 1), check_key(L, 2));
  return 0;
}

static int w_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_window(L, 1)->count);
  return 1;
}

static int w_gc(lua_State *L) {
  void **box = luaL_checkudata(L, 1, LPD_WINDOW);
  lpd_window_t *w = *box;
  if (w != NULL) {
    free(w->slots);
    free(w->fifo);
    free(w);
    *box = NULL;
  }
  return 0;
}

void lpd_dedupe_open(lua_State *L) {
  static const luaL_Reg m[] = {{"seen_or_add", w_seen_or_add},
                               {"seen", w_seen},
                               {"add", w_add},
                               {"forget", w_forget},
                               {"count", w_count},
                               {"__gc", w_gc},
                               {NULL, NULL}};
  lpd_newclass(L, LPD_WINDOW, m);
  lua_pushcfunction(L, l_window);
  lua_setfield(L, -2, "dedupe_window");
}
