#!/usr/bin/env bash
# vdaq.ko and the app, end to end on the debug guest kernel (KASAN, lockdep, atomic-sleep,
# kmemleak, hung-task and soft-lockup detectors), in two boots:
# - main (ci/guest/driver.sh, a device with two capture streams): the user API self-test;
#   captures by realtime signal, SIGIO, poll() and blocking reads, both streams at once and a
#   slow reader (counter exact, rate within 5%, signals == kill_fasync calls == interrupts,
#   every loss announced); rmmod while open, PCI removal under a blocked reader, rescan,
#   unbind/bind and rmmod/insmod loops; the device frozen under a blocked reader, a poll()
#   sleeper and a signal owner (EIO, POLLERR, one POLL_ERR signal), then back;
# - death (ci/guest/backend-death.sh): vdaq-device killed while streaming.
# No detector report may appear in dmesg.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=../vm.sh
source "$VDAQ_ROOT/ci/vm.sh"
trap vm_cleanup EXIT
vm_build_device

rc=0
# run NAME GUEST_SCRIPT CHECK_KIND [DEVICE_ARG...]
run() {
  local name=$1 script=$2 kind=$3 guest_rc=0 check_rc=0
  shift 3
  say "driver on the debug kernel: $name"
  VM_TIMEOUT=${VM_TIMEOUT:-400} vm_run "$name" debug "$script" "$@" || guest_rc=$?
  grep 'driver test:\|death test:\|^vdaq:' "$VM_DIR/console.log" | sed 's/^/    guest: /' || true
  python3 "$VDAQ_ROOT/ci/check_driver.py" "$VM_DIR/share" "$guest_rc" "$kind" || check_rc=$?
  if [ "$check_rc" -ne 0 ]; then
    vm_show_logs "$VM_DIR"
    rc=1
  fi
}
run driver "$VDAQ_ROOT/ci/guest/driver.sh" main --streams 2
run backend-death "$VDAQ_ROOT/ci/guest/backend-death.sh" death
exit "$rc"
