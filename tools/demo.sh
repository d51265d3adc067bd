#!/usr/bin/env bash
# tools/demo.sh - the main job on an embedded default: a throwaway local
# PostgreSQL with the example Data Hub in its pre-tenancy state (seeded), then
# the release as the checklist has it (deploy, build, start the app, smoke
# test), and everything stopped again — also when a step fails or on Ctrl-C.
# Run it through `make demo`, which builds dhrun and installs what it needs.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dhrun="$root/build/dhrun"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dhrun-demo.XXXXXX")
chmod 755 "$tmp"
cleanup() { "$root/tools/pgtemp.sh" stop "$tmp/pg" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
# An interrupted demo deletes its database with the rest: dhrun's own
# "next: ... --resume" is for a real database, not this one.
trap 'echo; echo "make demo: interrupted; its throwaway database is being deleted, so there is nothing to resume:"
      echo "make demo: run make demo again (the --resume hint above is for a real database)"; exit 130' INT
trap 'exit 143' TERM

say() { printf '\n== %s\n' "$*"; }
# A failed step: its own lines above say why; this says what became of the rest.
fail() {
  local code=$?
  echo
  echo "make demo: $1 failed (exit $code); the throwaway PostgreSQL and the app are stopped and deleted"
  echo "make demo: the lines above say why; fix that, then run make demo again"
  exit "$code"
}

say "starting a throwaway PostgreSQL"
env_lines=$("$root/tools/pgtemp.sh" start "$tmp/pg") || fail "starting PostgreSQL"
eval "$env_lines"
createdb -h "$PGHOST" -p "$PGPORT" -U postgres datahub || fail "creating the database"
export DATABASE_URL="postgresql://postgres@localhost/datahub?host=$PGHOST&port=$PGPORT"
echo "PostgreSQL $(psql -XAtc 'SHOW server_version' datahub) on port $PGPORT (socket in $PGHOST)"

# a free port for the example app
for _ in $(seq 1 50); do
  port=$(( 20000 + RANDOM % 30000 ))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
export DATAHUB_PORT=$port DATAHUB_URL="http://127.0.0.1:$port"

say "loading the example Data Hub before the tenancy release (migration 20251201090000_init + seed data)"
"$dhrun" "$root/examples/datahub/setup.lua" --state pre --users 60 --metrics 5000 || fail "loading the example"

# As a team runs it: from the project's directory, which holds its
# dhrun.config.lua and, in scripts/, its own flows (the smoke test).
run() { echo; echo "\$ dhrun $*"; (cd "$root/examples/datahub" && "$dhrun" "$@"); }

say "what the release would do"
run release --dry-run || fail "dhrun release --dry-run"
say "the release: Normal Deployment, build, start the app, 5-Minute Smoke Test"
run release || fail "dhrun release"
say "running deploy again changes nothing"
run deploy --no-build || fail "dhrun deploy"
say "Quick Status Check"
run status
code=$?
say "done (exit $code); the app was stopped with the release run; stopping PostgreSQL"
exit $code
