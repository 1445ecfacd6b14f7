/* client.c: the HTTP client, libcurl's multi_socket interface on libuv.
 *
 * A client owns one CURLM, one uv_timer_t and one uv_idle_t, plus one
 * uv_poll_t per socket libcurl asks us to watch (a sock_t, created in the
 * socket callback and freed in its close callback).  A transfer owns its
 * easy handle (borrowed from the client's small free list), its header list,
 * its copy of the request body and the buffers the response is collected in.
 *
 * Control flow: libuv wakes us (poll, timer or idle), we call
 * curl_multi_socket_action, then drain curl_multi_info_read into the
 * client's `done` queue, and only then run the pd_response_cb callbacks.
 * libcurl's own callbacks (socket, timer, header, write, read, seek, prereq)
 * only do bookkeeping: they never call curl_multi_* nor user code.
 *
 * A transfer is on exactly one list at a time: `starting` (sent, not yet
 * in the multi), `active` (inside the multi), `cancelled` (out of the
 * multi, callback due on the next idle run) or `done` (finished, callback
 * due now).  It is freed right after its callback returns.
 *
 * Sends join the multi together, on the next idle run, not one by one:
 * libcurl starts every expired transfer whenever it is called, so a
 * transfer added from a response's callback would go out during the next
 * response's socket action, its request trickling to the server between
 * the other responses' callbacks.  Held until the loop turn's responses are
 * all handled, a turn's requests leave back to back: a server that drained
 * one wakes once for the burst instead of once per request (on this VM a
 * wake-up cost the sender ~15 us, more than pivday's own work per call).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "pd.h"

#define DEFAULT_MAX_CONNECTIONS 256
#define DEFAULT_MAX_BODY ((size_t)256 << 20)
/* Final response head, as collected.  libcurl already refuses single
 * headers over 100 KiB; this bounds the sum. */
#define MAX_HEAD ((size_t)1 << 20)
/* A Content-Length is only a promise: reserve at most this much up front
 * and let the buffer double beyond it. */
#define MAX_PREALLOC ((size_t)16 << 20)
/* Transfers kept for reuse with their easy handle.  curl_easy_reset is
 * cheaper than a new handle and keeps nothing of the previous request; a
 * handle that carried a plain GET skips even that (see transfer_put). */
#define POOL_MAX 32
/* Response buffers a pooled transfer keeps; bigger ones are freed. */
#define KEEP_BUF ((size_t)64 << 10)

/* ------------------------------------------------------------- lists -- */

typedef struct link_s {
  struct link_s *prev;
  struct link_s *next;
} link_t;

#define CONTAINER_OF(p, type, field)                                          \
  ((type *)(void *)((char *)(p) - offsetof(type, field)))

static void link_init(link_t *h) { h->prev = h->next = h; }

static int link_empty(const link_t *h) { return h->next == h; }

static void link_remove(link_t *l) {
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->prev = l->next = l;
}

static void link_append(link_t *h, link_t *l) {
  l->prev = h->prev;
  l->next = h;
  h->prev->next = l;
  h->prev = l;
}

/* Moves every element of `from` to the tail of `to`, keeping order. */
static void link_splice(link_t *to, link_t *from) {
  if (link_empty(from))
    return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  link_init(from);
}

/* ------------------------------------------------------------ buffer -- */

/* A growable byte buffer with a hard cap, always NUL-terminated once it
 * holds anything so bodies and headers can be read as C strings too. */
typedef struct {
  char *data;
  size_t len;
  size_t cap;
  size_t max;
} buf_t;

static int buf_reserve(buf_t *b, size_t need) {
  size_t n;
  char *p;

  if (need <= b->cap)
    return 0;
  if (need > b->max)
    return -1;
  n = b->cap ? b->cap : 1024;
  while (n < need)
    n = n > SIZE_MAX / 4 ? need : n * 2;
  if (n > b->max)
    n = b->max;
  p = realloc(b->data, n + 1);
  if (p == NULL)
    return -1;
  b->data = p;
  b->cap = n;
  return 0;
}

static int buf_append(buf_t *b, const char *p, size_t n) {
  if (n > b->max - b->len || buf_reserve(b, b->len + n) < 0)
    return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static void buf_free(buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ------------------------------------------------------------- types -- */

enum { T_STARTING, T_ACTIVE, T_QUEUED, T_DELIVERING };

struct pd_transfer_s {
  link_t link;
  pd_client_t *c;
  CURL *easy;
  pd_response_cb cb;
  void *arg;
  struct curl_slist *slist;
  struct curl_slist *cached; /* the pooled handle's last list (build_slist) */
  pd_headers_t *hs;          /* prepared headers, held while running */
  char *upload;              /* no_resend: our copy of the body */
  size_t upload_len;
  size_t upload_off;
  buf_t head;                /* "Name: value\n" lines of the last response */
  buf_t body;
  uint64_t start;            /* uv_hrtime() at send */
  CURLcode result;
  int state;
  int plain;                 /* a GET without body or `insecure` (transfer_put) */
  int configured;            /* `easy` has the options every transfer sets */
  int own_ptrs;              /* ... and the pointers to this transfer */
  long set_timeout;          /* the timeouts and header list `easy` has, */
  long set_connect;          /*   so a pooled transfer sets only changes */
  const struct curl_slist *set_headers;
  CURLU *uh;                 /* the last URL, parsed (set_url) */
  char *url;                 /* ... and as given; NULL: `easy` has no CURLU */
  int attempts;              /* times libcurl was about to send the request */
  int no_resend;
  int cancelled;
  int too_big;               /* the body or the head went over its cap */
  int refused_resend;        /* we stopped libcurl from sending it again */
  int sock_err;              /* a uv_poll_t for its socket failed (UV_E*) */
  char errbuf[CURL_ERROR_SIZE];
  char namebuf[24];
};

typedef struct {
  uv_poll_t poll;
  pd_client_t *c;
  curl_socket_t fd;
  link_t link;               /* on c->socks until uv_close is called */
} sock_t;

struct pd_client_s {
  uv_loop_t *loop;
  CURLM *multi;              /* NULL once closing */
  uv_timer_t timer;
  uv_idle_t idle;
  link_t starting;
  link_t active;
  link_t cancelled;
  link_t done;
  link_t socks;
  pd_transfer_t *pool[POOL_MAX]; /* finished transfers kept with their
                                    handle and buffers (transfer_put) */
  int npool;
  size_t pending;
  size_t max_body;
  int timeout_due;           /* libcurl asked for a 0 ms timeout */
  int no_env_proxy;          /* no proxy variable in the environment */
  int broken;                /* some active transfer has sock_err set */
  int nhandles;              /* uv handles not yet through their close cb */
  int closing;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static void on_poll(uv_poll_t *h, int status, int events);
static void on_idle(uv_idle_t *h);

/* ------------------------------------------------------ error names -- */

static const char *curl_code_name(CURLcode rc) {
  switch (rc) {
#define N(x) case CURLE_##x: return #x;
    N(OK)
    N(UNSUPPORTED_PROTOCOL)
    N(FAILED_INIT)
    N(URL_MALFORMAT)
    N(NOT_BUILT_IN)
    N(COULDNT_RESOLVE_PROXY)
    N(COULDNT_RESOLVE_HOST)
    N(COULDNT_CONNECT)
    N(WEIRD_SERVER_REPLY)
    N(REMOTE_ACCESS_DENIED)
    N(HTTP2)
    N(PARTIAL_FILE)
    N(HTTP_RETURNED_ERROR)
    N(WRITE_ERROR)
    N(UPLOAD_FAILED)
    N(READ_ERROR)
    N(OUT_OF_MEMORY)
    N(OPERATION_TIMEDOUT)
    N(RANGE_ERROR)
    N(HTTP_POST_ERROR)
    N(SSL_CONNECT_ERROR)
    N(FUNCTION_NOT_FOUND)
    N(ABORTED_BY_CALLBACK)
    N(BAD_FUNCTION_ARGUMENT)
    N(INTERFACE_FAILED)
    N(TOO_MANY_REDIRECTS)
    N(UNKNOWN_OPTION)
    N(GOT_NOTHING)
    N(SSL_ENGINE_NOTFOUND)
    N(SSL_ENGINE_SETFAILED)
    N(SEND_ERROR)
    N(RECV_ERROR)
    N(SSL_CERTPROBLEM)
    N(SSL_CIPHER)
    N(PEER_FAILED_VERIFICATION)
    N(BAD_CONTENT_ENCODING)
    N(FILESIZE_EXCEEDED)
    N(USE_SSL_FAILED)
    N(SEND_FAIL_REWIND)
    N(SSL_ENGINE_INITFAILED)
    N(SSL_CACERT_BADFILE)
    N(SSL_SHUTDOWN_FAILED)
    N(AGAIN)
    N(SSL_CRL_BADFILE)
    N(SSL_ISSUER_ERROR)
    N(CHUNK_FAILED)
    N(NO_CONNECTION_AVAILABLE)
    N(SSL_PINNEDPUBKEYNOTMATCH)
    N(SSL_INVALIDCERTSTATUS)
    N(HTTP2_STREAM)
    N(RECURSIVE_API_CALL)
    N(AUTH_ERROR)
    N(HTTP3)
    N(QUIC_CONNECT_ERROR)
    N(PROXY)
    N(SSL_CLIENTCERT)
    N(UNRECOVERABLE_POLL)
#undef N
  default:
    break;
  }
  return NULL;
}

/* ------------------------------------------------------ transfers -- */

struct pd_headers_s {
  int refs;
  struct curl_slist *plain;  /* the lines */
  struct curl_slist *body;   /* the same plus "Expect:" (see make_slist) */
};

void pd_headers_unref(pd_headers_t *hs) {
  if (hs == NULL || --hs->refs > 0)
    return;
  curl_slist_free_all(hs->plain);
  curl_slist_free_all(hs->body);
  free(hs);
}

static void transfer_destroy(pd_transfer_t *t) {
  if (t->easy != NULL)
    curl_easy_cleanup(t->easy);
  curl_url_cleanup(t->uh);
  free(t->url);
  curl_slist_free_all(t->slist);
  curl_slist_free_all(t->cached);
  pd_headers_unref(t->hs);
  free(t->upload);
  buf_free(&t->head);
  buf_free(&t->body);
  free(t);
}

/* A transfer to send with: a pooled one, or a new one with a new handle. */
static pd_transfer_t *transfer_get(pd_client_t *c) {
  pd_transfer_t *t;

  if (c->npool > 0)
    return c->pool[--c->npool];
  t = calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  t->easy = curl_easy_init();
  if (t->easy == NULL) {
    free(t);
    return NULL;
  }
  t->c = c;
  t->set_timeout = t->set_connect = -1;
  return t;
}

/* Takes a finished (or never started) transfer back.  It keeps its handle
 * and its buffers (emptied) for the next request.  A handle that carried a
 * plain GET goes back as it is: the next transfer sets every option a
 * plain GET sets (setup), and libcurl starts each transfer's own state
 * afresh (Curl_pretransfer: info, progress, auth wants), the documented way
 * to reuse a handle.  Any other transfer (a body, a custom method, HEAD,
 * insecure) leaves options a later one must not inherit: that handle is
 * reset, as a new one would be.  A plain GET's header list stays as
 * `cached`: the next request usually sends the same headers, and
 * build_slist then reuses the list instead of making it again. */
static void transfer_put(pd_transfer_t *t) {
  pd_client_t *c = t->c;
  pd_transfer_t keep;

  if (c->multi == NULL || c->npool == POOL_MAX) {
    transfer_destroy(t);
    return;
  }
  pd_headers_unref(t->hs);
  free(t->upload);
  if (t->plain) {
    curl_slist_free_all(t->cached);
    t->cached = t->slist;
  } else {
    curl_easy_reset(t->easy);
    curl_slist_free_all(t->cached);
    curl_slist_free_all(t->slist);
    t->cached = NULL;
    t->configured = t->own_ptrs = 0;
    t->set_timeout = t->set_connect = -1;
    t->set_headers = NULL;
    free(t->url);
    t->url = NULL;                       /* the reset dropped CURLOPT_CURLU */
  }
  if (t->head.cap > KEEP_BUF)
    buf_free(&t->head);
  if (t->body.cap > KEEP_BUF)
    buf_free(&t->body);
  t->head.len = t->body.len = 0;
  /* Everything else is per request. */
  keep = *t;
  memset(t, 0, sizeof(*t));
  t->c = c;
  t->easy = keep.easy;
  t->cached = keep.cached;
  t->head = keep.head;
  t->body = keep.body;
  t->configured = keep.configured;
  t->own_ptrs = keep.own_ptrs;
  t->set_timeout = keep.set_timeout;
  t->set_connect = keep.set_connect;
  t->set_headers = keep.set_headers;
  t->uh = keep.uh;
  t->url = keep.url;
  c->pool[c->npool++] = t;
}

/* ------------------------------------------------- libcurl callbacks -- */

/* Header callback, runs inside libcurl.  Each call is one line.  A status
 * line starts a new response (a 100 Continue, or the final one), so it drops
 * what was collected before: only the final response's headers remain. */
static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  pd_transfer_t *t = arg;
  size_t len = size * n;
  size_t e = len;
  size_t s = 0;

  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    t->head.len = 0;
    return len;
  }
  while (e > 0 && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ' ||
                   p[e - 1] == '\t'))
    e--;
  if (e == 0)
    return len;                          /* the blank line ending the head */
  if (p[0] == ' ' || p[0] == '\t') {
    /* Obsolete line folding: join onto the previous header with one SP. */
    if (t->head.len == 0)
      return len;
    while (s < e && (p[s] == ' ' || p[s] == '\t'))
      s++;
    t->head.len--;                       /* drop the previous '\n' */
    if (buf_append(&t->head, " ", 1) < 0)
      goto too_big;
  }
  if (buf_append(&t->head, p + s, e - s) < 0 ||
      buf_append(&t->head, "\n", 1) < 0)
    goto too_big;
  return len;

too_big:
  t->too_big = 1;
  return 0;                              /* CURLE_WRITE_ERROR */
}

/* Write callback, runs inside libcurl: appends to the capped body buffer.
 * Returning short makes libcurl abort with CURLE_WRITE_ERROR, which the
 * too_big flag turns into PD_ETOOBIG. */
static size_t on_write(char *p, size_t size, size_t n, void *arg) {
  pd_transfer_t *t = arg;
  size_t len = size * n;
  curl_off_t cl = -1;

  if (t->body.cap == 0 &&
      curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) ==
        CURLE_OK && cl > 0) {
    if ((uint64_t)cl > t->body.max) {
      t->too_big = 1;
      return 0;
    }
    buf_reserve(&t->body, (size_t)cl < MAX_PREALLOC ? (size_t)cl
                                                     : MAX_PREALLOC);
  }
  if (buf_append(&t->body, p, len) < 0) {
    t->too_big = 1;
    return 0;
  }
  return len;
}

/* Read callback for no_resend bodies, runs inside libcurl. */
static size_t on_read(char *p, size_t size, size_t n, void *arg) {
  pd_transfer_t *t = arg;
  size_t room = size * n;
  size_t left = t->upload_len - t->upload_off;

  if (room > left)
    room = left;
  memcpy(p, t->upload + t->upload_off, room);
  t->upload_off += room;
  return room;
}

/* Seek callback for no_resend bodies.  libcurl only seeks to send the body
 * again; saying we can't makes it fail the transfer instead. */
static int on_seek(void *arg, curl_off_t offset, int origin) {
  (void)arg;
  (void)offset;
  (void)origin;
  return CURL_SEEKFUNC_CANTSEEK;
}

/* Pre-request callback, runs inside libcurl once a connection is ready and
 * right before the request goes out.  It tells request_sent apart from
 * resolve/connect/TLS failures, and for no_resend it refuses a second
 * attempt: libcurl retries a request whose reused connection died without
 * calling any seek callback when there is no body to rewind (empty POST,
 * DELETE), so the read-callback trick alone would not stop that. */
static int on_prereq(void *arg, char *ip, char *local_ip, int port,
                     int local_port) {
  pd_transfer_t *t = arg;

  (void)ip;
  (void)local_ip;
  (void)port;
  (void)local_port;
  if (t->attempts++ > 0 && t->no_resend) {
    t->refused_resend = 1;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

static void sock_close_cb(uv_handle_t *h);

static void sock_close(sock_t *k) {
  link_remove(&k->link);
  uv_close((uv_handle_t *)&k->poll, sock_close_cb);
}

/* Marks the transfer behind `e` as failed; drain() finishes it once
 * curl_multi_socket_action has returned. */
static void sock_fail(pd_client_t *c, CURL *e, int err) {
  pd_transfer_t *t = NULL;

  if (e == NULL || curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t) !=
                     CURLE_OK || t == NULL || t->state != T_ACTIVE)
    return;
  if (t->sock_err == 0)
    t->sock_err = err;
  c->broken = 1;
}

/* Socket callback, runs inside libcurl (socket_action, remove_handle,
 * multi_cleanup).  CURL_POLL_REMOVE comes before libcurl closes the socket,
 * so the uv_poll_t stops watching the fd at once; libcurl may then open a
 * new socket with the same number, which gets a fresh sock_t because
 * libcurl forgets the old `sockp` with the old socket. */
static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *arg,
                          void *sockp) {
  pd_client_t *c = arg;
  sock_t *k = sockp;
  int events = 0;
  int rc;

  if (what == CURL_POLL_REMOVE) {
    if (k != NULL)
      sock_close(k);
    return 0;
  }
  if (c->closing)
    return 0;
  if (k == NULL) {
    k = malloc(sizeof(*k));
    if (k == NULL) {
      sock_fail(c, e, UV_ENOMEM);
      return 0;
    }
    rc = uv_poll_init_socket(c->loop, &k->poll, fd);
    if (rc == UV_EEXIST) {
      /* A stale watcher for a reused fd number: libcurl never sent its
       * REMOVE.  Close it and take the fd over. */
      link_t *l;
      for (l = c->socks.next; l != &c->socks; l = l->next) {
        sock_t *old = CONTAINER_OF(l, sock_t, link);
        if (old->fd == fd) {
          sock_close(old);
          break;
        }
      }
      rc = uv_poll_init_socket(c->loop, &k->poll, fd);
    }
    if (rc < 0) {
      free(k);
      sock_fail(c, e, rc);
      return 0;
    }
    k->c = c;
    k->fd = fd;
    k->poll.data = k;
    link_append(&c->socks, &k->link);
    c->nhandles++;
    curl_multi_assign(c->multi, fd, k);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  rc = uv_poll_start(&k->poll, events, on_poll);
  if (rc < 0)
    sock_fail(c, e, rc);
  return 0;
}

static void on_timer(uv_timer_t *h);

/* Timer callback, runs inside libcurl.  0 ms means "as soon as possible":
 * the idle handle runs it on the next loop iteration, because rounding it
 * to 1 ms caps one-at-a-time requests at ~800/s and a 0 ms uv_timer spins
 * on libuv 1.44.  -1 means no timeout. */
static int on_curl_timer(CURLM *m, long ms, void *arg) {
  pd_client_t *c = arg;

  (void)m;
  uv_timer_stop(&c->timer);
  c->timeout_due = 0;
  if (ms < 0 || c->closing)
    return 0;
  if (ms == 0) {
    c->timeout_due = 1;
    uv_idle_start(&c->idle, on_idle);
  } else {
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
  }
  return 0;
}

/* -------------------------------------------------- driving libcurl -- */

/* Moves finished transfers from the multi to `done`.  Runs right after
 * curl_multi_socket_action, outside any libcurl callback, and runs no user
 * code, so the whole batch is collected before any callback fires. */
static void drain(pd_client_t *c) {
  CURLMsg *m;
  int left;

  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result;
    pd_transfer_t *t = NULL;

    if (m->msg != CURLMSG_DONE)
      continue;
    /* m is invalid once its handle is removed: copy first. */
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
    curl_multi_remove_handle(c->multi, e);
    if (t == NULL)
      continue;
    t->result = rc;
    t->state = T_QUEUED;
    link_remove(&t->link);
    link_append(&c->done, &t->link);
  }

  if (c->broken) {
    link_t *l;
    link_t *next;

    c->broken = 0;
    for (l = c->active.next; l != &c->active; l = next) {
      pd_transfer_t *t = CONTAINER_OF(l, pd_transfer_t, link);
      next = l->next;
      if (t->sock_err == 0)
        continue;
      curl_multi_remove_handle(c->multi, t->easy);
      t->state = T_QUEUED;
      link_remove(&t->link);
      link_append(&c->done, &t->link);
    }
  }
}

static void act(pd_client_t *c, curl_socket_t fd, int flags) {
  int running;

  if (c->multi == NULL)
    return;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  drain(c);
}

int pd_head_next(const char **pos, const char *end, pd_header_t *h) {
  const char *p = *pos;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *colon, *ne, *v, *ve;

    if (nl == NULL)
      nl = end;                          /* an aborted head's last line */
    colon = memchr(p, ':', (size_t)(nl - p));
    if (colon != NULL && colon > p) {
      for (ne = colon; ne > p && (ne[-1] == ' ' || ne[-1] == '\t'); ne--)
        ;
      for (v = colon + 1; v < nl && (*v == ' ' || *v == '\t'); v++)
        ;
      for (ve = nl; ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'); ve--)
        ;
      h->name = p;
      h->name_len = (size_t)(ne - p);
      h->value = v;
      h->value_len = (size_t)(ve - v);
      *pos = nl < end ? nl + 1 : end;
      return 1;
    }
    p = nl < end ? nl + 1 : end;         /* not a header line: skipped */
  }
  *pos = end;
  return 0;
}

/* Conservative: nonzero unless we know the request never left.  on_prereq
 * runs once a connection is ready, just before the request is written, so
 * resolve, connect and TLS failures (and transfers still queued for a
 * connection) never reach it. */
static int was_sent(pd_transfer_t *t) {
  long reqsize = 0;

  if (t->attempts > 0 || t->upload_off > 0)
    return 1;
  if (curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &reqsize) ==
        CURLE_OK && reqsize > 0)
    return 1;
  return 0;
}

static void build_response(pd_transfer_t *t, pd_response_t *res) {
  const char *name;
  long status = 0;

  memset(res, 0, sizeof(*res));
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  res->status = status;
  res->request_sent = was_sent(t);
  res->body = t->body.len > 0 ? t->body.data : "";
  res->body_len = t->body.len;
  res->elapsed = (double)(uv_hrtime() - t->start) / 1e9;
  res->head = t->head.len > 0 ? t->head.data : "";
  res->head_len = t->head.len;

  if (t->cancelled) {
    res->err = PD_ECANCELED;
    res->err_name = "CANCELLED";
    res->err_msg = pd_strerror(PD_ECANCELED);
  } else if (t->sock_err != 0) {
    res->err = PD_ETRANSPORT;
    res->err_name = uv_err_name(t->sock_err);
    res->err_msg = uv_strerror(t->sock_err);
  } else if (t->too_big) {
    res->err = PD_ETOOBIG;
    res->err_name = "FILESIZE_EXCEEDED";
    res->err_msg = pd_strerror(PD_ETOOBIG);
  } else if (t->refused_resend ||
             (t->no_resend && t->result == CURLE_SEND_FAIL_REWIND)) {
    /* Either guard fired: on_prereq, or on_seek.  One name and message for
     * both, libcurl's own name for "could not rewind the body". */
    res->err = PD_ETRANSPORT;
    res->err_name = "SEND_FAIL_REWIND";
    res->err_msg = "connection lost after the request was sent; "
                   "not sending it again (no_resend)";
    res->request_sent = 1;
  } else if (t->result != CURLE_OK) {
    res->err = t->result == CURLE_OPERATION_TIMEDOUT ? PD_ETIMEDOUT
                                                     : PD_ETRANSPORT;
    name = curl_code_name(t->result);
    if (name == NULL) {
      snprintf(t->namebuf, sizeof(t->namebuf), "CURLE_%d", (int)t->result);
      name = t->namebuf;
    }
    res->err_name = name;
    res->err_msg = t->errbuf[0] != '\0' ? t->errbuf
                                        : curl_easy_strerror(t->result);
    if (t->result == CURLE_SEND_FAIL_REWIND)
      res->request_sent = 1;
  }
}

/* Runs the callbacks of everything in `done`, from the loop.  Callbacks may
 * send, cancel or close: cancellations land on `cancelled` (delivered by the
 * next idle run) and nothing else adds to `done` meanwhile, so this ends.
 * The client outlives this loop even when a callback closes it: it is only
 * freed from the last close callback. */
static void deliver(pd_client_t *c) {
  while (!link_empty(&c->done)) {
    pd_transfer_t *t = CONTAINER_OF(c->done.next, pd_transfer_t, link);
    pd_response_t res;

    link_remove(&t->link);
    t->state = T_DELIVERING;
    build_response(t, &res);
    c->pending--;
    t->cb(t, &res, t->arg);
    transfer_put(t);
  }
}

/* ------------------------------------------------------ uv callbacks -- */

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *k = h->data;
  pd_client_t *c = k->c;
  int flags = 0;

  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  act(c, k->fd, flags);
  deliver(c);
}

static void on_timer(uv_timer_t *h) {
  pd_client_t *c = h->data;

  act(c, CURL_SOCKET_TIMEOUT, 0);
  deliver(c);
}

/* Puts the transfers sent since the last idle run into the multi; each
 * asks for a 0 ms timeout, run by the caller.  One the multi refuses is
 * done, with the error. */
static void start_sent(pd_client_t *c) {
  while (!link_empty(&c->starting)) {
    pd_transfer_t *t = CONTAINER_OF(c->starting.next, pd_transfer_t, link);
    CURLMcode mrc = curl_multi_add_handle(c->multi, t->easy);

    link_remove(&t->link);
    if (mrc == CURLM_OK) {
      t->state = T_ACTIVE;
      link_append(&c->active, &t->link);
    } else {
      t->plain = 0;                      /* may be half started: reset it */
      t->result = mrc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
                                             : CURLE_FAILED_INIT;
      t->state = T_QUEUED;
      link_append(&c->done, &t->link);
    }
  }
}

/* Next-iteration work: transfers sent, a 0 ms libcurl timeout and
 * cancelled transfers.  It stops itself unless libcurl asked for another
 * 0 ms run (the adds ask for one, which the act here is); the callbacks
 * below may start it again for the next iteration. */
static void on_idle(uv_idle_t *h) {
  pd_client_t *c = h->data;

  if (c->multi != NULL)
    start_sent(c);
  if (c->timeout_due) {
    c->timeout_due = 0;
    act(c, CURL_SOCKET_TIMEOUT, 0);
  }
  if (!c->timeout_due)
    uv_idle_stop(h);
  link_splice(&c->done, &c->cancelled);
  deliver(c);
}

static void client_unref(pd_client_t *c) {
  void (*cb)(void *arg);
  void *arg;

  if (--c->nhandles > 0 || !c->closing)
    return;
  /* Every handle is closed: run what pd_client_close cancelled, then the
   * close callback, then free. */
  link_splice(&c->done, &c->cancelled);
  deliver(c);
  cb = c->close_cb;
  arg = c->close_arg;
  if (cb != NULL)
    cb(arg);
  free(c);
}

static void sock_close_cb(uv_handle_t *h) {
  sock_t *k = h->data;
  pd_client_t *c = k->c;

  free(k);
  client_unref(c);
}

static void handle_close_cb(uv_handle_t *h) { client_unref(h->data); }

/* ------------------------------------------------------- public API -- */

int pd_client_new(uv_loop_t *loop, const pd_client_opts_t *opts,
                  pd_client_t **out) {
  static int curl_ready;
  pd_client_t *c;
  long maxconn = DEFAULT_MAX_CONNECTIONS;

  if (loop == NULL || out == NULL)
    return PD_EINVAL;
  /* Lazily, so a process that never makes a request never pays for
   * OpenSSL's start-up. */
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return PD_ENOMEM;
    curl_ready = 1;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return PD_ENOMEM;
  c->multi = curl_multi_init();
  if (c->multi == NULL) {
    free(c);
    return PD_ENOMEM;
  }
  if (opts != NULL && opts->max_connections > 0)
    maxconn = opts->max_connections;
  c->max_body = opts != NULL && opts->max_response_body > 0
                  ? opts->max_response_body : DEFAULT_MAX_BODY;
  c->loop = loop;
  {
    /* The variables libcurl reads for http and https (it ignores
     * HTTP_PROXY on purpose). */
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                       "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"};
    size_t i;
    c->no_env_proxy = 1;
    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
      if (getenv(vars[i]) != NULL)
        c->no_env_proxy = 0;
  }
  link_init(&c->starting);
  link_init(&c->active);
  link_init(&c->cancelled);
  link_init(&c->done);
  link_init(&c->socks);

  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  /* Beyond the cap, transfers wait inside libcurl for a free connection. */
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxconn);
  /* Keep as many idle connections as we may open, so a burst's connections
   * are reused by the next one instead of being closed. */
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, maxconn);
  if (opts != NULL && opts->max_host_connections > 0)
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      opts->max_host_connections);

  /* Neither init can fail on unix. */
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_idle_init(loop, &c->idle);
  c->idle.data = c;
  c->nhandles = 2;
  *out = c;
  return 0;
}

/* RFC 9110 token characters: methods and header names. */
static int is_token(const char *s, size_t n) {
  size_t i;

  if (n == 0)
    return 0;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9'))
      continue;
    if (ch == '\0' || strchr("!#$%&'*+-.^_`|~", ch) == NULL)
      return 0;
  }
  return 1;
}

/* No CR, LF or NUL: a header value must not smuggle in another header. */
static int is_field_value(const char *s, size_t n) {
  size_t i;

  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
      return 0;
  return 1;
}

/* True when `l` holds exactly the lines build_slist would make for req's
 * headers, in order.  Called after they were checked: names and values hold
 * no NUL, so strncmp stops inside the list's line. */
static int slist_matches(const struct curl_slist *l, const pd_request_t *req) {
  size_t i;

  for (i = 0; i < req->nheaders; i++, l = l->next) {
    const pd_header_t *h = &req->headers[i];
    const char *d;

    if (l == NULL)
      return 0;
    d = l->data;
    if (strncmp(d, h->name, h->name_len) != 0)
      return 0;
    d += h->name_len;
    if (h->value_len == 0) {
      if (d[0] != ';' || d[1] != '\0')
        return 0;
    } else {
      if (d[0] != ':' || d[1] != ' ' ||
          strncmp(d + 2, h->value, h->value_len) != 0 ||
          d[2 + h->value_len] != '\0')
        return 0;
    }
  }
  return l == NULL;
}

/* Checks the headers; *has_expect tells whether one is Expect. */
static int check_headers(const pd_header_t *hs, size_t n, size_t *max,
                         int *has_expect) {
  size_t i;

  *max = 0;
  *has_expect = 0;
  for (i = 0; i < n; i++) {
    const pd_header_t *h = &hs[i];
    if (h->name == NULL || (h->value_len > 0 && h->value == NULL) ||
        !is_token(h->name, h->name_len) ||
        !is_field_value(h->value, h->value_len))
      return PD_EINVAL;
    if (h->name_len + h->value_len > *max)
      *max = h->name_len + h->value_len;
    if (h->name_len == 6 && strncasecmp(h->name, "Expect", 6) == 0)
      *has_expect = 1;
  }
  return 0;
}

/* Builds "Name: value" lines (checked) onto *out.  An empty value is
 * written "Name;", libcurl's way to send an empty header ("Name:" would
 * delete it).  "Expect:" turns off libcurl's 100-continue wait for bodies
 * unless the caller set one. */
static int make_slist(const pd_header_t *hs, size_t n, size_t max,
                      int add_expect, struct curl_slist **out) {
  size_t i;
  char *line = malloc(max + 3);

  if (line == NULL)
    return PD_ENOMEM;
  for (i = 0; i < n; i++) {
    const pd_header_t *h = &hs[i];
    struct curl_slist *l;

    memcpy(line, h->name, h->name_len);
    if (h->value_len == 0) {
      line[h->name_len] = ';';
      line[h->name_len + 1] = '\0';
    } else {
      line[h->name_len] = ':';
      line[h->name_len + 1] = ' ';
      memcpy(line + h->name_len + 2, h->value, h->value_len);
      line[h->name_len + 2 + h->value_len] = '\0';
    }
    l = curl_slist_append(*out, line);
    if (l == NULL) {
      free(line);
      return PD_ENOMEM;
    }
    *out = l;
  }
  free(line);
  if (add_expect) {
    struct curl_slist *l = curl_slist_append(*out, "Expect:");
    if (l == NULL)
      return PD_ENOMEM;
    *out = l;
  }
  return 0;
}

int pd_headers_new(const pd_header_t *h, size_t n, pd_headers_t **out) {
  size_t max;
  int has_expect, err;
  pd_headers_t *hs;

  if (h == NULL && n > 0)
    return PD_EINVAL;
  if ((err = check_headers(h, n, &max, &has_expect)) < 0)
    return err;
  hs = calloc(1, sizeof(*hs));
  if (hs == NULL)
    return PD_ENOMEM;
  hs->refs = 1;
  if ((err = make_slist(h, n, max, 0, &hs->plain)) < 0 ||
      (err = make_slist(h, n, max, !has_expect, &hs->body)) < 0) {
    pd_headers_unref(hs);
    return err;
  }
  *out = hs;
  return 0;
}

/* The request's header list as t->slist (or, prepared, the shared one's
 * reference). */
static int build_slist(pd_transfer_t *t, const pd_request_t *req,
                       int has_body) {
  size_t max;
  int has_expect, err;

  if (req->prepared != NULL) {
    t->hs = req->prepared;
    t->hs->refs++;
    return 0;
  }
  if ((err = check_headers(req->headers, req->nheaders, &max, &has_expect)) < 0)
    return err;
  /* The same lines as the handle's last list (a plain GET's, so without
   * "Expect:"): that list again. */
  if (t->cached != NULL && !has_body && slist_matches(t->cached, req)) {
    t->slist = t->cached;
    t->cached = NULL;
    return 0;
  }
  curl_slist_free_all(t->cached);
  t->cached = NULL;
  return make_slist(req->headers, req->nheaders, max, has_body && !has_expect,
                    &t->slist);
}

static long to_ms(double s) {
  double ms;

  if (!(s > 0))
    return 0;                            /* also NaN */
  ms = s * 1000.0;
  if (ms >= 1e12)
    return 1000000000000L;
  if ((double)(long)ms < ms)
    return (long)ms + 1;                 /* round up: never 0 for s > 0 */
  return (long)ms;
}

/* The URL, as a parsed handle (CURLOPT_CURLU): libcurl then does not parse
 * and rebuild the URL string for every transfer, which was ~12,000 of its
 * ~78,000 instructions per request.  A pooled transfer keeps the last URL
 * it sent parsed: the same URL again costs a strcmp.  A URL curl_url_set
 * refuses goes as CURLOPT_URL, for libcurl to refuse as it always did. */
static CURLcode set_url(pd_transfer_t *t, const char *url) {
  CURLcode rc;

  if (t->url != NULL && strcmp(t->url, url) == 0)
    return CURLE_OK;
  free(t->url);
  t->url = NULL;
  if (t->uh == NULL)
    t->uh = curl_url();
  if (t->uh != NULL && curl_url_set(t->uh, CURLUPART_URL, url, 0) == CURLUE_OK &&
      (t->url = strdup(url)) != NULL) {
    rc = curl_easy_setopt(t->easy, CURLOPT_CURLU, t->uh);
    if (rc != CURLE_OK) {
      free(t->url);
      t->url = NULL;
    }
    return rc;
  }
  rc = curl_easy_setopt(t->easy, CURLOPT_CURLU, (CURLU *)NULL);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(t->easy, CURLOPT_URL, url);
  return rc;
}

static int setup(pd_transfer_t *t, const pd_request_t *req,
                 const char *method) {
  CURL *e = t->easy;
  CURLcode rc = CURLE_OK;
  int is_get = strcmp(method, "GET") == 0;
  int is_head = strcmp(method, "HEAD") == 0;
  int is_post = strcmp(method, "POST") == 0;
  int has_body;
  int err;

  /* PUT and PATCH carry a body by definition: send Content-Length: 0
   * rather than nothing when it is empty. */
  has_body = !is_head && (req->body_len > 0 || is_post ||
                          strcmp(method, "PUT") == 0 ||
                          strcmp(method, "PATCH") == 0);
  err = build_slist(t, req, has_body);
  if (err < 0)
    return err;

#define SET(opt, val)                                                         \
  do {                                                                        \
    if (rc == CURLE_OK)                                                       \
      rc = curl_easy_setopt(e, opt, val);                                     \
  } while (0)

  /* Options that are the same for every transfer: once per handle (see
   * transfer_put); the pointers to the transfer: once per transfer and
   * handle (they stay together in the pool).  The rest is set for every
   * transfer unless the handle already has that value, even when it is the
   * default, because a reused handle holds the previous GET's values. */
  if (!t->configured) {
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    if (t->c->no_env_proxy) {
      /* What libcurl would find in the environment, said once: it looks
       * for five variables per transfer otherwise. */
      SET(CURLOPT_PROXY, "");
      SET(CURLOPT_NOPROXY, "");
    }
    if (rc == CURLE_OK)
      t->configured = 1;
  }
  if (!t->own_ptrs) {
    SET(CURLOPT_PRIVATE, (void *)t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_HEADERDATA, (void *)t);
    SET(CURLOPT_WRITEDATA, (void *)t);
    SET(CURLOPT_PREREQDATA, (void *)t);
    if (rc == CURLE_OK)
      t->own_ptrs = 1;
  }
  if (rc == CURLE_OK)
    rc = set_url(t, req->url);
  {
    const struct curl_slist *l = t->hs == NULL ? t->slist
                                 : has_body ? t->hs->body : t->hs->plain;
    long ms = to_ms(req->timeout), cms = to_ms(req->connect_timeout);
    /* A list at the same address as the handle's may be a new one: libcurl
     * reads it only when the transfer starts, so it reads the right one. */
    if (l != t->set_headers) {
      SET(CURLOPT_HTTPHEADER, l);        /* NULL: none */
      t->set_headers = rc == CURLE_OK ? l : NULL;
    }
    if (ms != t->set_timeout) {
      SET(CURLOPT_TIMEOUT_MS, ms);       /* 0: none */
      t->set_timeout = rc == CURLE_OK ? ms : -1;
    }
    if (cms != t->set_connect) {
      SET(CURLOPT_CONNECTTIMEOUT_MS, cms); /* 0: default */
      t->set_connect = rc == CURLE_OK ? cms : -1;
    }
  }
  /* Only a fully set-up plain GET may skip the reset (easy_put). */
  t->plain = rc == CURLE_OK && is_get && !has_body && !req->insecure;
  if (req->insecure) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }

  if (is_head) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (has_body && req->no_resend) {
    /* The body goes through a read callback that cannot seek: libcurl then
     * fails with SEND_FAIL_REWIND rather than send it on a new connection
     * when the reused one turns out dead.  on_prereq covers empty bodies,
     * where libcurl has nothing to rewind. */
    if (req->body_len > 0) {
      t->upload = malloc(req->body_len);
      if (t->upload == NULL)
        return PD_ENOMEM;
      memcpy(t->upload, req->body, req->body_len);
    }
    t->upload_len = req->body_len;
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    SET(CURLOPT_READFUNCTION, on_read);
    SET(CURLOPT_READDATA, (void *)t);
    SET(CURLOPT_SEEKFUNCTION, on_seek);
    SET(CURLOPT_SEEKDATA, (void *)t);
  } else if (has_body) {
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    SET(CURLOPT_COPYPOSTFIELDS, req->body_len > 0 ? req->body : "");
  }
  /* POSTFIELDS and POST make libcurl say POST; anything else is named. */
  if (!is_head && ((has_body && !is_post) || (!has_body && !is_get)))
    SET(CURLOPT_CUSTOMREQUEST, method);
#undef SET

  if (rc == CURLE_OUT_OF_MEMORY)
    return PD_ENOMEM;
  if (rc != CURLE_OK)
    return PD_EINVAL;
  return 0;
}

int pd_client_send(pd_client_t *c, const pd_request_t *req, pd_response_cb cb,
                   void *arg, pd_transfer_t **out) {
  const char *method;
  pd_transfer_t *t;
  size_t max_body;
  int err;

  if (c == NULL || req == NULL || req->url == NULL || cb == NULL)
    return PD_EINVAL;
  if (c->closing)
    return PD_ECLOSED;
  method = req->method != NULL ? req->method : "GET";
  if (!is_token(method, strlen(method)) ||
      (req->body == NULL && req->body_len > 0) ||
      (req->headers == NULL && req->nheaders > 0))
    return PD_EINVAL;

  if (req->prepared != NULL && req->nheaders > 0)
    return PD_EINVAL;
  t = transfer_get(c);
  if (t == NULL)
    return PD_ENOMEM;
  link_init(&t->link);
  t->cb = cb;
  t->arg = arg;
  t->no_resend = req->no_resend != 0;
  max_body = req->max_response_body > 0 ? req->max_response_body
                                        : c->max_body;
  t->body.max = max_body;
  t->head.max = MAX_HEAD;
  err = setup(t, req, method);
  if (err < 0) {
    transfer_put(t);
    return err;
  }
  t->start = uv_hrtime();
  /* The request starts on the next idle run (start_sent), never inside
   * this call. */
  t->state = T_STARTING;
  link_append(&c->starting, &t->link);
  uv_idle_start(&c->idle, on_idle);
  c->pending++;
  if (out != NULL)
    *out = t;
  return 0;
}

/* Moves a starting or active transfer to `cancelled`, out of the multi. */
static void withdraw(pd_transfer_t *t) {
  pd_client_t *c = t->c;

  if (t->state == T_ACTIVE)
    curl_multi_remove_handle(c->multi, t->easy);
  t->state = T_QUEUED;
  t->cancelled = 1;
  link_remove(&t->link);
  link_append(&c->cancelled, &t->link);
}

void pd_transfer_cancel(pd_transfer_t *t) {
  if (t == NULL || (t->state != T_ACTIVE && t->state != T_STARTING))
    return;                              /* finished: its result stands */
  withdraw(t);
  uv_idle_start(&t->c->idle, on_idle);
}

size_t pd_client_pending(pd_client_t *c) {
  return c != NULL ? c->pending : 0;
}

void pd_client_close(pd_client_t *c, void (*close_cb)(void *arg), void *arg) {
  if (c == NULL || c->closing)
    return;
  c->closing = 1;
  c->close_cb = close_cb;
  c->close_arg = arg;

  while (!link_empty(&c->active))
    withdraw(CONTAINER_OF(c->active.next, pd_transfer_t, link));
  while (!link_empty(&c->starting))
    withdraw(CONTAINER_OF(c->starting.next, pd_transfer_t, link));
  /* While the sock_t's still exist: the cleanup reports the sockets of
   * cached connections with CURL_POLL_REMOVE. */
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->npool > 0)
    transfer_destroy(c->pool[--c->npool]);
  while (!link_empty(&c->socks))
    sock_close(CONTAINER_OF(c->socks.next, sock_t, link));
  uv_close((uv_handle_t *)&c->timer, handle_close_cb);
  uv_close((uv_handle_t *)&c->idle, handle_close_cb);
  /* The cancelled callbacks and close_cb run from client_unref, once the
   * last close callback has run. */
}
