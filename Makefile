# pivday: build, test, install.  `make deps` is the only target that runs
# apt-get; `make test` and `make demo` run it first so a fresh Debian 12
# machine needs nothing by hand.

VERSION    := 0.1.0
LUA        ?= lua5.4
BUSTED     ?= busted
PKG_CONFIG ?= pkg-config
PREFIX     ?= /usr/local
DESTDIR    ?=
SANITIZE   ?=

BUILD  := build
LUAVER := 5.4
# Install directories; LuaRocks passes BINDIR, LIBDIR (C modules) and
# LUADIR (Lua files) on the command line, which overrides these.
BINDIR := $(PREFIX)/bin
LIBDIR := $(PREFIX)/lib/lua/$(LUAVER)
LUADIR := $(PREFIX)/share/lua/$(LUAVER)
MANDIR := $(PREFIX)/share/man/man1

DEB_PKGS := build-essential pkg-config lua5.4 liblua5.4-dev lua-cjson libuv1-dev \
            libcurl4-openssl-dev lua-busted node-llhttp libedit-dev luarocks groff-base

PKGS         := lua5.4 libuv libcurl
PKG_CFLAGS    = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS      = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

# llhttp: pkg-config when present, else the C sources Debian's node-llhttp
# ships.  They are not ours: they get their own flags.
LLHTTP_PC    := $(shell $(PKG_CONFIG) --exists llhttp 2>/dev/null && echo yes)
ifeq ($(LLHTTP_PC),yes)
LLHTTP_CFLAGS = $(shell $(PKG_CONFIG) --cflags llhttp)
LLHTTP_LIBS   = $(shell $(PKG_CONFIG) --libs llhttp)
LLHTTP_OBJS  :=
else
LLHTTP_DIR   ?= /usr/share/llhttp
LLHTTP_CFLAGS = -I/usr/share/include/llhttp
LLHTTP_LIBS  :=
LLHTTP_OBJS  := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
endif

ifneq ($(SANITIZE),)
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
endif

OPT      ?= -O2 -g
CFLAGS_  := -std=c11 -D_GNU_SOURCE -fPIC $(OPT) -Wall -Wextra -Werror \
            -DPIVDAY_VERSION='"$(VERSION)"' -Icore -Ibindings \
            $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
LDFLAGS_ := $(SAN_FLAGS) $(LDFLAGS)

CORE_SRC := $(wildcard core/*.c)
BIND_SRC := bindings/module.c bindings/client.c bindings/server.c bindings/timer.c \
            bindings/tcp.c bindings/file.c bindings/canon.c bindings/dedupe.c \
            bindings/hook.c
HOST_SRC := bindings/host.c bindings/readline.c bindings/state.c
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/%.o)
HOST_OBJ := $(HOST_SRC:%.c=$(BUILD)/%.o)
DEPS     := $(CORE_OBJ:.o=.d) $(BIND_OBJ:.o=.d) $(HOST_OBJ:.o=.d)

MODULE := $(BUILD)/pivday/core.so
HOST   := $(BUILD)/bin/pivday

.PHONY: all deps test test-only demo install uninstall clean check-boundaries \
        check-asan check-valgrind

all: $(MODULE) $(HOST)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_) -MMD -MP -c $< -o $@

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -fPIC -w $(SAN_FLAGS) $(LLHTTP_CFLAGS) -c $< -o $@

$(MODULE): $(CORE_OBJ) $(BIND_OBJ) $(LLHTTP_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS_) -o $@ $^ $(LLHTTP_LIBS) \
	  $(shell $(PKG_CONFIG) --libs libuv libcurl)

# The host links the module in (package.preload) and exports the Lua API
# for C modules such as cjson, which rely on the host's symbols.
$(HOST): $(CORE_OBJ) $(BIND_OBJ) $(HOST_OBJ) $(LLHTTP_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_) -Wl,-E -o $@ $^ $(LLHTTP_LIBS) $(PKG_LIBS) -ledit -lm

-include $(DEPS)

# Installs the Debian packages that are missing; prints the command instead
# when not root.  A no-op when everything is there.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "make deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "make deps: missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	fi

# core/ knows no Lua; bindings/ knows no piv.day endpoint.
check-boundaries:
	@! grep -rlE '#include *[<"](lua|lauxlib|lualib)\.h' core/ || \
	  { echo "core/ must not include Lua headers"; exit 1; }
	@! grep -rnE '/api/v1|NUMBER_NOT_FOUND|INSUFFICIENT_BALANCE|piv_num_id' bindings/ || \
	  { echo "bindings/ must not know piv.day"; exit 1; }

TEST_ENV = PIVDAY_BIN=$(CURDIR)/$(HOST)

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory test-only

test-only: check-boundaries
	$(TEST_ENV) $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS)

demo: deps
	@$(MAKE) --no-print-directory all
	PIVDAY_SANDBOX_SPEED=4 $(HOST) --sandbox scripts/buy_and_verify.lua

# The whole suite under ASan + UBSan, built apart in build/asan.  The module
# is loaded by lua5.4, so the sanitizer runtimes are preloaded.
ASAN_BUILD := $(BUILD)/asan
check-asan:
	$(MAKE) --no-print-directory all BUILD=$(ASAN_BUILD) SANITIZE=address,undefined OPT="-O1 -g"
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  PIVDAY_BIN=$(CURDIR)/$(ASAN_BUILD)/bin/pivday PIVDAY_TIME_SCALE=3 \
	  $(BUSTED) --lua=$(LUA) --cpath='$(ASAN_BUILD)/?.so' $(BUSTED_ARGS)

# busted runs inside the valgrind'd lua5.4 (no --lua re-exec); specs that
# wait on time stretch their deadlines by PIVDAY_TIME_SCALE.
check-valgrind: all
	PIVDAY_TIME_SCALE=10 $(TEST_ENV) valgrind --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite --show-leak-kinds=definite -q \
	  $(LUA) $$(command -v $(BUSTED)) $(BUSTED_ARGS)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pivday $(DESTDIR)$(LUADIR)/pivday \
	  $(DESTDIR)$(MANDIR)
	install -m 755 $(HOST) $(DESTDIR)$(BINDIR)/pivday
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/pivday/core.so
	cd lua && find pivday -name '*.lua' -exec install -D -m 644 {} $(DESTDIR)$(LUADIR)/{} \;
	install -m 644 pivday.1 $(DESTDIR)$(MANDIR)/pivday.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pivday $(DESTDIR)$(LIBDIR)/pivday/core.so
	rm -f $(DESTDIR)$(MANDIR)/pivday.1
	rm -rf $(DESTDIR)$(LUADIR)/pivday
	-rmdir $(DESTDIR)$(LIBDIR)/pivday 2>/dev/null

clean:
	rm -rf $(BUILD)

# `make bench` (and bench-build, bench-deps): see bench/bench.mk.
-include bench/bench.mk

# `make fuzz`, `make lint` (and harden-deps): see spec/fuzz/fuzz.mk.
-include spec/fuzz/fuzz.mk
