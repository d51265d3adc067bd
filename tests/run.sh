#!/usr/bin/env bash
# tests/run.sh - the test suite: one throwaway PostgreSQL for the whole run,
# every spec under the real dhrun host (busted's runner loaded by dhrun), and
# the server stopped on every exit path.  Last line: `N passed, N failed`.
#
#   tests/run.sh [busted args, e.g. tests/db_spec.lua or --filter=NAME]
#
# DHRUN selects the binary (default build/dhrun); DHRUN_VALGRIND=1 runs it
# under valgrind memcheck; DHRUN_TEST_DEADLINE (seconds, default 1800) bounds
# the whole run.
#
# The server wants a password on every connection (PGTEMP_REQUIRE_PASSWORD=1;
# tests/helpers/testdb.lua puts it in every URL and conninfo).  After busted,
# one more test scans for that password (raw, percent-encoded, and its
# alphanumeric pieces) in everything the suite printed, every file under the
# suite's temp dir (reports, logs, flow journals kept by testdb.drop, app
# logs, the server's log and data directory) and a data-only pg_dumpall of the
# databases still there; only the harness's password file is left out.  It is
# counted in the last line.  DHRUN_TEST_SECRET_SELFTEST=1 plants the password
# in a few forms first: the scan must find exactly those files.
set -u
shopt -s lastpipe
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dhrun=$(realpath "${DHRUN:-build/dhrun}")
[ -x "$dhrun" ] || { echo "tests: $dhrun is not built (run make)"; echo "0 passed, 1 failed"; exit 1; }
busted=$(command -v busted) || { echo "tests: busted missing (run make deps)"; echo "0 passed, 1 failed"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dhrun-test.XXXXXX")
chmod 755 "$tmp"
cleanup() {
  local r
  for r in "$tmp"/replica-*; do   # tests/helpers/replica.lua's, if a spec died before stopping one
    [ -d "$r" ] && { tools/pgtemp.sh stop "$r" >/dev/null 2>&1 || true; }
  done
  tools/pgtemp.sh stop "$tmp/pg" >/dev/null 2>&1 || true; rm -rf "$tmp"
}
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

# Copies busted's output to the terminal and to file $1, holding back its last
# line (`N passed, N failed`) in $summary: the scan's result is added to it.
summary=""
secret_tee() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line" >>"$1"
    if [[ $line =~ ^[0-9]+\ passed,\ [0-9]+\ failed ]]; then summary=$line; else printf '%s\n' "$line"; fi
  done
}

# $1 percent-encoded, every byte but A-Z a-z 0-9 - . _ ~, in upper-case hex
# (%2F), or in lower-case hex (%2f) when $2 is "lower".
pct_encode() {
  local s=$1 i c out=""
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      *) if [ "${2:-}" = lower ]; then out+=$(printf '%%%02x' "'$c"); else out+=$(printf '%%%02X' "'$c"); fi ;;
    esac
  done
  printf '%s' "$out"
}

# The password scan (see the top).  Prints a test line, and for a failure
# each file and line holding the password (masked); returns 0 when clean.
secret_scan() {
  local pwfile="$PGTEMP_DIR/password" pw pats=() piece f n ln line p files=() planted=() label
  local LC_ALL=C   # bytes, not characters: the server's files are binary
  pw=$(cat "$pwfile") || { echo "FAIL  password scan: cannot read the harness's password"; return 1; }
  # Longest first: the masking below replaces them in this order.
  pats=("$pw" "$(pct_encode "$pw")" "$(pct_encode "$pw" lower)")
  while read -r piece; do pats+=("$piece"); done < <(grep -oE '[A-Za-z0-9]{8,}' <<<"$pw")
  label="the database password appears in no output, report, journal or log file"
  if [ "${DHRUN_TEST_SECRET_SELFTEST:-0}" = 1 ]; then
    label="the password scan finds the password planted in 4 files (DHRUN_TEST_SECRET_SELFTEST=1)"
    mkdir -p "$tmp/selftest"
    planted=("$tmp/selftest/raw.log" "$tmp/selftest/url.txt" "$tmp/selftest/report.json" "$tmp/selftest/piece.txt")
    printf 'connecting with %s\n' "$pw" >"${planted[0]}"
    printf 'DATABASE_URL=%s\n' "${pats[1]}" >"${planted[1]}"
    p=${pw//\\/\\\\}; p=${p//\"/\\\"}; p=${p//\//\\/}
    printf '{"url": "%s"}\n' "$p" >"${planted[2]}"
    printf 'could not parse "...%s..."\n' "${pats[3]}" >"${planted[3]}"
  fi
  # The databases still there (testdb.drop kept the journals of the others).
  mkdir -p "$tmp/scan"
  PGPASSWORD=$pw "$PGTEMP_BIN/pg_dumpall" --data-only --no-role-passwords >"$tmp/scan/pg_dumpall.sql" \
    2>"$tmp/scan/pg_dumpall.err" || { echo "FAIL  password scan: pg_dumpall failed:"; cat "$tmp/scan/pg_dumpall.err"
    return 1; }
  grep -rlaF -D skip -f <(printf '%s\n' "${pats[@]}") -- "$tmp" | while IFS= read -r f; do
    [ "$f" = "$pwfile" ] || files+=("$f")
  done
  if [ "${DHRUN_TEST_SECRET_SELFTEST:-0}" = 1 ]; then
    if [ "$(printf '%s\n' "${files[@]}" | sort)" = "$(printf '%s\n' "${planted[@]}" | sort)" ]; then
      echo "ok    $label"; return 0
    fi
  elif [ "${#files[@]}" = 0 ]; then
    echo "ok    $label ($(du -sh "$tmp" | cut -f1) scanned)"; return 0
  fi
  echo "FAIL  $label"
  echo
  echo "failure: the password (shown as <password>) is in ${#files[@]} file(s):"
  for f in "${files[@]}"; do
    n=0
    grep -naF -D skip -f <(printf '%s\n' "${pats[@]}") -- "$f" | while IFS= read -r line && [ $n -lt 5 ]; do
      ln=${line%%:*} line=${line#*:}
      for p in "${pats[@]}"; do line=${line//"$p"/<password>}; done
      line=${line//[^[:print:]]/?}
      p=${line%%"<password>"*}   # show up to 300 characters around the first hit
      p=$((${#p} > 120 ? ${#p} - 120 : 0))
      printf '  %s:%s: %s\n' "${f#"$tmp"/}" "$ln" "${line:p:300}"
      n=$((n + 1))
    done
  done
  [ "${DHRUN_TEST_SECRET_SELFTEST:-0}" = 1 ] && echo "  (planted: ${planted[*]#"$tmp"/})"
  return 1
}

runner=("$dhrun")
if [ "${DHRUN_VALGRIND:-0}" = 1 ]; then
  runner=(valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite
          --suppressions="$root/tests/valgrind.supp" "$dhrun")
  export DHRUN_BIN_WRAPPER="valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$root/tests/valgrind.supp"
fi
# The run has a deadline: a test that hangs (a lock wait without
# lock_timeout, a child that never exits) fails the run with a clear message
# instead of holding CI until its own limit.
deadline=${DHRUN_TEST_DEADLINE:-1800}
timeout --kill-after=30 "$deadline" "${runner[@]}" "$busted" --ignore-lua "$@" 2>&1 | secret_tee "$tmp/suite-output.log"
busted_rc=${PIPESTATUS[0]}
if [ "$busted_rc" = 124 ] || [ "$busted_rc" = 137 ]; then
  echo "tests: the suite did not finish within its deadline of ${deadline} s (DHRUN_TEST_DEADLINE): a test hangs"
  echo "tests: (the last test named above, or the one after it); the run is counted as failed"
  failed_deadline=1
fi
secret_scan
scan_rc=$?
if [ -z "$summary" ]; then
  echo "tests: busted ended (exit $busted_rc) without its summary line"
  summary="0 passed, 1 failed"
fi
[[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(.*)$ ]]
passed=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]} rest=${BASH_REMATCH[3]}
if [ "$scan_rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
[ "${failed_deadline:-0}" = 1 ] && [ "$failed" = 0 ] && failed=1
echo "$passed passed, $failed failed$rest"
[ "$busted_rc" = 0 ] && [ "$scan_rc" = 0 ]
