# shellcheck shell=bash
# Helpers shared by the appliance scripts (up, down, test) and .ci/run. Sourced, never run.

if [[ -z ${TS_COMMON_LOADED:-} ]]; then
TS_COMMON_LOADED=1

# The checkout these scripts belong to, whatever the caller's working directory.
TS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
TS_VAR=$TS_ROOT/var
# shellcheck disable=SC2034  # used by the scripts that source this file
TS_RUN=$TS_VAR/run

ts_log() { printf '[tipstream] %s\n' "$*" >&2; }
ts_die() {
  ts_log "error: $*"
  exit 1
}

# Install Debian packages that are not installed yet. `apt-get update` runs at most once per
# run (TS_APT_UPDATED is exported so child scripts know), and only when something is missing,
# so a machine that has everything never touches the network.
ts_apt_ensure() {
  local pkg missing=()
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 ||
    ts_die "missing system packages (${missing[*]}) and no apt-get to install them"
  ((EUID == 0)) || ts_die "missing system packages (${missing[*]}): run as root or install them"
  # Another apt run (unattended-upgrades, a parallel job) may hold the lock for a while.
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -q)
  if [[ -z ${TS_APT_UPDATED:-} ]]; then
    ts_log "apt-get update (to install ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >&2
    export TS_APT_UPDATED=1
  fi
  ts_log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2
}

# True when the process in the pid file $1 is alive.
ts_pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# True when process $1's command line contains $2 (guards against a recycled pid).
ts_pid_runs() {
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* ]]
}

# Process group of pid $1, read from /proc (procps is not on every minimal Debian).
ts_pgid() {
  local stat fields
  stat=$(<"/proc/$1/stat") 2>/dev/null || return 0
  # Fields after "(comm)", which may itself hold spaces: state ppid pgrp ...
  read -r -a fields <<<"${stat##*) }"
  printf '%s\n' "${fields[2]}"
}

# Stop the process $1 (and its process group when it leads one): TERM, then KILL after $2 s.
ts_stop_pid() {
  local pid=$1 grace=${2:-15} target i
  kill -0 "$pid" 2>/dev/null || return 0
  target=$pid
  # A process we started with setsid leads its own group: signal the group so that granian's
  # worker processes go with it even if the master dies first.
  [[ $(ts_pgid "$pid") == "$pid" ]] && target=-$pid
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  ts_log "pid $pid did not stop within ${grace}s; killing it"
  kill -KILL -- "$target" 2>/dev/null || true
}

# Write KEY='value' lines: readable by `set -a; . file` and by dotenv parsers alike.
ts_env_line() {
  [[ $2 != *"'"* ]] || ts_die "refusing to write a value with a quote for $1"
  printf "%s='%s'\n" "$1" "$2"
}

fi
