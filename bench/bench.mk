# bench/bench.mk: `make bench`, included by the top Makefile.
#
#   make bench                 the full run (several minutes), one table,
#                              figures also written to bench/RESULTS.md
#   make bench BENCH_SHORT=1   small N, one sample: proves it still runs
#
# The baselines (raw_client, raw_server, startup, spawntime) are built into
# $(BUILD)/bench with our usual warnings; llhttp's own sources come from the
# objects the top Makefile builds (or pkg-config).  The packages the bench
# needs go through `make deps`, the one target that runs apt-get.

BENCH_PKGS  := nginx-light wrk
BENCH_DIR   := $(BUILD)/bench
BENCH_BINS  := $(BENCH_DIR)/raw_client $(BENCH_DIR)/raw_server \
               $(BENCH_DIR)/startup $(BENCH_DIR)/spawntime
BENCH_CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror \
               $(PKG_CFLAGS) $(LLHTTP_CFLAGS)
BENCH_SHORT ?=

.PHONY: bench bench-deps bench-build

bench: bench-deps
	@$(MAKE) --no-print-directory all bench-build
	BENCH_SHORT=$(BENCH_SHORT) PIVDAY_BIN=$(CURDIR)/$(HOST) BENCH_BIN=$(CURDIR)/$(BENCH_DIR) \
	  $(LUA) bench/run.lua

# A missing nginx or wrk is not fatal: the bench falls back to raw_server
# for the client rows and skips the wrk row, and says so.
bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(BENCH_PKGS)" || \
	  echo "make bench: could not install some of: $(BENCH_PKGS)"

bench-build: $(BENCH_BINS)

$(BENCH_DIR)/raw_client: bench/raw_client.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(shell $(PKG_CONFIG) --libs libuv libcurl)

$(BENCH_DIR)/raw_server: bench/raw_server.c $(LLHTTP_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $^ $(LLHTTP_LIBS) $(shell $(PKG_CONFIG) --libs libuv)

# The same libraries as the host, none dropped by the linker.
$(BENCH_DIR)/startup: bench/startup.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -Wl,--no-as-needed $(PKG_LIBS) -ledit -lm

$(BENCH_DIR)/spawntime: bench/spawntime.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $<
