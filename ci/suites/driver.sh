#!/usr/bin/env bash
# vdaq.ko and the SIGIO app, end to end on the debug guest kernel (KASAN, lockdep,
# atomic-sleep, kmemleak, hung-task and soft-lockup detectors): 3 s of counter frames with no
# gap at the rate within 5%; with F_SETSIG the app's signal count equals the driver's
# kill_fasync count, and both match the interrupt line's increase (which also counts the
# control and event queues' interrupts); with plain SIGIO no period is left unread; unload,
# reload and capture again; no detector report in dmesg.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=../vm.sh
source "$VDAQ_ROOT/ci/vm.sh"
trap vm_cleanup EXIT
vm_build_device

say "driver end to end on the debug kernel"
guest_rc=0
VM_TIMEOUT=${VM_TIMEOUT:-300} vm_run driver debug "$VDAQ_ROOT/ci/guest/driver.sh" || guest_rc=$?
grep 'driver test:\|^vdaq:' "$VM_DIR/console.log" | sed 's/^/    guest: /' || true
rc=0
python3 "$VDAQ_ROOT/ci/check_driver.py" "$VM_DIR/share" "$guest_rc" || rc=$?
if [ "$rc" -ne 0 ]; then
  vm_show_logs "$VM_DIR"
fi
exit "$rc"
