# shellcheck shell=bash
# The media plane for the one-box runner: Janus (videoroom, WebSocket API on loopback for the
# app only) and coturn (TURN REST credentials), from Debian's packages with the repo's configs.
# Sourced by appliance/up and appliance/down after lib/services.sh and lib/venv.sh.
#
#   media_ensure SECRETS_DIR   install, generate secrets, render configs, start both (if not
#                              running); prints the [janus] and [turn] config sections
#   media_stop                 stop what media_ensure started
#
# Browsers reach coturn (and Janus's media ports) on this box's address: the first global IPv4
# (TIPSTREAM_MEDIA_HOST overrides it), so a browser on this box or the LAN can connect.

MEDIA_DIR=$TS_VAR/media
JANUS_PID=$TS_RUN/janus.pid
COTURN_PID=$TS_RUN/coturn.pid

_media_host() {
  local ip
  if [[ -n ${TIPSTREAM_MEDIA_HOST:-} ]]; then
    printf '%s\n' "$TIPSTREAM_MEDIA_HOST"
    return
  fi
  ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
  printf '%s\n' "${ip:-127.0.0.1}"
}

_media_secret() { # dir name
  [[ -s $1/$2 ]] && return 0
  (
    umask 077
    "$TS_PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$1/$2.tmp"
  )
  mv "$1/$2.tmp" "$1/$2"
  ts_log "generated $1/$2"
}

_media_start() { # pidfile name command...
  local pidfile=$1 name=$2
  shift 2
  if ts_pid_alive "$pidfile" && ts_pid_runs "$(<"$pidfile")" "$name"; then
    return 0
  fi
  setsid "$@" >>"$TS_VAR/log/$name.log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$pidfile"
  ts_log "started $name (pid $!, log $TS_VAR/log/$name.log)"
}

media_ensure() {
  local secrets=$1 host i
  ts_apt_ensure janus coturn iproute2
  for name in janus_api_secret janus_admin_secret janus_admin_key turn_secret; do
    _media_secret "$secrets" "$name"
  done
  host=$(_media_host)
  mkdir -p "$MEDIA_DIR" "$TS_VAR/log" "$TS_RUN"
  "$TS_PYTHON" -m tipstream.rooms.mediaservers janus "$MEDIA_DIR/janus" \
    --secrets "$secrets" --log-file "$TS_VAR/log/janus.log" >/dev/null
  "$TS_PYTHON" -m tipstream.rooms.mediaservers coturn "$MEDIA_DIR/turnserver.conf" \
    --secrets "$secrets" --ip "$host" --pid-file "$TS_RUN/turnserver.pid" \
    --log-file "$TS_VAR/log/coturn.log" >/dev/null
  _media_start "$JANUS_PID" janus \
    janus --configs-folder "$MEDIA_DIR/janus" --config "$MEDIA_DIR/janus/janus.jcfg"
  _media_start "$COTURN_PID" turnserver \
    turnserver -c "$MEDIA_DIR/turnserver.conf" --no-software-attribute
  for ((i = 0; i < 100; i++)); do
    (: </dev/tcp/127.0.0.1/8188) 2>/dev/null && break
    ts_pid_alive "$JANUS_PID" || ts_die "janus exited; see $TS_VAR/log/janus.log"
    sleep 0.1
  done
  ts_pid_alive "$COTURN_PID" || ts_die "coturn exited; see $TS_VAR/log/coturn.log"
  cat <<TOML

[janus]
# Janus's API listens on loopback for the app only; secrets are in secrets_dir.
ws_url = "ws://127.0.0.1:8188"

[turn]
# Handed to browsers with every room join (TURN REST credentials from turn_secret).
urls = ["stun:$host:3478", "turn:$host:3478?transport=udp", "turn:$host:3478?transport=tcp"]
TOML
}

media_stop() {
  local pidfile
  for pidfile in "$JANUS_PID" "$COTURN_PID"; do
    if ts_pid_alive "$pidfile"; then
      ts_log "stopping $(basename "$pidfile" .pid) (pid $(<"$pidfile"))"
      ts_stop_pid "$(<"$pidfile")" 10
    fi
    rm -f "$pidfile"
  done
}
