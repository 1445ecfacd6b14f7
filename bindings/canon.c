/* canon.c: what the webhook listener does to every delivery, in C.
 *
 *   core.json_decode(text) -> value | nil, message
 *   core.canon_key(event_type, timestamp, data) -> 16-byte string
 *   core.event_key(json_text) -> the same key, from the text | nil
 *
 * The listener decodes every body and derives its dedupe identity from it;
 * done through lua-cjson plus pivday.json's integer fix-up walk, plus a
 * canonical text built in Lua, that was ~85,000 instructions of a ~165,000
 * instruction event (callgrind, bench row 2).  Both are done here in one
 * pass each.
 *
 * json_decode gives what pivday.json.decode gives: objects and arrays as
 * tables (empty lists marked as pivday.json's lists when given its mark),
 * null as cjson's null (a NULL light userdata, == pivday.json.null),
 * every number through strtod like cjson, then integral values as integers.
 * It is RFC 8259 (leading zeros, lone surrogates, nesting deeper than 200
 * are errors) but for one thing cjson allows too: raw control characters
 * in strings, except NUL (cjson ends the text there) and CR and LF, which
 * are errors here (the journal keeps a body on one line, so the listener
 * turns them into spaces and decodes again, as it did before this decoder).  Never more lenient than cjson, so
 * what the listener accepts the journal's reader (pivday.json) reads back
 * the same.
 *
 * canon_key digests type, timestamp and data in canonical form (objects as
 * sets of members whatever their order, numbers by value so 7.5 == 7.50 and
 * 12 == 12.0, every item tagged with its type and length so the encoding is
 * injective) into 128 bits; event_key gives the same digest straight from
 * an event's JSON text, without making a Lua value (the listener's path:
 * the walk over the decoded tables was ~6,000 instructions per event).  A
 * digest rather than the canonical text: the dedupe window holds up to 100k
 * keys, and 16 bytes each instead of a copy of every body keeps the heap,
 * and with it the garbage collector's work, small.  The hash is ours: a
 * 128-bit multiply-xorshift over 64-bit words.  It is not cryptographic,
 * and needs not be: the URL is the credential, and a sender who has it can
 * post anything anyway; for honest traffic, two different events colliding
 * is a ~2^-100 matter.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lpd.h"

/* ------------------------------------------------------------ digest -- */

typedef unsigned __int128 u128;

/* The digest D of a JSON value, bottom-up, so it can be taken from the
 * text while it is read (lpd_event_key: no Lua value made) or from the
 * decoded tables (lpd_canon_key), with the same result:
 *   string   over its length and bytes, whole 64-bit words
 *   number   by value: integral ones as integers (12 == 12.0), the rest
 *            by their bits (7.5 == 7.50)
 *   list     its items' digests in order, and their count
 *   object   the set of its members: each (key, value) digested on its own
 *            and the digests added up, so member order does not matter
 * Each kind starts from its own seed, so the encoding is injective but for
 * collisions.  The mixing step is a 128-bit multiply-xorshift: not
 * cryptographic, and needs not be (the URL is the credential; for honest
 * traffic two different events colliding is a ~2^-100 matter). */

/* Two odd 64-bit halves with well spread bits (fractional digits of
 * sqrt(2) and sqrt(3)); any odd multiplier keeps the step a bijection. */
#define MUL ((((u128)0x6a09e667f3bcc908ULL) << 64) | 0xbb67ae8584caa73bULL)

enum { S_STR = 1, S_INT, S_FLT, S_TRUE, S_FALSE, S_NULL, S_LIST, S_OBJ, S_MEMBER, S_KEY };

static inline u128 mix(u128 h, uint64_t w) {
  h = (h ^ w) * MUL;
  return h ^ (h >> 71); /* high bits back down: the multiply only carries up */
}

static inline u128 mix2(u128 h, u128 d) {
  return mix(mix(h, (uint64_t)d), (uint64_t)(d >> 64));
}

static inline u128 fin(u128 h) {
  h ^= h >> 64;
  h *= MUL;
  h ^= h >> 67;
  h *= MUL;
  h ^= h >> 64;
  return h;
}

static u128 d_string(const char *p, size_t n) {
  u128 h = mix(S_STR, (uint64_t)n);
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = mix(h, w);
  }
  if (n > 0) {
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = mix(h, w);
  }
  return fin(h);
}

static u128 d_integer(lua_Integer i) { return fin(mix(S_INT, (uint64_t)i)); }

static u128 d_number(double v) {
  lua_Integer i;
  if (v == floor(v) && lua_numbertointeger(v, &i)) return d_integer(i);
  uint64_t bits;
  memcpy(&bits, &v, 8);
  return fin(mix(S_FLT, bits));
}

static u128 d_const(int seed) { return fin(mix((u128)seed, 0)); }

/* One member's share of its object's sum. */
static u128 d_member(u128 k, u128 v) { return fin(mix2(mix2(S_MEMBER, k), v)); }

static u128 d_object(u128 sum, uint64_t n) { return fin(mix2(mix(S_OBJ, n), sum)); }

static u128 d_key(u128 t, u128 ts, u128 data) {
  return fin(mix2(mix2(mix2(S_KEY, t), ts), data));
}

static void key_bytes(u128 h, unsigned char out[16]) {
  for (int i = 0; i < 16; i++) out[i] = (unsigned char)(h >> (8 * i));
}

/* ------------------------------------------------------------ decode -- */

#define JSON_MAX_DEPTH 200
/* Items of one container kept on the Lua stack before the table is made
 * (so it is made at its final size); beyond it they are flushed in. */
#define PENDING_MAX 32
/* A decoded top-level object gets this many spare hash slots: the listener
 * adds its own fields (id, received_at, raw, _holds) without a rehash.
 * Lua rounds a hash part up to a power of two, so an event's three members
 * and these five take 8 slots, one spare for a rarer field (_failed,
 * _recent_hold); 8 spare made it 16, twice the memory to clear and
 * collect on every event. */
#define TOP_SPARE 5

typedef struct {
  lua_State *L;
  const char *p, *end, *start;
  const char *err;
  int depth;
  int crlf;         /* a CR or LF was seen (whitespace: strings refuse them) */
  int list_mt;      /* stack index of the metatable for empty lists, or 0 */
  int strip;        /* drop members whose value is null (lpd_json_push_member) */
  int digest;       /* take each value's digest while decoding (lpd_json_push_keyed) */
  struct kcache *kc; /* recent keys and short values (see dec_cached) */
  int kc_idx;       /* ... and the stack index of their Lua strings */
  u128 last;        /* ... the digest of the value decoded last */
  u128 parts[3];    /* ... and of the top object's event_type, timestamp, data */
} dec_t;

static int dec_fail(dec_t *d, const char *msg) {
  if (d->err == NULL) d->err = msg;
  return 0;
}

static void skip_ws_slow(dec_t *d) {
  const char *p = d->p;
  while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
    if (*p != ' ' && *p != '\t') d->crlf = 1;
    p++;
  }
  d->p = p;
}

/* Between the tokens of compact JSON there is no whitespace at all: the
 * call is only made when there is some. */
static inline void skip_ws(dec_t *d) {
  if (d->p < d->end && (unsigned char)*d->p > ' ') return;
  skip_ws_slow(d);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_u4(dec_t *d, const char *p, unsigned *out) {
  if (d->end - p < 4) return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval((unsigned char)p[i]);
    if (h < 0) return 0;
    v = (v << 4) | (unsigned)h;
  }
  *out = v;
  return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  } else if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  } else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* At the opening quote; pushes the string. */
static int dec_string(dec_t *d) {
  const char *p = d->p + 1, *s = p;
  /* The common case, no escapes: pushed straight from the body.  Eight
   * bytes at a time while none is a quote, a backslash or a control
   * character (the bit tricks flag a byte that is zero after the XOR, or
   * below 0x20), then byte by byte. */
  const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  while (d->end - p >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w);
    if (hit & highs) break;
    p += 8;
  }
  while (p < d->end) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      lua_pushlstring(d->L, s, (size_t)(p - s));
      if (d->digest) d->last = d_string(s, (size_t)(p - s));
      d->p = p + 1;
      return 1;
    }
    if (c == '\\') break;
    if (c == '\n' || c == '\r' || c == 0) return dec_fail(d, "line break or NUL in string");
    p++;
  }
  if (p >= d->end) return dec_fail(d, "unterminated string");
  luaL_Buffer b;
  luaL_buffinit(d->L, &b);
  luaL_addlstring(&b, s, (size_t)(p - s));
  while (p < d->end) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      luaL_pushresult(&b);
      if (d->digest) {
        size_t n;
        const char *r = lua_tolstring(d->L, -1, &n);
        d->last = d_string(r, n);
      }
      d->p = p + 1;
      return 1;
    }
    if (c == '\n' || c == '\r' || c == 0) return dec_fail(d, "line break or NUL in string");
    if (c != '\\') {
      luaL_addchar(&b, (char)c);
      p++;
      continue;
    }
    if (p + 1 >= d->end) break;
    char e = p[1];
    p += 2;
    switch (e) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u': {
        unsigned cp, lo;
        if (!read_u4(d, p, &cp)) return dec_fail(d, "bad \\u escape");
        p += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return dec_fail(d, "lone low surrogate");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (d->end - p < 6 || p[0] != '\\' || p[1] != 'u' || !read_u4(d, p + 2, &lo) ||
              lo < 0xDC00 || lo > 0xDFFF)
            return dec_fail(d, "lone high surrogate");
          p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        char u[4];
        luaL_addlstring(&b, u, put_utf8(u, cp));
        break;
      }
      default:
        return dec_fail(d, "bad escape in string");
    }
  }
  return dec_fail(d, "unterminated string");
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Pushes the number at d->p: an integer when its value is integral (what
 * pivday.json.decode makes of cjson's floats). */
static int dec_number(dec_t *d) {
  const char *p = d->p, *s = p;
  int simple = 1;
  if (p < d->end && *p == '-') p++;
  if (p >= d->end || !is_digit(*p)) return dec_fail(d, "bad number");
  if (*p == '0') {
    p++;
    if (p < d->end && is_digit(*p)) return dec_fail(d, "leading zero in number");
  } else {
    while (p < d->end && is_digit(*p)) p++;
  }
  if (p < d->end && *p == '.') {
    simple = 0;
    p++;
    if (p >= d->end || !is_digit(*p)) return dec_fail(d, "bad number");
    while (p < d->end && is_digit(*p)) p++;
  }
  if (p < d->end && (*p == 'e' || *p == 'E')) {
    simple = 0;
    p++;
    if (p < d->end && (*p == '+' || *p == '-')) p++;
    if (p >= d->end || !is_digit(*p)) return dec_fail(d, "bad number");
    while (p < d->end && is_digit(*p)) p++;
  }
  size_t len = (size_t)(p - s);
  d->p = p;
  /* Up to 15 digits are exact as a double, so the direct integer is what
   * strtod-then-integer would give. */
  if (simple && len <= 15) {
    const char *q = s;
    int neg = *q == '-';
    if (neg) q++;
    lua_Integer v = 0;
    for (; q < p; q++) v = v * 10 + (*q - '0');
    lua_pushinteger(d->L, neg ? -v : v);
    return 1;
  }
  /* A decimal without exponent and at most 15 digits, such as a balance:
   * the digits as an integer m (exact) over 10^k (exact up to 10^22), one
   * IEEE division, which rounds the exact quotient correctly, as strtod
   * rounds the decimal: the same double, without strtod. */
  if (len <= 16) {
    const char *q = s;
    int neg = *q == '-', k = -1, digits = 0;
    if (neg) q++;
    int64_t m = 0;
    for (; q < p; q++) {
      if (*q == '.') {
        k = 0;
        continue;
      }
      if (*q == 'e' || *q == 'E') break;
      m = m * 10 + (*q - '0');
      digits++;
      if (k >= 0) k++;
    }
    if (q == p && k > 0 && digits <= 15) {
      static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                     1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
      double v = (double)m / pow10[k];
      if (neg) v = -v;
      lua_Integer i;
      if (v == floor(v) && lua_numbertointeger(v, &i))
        lua_pushinteger(d->L, i);
      else
        lua_pushnumber(d->L, (lua_Number)v);
      return 1;
    }
  }
  /* strtod needs the token alone (it would read "0x1" as hex). */
  char small[64];
  char *buf = small;
  if (len >= sizeof(small)) {
    buf = malloc(len + 1);
    if (buf == NULL) return dec_fail(d, "out of memory");
  }
  memcpy(buf, s, len);
  buf[len] = '\0';
  double v = strtod(buf, NULL);
  if (buf != small) free(buf);
  lua_Integer i;
  if (v == floor(v) && lua_numbertointeger(v, &i))
    lua_pushinteger(d->L, i);
  else
    lua_pushnumber(d->L, (lua_Number)v);
  return 1;
}

static int dec_value(dec_t *d);

/* Object keys repeat from one document to the next ("event_type",
 * "balance", ...), and so do many short values ("sms.received", "SE",
 * "completed", a number's id, the second a burst arrives in).  The Lua
 * string and the digest of recent ones are kept in small direct-mapped
 * caches, so a repeated one costs a compare and an array read instead of
 * Lua's interning (hash, chain walk, compare) and a digest: ~2,000
 * instructions of a webhook event's decode for the keys, ~1,000 more for
 * its values.  Keys and values have a cache each: values that never
 * repeat (a code, a message) must not push the keys out. */
#define KC_SLOTS 128 /* per cache */
#define KC_MAX 32
enum { KC_KEYS = 0, KC_VALUES = KC_SLOTS };

/* Plain 64-bit words: a userdata is only 8-byte aligned, too little for
 * a u128 member. */
typedef struct {
  uint64_t digest[2];
  uint64_t a, b;     /* the first and the last 8 bytes, as kc_words reads them */
  unsigned char len; /* 0: empty slot */
  char bytes[KC_MAX];
} kc_entry_t;

struct kcache {
  kc_entry_t e[2 * KC_SLOTS]; /* the keys' cache, then the values' */
};

static const char KC_REGKEY = 'k'; /* its address keys the registry */

/* Pushes the caches' string table and points d at them. */
static void kc_load(dec_t *d) {
  lua_State *L = d->L;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &KC_REGKEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    struct kcache *kc = lua_newuserdatauv(L, sizeof(*kc), 1);
    memset(kc, 0, sizeof(*kc));
    lua_createtable(L, 2 * KC_SLOTS, 0);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KC_REGKEY);
  }
  d->kc = lua_touserdata(L, -1);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
  d->kc_idx = lua_gettop(L);
}

/* The first 8 bytes (zero-padded) and the last 8 of s[0..n), n > 0: for
 * n <= 16 they are all of it. */
static inline void kc_words(const char *s, size_t n, uint64_t *a, uint64_t *b) {
  *a = 0;
  *b = 0;
  memcpy(a, s, n < 8 ? n : 8);
  if (n > 8) memcpy(b, s + n - 8, 8);
}

/* At a string's opening quote: pushes it (its digest in d->last when
 * digesting), from the cache starting at slot `cache` (KC_KEYS or
 * KC_VALUES) when it is there.  The closing quote is looked for in the
 * first KC_MAX bytes with memchr; a string that matches a cached one has
 * no escape or control character (none is ever cached), so only a miss is
 * checked byte by byte.  Longer or empty strings go to dec_string. */
static int dec_cached(dec_t *d, unsigned cache) {
  const char *s = d->p + 1;
  size_t max = (size_t)(d->end - s);
  if (max > KC_MAX) max = KC_MAX;
  const char *q = memchr(s, '"', max);
  if (q == NULL || q == s) return dec_string(d);
  size_t n = (size_t)(q - s);
  uint64_t a, b;
  kc_words(s, n, &a, &b);
  uint64_t h = ((a ^ n) * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL);
  unsigned slot = cache + (unsigned)(h >> 57); /* 0..127 in its cache */
  kc_entry_t *e = &d->kc->e[slot];
  if (e->len == n && e->a == a && e->b == b && (n <= 16 || memcmp(e->bytes, s, n) == 0)) {
    lua_rawgeti(d->L, d->kc_idx, (lua_Integer)slot + 1);
  } else {
    for (size_t i = 0; i < n; i++)
      if (s[i] == '\\' || (unsigned char)s[i] < 0x20) return dec_string(d);
    lua_pushlstring(d->L, s, n);
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->kc_idx, (lua_Integer)slot + 1);
    e->len = (unsigned char)n;
    e->a = a;
    e->b = b;
    memcpy(e->bytes, s, n);
    u128 dg = d_string(s, n);
    e->digest[0] = (uint64_t)dg;
    e->digest[1] = (uint64_t)(dg >> 64);
  }
  if (d->digest) d->last = ((u128)e->digest[1] << 64) | e->digest[0];
  d->p = q + 1;
  return 1;
}

/* Sets the pending items (pairs for objects) above `tbl` into it. */
static void flush_object(lua_State *L, int tbl) {
  int top = lua_gettop(L);
  for (int i = tbl + 1; i < top; i += 2) {
    lua_pushvalue(L, i);
    lua_pushvalue(L, i + 1);
    lua_rawset(L, tbl);
  }
  lua_settop(L, tbl);
}

static int dec_object(dec_t *d) {
  lua_State *L = d->L;
  int top = d->depth == 0;
  if (++d->depth > JSON_MAX_DEPTH) return dec_fail(d, "nested too deep");
  d->p++;
  int base = lua_gettop(L); /* the table goes at base + 1 once made */
  int made = 0, n = 0;
  skip_ws(d);
  u128 sum = 0;
  uint64_t members = 0;
  if (d->p < d->end && *d->p == '}') {
    d->p++;
    lua_createtable(L, 0, top ? TOP_SPARE : 0);
    d->depth--;
    if (d->digest) d->last = d_object(0, 0);
    return 1;
  }
  /* A slot for the table, made once the size is known (lua_replace, not
   * lua_insert: nothing is moved). */
  if (!lua_checkstack(L, 2)) return dec_fail(d, "too many items");
  lua_pushnil(L);
  for (;;) {
    skip_ws(d);
    if (d->p >= d->end || *d->p != '"') return dec_fail(d, "object key expected");
    if (!lua_checkstack(L, 4)) return dec_fail(d, "too many items");
    if (!dec_cached(d, KC_KEYS)) return 0;
    u128 kd = d->last;
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':') return dec_fail(d, "':' expected");
    d->p++;
    skip_ws(d);
    if (!dec_value(d)) return 0;
    if (d->digest) {
      sum += d_member(kd, d->last);
      members++;
      if (top) {
        /* The event's own parts, for its key (a repeated member: the
         * last, as in the table). */
        size_t kn;
        const char *k = lua_tolstring(L, -2, &kn);
        int which = kn == 10 && memcmp(k, "event_type", 10) == 0 ? 0
                  : kn == 9 && memcmp(k, "timestamp", 9) == 0 ? 1
                  : kn == 4 && memcmp(k, "data", 4) == 0 ? 2 : -1;
        if (which >= 0) d->parts[which] = d->last;
      }
    }
    if (d->strip && lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
      lua_pop(L, 2);              /* null: the member is left out */
      goto next;
    }
    n++;
    if (n == PENDING_MAX) {
      if (!made) {
        lua_createtable(L, 0, 2 * PENDING_MAX);
        lua_replace(L, base + 1);
        made = 1;
      }
      flush_object(L, base + 1);
      n = 0;
    }
  next:
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == '}') {
      d->p++;
      break;
    }
    return dec_fail(d, "',' or '}' expected");
  }
  if (!made) {
    lua_createtable(L, 0, n + (top ? TOP_SPARE : 0));
    lua_replace(L, base + 1);
  }
  flush_object(L, base + 1);
  d->depth--;
  if (d->digest) d->last = d_object(sum, members);
  return 1;
}

static int dec_array(dec_t *d) {
  lua_State *L = d->L;
  if (++d->depth > JSON_MAX_DEPTH) return dec_fail(d, "nested too deep");
  d->p++;
  int base = lua_gettop(L);
  int made = 0, n = 0;
  lua_Integer done = 0; /* items already in the table */
  skip_ws(d);
  u128 h = S_LIST;
  if (d->p < d->end && *d->p == ']') {
    d->p++;
    if (d->digest) d->last = fin(mix(h, 0));
    lua_createtable(L, 0, 0);
    /* An empty list would be an empty object to everyone else: marked the
     * way pivday.json.decode marks it, so it encodes as [] again. */
    if (d->list_mt) {
      lua_pushvalue(L, d->list_mt);
      lua_setmetatable(L, -2);
    }
    d->depth--;
    return 1;
  }
  if (!lua_checkstack(L, 2)) return dec_fail(d, "too many items");
  lua_pushnil(L); /* the table's slot, as in dec_object */
  for (;;) {
    skip_ws(d);
    if (!lua_checkstack(L, 3)) return dec_fail(d, "too many items");
    if (!dec_value(d)) return 0;
    if (d->digest) h = mix2(h, d->last);
    n++;
    if (n == PENDING_MAX) {
      if (!made) {
        lua_createtable(L, 2 * PENDING_MAX, 0);
        lua_replace(L, base + 1);
        made = 1;
      }
      for (int i = n; i >= 1; i--) lua_rawseti(L, base + 1, done + i);
      done += n;
      n = 0;
    }
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == ']') {
      d->p++;
      break;
    }
    return dec_fail(d, "',' or ']' expected");
  }
  if (!made) {
    lua_createtable(L, n, 0);
    lua_replace(L, base + 1);
  }
  for (int i = n; i >= 1; i--) lua_rawseti(L, base + 1, done + i);
  d->depth--;
  if (d->digest) d->last = fin(mix(h, (uint64_t)(done + n)));
  return 1;
}

static int lit(dec_t *d, const char *word, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
    return dec_fail(d, "unexpected character");
  d->p += n;
  return 1;
}

static int dec_value(dec_t *d) {
  if (d->p >= d->end) return dec_fail(d, "unexpected end");
  switch (*d->p) {
    case '{': return dec_object(d);
    case '[': return dec_array(d);
    case '"': return dec_cached(d, KC_VALUES);
    case 't':
      if (!lit(d, "true", 4)) return 0;
      lua_pushboolean(d->L, 1);
      if (d->digest) d->last = d_const(S_TRUE);
      return 1;
    case 'f':
      if (!lit(d, "false", 5)) return 0;
      lua_pushboolean(d->L, 0);
      if (d->digest) d->last = d_const(S_FALSE);
      return 1;
    case 'n':
      if (!lit(d, "null", 4)) return 0;
      lua_pushlightuserdata(d->L, NULL); /* cjson.null */
      if (d->digest) d->last = d_const(S_NULL);
      return 1;
    default:
      if (*d->p == '-' || is_digit(*d->p)) {
        if (!dec_number(d)) return 0;
        if (d->digest)
          d->last = lua_isinteger(d->L, -1) ? d_integer(lua_tointeger(d->L, -1))
                                            : d_number((double)lua_tonumber(d->L, -1));
        return 1;
      }
      return dec_fail(d, "unexpected character");
  }
}

/* Decodes s[0..len) onto the stack (see lpd.h), with the event key in
 * key[] when given (digests taken as the values are read, so the key costs
 * no second pass).  Returns 1 and pushes the value, or returns 0, pushes
 * nothing and sets *err / *pos. */
static int decode_text(lua_State *L, const char *s, size_t len, int list_mt, int *crlf,
                       const char **err, size_t *pos, unsigned char *key) {
  int top = lua_gettop(L);
  dec_t d = {.L = L, .p = s, .end = s + len, .start = s,
             .list_mt = list_mt ? lua_absindex(L, list_mt) : 0, .digest = key != NULL};
  d.parts[0] = d.parts[1] = d.parts[2] = d_const(S_NULL);
  kc_load(&d);
  skip_ws(&d);
  int ok = dec_value(&d);
  if (ok) {
    skip_ws(&d);
    if (d.p != d.end) ok = dec_fail(&d, "trailing characters");
  }
  if (crlf) *crlf = d.crlf;
  if (!ok) {
    lua_settop(L, top);
    if (err) *err = d.err ? d.err : "bad JSON";
    if (pos) *pos = (size_t)(d.p - d.start);
    return 0;
  }
  lua_remove(L, d.kc_idx);
  if (key) key_bytes(d_key(d.parts[0], d.parts[1], d.parts[2]), key);
  return 1;
}

int lpd_json_push(lua_State *L, const char *s, size_t len, int list_mt,
                  int *crlf, const char **err, size_t *pos) {
  return decode_text(L, s, len, list_mt, crlf, err, pos, NULL);
}

int lpd_json_push_keyed(lua_State *L, const char *s, size_t len, int list_mt,
                        int *crlf, const char **err, size_t *pos, unsigned char key[16]) {
  return decode_text(L, s, len, list_mt, crlf, err, pos, key);
}

/* Reads the object key at d->p (its opening quote) and tells which of
 * two names it is: 1 for `a`, 2 for `b`, 0 for neither.  Keys without
 * escapes are compared in place, without making a Lua string. */
static int key_which(dec_t *d, const char *a, size_t an, const char *b, size_t bn,
                     int *which) {
  const char *p = d->p + 1;
  const char *q = memchr(p, '"', (size_t)(d->end - p));
  const char *k;
  size_t kn;
  int pushed = 0;
  if (q != NULL && memchr(p, '\\', (size_t)(q - p)) == NULL) {
    for (const char *c = p; c < q; c++)
      if (*c == '\n' || *c == '\r' || *c == 0) return dec_fail(d, "line break or NUL in string");
    k = p;
    kn = (size_t)(q - p);
    d->p = q + 1;
  } else {
    if (!dec_string(d)) return 0;
    k = lua_tolstring(d->L, -1, &kn);
    pushed = 1;
  }
  *which = kn == an && memcmp(k, a, an) == 0 ? 1 : kn == bn && memcmp(k, b, bn) == 0 ? 2 : 0;
  if (pushed) lua_pop(d->L, 1);
  return 1;
}

/* Decodes s[0..len), an object, and pushes its member `member` when that
 * is an object or an array and the member `flag` is true: an API envelope
 * {"success": true, "data": {...}} gives its data, without a table for the
 * envelope.  Inside it, object members that are null are left out.
 * Returns 1 with the member pushed, or 0 with nothing pushed for anything
 * else (another shape, a false flag, text the decoder refuses): the caller
 * then decodes the whole text its usual way. */
int lpd_json_push_member(lua_State *L, const char *s, size_t len, int list_mt,
                         const char *flag, const char *member) {
  int top = lua_gettop(L);
  dec_t d = {.L = L, .p = s, .end = s + len, .start = s,
             .list_mt = list_mt ? lua_absindex(L, list_mt) : 0};
  size_t fn = strlen(flag), mn = strlen(member);
  int flag_true = 0, have = 0;
  kc_load(&d);
  skip_ws(&d);
  if (d.p >= d.end || *d.p != '{') goto fail;
  d.p++;
  d.depth = 1;
  skip_ws(&d);
  if (d.p < d.end && *d.p == '}') goto fail;
  for (;;) {
    int which;
    skip_ws(&d);
    if (d.p >= d.end || *d.p != '"') goto fail;
    if (!key_which(&d, member, mn, flag, fn, &which)) goto fail;
    int is_member = which == 1, is_flag = which == 2;
    skip_ws(&d);
    if (d.p >= d.end || *d.p != ':') goto fail;
    d.p++;
    skip_ws(&d);
    if (!lua_checkstack(L, 4)) goto fail;
    d.strip = is_member;
    if (!dec_value(&d)) goto fail;
    d.strip = 0;
    if (is_member) {
      if (have) lua_remove(L, -2); /* a repeated member: the last one wins */
      have = lua_type(L, -1) == LUA_TTABLE ? 1 : -1;
      if (have < 0) {
        lua_pop(L, 1);
        have = 0;
      }
    } else {
      if (is_flag) flag_true = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    skip_ws(&d);
    if (d.p < d.end && *d.p == ',') {
      d.p++;
      continue;
    }
    if (d.p < d.end && *d.p == '}') {
      d.p++;
      break;
    }
    goto fail;
  }
  skip_ws(&d);
  if (d.p != d.end || !flag_true || !have) goto fail;
  lua_remove(L, d.kc_idx);
  return 1;
fail:
  lua_settop(L, top);
  return 0;
}

/* core.json_decode(text [, list_mt]) -> value, crlf; or nil and a message.
 * Empty lists get the metatable list_mt (pass pivday.json's, as
 * getmetatable(json.array())), like pivday.json.decode gives them.  `crlf` is
 * true when the text holds a CR or LF, which can only be whitespace between
 * tokens here: the listener, which keeps bodies on one journal line, then
 * knows whether it must rewrite one without searching it again. */
static int l_json_decode(lua_State *L) {
  size_t len, pos;
  const char *s = luaL_checklstring(L, 1, &len), *err;
  int crlf;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (!lpd_json_push(L, s, len, lua_isnil(L, 2) ? 0 : 2, &crlf, &err, &pos)) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s at byte %d", err, (int)pos + 1);
    return 2;
  }
  lua_pushboolean(L, crlf);
  return 2;
}

/* -------------------------------------------------------------- hash -- */

/* ------------------------------------------------ digest of a table -- */

/* Whether a table is a JSON list: a first item, or pivday.json.array's
 * mark (the same test as dedupe.canonical). */
static int is_list(lua_State *L, int idx) {
  if (lua_rawgeti(L, idx, 1) != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  if (!lua_getmetatable(L, idx)) return 0;
  lua_getfield(L, -1, "__name");
  const char *name = lua_tostring(L, -1);
  int yes = name != NULL && strcmp(name, "pivday.json.array") == 0;
  lua_pop(L, 2);
  return yes;
}

static u128 d_value(lua_State *L, int idx, int depth) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *p = lua_tolstring(L, idx, &n);
      return d_string(p, n);
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return d_integer(lua_tointeger(L, idx));
      return d_number((double)lua_tonumber(L, idx));
    case LUA_TBOOLEAN: return d_const(lua_toboolean(L, idx) ? S_TRUE : S_FALSE);
    case LUA_TNIL: return d_const(S_NULL);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return d_const(S_NULL); /* json.null */
      break;
    case LUA_TTABLE: {
      if (depth > JSON_MAX_DEPTH) luaL_error(L, "canon_key: nested too deep");
      luaL_checkstack(L, 4, "canon_key");
      if (is_list(L, idx)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        u128 h = S_LIST;
        for (lua_Integer i = 1; i <= n; i++) {
          lua_rawgeti(L, idx, i);
          h = mix2(h, d_value(L, lua_gettop(L), depth + 1));
          lua_pop(L, 1);
        }
        return fin(mix(h, (uint64_t)n));
      }
      u128 sum = 0;
      uint64_t n = 0;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        sum += d_member(d_value(L, top - 1, depth + 1), d_value(L, top, depth + 1));
        n++;
        lua_pop(L, 1);
      }
      return d_object(sum, n);
    }
    default:
      break;
  }
  /* functions, userdata: by identity, as tostring() had them */
  return fin(mix((u128)0x70, (uint64_t)(uintptr_t)lua_topointer(L, idx)));
}

/* The 128-bit key of the three values at t, ts, data (see lpd.h). */
void lpd_canon_key(lua_State *L, int t, int ts, int data, unsigned char out[16]) {
  u128 a = d_value(L, lua_absindex(L, t), 0);
  u128 b = d_value(L, lua_absindex(L, ts), 0);
  u128 c = d_value(L, lua_absindex(L, data), 0);
  key_bytes(d_key(a, b, c), out);
}

/* ------------------------------------------------- digest of a text -- */

/* The same digests read straight from JSON text: what the listener does to
 * every delivery, without the table walk after the decode. */
typedef struct {
  const char *p, *end;
  char *buf;          /* unescaped strings (rare) */
  size_t cap;
  int depth;
} scan_t;

static int t_fail(scan_t *t) {
  t->p = t->end;
  return 0;
}

static void t_ws(scan_t *t) {
  while (t->p < t->end && (*t->p == ' ' || *t->p == '\n' || *t->p == '\r' || *t->p == '\t'))
    t->p++;
}

/* A string at t->p (its quote): its bytes, unescaped, in *s and *n. */
static int t_string(scan_t *t, const char **s, size_t *n) {
  const char *p = t->p + 1, *start = p;
  while (p < t->end && *p != '"' && *p != '\\') p++;
  if (p < t->end && *p == '"') {
    *s = start;
    *n = (size_t)(p - start);
    t->p = p + 1;
    return 1;
  }
  size_t len = 0;
  for (p = start; p < t->end && *p != '"';) {
    if (len + 4 > t->cap) {
      size_t cap = t->cap ? t->cap * 2 : 256;
      while (cap < len + 4) cap *= 2;
      char *nb = realloc(t->buf, cap);
      if (nb == NULL) return t_fail(t);
      t->buf = nb;
      t->cap = cap;
    }
    if (*p != '\\') {
      t->buf[len++] = *p++;
      continue;
    }
    if (p + 1 >= t->end) return t_fail(t);
    char e = p[1];
    p += 2;
    switch (e) {
      case '"': case '\\': case '/': t->buf[len++] = e; break;
      case 'b': t->buf[len++] = '\b'; break;
      case 'f': t->buf[len++] = '\f'; break;
      case 'n': t->buf[len++] = '\n'; break;
      case 'r': t->buf[len++] = '\r'; break;
      case 't': t->buf[len++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        dec_t d = {.p = p, .end = t->end, .start = p};
        if (!read_u4(&d, p, &cp)) return t_fail(t);
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && t->end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
            read_u4(&d, p + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
          p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        len += put_utf8(t->buf + len, cp);
        break;
      }
      default: return t_fail(t);
    }
  }
  if (p >= t->end) return t_fail(t);
  *s = t->buf;
  *n = len;
  t->p = p + 1;
  return 1;
}

static int t_value(scan_t *t, u128 *out);

static int t_number(scan_t *t, u128 *out) {
  const char *s = t->p, *p = s;
  int simple = 1;
  if (p < t->end && *p == '-') p++;
  while (p < t->end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' ||
                        *p == '+' || *p == '-')) {
    if (*p < '0' || *p > '9') simple = 0;
    p++;
  }
  size_t len = (size_t)(p - s);
  if (len == 0 || len >= 64) return t_fail(t);
  t->p = p;
  if (simple && len <= 15 + (*s == '-')) {
    lua_Integer v = 0;
    for (const char *q = *s == '-' ? s + 1 : s; q < p; q++) v = v * 10 + (*q - '0');
    *out = d_integer(*s == '-' ? -v : v);
    return 1;
  }
  char buf[64];
  memcpy(buf, s, len);
  buf[len] = '\0';
  *out = d_number(strtod(buf, NULL));
  return 1;
}

static int t_value(scan_t *t, u128 *out) {
  t_ws(t);
  if (t->p >= t->end) return t_fail(t);
  switch (*t->p) {
    case '"': {
      const char *s;
      size_t n;
      if (!t_string(t, &s, &n)) return 0;
      *out = d_string(s, n);
      return 1;
    }
    case '{': {
      u128 sum = 0;
      uint64_t n = 0;
      if (++t->depth > JSON_MAX_DEPTH) return t_fail(t);
      t->p++;
      t_ws(t);
      if (t->p < t->end && *t->p == '}') {
        t->p++;
      } else {
        for (;;) {
          const char *s;
          size_t sn;
          u128 v;
          t_ws(t);
          if (t->p >= t->end || *t->p != '"' || !t_string(t, &s, &sn)) return t_fail(t);
          u128 k = d_string(s, sn);
          t_ws(t);
          if (t->p >= t->end || *t->p != ':') return t_fail(t);
          t->p++;
          if (!t_value(t, &v)) return 0;
          sum += d_member(k, v);
          n++;
          t_ws(t);
          if (t->p < t->end && *t->p == ',') { t->p++; continue; }
          if (t->p < t->end && *t->p == '}') { t->p++; break; }
          return t_fail(t);
        }
      }
      t->depth--;
      *out = d_object(sum, n);
      return 1;
    }
    case '[': {
      u128 h = S_LIST;
      uint64_t n = 0;
      if (++t->depth > JSON_MAX_DEPTH) return t_fail(t);
      t->p++;
      t_ws(t);
      if (t->p < t->end && *t->p == ']') {
        t->p++;
      } else {
        for (;;) {
          u128 v;
          if (!t_value(t, &v)) return 0;
          h = mix2(h, v);
          n++;
          t_ws(t);
          if (t->p < t->end && *t->p == ',') { t->p++; continue; }
          if (t->p < t->end && *t->p == ']') { t->p++; break; }
          return t_fail(t);
        }
      }
      t->depth--;
      *out = fin(mix(h, n));
      return 1;
    }
    case 't':
      if (t->end - t->p < 4 || memcmp(t->p, "true", 4) != 0) return t_fail(t);
      t->p += 4;
      *out = d_const(S_TRUE);
      return 1;
    case 'f':
      if (t->end - t->p < 5 || memcmp(t->p, "false", 5) != 0) return t_fail(t);
      t->p += 5;
      *out = d_const(S_FALSE);
      return 1;
    case 'n':
      if (t->end - t->p < 4 || memcmp(t->p, "null", 4) != 0) return t_fail(t);
      t->p += 4;
      *out = d_const(S_NULL);
      return 1;
    default:
      if (*t->p == '-' || (*t->p >= '0' && *t->p <= '9')) return t_number(t, out);
      return t_fail(t);
  }
}

/* The key of the event in the JSON text s (see lpd.h). */
int lpd_event_key(const char *s, size_t len, unsigned char out[16]) {
  scan_t t = {s, s + len, NULL, 0, 0};
  u128 parts[3];
  int ok = 0;
  /* Members missing from the event count as null, as in a table. */
  parts[0] = parts[1] = parts[2] = d_const(S_NULL);
  t_ws(&t);
  if (t.p < t.end && *t.p == '{') {
    t.p++;
    t_ws(&t);
    if (t.p < t.end && *t.p == '}') {
      t.p++;
      ok = 1;
    } else {
      for (;;) {
        const char *k;
        size_t kn;
        u128 v;
        t_ws(&t);
        if (t.p >= t.end || *t.p != '"' || !t_string(&t, &k, &kn)) break;
        int which = kn == 10 && memcmp(k, "event_type", 10) == 0 ? 0
                  : kn == 9 && memcmp(k, "timestamp", 9) == 0 ? 1
                  : kn == 4 && memcmp(k, "data", 4) == 0 ? 2 : -1;
        t_ws(&t);
        if (t.p >= t.end || *t.p != ':') break;
        t.p++;
        if (!t_value(&t, &v)) break;
        if (which >= 0) parts[which] = v;  /* a repeated member: the last */
        t_ws(&t);
        if (t.p < t.end && *t.p == ',') { t.p++; continue; }
        if (t.p < t.end && *t.p == '}') { t.p++; ok = 1; }
        break;
      }
    }
  }
  if (ok) {
    t_ws(&t);
    ok = t.p == t.end;
  }
  free(t.buf);
  if (ok) key_bytes(d_key(parts[0], parts[1], parts[2]), out);
  return ok;
}

/* core.event_key(text) -> the 16-byte key of the JSON event text, or nil
 * when the text is not JSON. */
static int l_event_key(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char out[16];
  if (!lpd_event_key(s, len, out)) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, (const char *)out, 16);
  return 1;
}

/* core.canon_key(event_type, timestamp, data) -> a 16-byte string. */
static int l_canon_key(lua_State *L) {
  unsigned char out[16];
  lua_settop(L, 3);
  lpd_canon_key(L, 1, 2, 3, out);
  lua_pushlstring(L, (const char *)out, 16);
  return 1;
}

void lpd_canon_open(lua_State *L) {
  lua_pushcfunction(L, l_json_decode);
  lua_setfield(L, -2, "json_decode");
  lua_pushcfunction(L, l_canon_key);
  lua_setfield(L, -2, "canon_key");
  lua_pushcfunction(L, l_event_key);
  lua_setfield(L, -2, "event_key");
}
