#!/usr/bin/env bash
# tests/run.sh - the test suite: one throwaway PostgreSQL for the whole run,
# every spec under the real dhrun host (busted's runner loaded by dhrun), and
# the server stopped on every exit path.  Last line: `N passed, N failed`.
#
#   tests/run.sh [busted args, e.g. tests/db_spec.lua or --filter=NAME]
#
# DHRUN selects the binary (default build/dhrun); DHRUN_VALGRIND=1 runs it
# under valgrind memcheck.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dhrun=$(realpath "${DHRUN:-build/dhrun}")
[ -x "$dhrun" ] || { echo "tests: $dhrun is not built (run make)"; echo "0 passed, 1 failed"; exit 1; }
busted=$(command -v busted) || { echo "tests: busted missing (run make deps)"; echo "0 passed, 1 failed"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dhrun-test.XXXXXX")
chmod 755 "$tmp"
cleanup() { tools/pgtemp.sh stop "$tmp/pg" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server wants the password on every connection: tests/helpers/testdb.lua
# puts it in every URL and conninfo.
if ! env_lines=$(PGTEMP_REQUIRE_PASSWORD=1 tools/pgtemp.sh start "$tmp/pg"); then
  echo "tests: could not start a throwaway PostgreSQL"
  echo "0 passed, 1 failed"
  exit 1
fi
eval "$env_lines"
export DHRUN_BIN="$dhrun" DHRUN_TEST_TMP="$tmp" DHRUN_ROOT="$root"
unset DATABASE_URL DHRUN_STDLIB_DIR NO_COLOR PGPASSWORD PGSERVICE PGSERVICEFILE
export PGPASSFILE="$tmp/no-pgpass"   # not ~/.pgpass: a test must bring the password itself

runner=("$dhrun")
if [ "${DHRUN_VALGRIND:-0}" = 1 ]; then
  runner=(valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite
          --suppressions="$root/tests/valgrind.supp" "$dhrun")
  export DHRUN_BIN_WRAPPER="valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$root/tests/valgrind.supp"
fi
"${runner[@]}" "$busted" --ignore-lua "$@"
