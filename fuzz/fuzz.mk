# fuzz/fuzz.mk - the libFuzzer targets, built by the main Makefile's rules
# and flags.  fuzz/run.sh runs:
#   make -f Makefile -f fuzz/fuzz.mk BUILD=build-fuzz CC=clang CFLAGS=... fuzz-build
# CFLAGS there carries -fsanitize=fuzzer-no-link,address,undefined, so the
# runtime objects are instrumented; each harness adds -fsanitize=fuzzer.

FUZZ_NAMES := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))

.PHONY: fuzz-build
fuzz-build: $(FUZZ_NAMES:%=$(BUILD)/fuzz_%)

# A harness that #includes "../runtime/X.c" (to reach static functions)
# links every runtime object but X.o, and never main.o.
fuzz_included = $(patsubst %,$(BUILD)/%.o,$(shell sed -n 's|^\#include "\.\./runtime/\(.*\)\.c".*|\1|p' $(1)))

# The loadable modules (db, http) are linked in statically here.
FUZZ_OBJS := $(OBJS) $(DL_SRCS:runtime/%.c=$(BUILD)/%.o)

$(BUILD)/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(FUZZ_OBJS) $(SRCS) $(DL_SRCS) $(HEADERS)
	@echo "FUZZ $@"
	@$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -fsanitize=fuzzer -o $@ $< \
	  $(filter-out $(BUILD)/main.o $(call fuzz_included,$<),$(FUZZ_OBJS)) $(LDLIBS) $(LIBS_db) $(LIBS_http)
