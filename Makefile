# dhrun - build, test and install.  `make help` lists the targets.
PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc

HOST_PKGS := lua5.4 libcrypto
PKGS      := $(HOST_PKGS) libpq libcurl
WARNINGS  := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes \
             -Wstrict-prototypes -Wwrite-strings -Wpointer-arith -Wformat=2 \
             -Wundef -Wvla -Wcast-align -Wold-style-definition -pedantic
CFLAGS    ?= -O2 -g
ALL_CFLAGS = -std=c11 $(WARNINGS) $(CFLAGS) $(EXTRA_CFLAGS)
# Computed once (:=), not again each time a rule expands CPPFLAGS/LDLIBS;
# quietly: before `make deps` they are missing, and check-deps says so in
# one line.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
HOST_LIBS  := $(shell pkg-config --libs $(HOST_PKGS) 2>/dev/null)
DHRUN_ABI  := $(shell sha256sum include/dhrun.h | cut -c1-12)
CPPFLAGS  += -Iinclude -I$(BUILD) $(PKG_CFLAGS) \
             -DDHRUN_SHARE_DIR='"$(PREFIX)/share/dhrun"' \
             -DDHRUN_LIB_DIR='"$(PREFIX)/lib/dhrun"' \
             -DDHRUN_ABI='"$(DHRUN_ABI)"'
# LuaFileSystem and lua-cjson are linked in from Debian's static archives,
# so the installed binary needs no Lua C modules from other packages.
# The host exports its dhrun_* API (runtime/dhrun.dynlist) to the modules.
LDLIBS    += -l:liblua5.4-filesystem.a -l:liblua5.4-cjson.a \
             $(HOST_LIBS) -lm -ldl
HOST_LDFLAGS := -Wl,--dynamic-list=runtime/dhrun.dynlist

# The database and HTTP modules are shared objects in $(BUILD)/lib/dhrun
# (installed to PREFIX/lib/dhrun), opened on first require: libpq and
# libcurl pull in ~30 libraries, which only scripts that use them load.
DL_MODS  := db http sql
DL_SRCS  := $(DL_MODS:%=runtime/l_%.c)
DL_LIBS  := $(DL_MODS:%=$(BUILD)/lib/dhrun/%.so)
LIBS_db   := $(shell pkg-config --libs libpq 2>/dev/null)
LIBS_http := $(shell pkg-config --libs libcurl 2>/dev/null)
LIBS_sql  := -lpg_query

SRCS    := $(filter-out $(DL_SRCS),$(wildcard runtime/*.c))
OBJS    := $(SRCS:runtime/%.c=$(BUILD)/%.o) $(BUILD)/stdlib_blob.o
HEADERS := $(wildcard include/*.h)
# The Lua stdlib: core modules (stdlib/core) and recipes (stdlib/recipes);
# module names do not include the layer (stdlib/core/dhrun/db.lua is dhrun.db).
STDLIB_ROOTS := stdlib/core:stdlib/recipes
STDLIB  := $(shell find stdlib -name '*.lua' | LC_ALL=C sort)

# Debian packages the build, the tests, the demo and the benchmarks need.
DEB_PKGS := build-essential pkg-config liblua5.4-dev lua5.4 libpq-dev \
            libssl-dev lua-filesystem-dev lua-cjson-dev \
            libcurl4-openssl-dev libpg-query-dev postgresql lua-busted lua-check clang \
            libclang-rt-14-dev valgrind chromium curl stress-ng
# What compiling needs (the rest is for the tests, the demo and the benchmarks).
BUILD_PKGS := build-essential pkg-config liblua5.4-dev libpq-dev libssl-dev lua-filesystem-dev lua-cjson-dev \
              libcurl4-openssl-dev libpg-query-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Another apt or dpkg (unattended-upgrades on a fresh machine) may hold the
# lock: wait for it rather than fail.
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600

# A failed rule leaves no half-written target (build/stdlib_blob.c).
.DELETE_ON_ERROR:

.PHONY: all deps check-deps app-deps bench fuzz demo test test-only asan valgrind lint install uninstall clean help

all: $(BUILD)/dhrun $(DL_LIBS)

help:
	@echo "make            build $(BUILD)/dhrun"
	@echo "make demo       the release flows on a throwaway PostgreSQL with the example Data Hub"
	@echo "make deps       install missing Debian packages (apt-get)"
	@echo "make test       install deps, build, run every test (last line: N passed, N failed)"
	@echo "make asan       the test suite under AddressSanitizer + UBSan"
	@echo "make valgrind   the test suite with dhrun under valgrind memcheck"
	@echo "make lint       luacheck over stdlib/, scripts/, tests/"
	@echo "make bench      the benchmarks (bench/); results in bench/RESULTS.md"
	@echo "make fuzz       the libFuzzer targets, each for a bounded time"
	@echo "make install    install to PREFIX=$(PREFIX)"

$(BUILD)/dhrun: $(OBJS) runtime/dhrun.dynlist
	@echo "LD  $@"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(HOST_LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(BUILD)/%.o: runtime/%.c $(HEADERS) Makefile | $(BUILD) check-deps
	@echo "CC  $<"
	@$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -c -o $@ $<

# Lua C modules do not link liblua: they use the host's.
$(BUILD)/lib/dhrun/%.so: runtime/l_%.c $(HEADERS) Makefile | $(BUILD) check-deps
	@mkdir -p $(@D)
	@echo "CC  $@"
	@$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -fPIC -shared $(LDFLAGS) -o $@ $< $(LIBS_$*)

$(BUILD)/stdlib_blob.c: $(STDLIB) $(BUILD)/embed
	@echo "GEN $@"
	@$(BUILD)/embed $@ $(STDLIB_ROOTS) $(STDLIB)

$(BUILD)/stdlib_blob.o: $(BUILD)/stdlib_blob.c include/stdlib_blob.h
	@$(CC) -std=c11 $(CFLAGS) $(EXTRA_CFLAGS) -Iinclude -c -o $@ $<

$(BUILD)/embed: tools/embed.c | $(BUILD) check-deps
	@$(CC) -std=c11 $(WARNINGS) -O1 $(shell pkg-config --cflags lua5.4) -o $@ $< \
	  $(shell pkg-config --libs lua5.4)

$(BUILD):
	@mkdir -p $@

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing" $$missing; \
	  $(APT) update -qq && \
	  $(APT) install -y -qq $$missing >/dev/null; \
	fi

# One line naming what is missing, instead of a compiler error about lua.h.
check-deps:
	@missing=$$(for p in $(BUILD_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make: cannot build: missing Debian packages:" $$missing "(run make deps, which installs them)" >&2; \
	  exit 2; \
	fi

# The README's main-job command: everything it needs, then the demo.
demo: deps app-deps
	@$(MAKE) --no-print-directory all
	@tools/demo.sh

# The README's test command.  Builds first, starts a throwaway PostgreSQL,
# runs every spec under the real host, always stops the server.
test: deps app-deps
	@$(MAKE) --no-print-directory all
	@DHRUN=$(BUILD)/dhrun tests/run.sh $(TESTS)

# Same, without the apt-get check (for quick iterations).
test-only: all
	@DHRUN=$(BUILD)/dhrun tests/run.sh $(TESTS)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CC=clang \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" all
	@DHRUN=build-asan/dhrun ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 tests/run.sh $(TESTS)

valgrind: deps all
	@DHRUN=$(BUILD)/dhrun DHRUN_VALGRIND=1 tests/run.sh $(TESTS)

lint:
	@luacheck -q stdlib scripts tests examples bench

# The example app's npm packages (package-lock.json, `npm ci`).
app-deps:
	@if [ -f examples/datahub/package-lock.json ] && [ ! -d examples/datahub/node_modules ]; then \
	  echo "make app-deps: npm ci in examples/datahub"; \
	  (cd examples/datahub && npm ci --no-audit --no-fund --loglevel=error); \
	fi

bench: deps app-deps
	@$(MAKE) --no-print-directory all
	@DHRUN=$(BUILD)/dhrun bench/run.sh $(BENCH)

fuzz: deps
	@fuzz/run.sh $(FUZZ_SECONDS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/dhrun/scripts \
	  $(DESTDIR)$(PREFIX)/lib/dhrun
	install -m 755 $(BUILD)/dhrun $(DESTDIR)$(PREFIX)/bin/dhrun
	install -m 644 $(DL_LIBS) $(DESTDIR)$(PREFIX)/lib/dhrun/
	install -m 644 scripts/*.lua $(DESTDIR)$(PREFIX)/share/dhrun/scripts/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/dhrun
	rm -rf $(DESTDIR)$(PREFIX)/share/dhrun $(DESTDIR)$(PREFIX)/lib/dhrun

clean:
	rm -rf build build-asan
