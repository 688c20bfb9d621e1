# shellcheck shell=bash source-path=SCRIPTDIR
# The Python environment. Sourced; call ts_venv_ensure.
#
# CI builds every commit in a fresh clone, and installing the locked dependencies takes a
# while, so the dependencies live in a venv cached outside the clone, keyed by what decides
# its contents: requirements.lock, the dependency tables of pyproject.toml and the interpreter.
# A changed lock gets a new cached venv; an unchanged one is reused by every clone.
#
# The project itself is never installed into the cached venv: an editable install there points
# at one checkout only, so a CI clone (since deleted) would silently take over the imports of a
# developer's checkout. Each checkout gets instead a small venv of its own in .venv that layers
# on the cached one (a .pth line adds the cached site-packages) and holds the editable install
# of this checkout and the console scripts (tipctl, pytest, mypy, ruff, ...) bound to it.
# Creating it takes a second or two and needs no network.
#
# Settings: TIPSTREAM_VENV_CACHE (default /var/cache/tipstream, or ~/.cache/tipstream when that
# is not writable), TIPSTREAM_PYTHON_BASE (interpreter to build with; default python3 >= 3.11).
# After ts_venv_ensure: TS_PYTHON (.venv/bin/python), TS_VENV_DEPS (the cached venv), PATH.

if [[ -z ${TS_VENV_LOADED:-} ]]; then
TS_VENV_LOADED=1

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# An interpreter >= 3.11 that can create venvs (Debian moves ensurepip to python3-venv). A venv's
# python stands for the interpreter it was made from: once .venv/bin is on PATH (scripts calling
# scripts, an activated venv), `python3` is .venv's own, and the key must not change with that.
_ts_base_python() {
  local cand path
  for cand in ${TIPSTREAM_PYTHON_BASE:+"$TIPSTREAM_PYTHON_BASE"} python3 /usr/bin/python3; do
    path=$(command -v "$cand" 2>/dev/null) || continue
    path=$("$path" -c 'import sys
if sys.version_info >= (3, 11):
    print(sys._base_executable if sys.prefix != sys.base_prefix else sys.executable)' \
      2>/dev/null) || continue
    [[ -n $path && -x $path ]] || continue
    if ! "$path" -c 'import ensurepip, venv' 2>/dev/null; then
      [[ $path == /usr/bin/* ]] || continue
      ts_apt_ensure python3-venv
      "$path" -c 'import ensurepip, venv' 2>/dev/null || continue
    fi
    printf '%s\n' "$path"
    return 0
  done
  # Debian 12's own python3 is 3.11: install it (and venv support) when nothing fits.
  ts_apt_ensure python3 python3-venv
  /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' ||
    ts_die "no Python >= 3.11 with venv support (set TIPSTREAM_PYTHON_BASE)"
  printf '%s\n' /usr/bin/python3
}

# sha256 over the lock, pyproject's dependency tables and the interpreter's identity.
_ts_venv_key() {
  local python=$1
  {
    cat "$TS_ROOT/requirements.lock"
    "$python" - "$TS_ROOT/pyproject.toml" <<'PY'
import json, platform, sys, tomllib
with open(sys.argv[1], "rb") as f:
    doc = tomllib.load(f)
project = doc.get("project", {})
print(json.dumps({
    "build": doc.get("build-system", {}).get("requires", []),
    "python": project.get("requires-python"),
    "dependencies": project.get("dependencies", []),
    "optional": project.get("optional-dependencies", {}),
    "interpreter": [sys.version, sys.base_prefix, platform.machine()],
}, sort_keys=True))
PY
  } | sha256sum | cut -c1-16
}

_ts_venv_cache_dir() {
  local dir=${TIPSTREAM_VENV_CACHE:-/var/cache/tipstream}
  if [[ -z ${TIPSTREAM_VENV_CACHE:-} ]] && ! mkdir -p "$dir" 2>/dev/null; then
    dir=${XDG_CACHE_HOME:-$HOME/.cache}/tipstream
  fi
  mkdir -p "$dir" || ts_die "cannot create the venv cache $dir"
  printf '%s\n' "$dir"
}

# The cached dependency venv, built if missing or half-built (call under its lock).
_ts_deps_build() {
  local base=$1 deps=$2 build_reqs
  [[ -f $deps/.tipstream-complete ]] && return 0
  ts_log "creating the Python environment $deps (first run for this lock; takes a few minutes)"
  rm -rf "$deps"
  "$base" -m venv "$deps"
  # The build backend goes in too, so the editable install of a checkout needs no build
  # isolation and therefore no download.
  mapfile -t build_reqs < <("$deps/bin/python" -c '
import tomllib, sys
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))' "$TS_ROOT/pyproject.toml")
  # A find-links/extra-index entry of the machine's pip config that does not exist makes pip
  # warn once per package: noise, not news. Everything else pip says goes through.
  "$deps/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$TS_ROOT/requirements.lock" "${build_reqs[@]}" wheel 2>&1 |
    { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; } >&2
  touch "$deps/.tipstream-complete"
}

# This checkout's .venv on top of the cached one. Updated in place when the lock (so the cached
# venv) or pyproject.toml changes: what someone pip-installed into the layer and is not in the
# lock yet survives (it is on its way into the lock); copies of what the lock now provides go,
# so the locked versions win. Recreated only when the interpreter underneath changed.
_ts_checkout_venv() {
  local deps=$1 venv=$TS_ROOT/.venv stamp want site deps_site name target first
  local -a stale
  want="$deps $(sha256sum <"$TS_ROOT/pyproject.toml" | cut -c1-16)"
  stamp=$venv/.tipstream-layer
  if [[ -f $stamp && ! -L $venv && $(<"$stamp") == "$want" && -x $venv/bin/tipctl ]]; then
    return 0
  fi
  if [[ -L $venv ]]; then
    rm -f "$venv"
  elif [[ -d $venv && ! -f $stamp ]]; then
    # A venv made by hand: keep it (it may hold extra tools) but out of the way, in var/ which
    # git ignores.
    local aside
    mkdir -p "$TS_VAR"
    aside=$TS_VAR/venv.replaced-$(date +%Y%m%d%H%M%S)
    ts_log "moving the existing .venv aside to $aside"
    mv "$venv" "$aside"
  fi
  if ! cmp -s <(grep '^home' "$deps/pyvenv.cfg") <(grep '^home' "$venv/pyvenv.cfg" 2>/dev/null); then
    rm -rf "$venv"
    "$deps/bin/python" -m venv --without-pip "$venv"
  fi
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  deps_site=$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # addsitedir (not a bare path line) so the cached venv's own .pth files are processed too.
  printf 'import site; site.addsitedir(%s)\n' "'${deps_site//\'/}'" >"$site/_tipstream_deps.pth.tmp"
  mv -f "$site/_tipstream_deps.pth.tmp" "$site/_tipstream_deps.pth"
  mapfile -t stale < <("$venv/bin/python" - "$site" "$deps_site" <<'PY'
import importlib.metadata as md, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(d.metadata["Name"]) for d in md.distributions(path=[sys.argv[2]])}
for dist in md.distributions(path=[sys.argv[1]]):
    if norm(dist.metadata["Name"]) in locked:
        print(dist.metadata["Name"])
PY
  )
  if ((${#stale[@]})); then
    "$venv/bin/python" -m pip uninstall --quiet --yes "${stale[@]}"
  fi
  # pip and setuptools come from the cached venv through that .pth.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation --no-warn-script-location -e "$TS_ROOT"
  # The tools' console scripts, bound to this venv's python (binaries such as ruff: linked).
  # pip too: `.venv/bin/pip install X` then installs into this checkout's layer only.
  for file in "$deps"/bin/*; do
    name=${file##*/}
    target=$venv/bin/$name
    case $name in
      python* | activate* | Activate.ps1) continue ;;
    esac
    IFS= read -r first <"$file" || true
    if [[ $first == "#!$deps/bin/python"* ]]; then
      [[ -e $target && ! -L $target ]] && continue
      rm -f "$target"
      { printf '#!%s\n' "$venv/bin/python"; tail -n +2 "$file"; } >"$target"
      chmod 755 "$target"
    elif [[ $(readlink "$target" 2>/dev/null) != "$file" ]]; then
      [[ -e $target && ! -L $target ]] && continue
      ln -sfn "$file" "$target"
    fi
  done
  printf '%s\n' "$want" >"$stamp"
}

# Each lock change leaves a cached venv (about 1 GB) behind: remove those no run has used for a
# week. A venv being built or used for a build holds its lock, so it is skipped.
_ts_venv_prune() {
  local cache=$1 keep=$2 used old
  while IFS= read -r used; do
    old=${used%/.tipstream-used}
    [[ $old == "$keep" ]] && continue
    (
      flock -n 9 || exit 0
      ts_log "removing $old (unused for a week)"
      rm -rf "$old"
    ) 9>"$old.lock"
    [[ -d $old ]] || rm -f "$old.lock"
  done < <(find "$cache" -mindepth 2 -maxdepth 2 -path "$cache/venv-*/.tipstream-used" -mtime +7)
}

ts_venv_ensure() {
  local base key cache deps
  [[ -f $TS_ROOT/requirements.lock ]] || ts_die "requirements.lock is missing in $TS_ROOT"
  base=$(_ts_base_python)
  key=$(_ts_venv_key "$base")
  cache=$(_ts_venv_cache_dir)
  deps=$cache/venv-$key
  # One lock per cached venv: parallel runs (two clones, CI beside a developer) must not build
  # the same venv at once. The subshell holds fd 9 only for the locked section.
  (
    flock 9
    _ts_deps_build "$base" "$deps"
    touch "$deps/.tipstream-used"
  ) 9>"$deps.lock"
  _ts_venv_prune "$cache" "$deps"
  mkdir -p "$TS_VAR"
  (
    flock 9
    _ts_checkout_venv "$deps"
  ) 9>"$TS_VAR/.venv.lock"

  TS_VENV_DEPS=$deps
  TS_PYTHON=$TS_ROOT/.venv/bin/python
  export TS_VENV_DEPS TS_PYTHON
  case ":$PATH:" in
    *":$TS_ROOT/.venv/bin:"*) ;;
    *) export PATH=$TS_ROOT/.venv/bin:$PATH ;;
  esac
}

fi
