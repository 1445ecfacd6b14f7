# spec/fuzz/fuzz.mk: hardening targets (issue 8), included by the top
# Makefile.  None of them is needed by `make test`.
#
#   make fuzz                  both libFuzzer targets, FUZZ_SECONDS each (60);
#                              fails on any crash, leak or sanitizer report
#   make fuzz-build            just build them (build/fuzz/)
#   make lint                  cppcheck + clang-tidy on core/ and bindings/,
#                              luacheck on lua/ (and spec/)
#   make harden-deps           the packages these need (through `make deps`)
#
# The fuzzers are built with clang (-fsanitize=fuzzer,address,undefined);
# llhttp is compiled with them from the same sources as the main build.
# New corpus entries go to build/fuzz/corpus-*; the seeds in
# spec/fuzz/corpus/ are only read.

HARDEN_PKGS  := clang libclang-rt-14-dev cppcheck clang-tidy lua-check
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror \
                -Icore -Ibindings $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(FUZZ_SAN) \
                -DPIVDAY_VERSION='"$(VERSION)"'
FUZZ_LLHTTP  := $(if $(LLHTTP_OBJS),$(patsubst %,$(FUZZ_DIR)/llhttp/%.o,llhttp api http))
FUZZ_CORE    := $(FUZZ_DIR)/core/server.o $(FUZZ_DIR)/core/errors.o
FUZZ_LUACORE := $(CORE_SRC:%.c=$(FUZZ_DIR)/%.o) $(BIND_SRC:%.c=$(FUZZ_DIR)/%.o)
FUZZ_BINS    := $(FUZZ_DIR)/fuzz_server $(FUZZ_DIR)/fuzz_webhooks
FUZZ_RUN      = -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=2048 \
                -print_final_stats=1 -detect_leaks=1

.PHONY: fuzz fuzz-build fuzz-server fuzz-webhooks lint lint-c lint-lua harden-deps

harden-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(HARDEN_PKGS)"

fuzz: harden-deps
	@$(MAKE) --no-print-directory fuzz-build
	@$(MAKE) --no-print-directory fuzz-server fuzz-webhooks

fuzz-build: $(FUZZ_BINS)

fuzz-server: $(FUZZ_DIR)/fuzz_server
	@mkdir -p $(FUZZ_DIR)/corpus-server $(FUZZ_DIR)/artifacts
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $< $(FUZZ_RUN) -dict=spec/fuzz/http.dict -artifact_prefix=$(FUZZ_DIR)/artifacts/server- \
	  $(FUZZ_DIR)/corpus-server spec/fuzz/corpus/server

# Leaks: a Lua heap never balances malloc against free within one input, so
# libFuzzer's per-input leak check (a ptrace'd LSan pass each time) would
# run on every input; it is off here, and LSan checks once at exit instead,
# after the target has closed its Lua state (everything C allocated must be
# gone by then).
# The journal goes to a fresh directory in /dev/shm when there is one: an
# accepted delivery is fdatasync'd, which on a disk would make this target
# measure the disk.
fuzz-webhooks: $(FUZZ_DIR)/fuzz_webhooks
	@mkdir -p $(FUZZ_DIR)/corpus-webhooks $(FUZZ_DIR)/artifacts
	@tmp=$$(mktemp -d $$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp)/pivday-fuzz.XXXXXX) && \
	echo "FUZZ_TMPDIR=$$tmp" && \
	FUZZ_TMPDIR=$$tmp \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $< $(FUZZ_RUN) -detect_leaks=0 -dict=spec/fuzz/json.dict -max_len=8192 \
	  -artifact_prefix=$(FUZZ_DIR)/artifacts/webhooks- \
	  $(FUZZ_DIR)/corpus-webhooks spec/fuzz/corpus/webhooks; \
	rc=$$?; rm -rf "$$tmp"; exit $$rc

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O1 -g -w $(FUZZ_SAN) -fsanitize=fuzzer-no-link $(LLHTTP_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_server: spec/fuzz/fuzz_server.c $(FUZZ_CORE) $(FUZZ_LLHTTP)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LLHTTP_LIBS) \
	  $(shell $(PKG_CONFIG) --libs libuv) -lm

# The Lua state loads lua-cjson's .so, which takes Lua's symbols from us.
$(FUZZ_DIR)/fuzz_webhooks: spec/fuzz/fuzz_webhooks.c $(FUZZ_LUACORE) $(FUZZ_LLHTTP)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Wl,-E -o $@ $^ $(LLHTTP_LIBS) \
	  $(PKG_LIBS) -lm

# ------------------------------------------------------------------ lint --
# cppcheck and clang-tidy see the same flags as the build.  Findings that
# are not bugs are listed with the reason: spec/fuzz/cppcheck.supp and
# spec/fuzz/tidy.supp (FILE CHECK per line); any other finding fails.
# clang-tidy checks: the static analyzer, bugprone and CERT C, minus
#   bugprone-easily-swappable-parameters  (style: (buf, len) pairs everywhere)
#   bugprone-reserved-identifier, cert-dcl37-c, cert-dcl51-cpp
#                                         (flags libuv/lua-style macros)
#   bugprone-assignment-in-if-condition   (the libuv idiom `if ((r = f()))`)
#   cert-err33-c                          (unchecked fprintf/snprintf to
#                                          stderr/fixed buffers, by design)
#   clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling
#                                         (memcpy/snprintf "use _s variants":
#                                          Annex K is not in glibc)
LINT_C     := $(CORE_SRC) $(BIND_SRC) $(HOST_SRC)
TIDY_CHECKS := -*,clang-analyzer-*,bugprone-*,cert-*,-cert-err33-c,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-cert-dcl37-c,-cert-dcl51-cpp,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-bugprone-assignment-in-if-condition

lint: harden-deps
	@$(MAKE) --no-print-directory lint-c lint-lua

lint-c:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability,performance \
	  --inline-suppr --suppressions-list=spec/fuzz/cppcheck.supp \
	  -D__GNUC__ -D_GNU_SOURCE -Icore -Ibindings $(LINT_C)
	@mkdir -p $(BUILD)
	@clang-tidy --quiet -checks='$(TIDY_CHECKS)' $(LINT_C) -- \
	  -std=c11 -D_GNU_SOURCE -Icore -Ibindings $(PKG_CFLAGS) $(LLHTTP_CFLAGS) \
	  -DPIVDAY_VERSION='"$(VERSION)"' > $(BUILD)/clang-tidy.log 2>&1; \
	grep -E '^/.*: (warning|error): .*\[[^]]+\]$$' $(BUILD)/clang-tidy.log | \
	  sed -E 's|^$(CURDIR)/||; s|^([^:]+):[0-9]+:[0-9]+: .*\[([^],]+)[],].*$$|\1 \2|' | sort -u > $(BUILD)/clang-tidy.found; \
	grep -vE '^(#|$$)' spec/fuzz/tidy.supp | sort -u > $(BUILD)/clang-tidy.known; \
	new=$$(comm -23 $(BUILD)/clang-tidy.found $(BUILD)/clang-tidy.known); \
	echo "clang-tidy: $$(wc -l < $(BUILD)/clang-tidy.found) kinds of finding, all explained in spec/fuzz/tidy.supp unless listed below"; \
	if [ -n "$$new" ]; then echo "$$new"; echo "(details: $(BUILD)/clang-tidy.log)"; exit 1; fi

# lua/ must be clean; the hardening specs and the fuzz harness too.
lint-lua:
	luacheck -q lua spec/hardening spec/fuzz
