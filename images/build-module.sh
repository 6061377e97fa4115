#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Builds vdaq.ko out of tree against a guest kernel variant and prints its path:
#
#   images/build-module.sh [plain|debug]
#
# The build runs in a copy under $VDAQ_CACHE (the module's sources include the shared wire
# formats from proto/ by relative path), so the repository stays clean. The module is rebuilt
# only when its sources, the kernel build or the make variables change (every guest boot asks
# for it).
set -euo pipefail
# shellcheck source=../ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../ci/lib.sh"

variant=${1:-plain}
cache_lock "module-$variant"
kernel_dir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
work="$VDAQ_CACHE/module/$variant"
mapfile -t make_vars < <(kernel_make_vars)
mapfile -t sources < <(driver_sources)
key=$( { echo "$kernel_dir"; printf '%s\n' "${make_vars[@]}"; hash_inputs "${sources[@]}"; } |
  sha256sum | cut -c1-16)
if [ -f "$work/guest-driver/vdaq.ko" ] && [ "$(cat "$work/key" 2>/dev/null)" = "$key" ]; then
  note "vdaq.ko for the $variant kernel is cached (sources unchanged)"
  echo "$work/guest-driver/vdaq.ko"
  exit 0
fi
rm -rf "$work"
copy_driver_sources "$work"
say "Building vdaq.ko for the $variant kernel"
# Warnings fail the build: rustc's (-Dwarnings) and objtool's (a Rust panic path it cannot
# follow is a function that "falls through").
log="$work/build.log"
if ! make -s -C "$kernel_dir" "${make_vars[@]}" KRUSTFLAGS=-Dwarnings M="$work/guest-driver" \
  modules >"$log" 2>&1 || grep -qi 'warning' "$log"; then
  cat "$log" >&2
  die "vdaq.ko did not build cleanly"
fi
echo "$key" >"$work/key"
echo "$work/guest-driver/vdaq.ko"
