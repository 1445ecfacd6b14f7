/* fuzz_server.c: libFuzzer target for the HTTP server's request path.
 *
 * Bytes go in through a real loopback TCP connection to a pd_server_t (core/
 * server.c, llhttp underneath) running on a libuv loop in this process, and
 * the answer comes back out; nothing is stubbed.  Per input:
 *
 *   byte 0      how the owner answers each request (see owner_*)
 *   byte 1      client behaviour: half-close or reset at the end
 *   rest        request bytes, split into separate writes at each "\xff\xfe"
 *               (the loop turns between writes, so llhttp sees the input in
 *               pieces as a slow client would send it)
 *
 * Oracles besides ASan/UBSan/LSan: every answer byte must parse as HTTP/1.1
 * responses (llhttp in response mode), every request handed to the owner must
 * be well formed (lengths inside the arena, path+query = target), and the
 * server must be back to zero connections with no request outstanding once
 * the client has gone.  A violation aborts, which libFuzzer reports.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>

#include "pd.h"

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "fuzz_server: check failed: %s (line %d)\n", #cond,     \
              __LINE__);                                                      \
      abort();                                                                \
    }                                                                         \
  } while (0)

enum { MAX_LATER = 64 };

static uv_loop_t loop;
static pd_server_t *srv;
static int port;

/* Requests the owner answers on a later loop turn. */
static pd_http_req_t *later[MAX_LATER];
static int nlater;
static uv_idle_t later_idle;

static unsigned char owner_mode;   /* byte 0 of the input */
static unsigned nreq;              /* requests delivered for this input */
/* Which delivered requests were HEAD (their answers carry no body). */
enum { MAX_REQS = 4096 };
static unsigned char was_head[MAX_REQS];

static void answer(pd_http_req_t *r, unsigned n) {
  static const pd_header_t bad[] = {
      {"X-Bad", 5, "a\r\nInjected: 1", 14},
  };
  pd_header_t hs[4];
  unsigned kind = (owner_mode >> 2) & 3;

  switch (kind) {
  case 0:  /* echo the body, keep-alive */
    hs[0] = (pd_header_t){"Content-Type", 12, "text/plain", 10};
    (void)pd_http_respond(r, 200, hs, 1, r->body, r->body_len);
    break;
  case 1:  /* no content, or not modified */
    (void)pd_http_respond(r, n & 1 ? 304 : 204, NULL, 0, NULL, 0);
    break;
  case 2: {  /* echo request values back as header values (copied first) */
    size_t m = r->nheaders < 3 ? r->nheaders : 3;
    for (size_t i = 0; i < m; i++) {
      hs[i].name = "X-Echo";
      hs[i].name_len = 6;
      hs[i].value = r->headers[i].value;
      hs[i].value_len = r->headers[i].value_len;
    }
    hs[m] = (pd_header_t){"Connection", 10, owner_mode & 0x40 ? "close" : "x",
                          owner_mode & 0x40 ? 5 : 1};
    /* A value with CR/LF is refused by core (a 500 goes out instead). */
    (void)pd_http_respond(r, 200 + (int)(n % 300), hs, m + 1, r->path,
                          r->path_len);
    break;
  }
  default:  /* arguments core must refuse: smuggling header, bad status */
    (void)pd_http_respond(r, n & 1 ? 99 : 200, bad, 1, "x", 1);
    break;
  }
}

static void on_later(uv_idle_t *h) {
  int i;
  int n = nlater;

  (void)h;
  nlater = 0;
  for (i = 0; i < n; i++) {
    if (owner_mode & 0x80 && i % 2)
      pd_http_drop(later[i]);
    else
      answer(later[i], (unsigned)i);
  }
  if (nlater == 0)
    uv_idle_stop(&later_idle);
}

static void check_req(const pd_http_req_t *r) {
  size_t i;

  CHECK(r->method != NULL && r->target != NULL && r->path == r->target);
  CHECK(r->path_len <= r->target_len);
  CHECK(r->query_len == 0 ||
        r->path_len + 1 + r->query_len == r->target_len);
  CHECK(r->target[r->target_len] == '\0');
  CHECK(r->nheaders == 0 || r->headers != NULL);
  for (i = 0; i < r->nheaders; i++) {
    CHECK(r->headers[i].name != NULL && r->headers[i].value != NULL);
    /* Touch every byte so ASan sees any read past the arena. */
    if (r->headers[i].name_len > 0)
      CHECK(memchr(r->headers[i].name, 0, r->headers[i].name_len) == NULL ||
            1);
    CHECK(r->headers[i].name[r->headers[i].name_len] == '\0');
    CHECK(r->headers[i].value[r->headers[i].value_len] == '\0');
  }
  CHECK(r->body != NULL);
  if (r->body_len > 0)
    CHECK(memchr(r->body, 0, r->body_len) == NULL || 1);
}

static void on_request(pd_server_t *s, pd_http_req_t *r, void *arg) {
  unsigned n = nreq++;
  unsigned how = owner_mode & 3;

  (void)s;
  (void)arg;
  check_req(r);
  if (n < MAX_REQS)
    was_head[n] = strcmp(r->method, "HEAD") == 0;
  if (how == 3)
    how = n % 3;
  if (how == 1 && nlater < MAX_LATER) {
    later[nlater++] = r;
    uv_idle_start(&later_idle, on_later);
  } else if (how == 2) {
    pd_http_drop(r);
  } else {
    answer(r, n);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  pd_server_opts_t o;

  (void)argc;
  (void)argv;
  CHECK(uv_loop_init(&loop) == 0);
  memset(&o, 0, sizeof(o));
  o.host = "127.0.0.1";
  o.port = 0;
  o.max_header_bytes = 2048;  /* small limits, so the fuzzer reaches them */
  o.max_body_bytes = 4096;
  o.header_timeout = 2;
  o.idle_timeout = 2;
  o.max_connections = 16;
  CHECK(pd_server_listen(&loop, &o, on_request, NULL, &srv) == 0);
  port = pd_server_port(srv);
  uv_idle_init(&loop, &later_idle);
  return 0;
}

/* Response-side oracle: the bytes the server wrote must be HTTP/1.1.
 * Answers come in request order (interim 100s aside); a HEAD answer
 * announces a length it does not send. */
static int resp_headers_complete(llhttp_t *p) {
  unsigned *idx = p->data;
  unsigned i;

  if (p->status_code < 200)
    return 0;
  i = (*idx)++;
  return i < nreq && i < MAX_REQS && was_head[i] ? 1 : 0;
}

static void check_response(const char *data, size_t len) {
  unsigned idx = 0;
  llhttp_settings_t st;
  llhttp_t p;
  llhttp_errno_t e;

  if (len == 0)
    return;
  CHECK(len >= 9 && memcmp(data, "HTTP/1.1 ", 9) == 0);
  llhttp_settings_init(&st);
  st.on_headers_complete = resp_headers_complete;
  llhttp_init(&p, HTTP_RESPONSE, &st);
  p.data = &idx;
  e = llhttp_execute(&p, data, len);
  if (e != HPE_OK) {
    fprintf(stderr, "fuzz_server: bad answer (%s: %s):\n%.*s\n",
            llhttp_errno_name(e), llhttp_get_error_reason(&p),
            (int)(len > 2000 ? 2000 : len), data);
    abort();
  }
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

/* Runs the loop once without blocking; the server's socket work happens
 * here. */
static void spin(void) { uv_run(&loop, UV_RUN_NOWAIT); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char out[1 << 20];
  size_t out_len = 0;
  struct sockaddr_in sa;
  struct linger lg = {1, 0};
  const uint8_t *p;
  const uint8_t *end;
  unsigned char client_mode;
  int fd;
  int eof = 0;
  int turns;
  double deadline;

  if (size < 2)
    return 0;
  owner_mode = data[0];
  client_mode = data[1];
  p = data + 2;
  end = data + size;
  nreq = 0;

  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
      errno != EINPROGRESS) {
    /* Out of local ports (TIME_WAIT): not the server's fault. */
    CHECK(errno == EADDRNOTAVAIL || errno == EAGAIN);
    close(fd);
    return 0;
  }

  /* Writes, with loop turns between the pieces. */
  while (p < end) {
    const uint8_t *sep = memmem(p, (size_t)(end - p), "\xff\xfe", 2);
    const uint8_t *stop = sep != NULL ? sep : end;
    while (p < stop) {
      ssize_t n = send(fd, p, (size_t)(stop - p), MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == ENOTCONN)) {
        spin();
        continue;
      }
      if (n < 0)
        goto done_writing;  /* the server closed on us: fine */
      p += n;
    }
    p = sep != NULL ? sep + 2 : end;
    spin();
    spin();
  }
done_writing:
  /* Half-close, unless the server already has: then our FIN would leave
   * its socket in TIME_WAIT, and a million runs would use up the ports. */
  if (!(client_mode & 1)) {
    struct pollfd pfd = {fd, POLLRDHUP, 0};
    if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & (POLLRDHUP | POLLHUP)))
      shutdown(fd, SHUT_WR);
  }

  /* Reads the answers until the server closes, or quiet for long enough
   * (a keep-alive connection with a reset coming). */
  deadline = now_s() + 5.0;
  for (turns = 0; !eof && now_s() < deadline; turns++) {
    ssize_t n;
    if ((client_mode & 1) && turns >= 20)
      break;
    spin();
    n = recv(fd, out + out_len, sizeof(out) - out_len, 0);
    if (n > 0) {
      out_len += (size_t)n;
      if (out_len == sizeof(out))
        break;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      eof = 1;
    }
  }
  /* A half-closed client always gets the server's FIN or reset within the
   * deadline: the server never sits on a dead connection. */
  CHECK(eof || (client_mode & 1) || out_len == sizeof(out));
  check_response(out, out_len);

  /* Reset rather than FIN: no TIME_WAIT pile-up over millions of runs. */
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);

  /* Afterwards the server holds nothing for this client. */
  deadline = now_s() + 5.0;
  while ((pd_server_connections(srv) > 0 || nlater > 0) && now_s() < deadline)
    spin();
  spin();
  spin();
  CHECK(pd_server_connections(srv) == 0);
  CHECK(nlater == 0);
  return 0;
}
