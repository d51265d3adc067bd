#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - build the libFuzzer targets and run each one for
# SECONDS (default 20).  `make fuzz` calls it (FUZZ_SECONDS=N make fuzz).
#
#   fuzz/fuzz_*.c          one harness per target (see the comment at the top
#                          of each for what it feeds in and what it checks)
#   fuzz/corpus/<target>/  the committed seed inputs (only read)
#   fuzz/<target>.dict     tokens for the mutator, if the target has them
#   build-fuzz/            instrumented objects, the fuzzer binaries, the
#                          inputs found while fuzzing (corpus/<target>/), logs,
#                          and any crash as crash-<target>-<sha1>
#
# Everything is built with clang, -fsanitize=fuzzer,address,undefined, from
# the main Makefile's rules and warnings (fuzz/fuzz.mk).  Environment:
# FUZZ_TARGETS="args redact" runs only those; FUZZ_BUILD changes build-fuzz.
# Exit status: 0 when no target crashed; 1 otherwise (the log is printed).
# Reproduce a crash: build-fuzz/fuzz_<target> build-fuzz/crash-<target>-<sha1>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

secs=${1:-20}
case "$secs" in ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;; esac
build=${FUZZ_BUILD:-build-fuzz}
command -v clang >/dev/null || { echo "fuzz: clang is missing (make deps)" >&2; exit 1; }

cflags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
make --no-print-directory -f Makefile -f fuzz/fuzz.mk BUILD="$build" CC=clang \
  CFLAGS="$cflags -fsanitize=fuzzer-no-link" fuzz-build

targets=${FUZZ_TARGETS:-$(cd fuzz && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')}
# LeakSanitizer runs after every input; tests/lsan.supp lists third-party
# leaks (none so far).  -close_fd_mask=3: the targets' own output (usage
# text, error messages) is noise here; crash reports still show.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
for t in $targets; do
  bin="$build/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; status=1; continue; }
  mkdir -p "$build/corpus/$t" "fuzz/corpus/$t"
  log="$build/fuzz_$t.log"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  if "$bin" -max_total_time="$secs" -timeout=10 -close_fd_mask=3 -print_final_stats=1 "${dict[@]}" \
       -artifact_prefix="$build/crash-$t-" "$build/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "fuzz: $t ok: ${runs:-?} inputs in ${secs}s, ${cov:-cov: ?}, corpus $(ls "$build/corpus/$t" | wc -l) files"
  else
    echo "fuzz: $t FAILED (log: $log)"
    grep -v '^#[0-9]' "$log" | tail -40
    status=1
  fi
done
exit $status
