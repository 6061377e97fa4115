#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Unpacks Debian's own kernel, a kernel this project did not build: the linux-image 6.12 package
# from bookworm-backports that ci/setup.sh downloads into $VDAQ_CACHE/stock-kernel (named in its
# file `current`). Extracted with dpkg-deb -x (never installed on the host), with depmod run on
# its modules. Prints the extracted root: boot/vmlinuz-RELEASE and lib/modules/RELEASE.
#
#   images/stock-kernel.sh
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

dir="$VDAQ_CACHE/stock-kernel"
[ -f "$dir/current" ] || die "Debian's kernel package is not in $dir: run ci/setup.sh"
deb="$dir/$(cat "$dir/current")"
[ -f "$deb" ] || die "$deb is missing: run ci/setup.sh"
cache_lock stock-kernel
root="$dir/root-$(basename "$deb" .deb)"
if [ ! -f "$root/.done" ]; then
  say "Unpacking $(basename "$deb")"
  rm -rf "$root"
  mkdir -p "$root"
  dpkg-deb -x "$deb" "$root"
  release=$(basename "$(echo "$root"/lib/modules/*)")
  # The package has no modules.dep (its postinst makes it): make it here.
  depmod -b "$root" "$release"
  touch "$root/.done"
fi
echo "$root"
