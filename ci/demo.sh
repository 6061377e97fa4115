#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# The vdaq demo: installs what is missing, builds the device, the guest kernel, vdaq.ko and
# the initramfs, starts vdaq-device, boots a QEMU guest with it, and captures from the guest
# with the vdaq app (one signal per interrupt) while both sides print what happens live (the
# device: frames/s, FIFO level, interrupts; the guest: frames/s, periods, signals, losses,
# then a summary with latency percentiles and the counter check). Usage: ci/demo.sh [SECONDS]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=vm.sh
source "$VDAQ_ROOT/ci/vm.sh"
trap vm_cleanup EXIT

seconds=${1:-10}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number (got '$seconds')"

say "Step 1/3: installing what is missing (ci/setup.sh demo)"
"$VDAQ_ROOT/ci/setup.sh" demo
say "Step 2/3: building the device and the guest images (cached after the first run)"
vm_build_device
vm_images plain
say "Step 3/3: device + VM: the guest captures ${seconds} s; live output follows"
mkdir -p "$VDAQ_RUN_DIR"
echo "$seconds" >"$VDAQ_RUN_DIR/demo-seconds"
VM_SHARE_FILES=("$VDAQ_RUN_DIR/demo-seconds")
rc=0
VM_LIVE=1 VM_TIMEOUT=$((seconds + 120)) vm_run demo plain "$VDAQ_ROOT/ci/guest/demo.sh" \
  --stats-interval 1 || rc=$?
if [ "$rc" -eq 0 ]; then
  say "Demo finished: logs in $VM_DIR"
else
  say "Demo failed (guest exit status $rc): logs in $VM_DIR"
fi
exit "$rc"
