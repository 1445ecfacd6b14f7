/* pd.h: the public C API of pivday's core.
 *
 * core/ is plain C on libuv, libcurl (multi_socket) and llhttp.  It knows
 * nothing of Lua and nothing of piv.day: it moves HTTP requests and responses
 * and runs timers.  Every function runs on the loop's thread.
 *
 * Conventions (after libuv):
 *  - functions return 0 or a negative PD_E* code;
 *  - if a start function fails its callback never runs; if it succeeds the
 *    callback runs exactly once, also on cancel/close (with PD_ECANCELED);
 *  - callbacks are never invoked from inside a libcurl or llhttp callback, so
 *    a callback may start new work (send a request, answer, close) freely;
 *  - core never prints and never exits.
 */
#ifndef PD_H
#define PD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The error table: name, value, message.  One X-macro makes the enum,
 * pd_err_name() and pd_strerror(). */
#define PD_ERRNO_MAP(X)                                                       \
  X(ECANCELED, -1, "operation cancelled")                                     \
  X(ENOMEM, -2, "out of memory")                                              \
  X(EINVAL, -3, "invalid argument")                                           \
  X(ETRANSPORT, -4, "transport error")                                        \
  X(ETIMEDOUT, -5, "timed out")                                               \
  X(ETOOBIG, -6, "response body exceeds the limit")                           \
  X(ECLOSED, -7, "object is closed")                                          \
  X(EUV, -8, "libuv error")                                                   \
  X(EBUSY, -9, "too many connections")

typedef enum {
  PD_OK = 0,
#define PD_ERR_ENUM(name, val, msg) PD_##name = (val),
  PD_ERRNO_MAP(PD_ERR_ENUM)
#undef PD_ERR_ENUM
} pd_errno_t;

const char *pd_err_name(int err);  /* "ECANCELED"; "OK" for 0 */
const char *pd_strerror(int err);  /* "operation cancelled" */

/* A header as bytes.  Names keep the case they had on the wire; lookups are
 * case-insensitive (pd_header_find). */
typedef struct {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} pd_header_t;

/* Reads the header line at *pos (below end) of a response's `head` into
 * *h (name and value trimmed, not NUL-terminated) and moves *pos past it.
 * Returns 1, or 0 once no header line is left.  Headers are parsed only
 * when someone reads them: most API calls never do. */
int pd_head_next(const char **pos, const char *end, pd_header_t *h);

const pd_header_t *pd_header_find(const pd_header_t *h, size_t n,
                                  const char *name);

/* ---------------------------------------------------------------- loop -- */

/* Seconds on the loop's monotonic clock (uv_now, cached per iteration). */
double pd_now(uv_loop_t *loop);
/* Fresh monotonic seconds (uv_hrtime). */
double pd_hrtime(void);

/* ------------------------------------------------------- HTTP client ---- */

typedef struct pd_client_s pd_client_t;
typedef struct pd_transfer_s pd_transfer_t;

typedef struct {
  long max_connections;      /* total open connections; 0 = 256 */
  long max_host_connections; /* per host; 0 = unlimited (total still caps) */
  size_t max_response_body;  /* default cap per response; 0 = 256 MiB */
} pd_client_opts_t;

/* Request headers checked and made into libcurl's form once, for many
 * requests (pd_request_t.prepared).  Reference counted: a transfer holds
 * one while it runs. */
typedef struct pd_headers_s pd_headers_t;
/* PD_EINVAL for a name that is not a token or a value with CR, LF or NUL. */
int pd_headers_new(const pd_header_t *h, size_t n, pd_headers_t **out);
void pd_headers_unref(pd_headers_t *hs);

typedef struct {
  const char *method;        /* "GET", "POST", ... */
  const char *url;
  const pd_header_t *headers;
  size_t nheaders;
  pd_headers_t *prepared;    /* instead of headers/nheaders, when set */
  const char *body;          /* copied by pd_client_send; may be NULL */
  size_t body_len;
  double timeout;            /* whole transfer, seconds; 0 = none */
  double connect_timeout;    /* seconds; 0 = libcurl's default */
  size_t max_response_body;  /* 0 = the client's default */
  /* Send the body through a read callback that cannot seek, so libcurl
   * fails the transfer instead of silently re-sending it on a reused
   * connection that turns out dead (for requests that must not repeat). */
  int no_resend;
  int insecure;              /* skip TLS verification (explicit opt-in) */
} pd_request_t;

typedef struct {
  int err;                   /* 0, or PD_E*: ECANCELED, ETRANSPORT, ETIMEDOUT,
                                ETOOBIG */
  const char *err_name;      /* libcurl's code name without CURLE_, e.g.
                                "COULDNT_CONNECT", "OPERATION_TIMEDOUT";
                                "CANCELLED"; NULL when err == 0 */
  const char *err_msg;       /* libcurl's error buffer or pd_strerror() */
  int request_sent;          /* nonzero when request bytes may have reached
                                the server (a POST's outcome is unknown) */
  long status;               /* HTTP status, 0 when none */
  const char *head;          /* the final response's header lines, each
                                "Name: value\n" as received (folded lines
                                joined); read them with pd_head_next */
  size_t head_len;
  const char *body;
  size_t body_len;
  double elapsed;            /* seconds */
} pd_response_t;

/* Runs once per transfer, from the loop (never inside a libcurl callback).
 * `res` and everything it points to are valid only during the call.  The
 * transfer is freed after the callback returns. */
typedef void (*pd_response_cb)(pd_transfer_t *t, const pd_response_t *res,
                               void *arg);

int pd_client_new(uv_loop_t *loop, const pd_client_opts_t *opts,
                  pd_client_t **out);
/* Starts a request: it leaves on the next loop iteration, together with
 * every other request sent meanwhile (client.c says why).  On success *out
 * (if non-NULL) is the transfer, valid until its callback returns. */
int pd_client_send(pd_client_t *c, const pd_request_t *req, pd_response_cb cb,
                   void *arg, pd_transfer_t **out);
/* Cancels an in-flight transfer: its callback fires once, later, from the
 * loop, with PD_ECANCELED.  A no-op when it already completed. */
void pd_transfer_cancel(pd_transfer_t *t);
/* Number of transfers not yet completed (callbacks not yet run). */
size_t pd_client_pending(pd_client_t *c);
/* Cancels all transfers (their callbacks run with PD_ECANCELED), releases
 * libcurl and closes every libuv handle; close_cb runs once everything is
 * released, and then the client is freed. */
void pd_client_close(pd_client_t *c, void (*close_cb)(void *arg), void *arg);

/* ------------------------------------------------------- HTTP server ---- */

typedef struct pd_server_s pd_server_t;
typedef struct pd_http_req_s pd_http_req_t;

typedef struct {
  const char *host;          /* "127.0.0.1" by default; IPv6 allowed */
  int port;                  /* 0 = ephemeral */
  size_t max_header_bytes;   /* request line + headers; 0 = 16 KiB -> 431 */
  size_t max_body_bytes;     /* 0 = 1 MiB -> 413 */
  double header_timeout;     /* seconds to receive a whole head; 0 = 10 */
  double idle_timeout;       /* seconds a keep-alive conn may idle; 0 = 60 */
  int max_connections;       /* 0 = 1024; beyond it new ones are closed */
  int backlog;               /* 0 = 511 */
} pd_server_opts_t;

/* A parsed request.  Valid from the request callback until pd_http_respond
 * or pd_http_drop is called on it (exactly one of them must be called, even
 * when the connection has gone away meanwhile: then it is a no-op that
 * frees the request). */
struct pd_http_req_s {
  const char *method;        /* "GET" */
  const char *target;        /* raw request target: "/a/b?x=1" */
  size_t target_len;
  const char *path;          /* the part before '?' (not decoded) */
  size_t path_len;
  const char *query;         /* the part after '?', "" when none */
  size_t query_len;
  const pd_header_t *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
  const char *peer;          /* peer IP as text, "127.0.0.1" */
  int peer_port;
  int http_minor;            /* 0 or 1 */
  int keep_alive;            /* what the client asked for */
  void *data;                /* for the owner */
};

/* Runs once per complete request, from the loop, after llhttp_execute has
 * returned.  Requests on one connection are delivered one at a time: the
 * next pipelined request is parsed only after this one was answered, so
 * answers go out in order. */
typedef void (*pd_request_cb)(pd_server_t *s, pd_http_req_t *req, void *arg);

int pd_server_listen(uv_loop_t *loop, const pd_server_opts_t *opts,
                     pd_request_cb cb, void *arg, pd_server_t **out);
int pd_server_port(const pd_server_t *s);
/* Number of open connections. */
int pd_server_connections(const pd_server_t *s);
/* Writes the answer (status line, headers given, Content-Length, Date when
 * absent, Connection: close when closing), then frees req.  The body is
 * copied.  Returns 0 or PD_ECLOSED when the connection was gone (req is
 * freed all the same). */
int pd_http_respond(pd_http_req_t *req, int status, const pd_header_t *h,
                    size_t n, const char *body, size_t body_len);
/* Closes the connection without answering, then frees req. */
void pd_http_drop(pd_http_req_t *req);
/* Stops listening and closes every connection; requests still unanswered
 * stay valid until answered or dropped.  close_cb runs once all libuv
 * handles are closed; the server is freed when that and every outstanding
 * request is done. */
void pd_server_close(pd_server_t *s, void (*close_cb)(void *arg), void *arg);

#ifdef __cplusplus
}
#endif
#endif /* PD_H */
