# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# shellcheck shell=bash
# Shared helpers for the ci/ and images/ scripts. Source it; it defines functions and variables
# only.

VDAQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Build caches live outside the repository, keyed by their inputs.
VDAQ_CACHE=${VDAQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vdaq}
# The kernel's Rust needs Debian's rustc-web (it has the library source); PATH's rustc may be a
# rustup toolchain without rust-src.
KERNEL_RUSTC=/usr/bin/rustc
KERNEL_RUSTDOC=/usr/bin/rustdoc
BINDGEN_ROOT="$VDAQ_CACHE/tools/bindgen"
BINDGEN="$BINDGEN_ROOT/bin/bindgen"
ACTIONLINT="$VDAQ_CACHE/tools/actionlint/bin/actionlint"
# The benchmarks' rust-vmm peers, installed by ci/setup.sh.
RNG_BIN="$VDAQ_CACHE/tools/vhost-device-rng/bin/vhost-device-rng"
SOUND_BIN="$VDAQ_CACHE/tools/vhost-device-sound/bin/vhost-device-sound"
CARGO_FUZZ="$VDAQ_CACHE/tools/cargo-fuzz/bin/cargo-fuzz"
export VDAQ_ROOT VDAQ_CACHE ACTIONLINT RNG_BIN SOUND_BIN CARGO_FUZZ

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Make variables for every kernel and out-of-tree module build (see shared/TOOLCHAIN.md).
kernel_make_vars() {
  printf '%s\n' LLVM=-19 "RUSTC=$KERNEL_RUSTC" "RUSTDOC=$KERNEL_RUSTDOC" \
    "HOSTRUSTC=$KERNEL_RUSTC" "BINDGEN=$BINDGEN"
}

# Prints vdaq.ko's source files, one per line: the Kbuild file, the driver's modules (its
# subdirectories too) and the definitions it shares with the device and the app (proto/src/).
driver_sources() {
  printf '%s\n' "$VDAQ_ROOT/guest-driver/Kbuild"
  find "$VDAQ_ROOT/guest-driver" "$VDAQ_ROOT/proto/src" -name '*.rs' -print | LC_ALL=C sort
}

# Copies vdaq.ko's sources into directory $1 (as guest-driver/ and proto/src/), for a build
# outside the tree.
copy_driver_sources() {
  local dest=$1 f
  while IFS= read -r f; do
    mkdir -p "$dest/$(dirname "${f#"$VDAQ_ROOT"/}")"
    cp "$f" "$dest/${f#"$VDAQ_ROOT"/}"
  done < <(driver_sources)
}

# Prints a stable hash of the given files' contents and names (directories recurse).
hash_inputs() {
  local f
  for f in "$@"; do
    if [ -d "$f" ]; then
      find "$f" -type f ! -path '*/target/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    else
      sha256sum "$f"
    fi
  done | sed "s|$VDAQ_ROOT/||" | sha256sum | cut -c1-16
}

# Prints the mirror URIs of the machine's apt sources that serve Debian suite $1 (e.g.
# bookworm), first the deb822 ones: never a host name of our own.
debian_mirror_uri() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    # deb822 sources: stanzas separated by blank lines.
    awk -v want="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uri = ""; found = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == want) found = 1 }
        }
        if (uri != "" && found) { print uri; exit }
      }' "$f"
  done
  # One-line sources.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk -v want="$suite" '$1 == "deb" && $3 == want { print $2; exit }
         $1 == "deb" && $2 ~ /^\[/ { for (i = 3; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == want) print $i; break } }' "$f"
  done
}

# Holds an exclusive lock on $VDAQ_CACHE/locks/NAME until the calling script exits, so that
# two builds of the same cached thing (e.g. two test runs at once) do not interleave.
cache_lock() {
  local name=$1
  mkdir -p "$VDAQ_CACHE/locks"
  exec {VDAQ_LOCK_FD}>"$VDAQ_CACHE/locks/$name.lock"
  flock "$VDAQ_LOCK_FD"
}

# Kills a process by PID: TERM, then KILL after a grace period. Never fails.
stop_pid() {
  local pid=$1 grace=${2:-5} i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  # A stopped (SIGSTOP) process only acts on TERM once continued.
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
