#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Builds the guest initramfs for a kernel:
#
#   images/build-initramfs.sh [plain|debug|stock] [EXTRA.ko...]
#   images/build-initramfs.sh custom MODULES_DIR|"" [EXTRA.ko...]
#
# It holds busybox-static, the kernel's modules, vdaq.ko, arecord with its libraries and ALSA's
# configuration (the conformance client), the vdaq app (static), the C example
# examples/sigio-capture.c as /bin/vdaq-sigio-example (static, built here with the host's gcc
# against proto/include/vdaq.h and Linux's uapi headers from linux-libc-dev) and as the 32-bit
# /bin/vdaq-sigio-example32 (gcc-multilib; it runs on kernels with IA32_EMULATION, as vdaq's
# debug kernel and Debian's, and exercises vdaq.ko's compat_ioctl), and the init
# script that runs the host's guest script. Cached under $VDAQ_CACHE/initramfs by its inputs.
# Prints its path.
#
# plain and debug are vdaq's kernels (all their modules, and vdaq.ko). stock is Debian's
# linux-image 6.12 (images/stock-kernel.sh) and custom any kernel given its modules directory
# (lib/modules/RELEASE, with modules.dep): neither has vdaq.ko (Rust modules build only against
# vdaq's kernels), and only the modules the guest's init uses are taken, with what they depend
# on: virtio-pci, 9p over virtio (the host directories) and virtio_snd with the sound stack,
# decompressed, with modules.dep made again. EXTRA.ko files go to /lib/modules/extra (the
# init's workbench modes load them in the order given).
#
# VDAQ_MODULE=FILE.ko puts that vdaq.ko (built against the same kernel variant) in place of the
# one built from guest-driver/: e.g. an old driver from ci/old-module.sh, to show that a test
# fails on it.
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

# What the init loads from a kernel that has them as modules (built in on vdaq's kernels).
GUEST_MODULES=(virtio_pci 9pnet_virtio 9p virtio_snd)

variant=${1:-plain}
[ $# -gt 0 ] && shift
cache_lock "initramfs-$variant"
app=$("$VDAQ_ROOT/images/build-app.sh")
module=""
modules_dir=""
case "$variant" in
  plain | debug)
    kernel_dir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
    if [ -n "${VDAQ_MODULE:-}" ]; then
      [ -f "$VDAQ_MODULE" ] || die "VDAQ_MODULE: no module file '$VDAQ_MODULE'"
      module=$(cd "$(dirname "$VDAQ_MODULE")" && pwd)/$(basename "$VDAQ_MODULE")
      note "vdaq.ko from VDAQ_MODULE: $module"
    else
      module=$("$VDAQ_ROOT/images/build-module.sh" "$variant")
    fi
    kernel_id=$kernel_dir
    ;;
  stock)
    stock_root=$("$VDAQ_ROOT/images/stock-kernel.sh")
    modules_dir=$(echo "$stock_root"/lib/modules/*)
    # The unpacked package's path names its version.
    kernel_id=$modules_dir
    ;;
  custom)
    [ $# -gt 0 ] || die "usage: build-initramfs.sh custom MODULES_DIR|\"\" [EXTRA.ko...]"
    modules_dir=$1
    shift
    kernel_id=none
    if [ -n "$modules_dir" ]; then
      modules_dir=$(cd "$modules_dir" && pwd)
      [ -f "$modules_dir/modules.dep" ] ||
        die "$modules_dir has no modules.dep: give lib/modules/RELEASE of a modules_install (or run depmod)"
      kernel_id="$modules_dir $(hash_inputs "$modules_dir")"
    fi
    ;;
  *) die "unknown variant '$variant' (plain, debug, stock or custom)" ;;
esac
extra_kos=()
for ko in "$@"; do
  [ -f "$ko" ] || die "no module file '$ko'"
  extra_kos+=("$(cd "$(dirname "$ko")" && pwd)/$(basename "$ko")")
done

key=$( {
  echo "$kernel_id"
  hash_inputs "${BASH_SOURCE[0]}" "$VDAQ_ROOT/images/guest" "$app" ${module:+"$module"} \
    "$VDAQ_ROOT/examples/sigio-capture.c" "$VDAQ_ROOT/proto/include/vdaq.h" \
    ${extra_kos[@]+"${extra_kos[@]}"}
  dpkg-query -W -f='${Version}\n' busybox-static alsa-utils libc6-dev libc6-dev-i386 linux-libc-dev
  # ALSA's library: libasound2 on bookworm, libasound2t64 on trixie.
  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' 'libasound2*' 2>/dev/null |
    awk '$1 == "ii" && $2 !~ /-(dev|data)$/ { print $2, $3 }' || true
  gcc -dumpfullversion
} | sha256sum | cut -c1-16)
out="$VDAQ_CACHE/initramfs/$variant-$key.cpio.gz"
# Keeps the images of this variant used last (each use touches its file), so the cache does
# not grow with every change of the driver, the app or the scripts. A QEMU that booted an
# older one has read it already.
KEEP_IMAGES=8
prune_images() {
  find "$VDAQ_CACHE/initramfs" -maxdepth 1 -name "$variant-*.cpio.gz" -printf '%T@ %p\n' |
    sort -rn | tail -n +"$((KEEP_IMAGES + 1))" | cut -d' ' -f2- | xargs -r rm -f --
}
if [ -f "$out" ]; then
  touch "$out"
  note "initramfs ($variant) is cached: $out"
  echo "$out"
  exit 0
fi

say "Building the $variant initramfs"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,mnt/host,usr/share}
cp /bin/busybox "$stage/bin/busybox"
install -m 0755 "$VDAQ_ROOT/images/guest/init" "$stage/init"
if [ -n "$module" ]; then
  cp -a "$kernel_dir/modroot/lib/modules" "$stage/lib/"
  install -m 0644 "$module" "$stage/lib/modules/vdaq.ko"
elif [ -n "$modules_dir" ]; then
  # The modules the init needs and their dependencies, in dependency order per module.
  release=$(basename "$modules_dir")
  base=$(cd "$modules_dir/../../.." && pwd)
  dest="$stage/lib/modules/$release"
  mkdir -p "$dest"
  for m in "${GUEST_MODULES[@]}"; do
    modprobe -d "$base" -S "$release" --show-depends "$m" ||
      die "$modules_dir has no module $m (nor is it built in)"
  done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r path; do
    rel=${path#"$modules_dir"/}
    install -D -m 0644 "$path" "$dest/$rel"
    case "$rel" in
      *.xz) xz -d "$dest/$rel" ;;
      *.zst) zstd -q -d --rm "$dest/$rel" ;;
      *.gz) gzip -d "$dest/$rel" ;;
    esac
  done
  for f in modules.builtin modules.builtin.modinfo modules.order; do
    [ -f "$modules_dir/$f" ] && cp "$modules_dir/$f" "$dest/"
  done
  depmod -b "$stage" "$release"
fi
if [ "${#extra_kos[@]}" -gt 0 ]; then
  mkdir -p "$stage/lib/modules/extra"
  for ko in "${extra_kos[@]}"; do
    install -m 0644 "$ko" "$stage/lib/modules/extra/"
    basename "$ko" >>"$stage/lib/modules/extra/order"
  done
fi
install -m 0755 "$app" "$stage/bin/vdaq"
# The C example, static (the guest has no libc), and the same program for 32-bit processes.
gcc -Wall -Wextra -Werror -O2 -static -I "$VDAQ_ROOT/proto/include" \
  -o "$stage/bin/vdaq-sigio-example" "$VDAQ_ROOT/examples/sigio-capture.c"
gcc -m32 -Wall -Wextra -Werror -O2 -static -I "$VDAQ_ROOT/proto/include" \
  -o "$stage/bin/vdaq-sigio-example32" "$VDAQ_ROOT/examples/sigio-capture.c" ||
  die "cannot build the 32-bit C example: gcc-multilib is missing (ci/setup.sh demo installs it)"

# A dynamically linked program with the libraries it loads.
copy_with_libs() {
  local bin=$1 lib
  install -D -m 0755 "$bin" "$stage$bin"
  while read -r lib; do
    if [ -z "$lib" ] || [ ! -e "$lib" ]; then continue; fi
    install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
  done < <(ldd "$bin" | grep -o '/[^ ]*')
}
copy_with_libs /usr/bin/arecord
cp -a /usr/share/alsa "$stage/usr/share/"
echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
echo 'root:x:0:' >"$stage/etc/group"

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
prune_images
note "$(du -h "$out" | cut -f1) initramfs"
echo "$out"
