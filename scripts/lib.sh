# shellcheck shell=bash
# Helpers shared by qcache's scripts (scripts/test, scripts/pg, scripts/pgpool).
# Source it, don't run it:  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides
#   qc_root                      absolute path of the repository root
#   qc_log MSG... / qc_die MSG...  messages on stderr, prefixed with the script's name
#   qc_sudo CMD...               run CMD as root: directly when root, else through sudo
#   qc_install_deps [PKG...]     install the Debian 12 packages qcache needs (+ PKG...) that are missing
#   qc_build DIR TYPE [ARGS...]  configure DIR once (CMAKE_BUILD_TYPE=TYPE, ARGS) and build with -j$(nproc)
#   qc_free_port START           print the first loopback TCP port >= START that can be bound
#   qc_now_ms                    wall clock in milliseconds (for stage timings)
#
# Everything works as root or as an ordinary user; only package installation needs root/sudo.

if [[ -n "${_QC_LIB_SOURCED:-}" ]]; then
  return 0
fi
_QC_LIB_SOURCED=1

qc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Packages the build and the tests need (Debian 12 names). libgmock-dev comes from the
# googletest source package; clang, libclang-rt-14-dev and pgpool2 are only installed when a
# caller asks for them (qc_install_deps pgpool2 ...). A minimal Debian 12 (debootstrap
# --variant=minbase) lacks python3 (bench_smoke_test, the fuzz seed corpus, qc_free_port)
# and procps (pgrep: scripts/test stops a stage's process tree with it).
QC_BASE_PACKAGES=(
  build-essential cmake pkg-config git python3 procps
  libpqxx-dev libpq-dev libsoci-dev libsqlite3-dev sqlite3 libpg-query-dev
  libboost1.81-dev libxxhash-dev libgtest-dev libgmock-dev libbenchmark-dev
  postgresql-15 postgresql-client-15 gnuplot-nox
)

qc_log() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
}

qc_die() {
  qc_log "error: $*"
  exit 1
}

# Runs "$@" with root rights: directly when we are root, through sudo otherwise.
qc_sudo() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -- "$@"
  else
    qc_log "error: root rights are needed to run: $*"
    qc_log "       run this as root, install sudo, or install the packages yourself"
    return 1
  fi
}

# Prints, one per line, the packages among "$@" that are not fully installed.
qc_missing_packages() {
  local installed
  # dpkg-query exits non-zero when a package is unknown; those simply count as missing.
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)"
  local pkg
  for pkg in "$@"; do
    if ! grep -qE "^${pkg//./\\.} ii" <<<"$installed"; then
      printf '%s\n' "$pkg"
    fi
  done
}

# Installs the base package set plus "$@", skipping what is already installed. Silent and
# without apt-get update when everything is present.
qc_install_deps() {
  command -v dpkg-query >/dev/null 2>&1 ||
    qc_die "dpkg-query not found: qcache's scripts expect Debian 12 (install the packages by hand)"
  local -a missing
  mapfile -t missing < <(qc_missing_packages "${QC_BASE_PACKAGES[@]}" "$@")
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  qc_log "installing missing packages: ${missing[*]}"
  qc_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    qc_die "apt-get update failed"
  qc_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${missing[@]}" ||
    qc_die "apt-get install failed for: ${missing[*]}"
  mapfile -t missing < <(qc_missing_packages "${missing[@]}")
  ((${#missing[@]} == 0)) || qc_die "still missing after apt-get install: ${missing[*]}"
}

# qc_build DIR BUILD_TYPE [cmake args...]
# Configures DIR from qc_root once and reuses it afterwards. When the build type or the
# arguments differ from the ones DIR was configured with, configures it afresh (cmake --fresh:
# cache variables of the old configuration, e.g. QCACHE_WERROR=ON, must not linger). Then builds.
qc_build() {
  (($# >= 2)) || qc_die "usage: qc_build DIR BUILD_TYPE [cmake args...]"
  local dir="$1" type="$2"
  shift 2
  local stamp="$dir/.qc_configure_args"
  local want
  want="$(printf '%s\n' "-DCMAKE_BUILD_TYPE=$type" "$@")"
  if [[ ! -f "$dir/CMakeCache.txt" || ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
    local -a fresh=()
    if [[ -f "$dir/CMakeCache.txt" ]]; then fresh=(--fresh); fi
    mkdir -p "$dir"
    rm -f "$stamp"
    cmake "${fresh[@]}" -S "$qc_root" -B "$dir" "-DCMAKE_BUILD_TYPE=$type" "$@" || return
    printf '%s\n' "$want" >"$stamp"
  fi
  cmake --build "$dir" -j"$(nproc)"
}

# Exit status 0 when nothing listens on / can bind 127.0.0.1:PORT.
qc_port_is_free() {
  local port="$1"
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$port" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
  else
    # Without python3 only a listener can be detected: connecting succeeds => taken.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# qc_free_port START: prints the first free loopback port in [START, START+500).
qc_free_port() {
  local port="$1" last=$(($1 + 500))
  while ((port < last)); do
    if qc_port_is_free "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
    port=$((port + 1))
  done
  qc_log "error: no free loopback port in [$1, $last)"
  return 1
}

qc_now_ms() {
  local t="${EPOCHREALTIME/[.,]/}"
  printf '%s\n' "$((t / 1000))"
}

# Formats a duration in ms as seconds with one decimal.
qc_fmt_ms() {
  printf '%d.%01ds' "$(($1 / 1000))" "$((($1 % 1000) / 100))"
}
