/* raw_client.c: the bench's baseline HTTP client, libcurl multi_socket on
 * libuv with nothing else.
 *
 *   raw_client --url URL [--n N] [--c C] [--header "Name: value"]...
 *   raw_client --url URL --inflight [--n N] [--max-conn M]
 *
 * Default mode: N GETs at concurrency C; each of C slots owns one easy
 * handle, reused for every request it sends, so C keep-alive connections
 * carry the whole run.  Prints one line:
 *   rps=… p50_us=… p99_us=… cpu_us=… n=… errors=…
 * (cpu_us is getrusage user+system per request, all threads.)
 *
 * --inflight: all N requests are added at once (one easy handle each) to a
 * multi capped at M connections (default 256, pivday's own cap), and the
 * line also gives the resident memory before the requests and at its peak:
 *   … rss_base_kb=… rss_peak_kb=… per_req_bytes=… completed=…
 *
 * Loop glue: one uv_poll_t per curl socket, one uv_timer_t, one uv_idle_t.
 * After curl_multi_add_handle curl asks for a 0 ms timeout; that work runs
 * on the next loop iteration through the idle handle, which stops itself
 * (a 1 ms timer caps one-at-a-time requests at ~820/s here, and a 0 ms
 * uv_timer spins on libuv 1.44).  Everything runs on the loop's thread and
 * no curl_multi_* call is made from inside a curl callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <curl/curl.h>
#include <uv.h>

typedef struct {
  CURL *easy;
  char *buf;              /* the response body of the current request */
  size_t len, cap;
  uint64_t start;         /* uv_hrtime when the request was added */
} slot_t;

typedef struct {
  uv_poll_t poll;
  curl_socket_t fd;
} sock_t;

static uv_loop_t *loop;
static CURLM *multi;
static uv_timer_t timer;
static uv_idle_t idle;
static struct curl_slist *headers;
static const char *url;
static long total = 1000, conc = 1, max_conn = 256;
static int inflight_mode;
static long started, done, errors;
static uint64_t *lat;     /* ns per completed request */

static void check_done(void);

static size_t on_write(char *p, size_t size, size_t n, void *arg) {
  slot_t *s = arg;
  size_t k = size * n;
  if (s->len + k > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 512;
    while (cap < s->len + k) cap *= 2;
    char *nb = realloc(s->buf, cap);
    if (nb == NULL) return 0;
    s->buf = nb;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, p, k);
  s->len += k;
  return k;
}

static void on_sock_closed(uv_handle_t *h) { free(h->data); }

/* Runs from the loop when a curl socket is ready. */
static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *k = h->data;
  int flags = 0;
  int running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(multi, k->fd, flags, &running);
  check_done();
}

/* curl's socket callback: only (un)registers interest. */
static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *arg,
                          void *sockp) {
  (void)e;
  (void)arg;
  sock_t *k = sockp;
  if (what == CURL_POLL_REMOVE) {
    if (k != NULL) {
      uv_poll_stop(&k->poll);
      uv_close((uv_handle_t *)&k->poll, on_sock_closed);
      curl_multi_assign(multi, fd, NULL);
    }
    return 0;
  }
  if (k == NULL) {
    k = malloc(sizeof(*k));
    if (k == NULL) return -1;
    k->fd = fd;
    if (uv_poll_init_socket(loop, &k->poll, fd) < 0) {
      free(k);
      return -1;
    }
    k->poll.data = k;
    curl_multi_assign(multi, fd, k);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&k->poll, ev, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *t) {
  (void)t;
  int running;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

/* The 0 ms case: run on the next loop iteration, once. */
static void on_idle(uv_idle_t *h) {
  uv_idle_stop(h);
  on_timer(NULL);
}

static int on_curl_timer(CURLM *m, long ms, void *arg) {
  (void)m;
  (void)arg;
  uv_timer_stop(&timer);
  if (ms < 0) {
    uv_idle_stop(&idle);
  } else if (ms == 0) {
    uv_idle_start(&idle, on_idle);
  } else {
    uv_timer_start(&timer, on_timer, (uint64_t)ms, 0);
  }
  return 0;
}

static CURL *new_easy(slot_t *s) {
  CURL *e = curl_easy_init();
  if (e == NULL) return NULL;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)s);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  if (headers != NULL) curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  return e;
}

static int send_one(slot_t *s) {
  s->len = 0;
  s->start = uv_hrtime();
  started++;
  return curl_multi_add_handle(multi, s->easy) == CURLM_OK ? 0 : -1;
}

/* After socket_action has returned: collect finished transfers and, in the
 * default mode, send the slot's next request on the same handle. */
static void check_done(void) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *e = msg->easy_handle;
    CURLcode rc = msg->data.result;
    slot_t *s;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK || status != 200 || s->len == 0) errors++;
    lat[done++] = uv_hrtime() - s->start;
    curl_multi_remove_handle(multi, e);
    if (!inflight_mode && started < total) {
      if (send_one(s) < 0) errors++;
    }
  }
  if (done == total) {
    uv_timer_stop(&timer);
    uv_idle_stop(&idle);
    uv_stop(loop);  /* idle keep-alive connections stay polled */
  }
}

static long status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  size_t n = strlen(field);
  if (f == NULL) return -1;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = strtol(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int usage(void) {
  fprintf(stderr,
          "usage: raw_client --url URL [--n N] [--c C] [--header H]...\n"
          "       raw_client --url URL --inflight [--n N] [--max-conn M]\n");
  return 2;
}

int main(int argc, char **argv) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (strcmp(a, "--url") == 0 && more) url = argv[++i];
    else if (strcmp(a, "--n") == 0 && more) total = atol(argv[++i]);
    else if (strcmp(a, "--c") == 0 && more) conc = atol(argv[++i]);
    else if (strcmp(a, "--max-conn") == 0 && more) max_conn = atol(argv[++i]);
    else if (strcmp(a, "--header") == 0 && more)
      headers = curl_slist_append(headers, argv[++i]);
    else if (strcmp(a, "--inflight") == 0) inflight_mode = 1;
    else return usage();
  }
  if (url == NULL || total < 1 || conc < 1 || max_conn < 1) return usage();
  if (inflight_mode) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    conc = total;
  }
  if (conc > total) conc = total;

  loop = uv_default_loop();
  multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  if (inflight_mode) {
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conn);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_conn);
  } else {
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, conc);
  }
  uv_timer_init(loop, &timer);
  uv_idle_init(loop, &idle);
  lat = malloc(sizeof(*lat) * (size_t)total);
  slot_t *slots = calloc((size_t)conc, sizeof(*slots));
  if (lat == NULL || slots == NULL) return 1;

  long rss_base = status_kb("VmRSS");
  double cpu0 = cpu_us();
  uint64_t t0 = uv_hrtime();
  for (long i = 0; i < conc; i++) {
    slots[i].easy = new_easy(&slots[i]);
    if (slots[i].easy == NULL || send_one(&slots[i]) < 0) {
      fprintf(stderr, "raw_client: cannot start request %ld\n", i);
      return 1;
    }
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t wall = uv_hrtime() - t0;
  double cpu = cpu_us() - cpu0;
  long rss_peak = status_kb("VmHWM");

  qsort(lat, (size_t)done, sizeof(*lat), cmp_u64);
  double p50 = done ? (double)lat[done / 2] / 1e3 : 0;
  double p99 = done ? (double)lat[(done * 99) / 100] / 1e3 : 0;
  printf("rps=%.1f p50_us=%.1f p99_us=%.1f cpu_us=%.2f n=%ld errors=%ld",
         (double)done / ((double)wall / 1e9), p50, p99,
         done ? cpu / (double)done : 0, done, errors);
  if (inflight_mode)
    printf(" rss_base_kb=%ld rss_peak_kb=%ld per_req_bytes=%.0f completed=%ld",
           rss_base, rss_peak,
           (double)(rss_peak - rss_base) * 1024.0 / (double)total,
           done - errors);
  printf("\n");

  for (long i = 0; i < conc; i++) {
    curl_easy_cleanup(slots[i].easy);
    free(slots[i].buf);
  }
  curl_multi_cleanup(multi);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_close((uv_handle_t *)&idle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  curl_slist_free_all(headers);
  curl_global_cleanup();
  free(slots);
  free(lat);
  return errors ? 1 : 0;
}
