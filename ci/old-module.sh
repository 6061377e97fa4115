#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Builds vdaq.ko as it was at an earlier commit, to show that a test fails on the driver from
# before a fix, and prints its path:
#
#   ci/old-module.sh [--patch FILE.patch] REV [plain|debug]
#
# The driver's sources (guest-driver/) come from REV, the shared definitions (proto/src/) from
# the work tree, so that today's app speaks to it (the ioctl numbers moved from type 'V' to 'Y'
# after the driver fixes of issue 16). Built against the cached kernel of the variant (default
# debug) in $VDAQ_CACHE/module/old-REV-VARIANT. Then, for example:
#
#   ci/e2e.py --module "$(ci/old-module.sh 5d42d02)" probe-fails-no-leak
#
# --patch applies a diff to the driver's sources first (patch -p1, from the repository's top):
# an experiment that widens a race window or makes an allocation fail, to check that a test
# can see what it is meant to see (ci/experiments/*.patch; docs/FAULTS.md).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

patch_file=""
if [ "${1:-}" = --patch ]; then
  if [ $# -lt 2 ] || [ ! -f "$2" ]; then
    die "--patch: no file '${2:-}'"
  fi
  patch_file=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
  shift 2
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  die "usage: ci/old-module.sh [--patch FILE.patch] REV [plain|debug]"
fi
rev=$(git -C "$VDAQ_ROOT" rev-parse --short "$1^{commit}") || die "no commit '$1'"
variant=${2:-debug}
case "$variant" in plain | debug) ;; *) die "unknown variant '$variant' (plain or debug)" ;; esac
kernel_dir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
work="$VDAQ_CACHE/module/old-$rev-$variant${patch_file:+-$(basename "$patch_file" .patch)}"
rm -rf "$work"
mkdir -p "$work/proto/src"
git -C "$VDAQ_ROOT" archive "$rev" guest-driver | tar -x -C "$work"
cp "$VDAQ_ROOT"/proto/src/*.rs "$work/proto/src/"
if [ -n "$patch_file" ]; then
  patch -d "$work" -p1 --quiet <"$patch_file" || die "$patch_file does not apply to $rev"
fi
mapfile -t make_vars < <(kernel_make_vars)
say "Building vdaq.ko of $rev for the $variant kernel"
log="$work/build.log"
if ! make -s -C "$kernel_dir" "${make_vars[@]}" M="$work/guest-driver" modules >"$log" 2>&1; then
  cat "$log" >&2
  die "vdaq.ko of $rev did not build"
fi
echo "$work/guest-driver/vdaq.ko"
