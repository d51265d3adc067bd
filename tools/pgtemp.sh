#!/usr/bin/env bash
# pgtemp.sh - a throwaway PostgreSQL cluster in a directory of its own.
#
#   tools/pgtemp.sh start DIR   initdb into DIR, start on a private unix socket
#                               (DIR) and a free port on 127.0.0.1; prints
#                               `export PG...=...` lines for eval
#   tools/pgtemp.sh stop DIR    stop the server (fast) and delete DIR
#   tools/pgtemp.sh start-replica PRIMARY_DIR DIR
#                               a streaming replica of the cluster in
#                               PRIMARY_DIR (pg_basebackup -R), its own
#                               postmaster on its own socket (DIR) and port
#                               (fsync off unless PGTEMP_DURABLE=1);
#                               prints `export PGTEMP_REPLICA_HOST=... PGTEMP_REPLICA_PORT=...`.
#                               Stop it with `stop DIR`.
#
# As root (CI, containers) initdb and the server run as the `postgres` user,
# since initdb refuses to run as root.  Settings favour speed over
# durability (fsync off) unless PGTEMP_DURABLE=1.  The superuser is
# `postgres` (trust over the socket); a second superuser `dhrun_pw` with a
# random password (in DIR/password) is for password-over-TCP tests.
#
# PGTEMP_REQUIRE_PASSWORD=1 (the test suite): every connection, over the
# socket too, needs that password (scram-sha-256), and `postgres` has it as
# well, so a client that forgot the password fails instead of slipping in.
# The password is random per cluster and contains characters a URL must
# percent-encode and a libpq key=value string must quote:
#   <10 alnum><half of the specials><10 alnum><the other half><10 alnum>
# The alnum pieces let a scan find the password whatever escaping it went
# through (URL, JSON, shell quoting).
set -euo pipefail

find_bindir() {
  local d
  for d in "${PGBIN:-}" /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null || true)" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  echo "pgtemp: no PostgreSQL server programs found (install the postgresql package: make deps)" >&2
  return 1
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Prints a new password (see above); no newline.
new_password() {
  local specials=('@' '/' '%' ':' '#' '?' '+' ' ' '&' '=' "'" '"' "\\") alnum i j tmp
  alnum=$(head -c 600 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  [ "${#alnum}" -ge 30 ] || { echo "pgtemp: /dev/urandom gave too little" >&2; return 1; }
  for ((i = ${#specials[@]} - 1; i > 0; i--)); do   # Fisher-Yates shuffle
    j=$((RANDOM % (i + 1))); tmp=${specials[i]}; specials[i]=${specials[j]}; specials[j]=$tmp
  done
  local half=$((${#specials[@]} / 2))
  printf '%s' "${alnum:0:10}" "${specials[@]:0:half}" "${alnum:10:10}" "${specials[@]:half}" "${alnum:20:10}"
}

cmd=${1:-}; dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: pgtemp.sh start|stop DIR, pgtemp.sh start-replica PRIMARY_DIR DIR" >&2; exit 2
fi

# Starts the cluster in $1/data on a free port; prints the port.
start_on_free_port() {
  local d=$1 port attempt
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
    if as_owner "$bin/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 60 \
         -o "-p $port" start >/dev/null 2>&1; then
      echo "$port"; return 0
    fi
    grep -q "could not bind\|already in use" "$d/server.log" 2>/dev/null || break
  done
  echo "pgtemp: the server did not start, see $d/server.log:" >&2; tail -5 "$d/server.log" >&2
  return 1
}

case "$cmd" in
start)
  bin=$(find_bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -e "$dir/data" ]; then echo "pgtemp: $dir/data exists already" >&2; exit 2; fi
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; chmod 700 "$dir"; fi
  pw=$(new_password)
  (umask 077; printf '%s' "$pw" >"$dir/password")
  # initdb (run as the cluster's owner) reads the superuser's password from the file.
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/password"; fi
  auth=(--auth-local=trust --auth-host=scram-sha-256)
  if [ "${PGTEMP_REQUIRE_PASSWORD:-0}" = 1 ]; then
    auth=(--auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile="$dir/password")
  fi
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
    "${auth[@]}" -N >"$dir/initdb.log" 2>&1 || {
      echo "pgtemp: initdb failed, see $dir/initdb.log:" >&2; tail -5 "$dir/initdb.log" >&2; exit 1; }
  durable=off; [ "${PGTEMP_DURABLE:-0}" = 1 ] && durable=on
  as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = $durable
synchronous_commit = $durable
full_page_writes = $durable
max_connections = 60
shared_buffers = ${PGTEMP_SHARED_BUFFERS:-128MB}
max_wal_size = 2GB
log_line_prefix = '%m [%p] %q%u@%d '
CONF
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
         -o "-p $port" start >/dev/null 2>&1; then
      break
    fi
    port=""
    grep -q "could not bind\|already in use" "$dir/server.log" 2>/dev/null || break
  done
  if [ -z "$port" ]; then
    echo "pgtemp: the server did not start, see $dir/server.log:" >&2; tail -5 "$dir/server.log" >&2; exit 1
  fi
  echo "$port" >"$dir/port"
  # The password goes to psql through its environment and a psql variable
  # (:'pw' quotes it), never through a command line or a file psql writes.
  PGPASSWORD=$pw PGTEMP_PW=$pw "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
\getenv pw PGTEMP_PW
CREATE ROLE dhrun_pw LOGIN SUPERUSER PASSWORD :'pw';
SQL
  cat <<ENV
export PGHOST='$dir' PGPORT='$port' PGUSER=postgres PGDATABASE=postgres
export PGTEMP_DIR='$dir' PGTEMP_BIN='$bin'
ENV
  ;;
start-replica)
  # The replica connects as a replication-only role that the primary trusts
  # over its own socket (no password in any file: the suite scans for it).
  bin=$(find_bindir)
  primary=$(cd "$dir" && pwd)
  rdir=${3:-}
  [ -n "$rdir" ] || { echo "usage: pgtemp.sh start-replica PRIMARY_DIR DIR" >&2; exit 2; }
  pport=$(cat "$primary/port")
  mkdir -p "$rdir"
  rdir=$(cd "$rdir" && pwd)
  if [ -e "$rdir/data" ]; then echo "pgtemp: $rdir/data exists already" >&2; exit 2; fi
  if [ "$(id -u)" = 0 ]; then chown postgres: "$rdir"; chmod 700 "$rdir"; fi
  if ! grep -q "^local replication dhrun_repl trust" "$primary/data/pg_hba.conf"; then
    as_owner sed -i '1i local replication dhrun_repl trust' "$primary/data/pg_hba.conf"
    PGPASSWORD=$(cat "$primary/password") "$bin/psql" -X -q -h "$primary" -p "$pport" -U postgres -d postgres \
      -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dhrun_repl') THEN CREATE ROLE dhrun_repl LOGIN REPLICATION; END IF;
END $$;
SELECT pg_reload_conf();
SQL
  fi
  as_owner "$bin/pg_basebackup" -h "$primary" -p "$pport" -U dhrun_repl -D "$rdir/data" -R -X stream \
    -c fast >"$rdir/basebackup.log" 2>&1 || {
      echo "pgtemp: pg_basebackup failed, see $rdir/basebackup.log:" >&2; tail -5 "$rdir/basebackup.log" >&2; exit 1; }
  # Its own socket; replay positions reported every second even when no WAL
  # arrives (a paused backfill writes none), so a caught-up replica is seen soon.
  # Its fsync is off unless PGTEMP_DURABLE=1, whatever the primary's: on one
  # machine its flushes would queue with the primary's on the same disk,
  # which a replica on a machine of its own does not do.
  rdurable=off; [ "${PGTEMP_DURABLE:-0}" = 1 ] && rdurable=on
  as_owner tee -a "$rdir/data/postgresql.conf" >/dev/null <<CONF
unix_socket_directories = '$rdir'
hot_standby = on
wal_receiver_status_interval = 1s
fsync = $rdurable
CONF
  port=$(start_on_free_port "$rdir") || exit 1
  echo "$port" >"$rdir/port"
  cat <<ENV
export PGTEMP_REPLICA_HOST='$rdir' PGTEMP_REPLICA_PORT='$port'
ENV
  ;;
stop)
  [ -d "$dir" ] || exit 0
  bin=$(find_bindir)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: pgtemp.sh start|stop DIR, pgtemp.sh start-replica PRIMARY_DIR DIR" >&2; exit 2 ;;
esac
