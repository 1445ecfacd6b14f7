/* server.c: the HTTP/1.1 server (pd_server_*, pd_http_*).
 *
 * Who owns what.  A pd_server_t owns its listening uv_tcp_t, one uv_idle_t
 * that resumes connections whose answer came later, a read buffer shared by
 * all its connections, and the list of its connections.  A connection
 * (pd_conn_t) owns a uv_tcp_t, one uv_timer_t for all its timeouts, an llhttp
 * parser, its buffers, and the single request it may have in flight: the
 * pd_http_req_t is embedded in the connection.  So a connection stays
 * allocated until both its handles are closed AND that request was answered
 * or dropped, and the server stays allocated until its handles are closed,
 * close_cb has run and every connection is freed.  Memory is only freed in
 * close callbacks, or in pd_http_respond/pd_http_drop once the handles are
 * already gone.
 *
 * Life of a request.  Bytes are read into the shared buffer and fed to
 * llhttp.  Its callbacks copy the head into a per-connection arena and the
 * body into a per-connection buffer, both capped; on_message_complete pauses
 * the parser.  Once llhttp_execute has returned, the request goes to the
 * owner's callback.  Bytes after it stay unparsed (in c->in) until the
 * request is answered, so answers leave in order.  An answer given inside the
 * callback lets the parse loop go on; one given later hands the connection
 * to the idle handle, which parses what is buffered on the next loop
 * iteration.  Either way the owner's callback never runs inside llhttp or
 * inside pd_http_respond, and a pipelined burst never recurses.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <llhttp.h>

#include "pd.h"

#define CONTAINER_OF(ptr, type, field)                                        \
  ((type *)((char *)(ptr) - offsetof(type, field)))

enum {
  READ_BUF_SIZE = 64 * 1024,
  /* Unparsed bytes a connection buffers before it stops reading. */
  IN_CAP = 64 * 1024,
  /* Queued answer bytes beyond which a connection stops parsing requests
   * (a client that pipelines but doesn't read). */
  WRITE_HIGH = 1024 * 1024,
  /* Buffers larger than this are freed between requests, so an idle
   * keep-alive connection does not sit on a big body. */
  KEEP_BYTES = 64 * 1024,
  /* After the last answer on a closing connection: how long to keep
   * reading (and discarding) so that closing with unread input doesn't
   * reset the connection before the client has read the answer. */
  LINGER_MS = 2000,
  /* Most body bytes reserved at once from a Content-Length. */
  BODY_PRESIZE = 256 * 1024
};

/* What the connection's one timer currently means. */
enum {
  T_NONE,    /* nothing: a request is with the owner */
  T_HEAD,    /* the head must be complete by then */
  T_BODY,    /* the body must keep arriving (activity checked on expiry) */
  T_IDLE,    /* keep-alive, waiting for the next request */
  T_WRITE,   /* closing, waiting for the last answer to be written */
  T_LINGER   /* closing, answer written, draining input */
};

/* Where a header span currently goes. */
enum { HS_NONE, HS_FIELD, HS_VALUE };

/* ------------------------------------------------------- capped buffer -- */

typedef struct {
  char *data;
  size_t len;
  size_t cap;
  size_t max;  /* len never exceeds it */
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
  size_t need;
  size_t cap;
  char *p;

  if (extra > b->max - b->len)
    return PD_ETOOBIG;
  need = b->len + extra;
  if (need <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  p = realloc(b->data, cap);
  if (p == NULL)
    return PD_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

static int buf_append(buf_t *b, const void *p, size_t n) {
  int r;

  if (n == 0)
    return 0;
  if ((r = buf_reserve(b, n)) != 0)
    return r;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* Gives back the memory of an empty buffer that grew beyond `keep`. */
static void buf_shrink(buf_t *b, size_t keep) {
  if (b->len == 0 && b->cap > keep) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
}

/* --------------------------------------------------------------- lists -- */

typedef struct link_s {
  struct link_s *prev;
  struct link_s *next;
} link_t;

static void link_init(link_t *l) { l->prev = l->next = l; }

static int link_empty(const link_t *l) { return l->next == l; }

static void link_insert(link_t *head, link_t *l) {
  l->prev = head->prev;
  l->next = head;
  head->prev->next = l;
  head->prev = l;
}

static void link_remove(link_t *l) {
  l->prev->next = l->next;
  l->next->prev = l->prev;
  link_init(l);
}

/* --------------------------------------------------------------- types -- */

/* Offsets into the head arena; they become pd_header_t pointers once the
 * arena stops growing. */
typedef struct {
  size_t name;
  size_t name_len;
  size_t value;
  size_t value_len;
} hdr_off_t;

/* An answer that could not be built in the connection's own output buffer
 * because that one is still being written, or a static text's write. */
typedef struct {
  uv_write_t req;
  char bytes[];
} wbuf_t;

struct pd_server_s {
  uv_tcp_t tcp;
  uv_idle_t idle;
  uv_loop_t *loop;
  pd_request_cb cb;
  void *arg;
  void (*close_cb)(void *arg);
  void *close_arg;
  size_t max_header;
  size_t max_body;
  uint64_t header_ms;
  uint64_t idle_ms;
  int max_conns;
  int port;
  int nconns;      /* open connections (not yet closing) */
  size_t nalloc;   /* connection structs not yet freed */
  int nhandles;    /* libuv handles not yet closed */
  int closing;
  int close_called;
  int close_done;
  link_t conns;    /* every allocated connection */
  link_t resume;   /* connections the idle handle will resume */
  time_t date_t;
  size_t date_len;
  char date[64];   /* "Date: ...\r\n", formatted at most once a second */
  char rbuf[READ_BUF_SIZE];
};

typedef struct {
  pd_http_req_t req;   /* the request in flight (req_out) */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;     /* writes out while out_busy */
  uv_shutdown_t sreq;
  llhttp_t parser;
  pd_server_t *server;
  link_t link;         /* in server->conns */
  link_t rlink;        /* in server->resume, or empty */
  buf_t in;            /* unparsed input, from in_off */
  size_t in_off;
  buf_t head;          /* target and header names/values, NUL-terminated */
  buf_t body;
  buf_t out;           /* the answer being built/written */
  hdr_off_t *offs;
  size_t noffs;
  size_t offs_cap;
  pd_header_t *hdrs;
  size_t hdrs_cap;
  size_t url_len;
  size_t head_bytes;   /* raw bytes of the current head */
  size_t trailer_bytes;
  size_t ext_bytes;    /* chunk extensions */
  const char *head_mark;  /* head bytes are counted up to here */
  uint64_t last_read;
  uint64_t deadline;   /* of timer_kind, in uv_now() milliseconds */
  uint64_t timer_due;  /* when the libuv timer fires, while it is active */
  size_t wq_mark;      /* write queue size when the timer was armed */
  int fail_status;     /* the answer to a parse error our callbacks caused */
  int timer_kind;
  int hdr_state;
  int handles_open;
  int peer_port;
  unsigned char in_head;
  unsigned char req_out;
  unsigned char in_dispatch;
  unsigned char closing;      /* uv_close started */
  unsigned char ending;       /* last answer queued, shutting down */
  unsigned char out_busy;
  unsigned char reading;
  unsigned char send_continue;
  unsigned char keep_alive;
  unsigned char upgrade;
  unsigned char http10;
  unsigned char head_method;
  unsigned char peer_eof;
  unsigned char shut_done;
  unsigned char write_blocked;
  char peer[64];
} pd_conn_t;

static void conn_close(pd_conn_t *c);
static void conn_end(pd_conn_t *c);
static void conn_fail(pd_conn_t *c, int status);
static void on_timer(uv_timer_t *t);
static void conn_schedule(pd_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_idle(uv_idle_t *h);

static const char continue_text[] = "HTTP/1.1 100 Continue\r\n\r\n";
static const char reject_text[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Length: 0\r\n"
    "Connection: close\r\n"
    "\r\n";

/* -------------------------------------------------------------- server -- */

/* Frees the server once everything is closed.  close_done is set only after
 * close_cb returned, so a request answered from inside close_cb does not
 * free the server under our feet. */
static void server_maybe_done(pd_server_t *s) {
  if (!s->closing)
    return;
  if (s->nhandles == 0 && !s->close_called) {
    s->close_called = 1;
    if (s->close_cb != NULL)
      s->close_cb(s->close_arg);
    s->close_done = 1;
  }
  if (s->close_done && s->nalloc == 0)
    free(s);
}

/* Close callback of the listener and of the idle handle. */
static void on_server_handle_close(uv_handle_t *h) {
  pd_server_t *s = h->data;

  s->nhandles--;
  server_maybe_done(s);
}

static void server_date(pd_server_t *s) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                  "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
                                     "May", "Jun", "Jul", "Aug",
                                     "Sep", "Oct", "Nov", "Dec"};
  time_t t = time(NULL);
  struct tm tm;
  int n;

  if (t == s->date_t && s->date_len > 0)
    return;
  /* By hand rather than strftime: %a and %b follow the locale, which a host
   * program may have set. */
  gmtime_r(&t, &tm);
  n = snprintf(s->date, sizeof(s->date),
               "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
               days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
               tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  s->date_len = n > 0 && (size_t)n < sizeof(s->date) ? (size_t)n : 0;
  s->date_t = t;
}

/* ----------------------------------------------------------- responses -- */

static const char *status_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 421: return "Misdirected Request";
  case 422: return "Unprocessable Content";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 451: return "Unavailable For Legal Reasons";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  }
  return "";  /* the reason phrase may be empty; the space before it stays */
}

/* Byte classes for checking an owner's headers: 1 = tchar (RFC 9110:
 * ALPHA, DIGIT, "!#$%&'*+-.^_`|~"), 2 = NUL, LF or CR, which a value must
 * not carry. */
static const unsigned char byte_class[256] = {
  2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
  0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* An owner's header must not smuggle a line break into the answer. */
static int header_valid(const pd_header_t *h) {
  size_t i;

  if (h->name == NULL || h->name_len == 0 ||
      (h->value == NULL && h->value_len > 0))
    return 0;
  for (i = 0; i < h->name_len; i++)
    if (!(byte_class[(unsigned char)h->name[i]] & 1))
      return 0;
  for (i = 0; i < h->value_len; i++)
    if (byte_class[(unsigned char)h->value[i]] & 2)
      return 0;
  return 1;
}

enum { H_KEEP, H_DATE, H_CONNECTION, H_FRAMING };

/* Which owner headers core replaces: framing is always ours, Connection is
 * ours too (an owner's "close" is honoured). */
static int header_kind(const pd_header_t *h) {
  int first = h->name[0] | 0x20;

  if (first != 'd' && first != 'c' && first != 't')
    return H_KEEP;
  switch (h->name_len) {
  case 4:
    if (strncasecmp(h->name, "date", 4) == 0)
      return H_DATE;
    break;
  case 10:
    if (strncasecmp(h->name, "connection", 10) == 0)
      return H_CONNECTION;
    break;
  case 14:
    if (strncasecmp(h->name, "content-length", 14) == 0)
      return H_FRAMING;
    break;
  case 17:
    if (strncasecmp(h->name, "transfer-encoding", 17) == 0)
      return H_FRAMING;
    break;
  }
  return H_KEEP;
}

/* Whether a comma-separated list holds `token` (case-insensitive). */
static int has_token(const char *v, size_t len, const char *token) {
  size_t tlen = strlen(token);
  size_t i = 0;
  size_t start;
  size_t end;

  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    start = i;
    while (i < len && v[i] != ',')
      i++;
    end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
      end--;
    if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0)
      return 1;
  }
  return 0;
}

static char *put(char *p, const void *src, size_t n) {
  memcpy(p, src, n);
  return p + n;
}

static char *put_size(char *p, size_t v) {
  char tmp[24];
  size_t n = 0;

  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

/* Write callback of the connection's own buffer and of wbuf_t writes.  Runs
 * from the loop (also with UV_ECANCELED while the handle closes, before its
 * close callback, so the connection is still allocated). */
static void on_write(uv_write_t *req, int status) {
  pd_conn_t *c = req->handle->data;

  if (req == &c->wreq) {
    c->out_busy = 0;
    c->out.len = 0;
    buf_shrink(&c->out, KEEP_BYTES);
  } else {
    free(CONTAINER_OF(req, wbuf_t, req));
  }
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->write_blocked &&
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= WRITE_HIGH) {
    c->write_blocked = 0;
    /* Parsing stopped because of the queue: pick it up from the loop. */
    conn_schedule(c);
  }
}

static int answer_valid(int status, const pd_header_t *h, size_t n,
                        const char *body, size_t body_len) {
  size_t i;

  if (status < 200 || status > 999 || (n > 0 && h == NULL) ||
      (body_len > 0 && body == NULL) || body_len > SIZE_MAX / 2)
    return 0;
  for (i = 0; i < n; i++)
    if (!header_valid(&h[i]))
      return 0;
  return 1;
}

enum { SEND_OWN, SEND_WBUF, SEND_STATIC };

/* Writes one buffer: first straight to the socket (the common case, when
 * nothing is queued, needs no write request at all), the rest through
 * uv_write.  `kind` says who owns data: c->out, wb->bytes, or a static
 * text.  Returns 0, or PD_ECLOSED after closing the connection. */
static int conn_send(pd_conn_t *c, const char *data, size_t len, int kind,
                     wbuf_t *wb) {
  uv_stream_t *st = (uv_stream_t *)&c->tcp;
  uv_write_t *req;
  uv_buf_t b;
  int n;

  /* Not uv_buf_init: its length is an unsigned int. */
  b.base = (char *)data;
  b.len = len;
  n = uv_try_write(st, &b, 1);
  if (n == UV_EAGAIN || n == UV_ENOSYS)
    n = 0;
  if (n < 0)
    goto fail;
  if ((size_t)n == len) {
    if (kind == SEND_OWN) {
      c->out.len = 0;
      buf_shrink(&c->out, KEEP_BYTES);
    }
    free(wb);
    return 0;
  }
  if (kind == SEND_STATIC) {
    wb = malloc(sizeof(*wb));
    if (wb == NULL)
      goto fail;
  }
  if (kind == SEND_OWN) {
    req = &c->wreq;
    c->out_busy = 1;
  } else {
    req = &wb->req;
  }
  b.base = (char *)data + n;
  b.len = len - (size_t)n;
  if (uv_write(req, st, &b, 1, on_write) != 0) {
    if (kind == SEND_OWN) {
      c->out_busy = 0;
      c->out.len = 0;
    }
    goto fail;
  }
  return 0;

fail:
  if (kind != SEND_OWN)
    free(wb);
  conn_close(c);
  return PD_ECLOSED;
}

/* Builds and sends an answer: status line, the owner's headers minus the
 * ones core owns, Date when absent, Content-Length, Connection.  Arguments
 * that would make a broken or smuggling answer are replaced by a bare 500
 * and PD_EINVAL is returned.  *close_after comes in as what the request
 * allows and goes out as what was announced. */
static int conn_answer(pd_conn_t *c, int status, const pd_header_t *h,
                       size_t n, const char *body, size_t body_len,
                       int *close_after) {
  pd_server_t *s = c->server;
  const char *reason;
  size_t reason_len;
  size_t need;
  size_t i;
  int rc = 0;
  int kind;
  int has_date = 0;
  int with_len = 1;
  int with_body = 1;
  int keep_alive_header = 0;
  wbuf_t *wb = NULL;
  char *dst;
  char *p;

  if (!answer_valid(status, h, n, body, body_len)) {
    rc = PD_EINVAL;
    status = 500;
    h = NULL;
    n = 0;
    body = NULL;
    body_len = 0;
  }

  if (status == 204 || status == 304) {
    with_len = 0;
    with_body = 0;
  } else if (c->head_method) {
    with_body = 0;  /* Content-Length still tells what a GET would get */
  }
  reason = status_reason(status);
  reason_len = strlen(reason);
  need = 9 + 3 + 1 + reason_len + 2;
  for (i = 0; i < n; i++) {
    switch (header_kind(&h[i])) {
    case H_CONNECTION:
      if (has_token(h[i].value, h[i].value_len, "close"))
        *close_after = 1;
      continue;
    case H_FRAMING:
      continue;
    case H_DATE:
      has_date = 1;
      break;
    }
    need += h[i].name_len + 2 + h[i].value_len + 2;
  }
  if (!has_date) {
    server_date(s);
    need += s->date_len;
  }
  if (with_len)
    need += 16 + 20 + 2;
  if (*close_after)
    need += sizeof("Connection: close\r\n") - 1;
  else if (c->http10)
    keep_alive_header = 1;  /* a 1.0 client assumes close otherwise */
  if (keep_alive_header)
    need += sizeof("Connection: keep-alive\r\n") - 1;
  need += 2;
  if (with_body)
    need += body_len;

  if (!c->out_busy) {
    c->out.len = 0;
    if (buf_reserve(&c->out, need) != 0) {
      conn_close(c);
      return PD_ENOMEM;
    }
    dst = c->out.data;
    kind = SEND_OWN;
  } else {
    wb = malloc(sizeof(*wb) + need);
    if (wb == NULL) {
      conn_close(c);
      return PD_ENOMEM;
    }
    dst = wb->bytes;
    kind = SEND_WBUF;
  }

  p = put(dst, "HTTP/1.1 ", 9);
  *p++ = (char)('0' + status / 100);
  *p++ = (char)('0' + status / 10 % 10);
  *p++ = (char)('0' + status % 10);
  *p++ = ' ';
  p = put(p, reason, reason_len);
  p = put(p, "\r\n", 2);
  for (i = 0; i < n; i++) {
    int k = header_kind(&h[i]);
    if (k == H_CONNECTION || k == H_FRAMING)
      continue;
    p = put(p, h[i].name, h[i].name_len);
    p = put(p, ": ", 2);
    if (h[i].value_len > 0)
      p = put(p, h[i].value, h[i].value_len);
    p = put(p, "\r\n", 2);
  }
  if (!has_date)
    p = put(p, s->date, s->date_len);
  if (with_len) {
    p = put(p, "Content-Length: ", 16);
    p = put_size(p, body_len);
    p = put(p, "\r\n", 2);
  }
  if (*close_after)
    p = put(p, "Connection: close\r\n", 19);
  else if (keep_alive_header)
    p = put(p, "Connection: keep-alive\r\n", 24);
  p = put(p, "\r\n", 2);
  if (with_body && body_len > 0)
    p = put(p, body, body_len);
  assert((size_t)(p - dst) <= need);

  if (kind == SEND_OWN)
    c->out.len = (size_t)(p - dst);
  if (conn_send(c, dst, (size_t)(p - dst), kind, wb) != 0)
    return PD_ECLOSED;
  return rc;
}

/* ------------------------------------------------------------- timers -- */

static void timer_arm(pd_conn_t *c, uint64_t now, uint64_t ms) {
  c->timer_due = now + ms;
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Gives the connection's timer a new meaning and deadline.  Restarting a
 * libuv timer costs more than the rest of a small request (two heap
 * updates), and a keep-alive request moves the deadline twice, so the
 * timer is restarted only when the new deadline comes sooner than the armed
 * one; when it fires early, on_timer arms it again for the rest. */
static void timer_set(pd_conn_t *c, int kind, uint64_t ms) {
  uint64_t now = uv_now(c->server->loop);

  c->timer_kind = kind;
  c->deadline = now + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || c->deadline < c->timer_due)
    timer_arm(c, now, ms);
}

/* The connection's timer.  Runs from the loop; may close the connection. */
static void on_timer(uv_timer_t *t) {
  pd_conn_t *c = t->data;
  pd_server_t *s = c->server;
  uint64_t now = uv_now(s->loop);
  uint64_t deadline;
  size_t q;

  if (c->timer_kind == T_NONE)
    return;  /* stays stopped until the next timer_set */
  /* Reads don't touch the timer (that would be a heap update per read);
   * the body deadline follows the last read instead. */
  deadline = c->timer_kind == T_BODY ? c->last_read + s->idle_ms
                                     : c->deadline;
  if (now < deadline) {
    timer_arm(c, now, deadline - now);
    return;
  }
  switch (c->timer_kind) {
  case T_HEAD:
    /* A connection that never sent a byte is just closed (a browser's
     * preconnect); one stuck in a head learns why. */
    if (c->in_head || c->in.len > c->in_off)
      conn_fail(c, 408);
    else
      conn_close(c);
    break;
  case T_BODY:
    conn_fail(c, 408);
    break;
  case T_IDLE:
  case T_WRITE:
    /* A big answer still draining to a slow but moving reader is not
     * idle: give it another period as long as the queue shrinks. */
    q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (q > 0 && q < c->wq_mark) {
      c->wq_mark = q;
      c->deadline = now + s->idle_ms;
      timer_arm(c, now, s->idle_ms);
    } else {
      conn_close(c);
    }
    break;
  case T_LINGER:
    conn_close(c);
    break;
  default:
    break;
  }
}

/* ------------------------------------------------------ llhttp callbacks --
 * These run inside llhttp_execute.  They only copy bytes and note state;
 * errors are reported by returning -1 after setting fail_status, and the
 * parse loop answers once llhttp_execute has returned. */

static int fail_with(pd_conn_t *c, int status) {
  c->fail_status = status;
  return -1;
}

static int fail_buf(pd_conn_t *c, int err, int too_big_status) {
  return fail_with(c, err == PD_ETOOBIG ? too_big_status : 500);
}

/* Counts the head's raw bytes up to `end`, including what llhttp skips
 * between spans, so whitespace padding counts too. */
static int head_count(pd_conn_t *c, const char *end) {
  c->head_bytes += (size_t)(end - c->head_mark);
  c->head_mark = end;
  if (c->head_bytes > c->server->max_header)
    return fail_with(c, 431);
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  pd_conn_t *c = p->data;

  c->in_head = 1;
  c->head_bytes = 0;
  c->trailer_bytes = 0;
  c->ext_bytes = 0;
  c->head.len = 0;
  c->body.len = 0;
  c->noffs = 0;
  c->url_len = 0;
  c->hdr_state = HS_NONE;
  c->fail_status = 0;
  /* The first head on a connection is timed from the accept. */
  if (c->timer_kind != T_HEAD)
    timer_set(c, T_HEAD, c->server->header_ms);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  pd_conn_t *c = p->data;
  int r;

  if (head_count(c, at + len) != 0)
    return -1;
  if ((r = buf_append(&c->head, at, len)) != 0)
    return fail_buf(c, r, 431);
  return 0;
}

static int on_url_complete(llhttp_t *p) {
  pd_conn_t *c = p->data;
  int r;

  c->url_len = c->head.len;
  if ((r = buf_append(&c->head, "", 1)) != 0)
    return fail_buf(c, r, 431);
  return 0;
}

static int trailer_count(pd_conn_t *c, size_t len) {
  c->trailer_bytes += len;
  if (c->trailer_bytes > c->server->max_header)
    return fail_with(c, 431);
  return 0;
}

static int push_header(pd_conn_t *c) {
  hdr_off_t *o;
  size_t cap;

  if (c->noffs == c->offs_cap) {
    cap = c->offs_cap ? c->offs_cap * 2 : 16;
    o = realloc(c->offs, cap * sizeof(*o));
    if (o == NULL)
      return fail_with(c, 500);
    c->offs = o;
    c->offs_cap = cap;
  }
  o = &c->offs[c->noffs++];
  o->name = c->head.len;
  o->name_len = 0;
  o->value = c->head.len;
  o->value_len = 0;
  c->hdr_state = HS_FIELD;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  pd_conn_t *c = p->data;
  int r;

  if (!c->in_head)
    return trailer_count(c, len);  /* trailers are counted, not kept */
  if (head_count(c, at + len) != 0)
    return -1;
  if (c->hdr_state != HS_FIELD && push_header(c) != 0)
    return -1;
  if ((r = buf_append(&c->head, at, len)) != 0)
    return fail_buf(c, r, 431);
  c->offs[c->noffs - 1].name_len += len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  pd_conn_t *c = p->data;
  int r;

  if (!c->in_head)
    return 0;
  if (c->hdr_state != HS_FIELD && push_header(c) != 0)
    return -1;
  if ((r = buf_append(&c->head, "", 1)) != 0)
    return fail_buf(c, r, 431);
  c->offs[c->noffs - 1].value = c->head.len;
  c->hdr_state = HS_VALUE;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  pd_conn_t *c = p->data;
  int r;

  if (!c->in_head)
    return trailer_count(c, len);
  if (head_count(c, at + len) != 0)
    return -1;
  if (c->hdr_state != HS_VALUE)
    return fail_with(c, 400);
  if ((r = buf_append(&c->head, at, len)) != 0)
    return fail_buf(c, r, 431);
  c->offs[c->noffs - 1].value_len += len;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  pd_conn_t *c = p->data;
  int r;

  if (!c->in_head || c->hdr_state != HS_VALUE)
    return 0;
  if ((r = buf_append(&c->head, "", 1)) != 0)
    return fail_buf(c, r, 431);
  c->hdr_state = HS_NONE;
  return 0;
}

/* Whether the head asks for "Expect: 100-continue". */
static int expects_continue(const pd_conn_t *c) {
  const hdr_off_t *o;
  const char *v;
  size_t len;
  size_t i;

  for (i = 0; i < c->noffs; i++) {
    o = &c->offs[i];
    if (o->name_len != 6 ||
        strncasecmp(c->head.data + o->name, "expect", 6) != 0)
      continue;
    v = c->head.data + o->value;
    len = o->value_len;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
      len--;
    if (len == 12 && strncasecmp(v, "100-continue", 12) == 0)
      return 1;
  }
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  pd_conn_t *c = p->data;
  pd_server_t *s = c->server;
  int has_body;

  c->in_head = 0;
  c->keep_alive = (unsigned char)(llhttp_should_keep_alive(p) != 0);
  c->upgrade = p->upgrade;
  c->http10 = p->http_major == 1 && p->http_minor == 0;
  c->head_method = p->method == HTTP_HEAD;
  if (p->flags & F_CONTENT_LENGTH) {
    /* Refuse an announced body before a byte of it is read. */
    if (p->content_length > s->max_body)
      return fail_with(c, 413);
    /* Reserve what is announced, up to a point: many connections could
     * announce big bodies they never send. */
    if (p->content_length > 0 &&
        buf_reserve(&c->body, p->content_length < BODY_PRESIZE
                                  ? (size_t)p->content_length
                                  : BODY_PRESIZE) != 0)
      return fail_with(c, 500);
  }
  has_body = (p->flags & F_CHUNKED) ||
             ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
  if (has_body) {
    if (p->http_major == 1 && p->http_minor >= 1 && expects_continue(c))
      c->send_continue = 1;
    c->last_read = uv_now(s->loop);
    timer_set(c, T_BODY, s->idle_ms);
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  pd_conn_t *c = p->data;
  int r;

  if ((r = buf_append(&c->body, at, len)) != 0)
    return fail_buf(c, r, 413);
  return 0;
}

static int on_chunk_extension(llhttp_t *p, const char *at, size_t len) {
  pd_conn_t *c = p->data;

  (void)at;
  c->ext_bytes += len;
  if (c->ext_bytes > c->server->max_body)
    return fail_with(c, 413);
  return 0;
}

/* Stops llhttp_execute right after a message; the parse loop takes over. */
static int on_message_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_url_complete = on_url_complete,
  .on_header_field = on_header_field,
  .on_header_field_complete = on_header_field_complete,
  .on_header_value = on_header_value,
  .on_header_value_complete = on_header_value_complete,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_chunk_extension_name = on_chunk_extension,
  .on_chunk_extension_value = on_chunk_extension,
  .on_message_complete = on_message_complete,
};

/* -------------------------------------------------------- connections -- */

static void conn_free(pd_conn_t *c) {
  pd_server_t *s = c->server;

  link_remove(&c->link);
  if (!link_empty(&c->rlink))
    link_remove(&c->rlink);
  free(c->in.data);
  free(c->head.data);
  free(c->body.data);
  free(c->out.data);
  free(c->offs);
  free(c->hdrs);
  free(c);
  s->nalloc--;
  server_maybe_done(s);
}

static void conn_maybe_free(pd_conn_t *c) {
  if (c->handles_open == 0 && !c->req_out)
    conn_free(c);
}

/* Close callback of a connection's tcp and timer handles. */
static void on_conn_close(uv_handle_t *h) {
  pd_conn_t *c = h->data;
  pd_server_t *s = c->server;

  assert(c->handles_open > 0);
  s->nhandles--;
  if (--c->handles_open == 0 && !c->req_out) {
    conn_free(c);  /* also checks the server */
    return;
  }
  server_maybe_done(s);
}

/* Closes at once, without waiting for queued writes.  Idempotent.  The
 * outstanding request, if any, stays valid. */
static void conn_close(pd_conn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  c->reading = 0;
  c->timer_kind = T_NONE;
  c->in.len = c->in_off = 0;
  c->server->nconns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_close);
  uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

/* Shutdown callback.  Runs from the loop, also with UV_ECANCELED while the
 * handle closes. */
static void on_shutdown(uv_shutdown_t *req, int status) {
  pd_conn_t *c = req->handle->data;

  if (c->closing)
    return;
  if (status < 0 || c->peer_eof) {
    conn_close(c);
    return;
  }
  c->shut_done = 1;
  timer_set(c, T_LINGER, LINGER_MS);
}

/* Ends a connection after its last answer was queued: the FIN goes out once
 * the answer is written, input is read and dropped until the client closes
 * or LINGER_MS pass, so that unread input (a refused body, say) does not
 * turn our close into a reset that destroys the answer. */
static void conn_end(pd_conn_t *c) {
  if (c->closing || c->ending)
    return;
  c->ending = 1;
  c->in.len = c->in_off = 0;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  c->wq_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  timer_set(c, T_WRITE, c->server->idle_ms);
  if (!c->reading && !c->peer_eof) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
  }
}

/* Answers a bad request by itself (no request is outstanding) and ends. */
static void conn_fail(pd_conn_t *c, int status) {
  int close_after = 1;

  if (c->closing || c->ending)
    return;
  if (conn_answer(c, status, NULL, 0, NULL, 0, &close_after) == 0)
    conn_end(c);
}

static void conn_schedule(pd_conn_t *c) {
  pd_server_t *s = c->server;

  if (s->closing || c->closing || c->ending || !link_empty(&c->rlink))
    return;
  link_insert(&s->resume, &c->rlink);
  uv_idle_start(&s->idle, on_idle);
}

/* The request is done with: its memory may be reused by the next one. */
static void conn_release(pd_conn_t *c) {
  assert(c->req_out);
  c->req_out = 0;
  c->head.len = 0;
  c->body.len = 0;
  c->noffs = 0;
  buf_shrink(&c->body, KEEP_BYTES);
}

static int conn_can_parse(const pd_conn_t *c) {
  return !c->req_out && !c->closing && !c->ending && !c->write_blocked;
}

/* Keeps input that cannot be parsed yet. */
static int conn_stash(pd_conn_t *c, const char *p, size_t n) {
  if (c->in_off > 0) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
  return buf_append(&c->in, p, n);
}

/* Hands a complete request to the owner.  Runs from the parse loop, after
 * llhttp_execute returned; the callback may answer, drop, close the server
 * or keep the request for later.  None of that frees the connection now:
 * its handles are open and close callbacks only run later in the loop. */
static void conn_dispatch(pd_conn_t *c) {
  pd_server_t *s = c->server;
  pd_http_req_t *r = &c->req;
  const hdr_off_t *o;
  const char *q;
  pd_header_t *hs;
  size_t cap;
  size_t i;

  if (c->noffs > c->hdrs_cap) {
    cap = c->offs_cap;
    hs = realloc(c->hdrs, cap * sizeof(*hs));
    if (hs == NULL) {
      conn_fail(c, 500);
      return;
    }
    c->hdrs = hs;
    c->hdrs_cap = cap;
  }
  /* The arena stopped growing with the head (trailers are not kept), so
   * its offsets can become pointers now. */
  for (i = 0; i < c->noffs; i++) {
    o = &c->offs[i];
    c->hdrs[i].name = c->head.data + o->name;
    c->hdrs[i].name_len = o->name_len;
    c->hdrs[i].value = c->head.data + o->value;
    c->hdrs[i].value_len = o->value_len;
  }
  r->method = llhttp_method_name((llhttp_method_t)c->parser.method);
  r->target = c->head.data != NULL ? c->head.data : "";
  r->target_len = c->url_len;
  q = memchr(r->target, '?', r->target_len);
  r->path = r->target;
  r->path_len = q != NULL ? (size_t)(q - r->target) : r->target_len;
  r->query = q != NULL ? q + 1 : "";
  r->query_len = q != NULL ? r->target_len - r->path_len - 1 : 0;
  r->headers = c->noffs > 0 ? c->hdrs : NULL;
  r->nheaders = c->noffs;
  r->body = c->body.len > 0 ? c->body.data : "";
  r->body_len = c->body.len;
  r->peer = c->peer;
  r->peer_port = c->peer_port;
  r->http_minor = c->parser.http_minor;
  r->keep_alive = c->keep_alive;
  r->data = NULL;

  c->req_out = 1;
  c->timer_kind = T_NONE;  /* no deadline while the owner works */
  c->in_dispatch = 1;
  s->cb(s, r, s->arg);
  c->in_dispatch = 0;
}

/* The parse loop: feeds p[0..n) to llhttp and delivers the requests in it
 * one at a time.  `from_in` says p points into c->in.  Runs from the read
 * callback or the idle callback, never nested.  Each turn either consumes a
 * whole message or stops, so it is bounded by n. */
static void conn_feed(pd_conn_t *c, const char *p, size_t n, int from_in) {
  uv_stream_t *st = (uv_stream_t *)&c->tcp;
  llhttp_errno_t err;
  const char *stop;

  while (n > 0 && conn_can_parse(c)) {
    if (uv_stream_get_write_queue_size(st) > WRITE_HIGH) {
      c->write_blocked = 1;  /* on_write picks it up again */
      break;
    }
    assert(llhttp_get_errno(&c->parser) == HPE_OK);
    c->head_mark = p;
    err = llhttp_execute(&c->parser, p, n);
    if (err == HPE_OK) {
      if (c->send_continue) {
        c->send_continue = 0;
        conn_send(c, continue_text, sizeof(continue_text) - 1, SEND_STATIC,
                  NULL);
      }
      if (c->in_head && head_count(c, p + n) != 0)
        conn_fail(c, 431);
      p += n;
      n = 0;
      break;
    }
    /* A body that came whole needs no 100 Continue. */
    c->send_continue = 0;
    if (err != HPE_PAUSED) {
      conn_fail(c, c->fail_status != 0 ? c->fail_status : 400);
      return;
    }
    stop = llhttp_get_error_pos(&c->parser);
    assert(stop >= p && stop <= p + n);
    n -= (size_t)(stop - p);
    p = stop;
    conn_dispatch(c);
  }

  if (c->closing || c->ending)
    return;  /* conn_close/conn_end dropped the input */
  if (from_in) {
    if (n == 0) {
      c->in.len = c->in_off = 0;
      buf_shrink(&c->in, KEEP_BYTES);
    } else {
      c->in_off = (size_t)(p - c->in.data);
    }
  } else if (n > 0 && conn_stash(c, p, n) != 0) {
    conn_close(c);
  }
}

/* Continues a connection whose request was answered later, or whose write
 * queue drained.  Runs from the idle callback. */
static void conn_resume(pd_conn_t *c) {
  if (c->closing || c->ending)
    return;
  if (c->in.len > c->in_off && conn_can_parse(c))
    conn_feed(c, c->in.data + c->in_off, c->in.len - c->in_off, 1);
  if (c->closing || c->ending || c->reading || c->peer_eof)
    return;
  if (c->in.len - c->in_off <= IN_CAP) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
    else
      conn_close(c);
  }
}

/* Idle callback: resumes the connections queued by conn_schedule, then
 * stops itself.  Connections queued meanwhile wait for the next turn, so a
 * burst of answers cannot recurse. */
static void on_idle(uv_idle_t *h) {
  pd_server_t *s = h->data;
  link_t batch;
  link_t *l;

  if (!link_empty(&s->resume)) {
    batch.next = s->resume.next;
    batch.prev = s->resume.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    link_init(&s->resume);
    while (!link_empty(&batch)) {
      l = batch.next;
      link_remove(l);
      conn_resume(CONTAINER_OF(l, pd_conn_t, rlink));
    }
  }
  if (link_empty(&s->resume))
    uv_idle_stop(h);
}

/* Every connection reads into the server's buffer: on Unix libuv calls
 * alloc, read and the read callback back to back for one stream at a time,
 * and whatever the parse loop must keep is copied out. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  pd_conn_t *c = h->data;

  (void)suggested;
  *buf = uv_buf_init(c->server->rbuf, sizeof(c->server->rbuf));
}

static void conn_eof(pd_conn_t *c, ssize_t nread) {
  c->reading = 0;  /* libuv stops reading at EOF */
  if (c->closing)
    return;
  if (nread != UV_EOF) {
    conn_close(c);
    return;
  }
  if (c->ending) {
    if (c->shut_done)
      conn_close(c);
    else
      c->peer_eof = 1;  /* on_shutdown closes */
    return;
  }
  /* A client that goes away while its request is with the owner has
   * abandoned it (as nginx and Go read it): close now, and the late answer
   * gets PD_ECLOSED.  Otherwise let queued answers go out first. */
  if (c->req_out ||
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    conn_close(c);
    return;
  }
  c->peer_eof = 1;
  conn_end(c);
}

/* Read callback.  Runs from the loop; buf is the server's shared buffer. */
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  pd_conn_t *c = st->data;

  if (nread == 0)
    return;
  if (nread < 0) {
    conn_eof(c, nread);
    return;
  }
  c->last_read = uv_now(c->server->loop);
  if (c->closing || c->ending)
    return;  /* draining before the close */
  if (conn_can_parse(c) && c->in.len == c->in_off) {
    conn_feed(c, buf->base, (size_t)nread, 0);
  } else {
    /* Behind a request in flight (or a full write queue): keep the bytes,
     * still reading so that a client that leaves is noticed. */
    if (conn_stash(c, buf->base, (size_t)nread) != 0) {
      conn_close(c);
      return;
    }
    if (conn_can_parse(c))
      conn_feed(c, c->in.data + c->in_off, c->in.len - c->in_off, 1);
  }
  if (!c->closing && !c->ending && c->reading &&
      c->in.len - c->in_off > IN_CAP) {
    uv_read_stop(st);
    c->reading = 0;
  }
}

static void conn_peer(pd_conn_t *c) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);

  c->peer[0] = '\0';
  c->peer_port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (uv_ip_name((struct sockaddr *)&ss, c->peer, sizeof(c->peer)) != 0)
    c->peer[0] = '\0';
  if (ss.ss_family == AF_INET)
    c->peer_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6)
    c->peer_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Close callback of a refused connection. */
static void on_reject_close(uv_handle_t *h) {
  pd_server_t *s = h->data;

  free(h);
  s->nhandles--;
  server_maybe_done(s);
}

/* Over the cap: accept (libuv stops watching the listener until we do),
 * try to say 503 without waiting, close. */
static void server_reject(pd_server_t *s) {
  uv_tcp_t *t = malloc(sizeof(*t));
  uv_buf_t b;

  if (t == NULL)
    return;
  if (uv_tcp_init(s->loop, t) != 0) {
    free(t);
    return;
  }
  t->data = s;
  s->nhandles++;
  if (uv_accept((uv_stream_t *)&s->tcp, (uv_stream_t *)t) == 0) {
    b = uv_buf_init((char *)reject_text, sizeof(reject_text) - 1);
    (void)uv_try_write((uv_stream_t *)t, &b, 1);
  }
  uv_close((uv_handle_t *)t, on_reject_close);
}

/* Connection callback of the listener.  Runs from the loop. */
static void on_connection(uv_stream_t *ls, int status) {
  pd_server_t *s = ls->data;
  pd_conn_t *c;

  if (status < 0 || s->closing)
    return;
  if (s->nconns >= s->max_conns) {
    server_reject(s);
    return;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    server_reject(s);
    return;
  }
  if (uv_tcp_init(s->loop, &c->tcp) != 0) {
    free(c);
    server_reject(s);
    return;
  }
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->server = s;
  c->handles_open = 2;
  s->nhandles += 2;
  s->nconns++;
  s->nalloc++;
  link_insert(&s->conns, &c->link);
  link_init(&c->rlink);
  c->in.max = SIZE_MAX;
  c->out.max = SIZE_MAX;
  c->body.max = s->max_body;
  /* Room for the NULs after the target and each name and value. */
  c->head.max = s->max_header > SIZE_MAX / 4 ? SIZE_MAX / 2
                                             : 2 * s->max_header + 64;
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;

  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  conn_peer(c);
  timer_set(c, T_HEAD, s->header_ms);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  c->reading = 1;
}

/* ------------------------------------------------------------- public -- */

static int seconds_to_ms(double t, double dflt, uint64_t *ms) {
  if (isnan(t) || t < 0)
    return PD_EINVAL;
  if (t == 0)
    t = dflt;
  if (t > 1e9)
    t = 1e9;
  *ms = (uint64_t)(t * 1000.0 + 0.5);
  if (*ms == 0)
    *ms = 1;
  return 0;
}

/* Writing to a socket the peer has reset raises SIGPIPE, whose default
 * kills the process; libuv does not block it.  A host that installed its
 * own disposition keeps it. */
static void ignore_sigpipe(void) {
  struct sigaction sa;

  if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
      sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

int pd_server_listen(uv_loop_t *loop, const pd_server_opts_t *opts,
                     pd_request_cb cb, void *arg, pd_server_t **out) {
  pd_server_opts_t o;
  pd_server_t *s;
  struct sockaddr_storage ss;
  const char *host;
  char host6[64];
  size_t hlen;
  int len;
  int r;

  if (loop == NULL || cb == NULL || out == NULL)
    return PD_EINVAL;
  if (opts != NULL)
    o = *opts;
  else
    memset(&o, 0, sizeof(o));
  if (o.port < 0 || o.port > 65535 || o.max_connections < 0 || o.backlog < 0)
    return PD_EINVAL;
  host = o.host != NULL ? o.host : "127.0.0.1";
  hlen = strlen(host);
  if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
    /* "[::1]", as written in URLs. */
    if (hlen - 2 >= sizeof(host6))
      return PD_EINVAL;
    memcpy(host6, host + 1, hlen - 2);
    host6[hlen - 2] = '\0';
    host = host6;
  }
  memset(&ss, 0, sizeof(ss));
  if (strchr(host, ':') != NULL)
    r = uv_ip6_addr(host, o.port, (struct sockaddr_in6 *)&ss);
  else
    r = uv_ip4_addr(host, o.port, (struct sockaddr_in *)&ss);
  if (r != 0)
    return PD_EINVAL;

  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return PD_ENOMEM;
  if (seconds_to_ms(o.header_timeout, 10, &s->header_ms) != 0 ||
      seconds_to_ms(o.idle_timeout, 60, &s->idle_ms) != 0) {
    free(s);
    return PD_EINVAL;
  }
  s->loop = loop;
  s->cb = cb;
  s->arg = arg;
  s->max_header = o.max_header_bytes ? o.max_header_bytes : 16 * 1024;
  s->max_body = o.max_body_bytes ? o.max_body_bytes : 1024 * 1024;
  s->max_conns = o.max_connections ? o.max_connections : 1024;
  link_init(&s->conns);
  link_init(&s->resume);

  if (uv_tcp_init(loop, &s->tcp) != 0) {
    free(s);
    return PD_EUV;
  }
  s->tcp.data = s;
  s->nhandles = 1;
  /* libuv sets SO_REUSEADDR itself when binding. */
  r = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&ss, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&s->tcp, o.backlog ? o.backlog : 511,
                  on_connection);
  if (r == 0) {
    len = (int)sizeof(ss);
    r = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
  }
  if (r != 0) {
    /* Freed by the close callback; the owner never hears of it. */
    s->closing = 1;
    uv_close((uv_handle_t *)&s->tcp, on_server_handle_close);
    return PD_EUV;
  }
  if (ss.ss_family == AF_INET6)
    s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
  s->nhandles++;
  ignore_sigpipe();
  *out = s;
  return 0;
}

int pd_server_port(const pd_server_t *s) { return s->port; }

int pd_server_connections(const pd_server_t *s) { return s->nconns; }

int pd_http_respond(pd_http_req_t *req, int status, const pd_header_t *h,
                    size_t n, const char *body, size_t body_len) {
  pd_conn_t *c;
  int close_after;
  int rc;

  if (req == NULL)
    return PD_EINVAL;
  c = CONTAINER_OF(req, pd_conn_t, req);
  assert(c->req_out);
  if (c->closing) {
    conn_release(c);
    conn_maybe_free(c);  /* may free the server too: touch nothing after */
    return PD_ECLOSED;
  }
  close_after = !c->keep_alive || c->upgrade;
  /* Build first: h and body may point into the request. */
  rc = conn_answer(c, status, h, n, body, body_len, &close_after);
  conn_release(c);
  if (c->closing)
    return PD_ECLOSED;  /* the write failed; the handles are still open */
  if (close_after) {
    conn_end(c);
    return rc;
  }
  llhttp_resume(&c->parser);
  c->wq_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  timer_set(c, T_IDLE, c->server->idle_ms);
  /* Inside the request callback the parse loop goes on by itself; later,
   * buffered requests are parsed on the next loop turn rather than here,
   * so the owner's callback never runs inside pd_http_respond. */
  if (!c->in_dispatch && (c->in.len > c->in_off || !c->reading))
    conn_schedule(c);
  return rc;
}

void pd_http_drop(pd_http_req_t *req) {
  pd_conn_t *c;

  if (req == NULL)
    return;
  c = CONTAINER_OF(req, pd_conn_t, req);
  assert(c->req_out);
  conn_close(c);
  conn_release(c);
  conn_maybe_free(c);
}

void pd_server_close(pd_server_t *s, void (*close_cb)(void *arg), void *arg) {
  link_t *l;

  if (s == NULL || s->closing)
    return;
  s->closing = 1;
  s->close_cb = close_cb;
  s->close_arg = arg;
  uv_close((uv_handle_t *)&s->tcp, on_server_handle_close);
  uv_close((uv_handle_t *)&s->idle, on_server_handle_close);
  for (l = s->conns.next; l != &s->conns; l = l->next)
    conn_close(CONTAINER_OF(l, pd_conn_t, link));
}
