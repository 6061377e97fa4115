#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Tests ci/workbench.sh's command mode in two boots: the command's exit status is passed
# through (vdaq's kernel, a vdaq capture into the shared directory: 0, with the file there and
# its counter exact; Debian's kernel, arecord sees virtio_snd's card, then `exit 3`: 3), and no
# QEMU or device is left running after each.
# Logs: run/workbench-test/.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export VDAQ_RUN_DIR="$VDAQ_ROOT/run/workbench-test"
rm -rf "$VDAQ_RUN_DIR"
share="$VDAQ_RUN_DIR/work"
mkdir -p "$share"
failures=0
check() {
  local what=$1
  shift
  if "$@"; then
    note "ok: $what"
  else
    note "FAILED: $what"
    failures=$((failures + 1))
  fi
}
nothing_left() {
  local left
  left=$(pgrep -af -- "$VDAQ_RUN_DIR/" || true)
  [ -z "$left" ] || { printf '%s\n' "$left" >&2; return 1; }
}

# 1: a 2 s capture (S16, 2 channels, 48 kHz: the driver's defaults) into the shared directory.
rc=0
ci/workbench.sh --share "$share" --timeout 120 -- \
  vdaq capture --seconds 2 --json -o capture.raw </dev/null >"$VDAQ_RUN_DIR/capture.out" 2>&1 || rc=$?
check "vdaq capture: exit status 0 (got $rc)" [ "$rc" -eq 0 ]
size=$(stat -c %s "$share/capture.raw" 2>/dev/null || echo 0)
check "capture.raw in the shared directory: 384000 bytes (got $size)" [ "$size" -eq 384000 ]
check "the capture's summary: counter clean" grep -q '"clean":true' "$VDAQ_RUN_DIR/capture.out"
check "nothing left running after the capture" nothing_left

# 2: a command's own exit status, on Debian's kernel (its virtio_snd the guest's driver).
rc=0
ci/workbench.sh --kernel stock --no-share --timeout 120 -- \
  'uname -v | grep -q Debian && arecord -l | grep -q VirtIO && exit 3' \
  </dev/null >"$VDAQ_RUN_DIR/exit3.out" 2>&1 || rc=$?
check "Debian's kernel, 'arecord -l ... && exit 3': exit status 3 (got $rc)" [ "$rc" -eq 3 ]
check "nothing left running after exit 3" nothing_left

if [ "$failures" -gt 0 ]; then
  tail -n 30 "$VDAQ_RUN_DIR"/*.out >&2
  exit 1
fi
