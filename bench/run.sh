#!/usr/bin/env bash
# bench/run.sh [b1] [b2] [b3] [b4] - dhrun's benchmarks (all four by default).
# `make bench` runs it as `DHRUN=build/dhrun bench/run.sh $(BENCH)`.
#
#   b1  the workspaceId backfill: dhrun vs one UPDATE per table vs a Prisma
#       Client script, with a write probe; dhrun's memory at three scales
#   b2  NOT NULL on the big table: dhrun's online path vs a direct SET NOT
#       NULL, ACCESS EXCLUSIVE hold times and probe latency, with and
#       without a blocking session
#   b3  `dhrun status` / `check` vs psql (same queries) and node
#   b4  start-up vs lua5.4, and the smoke flow against the example app
#
# Environment: DHRUN (binary, default build/dhrun), BENCH_SCALE (MetricDaily
# rows, default 10000000; smaller for a quick run), BENCH_PRISMA_SECONDS
# (cap of the Prisma script, default 30), BENCH_SHARED_BUFFERS (default 1GB).
# Needs: PostgreSQL 15 server programs, pgbench, node/npm, hyperfine (installed
# here with apt-get when missing).  Starts its own throwaway PostgreSQL (fsync
# on) and stops it on every exit path.  Prints the results table; a full
# default run writes bench/RESULTS.md, other runs bench/out/RESULTS.md.
# Exit 0 when every benchmark ran (missed targets are results, not errors).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
dhrun=$(realpath "${DHRUN:-build/dhrun}")
[ -x "$dhrun" ] || { echo "bench: $dhrun is not built (run make)" >&2; exit 2; }

for name in "$@"; do
  case "$name" in b1|b2|b3|b4) ;; *) echo "bench: unknown benchmark '$name' (b1 b2 b3 b4)" >&2; exit 2 ;; esac
done
names=("$@")
# Is benchmark $1 part of this run? (all of them when none is named)
selected() {
  local n
  [ ${#names[@]} -eq 0 ] && return 0
  for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

# hyperfine and /usr/bin/time (package `time`) are not in the Makefile's
# DEB_PKGS: install them here when missing.
missing=()
if (selected b3 || selected b4) && ! command -v hyperfine >/dev/null; then missing+=(hyperfine); fi
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} (apt-get)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  if ! { $sudo apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "bench: could not install ${missing[*]}" >&2; exit 2
  fi
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (the Prisma baseline and the example app need it)" >&2; exit 2; }
done

# The Prisma baseline's packages (package-lock.json) and its generated client.
# PRISMA_SCHEMA_ENGINE_BINARY=/bin/true: nothing to download, generate works offline.
if selected b1; then
  export PRISMA_SCHEMA_ENGINE_BINARY=/bin/true CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1
  if [ ! -d bench/prisma-baseline/node_modules ]; then
    echo "bench: npm ci in bench/prisma-baseline"
    (cd bench/prisma-baseline && npm ci --no-audit --no-fund --loglevel=error) || exit 2
  fi
  if [ ! -f bench/prisma-baseline/generated/client/index.js ]; then
    (cd bench/prisma-baseline && npx prisma generate >/dev/null) || exit 2
  fi
fi

out="$root/bench/out"
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dhrun-bench.XXXXXX")
chmod 755 "$tmp"
cleanup() { tools/pgtemp.sh stop "$tmp/pg" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fsync and synchronous_commit on (the reference's fair-benchmark setup).
env_lines=$(PGTEMP_DURABLE=1 PGTEMP_SHARED_BUFFERS="${BENCH_SHARED_BUFFERS:-1GB}" tools/pgtemp.sh start "$tmp/pg") ||
  { echo "bench: could not start a throwaway PostgreSQL" >&2; exit 1; }
eval "$env_lines"
# Lock waits longer than 1 ms are logged with their length (B2 reads them
# to time ACCESS EXCLUSIVE holds exactly).
"$PGTEMP_BIN/psql" -X -q -d postgres -c "ALTER SYSTEM SET log_lock_waits = on" \
  -c "ALTER SYSTEM SET deadlock_timeout = '1ms'" -c "SELECT pg_reload_conf()" >/dev/null || exit 1

export DHRUN_BIN="$dhrun" BENCH_OUT="$out"
unset DATABASE_URL DHRUN_STDLIB_DIR PGOPTIONS
# The console output is kept in bench/out/bench.log (its timestamps show
# where the time went).
"$dhrun" bench/bench.lua "$@" 2>&1 | tee "$out/bench.log"
