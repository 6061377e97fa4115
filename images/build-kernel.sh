#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Builds a guest kernel from Debian's linux-source with Rust enabled.
#
#   images/build-kernel.sh [plain|debug]
#
# plain: Linux 7.2 (Debian's linux-source-7.2 from trixie-backports, fetched by
# `ci/setup.sh demo`), tinyconfig + kernel/base.config + kernel/bench.config: the demo, the
# workbench, arecord conformance, the benchmarks, and vdaq.ko's driver suite on Linux 7.
# debug: Linux 6.12 (Debian's linux-source-6.12, installed by `ci/setup.sh test`), tinyconfig +
# kernel/base.config + kernel/debug.config (KASAN, lockdep, kmemleak, ...): the driver suites
# under the detectors. Two kernels, not four: each costs 12 to 16 minutes on a new machine.
# Patches apply to the source in name order: kernel/patches-7.2/ to 7.2, kernel/patches-6.12/
# to 6.12. The result is cached under
# $VDAQ_CACHE/kernel, keyed by every input (source package version, fragments, patches, this
# script, toolchain versions); with nothing changed this prints the cached path at once.
# Prints the build directory (bzImage at arch/x86/boot/bzImage, modules in modroot/).
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

variant=${1:-plain}
cache_lock "kernel-$variant"
case "$variant" in
  plain)
    fragments=("$VDAQ_ROOT/images/kernel/base.config" "$VDAQ_ROOT/images/kernel/bench.config")
    source_release=7.2
    tarball="$VDAQ_CACHE/linux-source-7.2/linux-source-7.2.tar.xz"
    source_version() { cat "$VDAQ_CACHE/linux-source-7.2/version"; }
    patch_dir="$VDAQ_ROOT/images/kernel/patches-7.2"
    src_prefix=linux-7.2-src
    setup_layer="demo"
    ;;
  debug)
    fragments=("$VDAQ_ROOT/images/kernel/base.config" "$VDAQ_ROOT/images/kernel/debug.config")
    source_release=6.12
    tarball=/usr/src/linux-source-6.12.tar.xz
    source_version() { dpkg-query -W -f='${Version}\n' linux-source-6.12; }
    patch_dir="$VDAQ_ROOT/images/kernel/patches-6.12"
    src_prefix=src
    setup_layer="test"
    ;;
  *) die "unknown kernel variant '$variant' (plain or debug)" ;;
esac

[ -f "$tarball" ] || die "$tarball is missing: run ci/setup.sh $setup_layer"
[ -x "$BINDGEN" ] || die "bindgen is missing at $BINDGEN: run ci/setup.sh"

# Bump when this script changes how the kernel is built (its text is not hashed, so comments
# and style do not cost a rebuild).
RECIPE=1
mapfile -t patches < <(find "$patch_dir" -name '*.patch' 2>/dev/null | LC_ALL=C sort)
toolchain_id() {
  source_version
  "$KERNEL_RUSTC" --version
  clang-19 --version | head -n 1
  "$BINDGEN" --version
}
src_key=$( { echo "recipe $RECIPE"; toolchain_id; hash_inputs ${patches[@]+"${patches[@]}"}; } | sha256sum | cut -c1-16)
build_key=$( { echo "$src_key"; hash_inputs "${fragments[@]}"; } | sha256sum | cut -c1-16)
src_dir="$VDAQ_CACHE/kernel/$src_prefix-$src_key"
out_dir="$VDAQ_CACHE/kernel/$variant-$build_key"

if [ -f "$out_dir/.complete" ]; then
  note "guest kernel ($variant) is cached: $out_dir"
  echo "$out_dir"
  exit 0
fi

mapfile -t make_vars < <(kernel_make_vars)
jobs=$(nproc)

if [ ! -f "$src_dir/.complete" ]; then
  say "Unpacking linux-source-$source_release into $src_dir"
  rm -rf "$src_dir"
  mkdir -p "$src_dir"
  tar -xJf "$tarball" -C "$src_dir" --strip-components=1
  for p in ${patches[@]+"${patches[@]}"}; do
    note "applying $(basename "$p")"
    patch -d "$src_dir" -p1 --quiet --forward <"$p"
  done
  touch "$src_dir/.complete"
  # Older trees of this release only (the prefixes do not match each other's trees).
  find "$VDAQ_CACHE/kernel" -maxdepth 1 -name "$src_prefix-*" ! -path "$src_dir" -exec rm -rf {} +
fi

say "Configuring the $variant guest kernel"
rm -rf "$out_dir"
mkdir -p "$out_dir"
kmake() { make -s -C "$src_dir" O="$out_dir" "${make_vars[@]}" "$@"; }
kmake rustavailable >/dev/null || die "the kernel does not accept the Rust toolchain (make rustavailable)"
kmake tinyconfig >/dev/null
(cd "$out_dir" && "$src_dir/scripts/kconfig/merge_config.sh" -m -O "$out_dir" "$out_dir/.config" "${fragments[@]}" >/dev/null)
kmake olddefconfig >/dev/null

# Every requested line must have survived olddefconfig (a missing dependency drops it silently).
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) want=$line ;;
    "# CONFIG_"*" is not set") want=$line ;;
    *) continue ;;
  esac
  if ! grep -qxF "$want" "$out_dir/.config"; then
    if [[ "$want" == "# "* ]] && ! grep -q "^${want:2:-11}=" "$out_dir/.config"; then
      continue
    fi
    printf 'error: config line did not survive: %s\n' "$want" >&2
    missing=1
  fi
done < <(cat "${fragments[@]}")
[ "$missing" -eq 0 ] || die "kernel configuration is incomplete"

say "Building the $variant guest kernel with $jobs jobs (5 to 18 minutes on 2 cores the first time, by machine)"
start=$SECONDS
kmake -j"$jobs" bzImage modules
kmake INSTALL_MOD_PATH="$out_dir/modroot" INSTALL_MOD_STRIP=1 modules_install >/dev/null
note "built in $((SECONDS - start)) s: $(du -h "$out_dir/arch/x86/boot/bzImage" | cut -f1) bzImage"
touch "$out_dir/.complete"
# Older builds of this variant are stale inputs' results: keep only this one.
find "$VDAQ_CACHE/kernel" -maxdepth 1 -name "$variant-*" ! -path "$out_dir" -exec rm -rf {} +
# The linux7 variant of 2026-12 became plain.
rm -rf "$VDAQ_CACHE"/kernel/linux7-*
echo "$out_dir"
