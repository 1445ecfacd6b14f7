/* errors.c: the PD_E* table of pd.h turned into names and messages. */
#include <string.h>
#include <strings.h>
#include "pd.h"

const char *pd_err_name(int err) {
  switch (err) {
  case 0: return "OK";
#define PD_ERR_NAME(name, val, msg) case PD_##name: return #name;
    PD_ERRNO_MAP(PD_ERR_NAME)
#undef PD_ERR_NAME
  }
  return "EUNKNOWN";
}

const char *pd_strerror(int err) {
  switch (err) {
  case 0: return "success";
#define PD_ERR_MSG(name, val, msg) case PD_##name: return msg;
    PD_ERRNO_MAP(PD_ERR_MSG)
#undef PD_ERR_MSG
  }
  return "unknown error";
}

const pd_header_t *pd_header_find(const pd_header_t *h, size_t n,
                                  const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < n; i++)
    if (h[i].name_len == len && strncasecmp(h[i].name, name, len) == 0)
      return &h[i];
  return NULL;
}

double pd_now(uv_loop_t *loop) { return (double)uv_now(loop) / 1e3; }

double pd_hrtime(void) { return (double)uv_hrtime() / 1e9; }
