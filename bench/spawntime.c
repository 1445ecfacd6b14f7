/* spawntime.c: wall time of starting and finishing programs, interleaved.
 *
 *   spawntime RUNS CMD_A [ARGS...] -- CMD_B [ARGS...] [-- CMD_C ...]
 *
 * Runs each command once to warm the page cache, then RUNS rounds of A, B,
 * ... one after the other (interleaved, so drift on a noisy machine hits
 * all alike), each with posix_spawn and waitpid, stdout to /dev/null.
 * Prints one line per command:
 *   cmd=I median_us=… p10_us=… p90_us=… failures=…
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_CMDS 8

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Returns the wall time in µs, or a negative number on failure. */
static double run_once(char **argv) {
  posix_spawn_file_actions_t fa;
  pid_t pid;
  int st;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  double t0 = now_us();
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  if (waitpid(pid, &st, 0) < 0) return -1;
  double dt = now_us() - t0;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? dt : -1;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: spawntime RUNS CMD [ARGS] [-- CMD [ARGS]]...\n");
    return 2;
  }
  long runs = atol(argv[1]);
  if (runs < 1 || runs > 100000) return 2;
  char **cmds[MAX_CMDS];
  int ncmd = 0;
  cmds[ncmd++] = &argv[2];
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      argv[i] = NULL;
      if (i + 1 < argc && ncmd < MAX_CMDS) cmds[ncmd++] = &argv[i + 1];
    }
  }
  double *t[MAX_CMDS];
  long fails[MAX_CMDS] = {0}, ok[MAX_CMDS] = {0};
  for (int c = 0; c < ncmd; c++) {
    t[c] = malloc(sizeof(double) * (size_t)runs);
    if (t[c] == NULL) return 1;
    run_once(cmds[c]);
  }
  for (long r = 0; r < runs; r++) {
    for (int c = 0; c < ncmd; c++) {
      double dt = run_once(cmds[c]);
      if (dt < 0) fails[c]++;
      else t[c][ok[c]++] = dt;
    }
  }
  for (int c = 0; c < ncmd; c++) {
    long n = ok[c];
    qsort(t[c], (size_t)n, sizeof(double), cmp_d);
    printf("cmd=%d median_us=%.1f p10_us=%.1f p90_us=%.1f failures=%ld\n", c,
           n ? t[c][n / 2] : 0, n ? t[c][n / 10] : 0,
           n ? t[c][(n * 9) / 10] : 0, fails[c]);
    free(t[c]);
  }
  return 0;
}
