#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# Experiment: can a restarted vdaq-device resume with the same guest? Boots the plain guest
# twice, once per QEMU set-up, captures, kills the device (SIGKILL), starts a new one and
# captures again, then reports what QEMU and the guest did:
#   client  QEMU connects to the device, with -chardev socket,reconnect-ms=500
#   server  QEMU listens (-chardev socket,server=on,wait=on); the device dials it (--connect)
#           and a new device dials it again
# Results with QEMU 10.0.2: docs/FAULTS.md. Exits 0 when it could run the experiment.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=vm.sh
source "$VDAQ_ROOT/ci/vm.sh"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid" 3; done
}
trap cleanup EXIT

GUEST=$(cat <<'SCRIPT'
insmod /lib/modules/vdaq.ko
vdaq capture --seconds 1 >/dev/null 2>&1; echo "guest: capture before the kill: exit $?"
echo kill >/mnt/host/kill-device.tmp && mv /mnt/host/kill-device.tmp /mnt/host/kill-device
while [ ! -e /mnt/host/restarted ]; do sleep 0.1; done
sleep 1
for i in 1 2 3; do
  vdaq capture --seconds 1 >/dev/null 2>/mnt/host/err; rc=$?
  echo "guest: capture $i after the restart: exit $rc $(tail -n 1 /mnt/host/err)"
  [ "$rc" = 0 ] && break
done
echo 0 >/mnt/host/exit-status
SCRIPT
)

# experiment NAME: one boot; prints the guest's and QEMU's account.
experiment() {
  local name=$1 dir sock chardev qemu dev dev2="" i
  dir="$VDAQ_RUN_DIR/backend-restart-$name"
  rm -rf "$dir"
  mkdir -p "$dir/share"
  printf '%s\n' "$GUEST" >"$dir/share/guest.sh"
  sock="$dir/vdaq.sock"
  local device=("$VDAQ_DEVICE_BIN" --socket-path "$sock")
  if [ "$name" = client ]; then
    "${device[@]}" >"$dir/device1.log" 2>&1 &
    dev=$!
    PIDS+=("$dev")
    for ((i = 0; i < 50; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
    chardev="socket,id=vdaq0,path=$sock,reconnect-ms=500"
  else
    device+=(--connect)
    chardev="socket,id=vdaq0,path=$sock,server=on,wait=on"
  fi
  say "backend restart, QEMU as $name ($chardev)"
  qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 512M -nodefaults -display none -no-reboot \
    -object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem \
    -kernel "$VM_KERNEL" -initrd "$VM_INITRD" -append "console=ttyS0 panic=-1 loglevel=4" \
    -serial "file:$dir/console.log" \
    -virtfs "local,path=$dir/share,mount_tag=host,security_model=none,id=host" \
    -chardev "$chardev" -device vhost-user-snd-pci,chardev=vdaq0 >"$dir/qemu.log" 2>&1 &
  qemu=$!
  PIDS+=("$qemu")
  if [ "$name" = server ]; then
    for ((i = 0; i < 50; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
    "${device[@]}" >"$dir/device1.log" 2>&1 &
    dev=$!
    PIDS+=("$dev")
  fi
  local deadline=$((SECONDS + 240))
  while kill -0 "$qemu" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    if [ -e "$dir/share/kill-device" ]; then
      rm -f "$dir/share/kill-device"
      kill -KILL "$dev" 2>/dev/null || true
      wait "$dev" 2>/dev/null || true
      sleep 1
      "${device[@]}" >"$dir/device2.log" 2>&1 &
      dev2=$!
      PIDS+=("$dev2")
      : >"$dir/share/restarted"
    fi
    sleep 0.1
  done
  stop_pid "$qemu" 3
  [ -z "$dev2" ] || stop_pid "$dev2" 3
  note "guest:"
  grep -a '^guest:' "$dir/console.log" | sed 's/^/      /' >&2 || note "  (no guest output)"
  note "QEMU:"
  sed 's/^/      /' "$dir/qemu.log" | sort -u >&2
}

vm_images plain
experiment client
experiment server
