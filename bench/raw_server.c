/* raw_server.c: the bench's baseline HTTP server, libuv + llhttp only.
 *
 * Answers every request with 200 and a fixed 154-byte JSON body (the shape
 * of GET /account's envelope), keep-alive.  It is what pivday's listener is
 * measured against (row 2) and the slow server of the memory row (row 3):
 * `--delay MS` holds each answer MS milliseconds.
 *
 *   raw_server [--port N] [--delay MS] [--print-body]
 *
 * Prints "port=N" on stdout once listening, then serves until SIGTERM or
 * SIGINT; prints "requests=N" on the way out.  Only 127.0.0.1.
 *
 * Everything runs on the loop's thread.  A connection owns its parser, a
 * FIFO of answer due times (delay mode) and one timer; it is freed in the
 * close callback of its TCP handle, after the timer's close callback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>
#include <llhttp.h>

#define BODY                                                                  \
  "{\"success\":true,\"data\":{\"user_id\":\"usr-7c9e6679-7425-40de-944b-e07fc1b\"," \
  "\"balance\":150.5,\"email\":\"u***@example.com\",\"team_id\":null,"          \
  "\"is_team_member\":false}}"

_Static_assert(sizeof(BODY) - 1 == 154, "the body must be 154 bytes");

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 154\r\n"
    "\r\n" BODY;

/* Most answers a connection may owe at once (pipelining); beyond it the
 * connection is closed. */
#define MAX_OWED 64

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;        /* delay mode: fires at the head's due time */
  llhttp_t parser;
  uint64_t due[MAX_OWED];  /* ring of due times, ms on the loop clock */
  int head, count;
  int closing;
  int close_after;         /* the last request asked for Connection: close */
  int handles_open;
} conn_t;

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;
static llhttp_settings_t settings;
static uint64_t delay_ms;
static unsigned long long requests;
static char read_buf[65536];  /* reads are parsed at once, so one suffices */
static uv_buf_t response_buf;

static void conn_close(conn_t *c);

/* Runs after each of the connection's two handles closed; frees on the
 * last one. */
static void on_conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles_open == 0) free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* The buffer is static; a failed write closes the connection (libuv runs
 * write callbacks before the close callback, so c is still valid). */
static void on_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  free(w);
  if (status < 0) conn_close(c);
}

static void answer(conn_t *c, int last) {
  uv_write_t *w = malloc(sizeof(*w));
  if (w == NULL) {
    conn_close(c);
    return;
  }
  w->data = c;
  requests++;
  if (uv_write(w, (uv_stream_t *)&c->tcp, &response_buf, 1, on_written) < 0) {
    free(w);
    conn_close(c);
    return;
  }
  if (last && c->close_after) conn_close(c);
}

/* Delay mode: answers every request whose time has come, in order. */
static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  uint64_t now = uv_now(loop);
  while (c->count > 0 && c->due[c->head] <= now && !c->closing) {
    c->head = (c->head + 1) % MAX_OWED;
    c->count--;
    answer(c, c->count == 0);
  }
  if (c->count > 0 && !c->closing)
    uv_timer_start(&c->timer, on_timer, c->due[c->head] - now, 0);
}

/* Runs inside llhttp_execute: answers at once, or queues the due time. */
static int on_message_complete(llhttp_t *p) {
  conn_t *c = p->data;
  c->close_after = !llhttp_should_keep_alive(p);
  if (delay_ms == 0) {
    answer(c, 1);
    return c->closing ? HPE_USER : HPE_OK;
  }
  if (c->count == MAX_OWED) return HPE_USER;
  int tail = (c->head + c->count) % MAX_OWED;
  c->due[tail] = uv_now(loop) + delay_ms;
  if (c->count++ == 0) uv_timer_start(&c->timer, on_timer, delay_ms, 0);
  return HPE_OK;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = read_buf;
  buf->len = sizeof(read_buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0 || c->closing) return;
  llhttp_errno_t rc = llhttp_execute(&c->parser, buf->base, (size_t)n);
  if (rc != HPE_OK) conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles_open = 2;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void on_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h != (uv_handle_t *)&listener) {
    conn_close(h->data);
  } else if (h->type != UV_TIMER || h->data == NULL) {
    uv_close(h, NULL);
  }
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  uv_walk(loop, on_walk_close, NULL);
}

/* Many in-flight connections need many descriptors. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int usage(void) {
  fprintf(stderr, "usage: raw_server [--port N] [--delay MS] [--print-body]\n");
  return 2;
}

int main(int argc, char **argv) {
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--delay") == 0 && i + 1 < argc) {
      delay_ms = (uint64_t)strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--print-body") == 0) {
      fputs(BODY, stdout);
      return 0;
    } else {
      return usage();
    }
  }
  raise_nofile();
  loop = uv_default_loop();
  response_buf = uv_buf_init((char *)RESPONSE, sizeof(RESPONSE) - 1);
  llhttp_settings_init(&settings);
  settings.on_message_complete = on_message_complete;

  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &listener);
  int rc = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&listener, 4096, on_connection);
  if (rc < 0) {
    fprintf(stderr, "raw_server: listen: %s\n", uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
  printf("port=%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);

  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  printf("requests=%llu\n", requests);
  uv_loop_close(loop);
  return 0;
}
