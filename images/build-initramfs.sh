#!/usr/bin/env bash
# Builds the guest initramfs for a kernel variant:
#
#   images/build-initramfs.sh [plain|debug]
#
# It holds busybox-static, the kernel's modules, vdaq.ko, arecord with its libraries and ALSA's
# configuration (the conformance client), the vdaq app (static), the C example
# examples/sigio-capture.c as /bin/vdaq-sigio-example (static, built here with the host's gcc
# against proto/include/vdaq.h and Linux's uapi headers from linux-libc-dev), and the init
# script that runs the host's guest script. Cached under $VDAQ_CACHE/initramfs by its inputs.
# Prints its path.
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

variant=${1:-plain}
cache_lock "initramfs-$variant"
kernel_dir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
app=$("$VDAQ_ROOT/images/build-app.sh")
module=$("$VDAQ_ROOT/images/build-module.sh" "$variant")

key=$( {
  echo "$kernel_dir"
  hash_inputs "${BASH_SOURCE[0]}" "$VDAQ_ROOT/images/guest" "$app" "$module" \
    "$VDAQ_ROOT/examples/sigio-capture.c" "$VDAQ_ROOT/proto/include/vdaq.h"
  dpkg-query -W -f='${Version}\n' busybox-static alsa-utils libasound2 libc6-dev linux-libc-dev
  gcc -dumpfullversion
} | sha256sum | cut -c1-16)
out="$VDAQ_CACHE/initramfs/$variant-$key.cpio.gz"
if [ -f "$out" ]; then
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
cp -a "$kernel_dir/modroot/lib/modules" "$stage/lib/"
install -m 0755 "$app" "$stage/bin/vdaq"
install -m 0644 "$module" "$stage/lib/modules/vdaq.ko"
# The C example, static: the guest has no libc.
gcc -Wall -Wextra -Werror -O2 -static -I "$VDAQ_ROOT/proto/include" \
  -o "$stage/bin/vdaq-sigio-example" "$VDAQ_ROOT/examples/sigio-capture.c"

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
note "$(du -h "$out" | cut -f1) initramfs"
echo "$out"
