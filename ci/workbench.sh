#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# The vdaq workbench: starts vdaq-device, boots a guest with it attached and gives a root shell
# on the guest's serial console, or runs a command in the guest and returns its exit status.
# Run `ci/workbench.sh --help` for the options.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=vm.sh
source "$VDAQ_ROOT/ci/vm.sh"

usage() {
  cat <<'EOF'
Usage: ci/workbench.sh [OPTION...]              a root shell in the guest
       ci/workbench.sh [OPTION...] -- COMMAND...  run COMMAND in the guest, exit with its status

Starts vdaq-device, boots a QEMU guest with it attached (vhost-user-snd-pci), loads the driver
(vdaq.ko: /dev/vdaq0...), mounts the shared host directory at /mnt/work (the working directory)
and gives a root shell on the serial console, here on your terminal: `exit` (or Ctrl-D) powers
the guest off, Ctrl-A X quits QEMU at once, Ctrl-C goes to the guest's program. With a COMMAND,
its words are joined with spaces and run by the guest's sh (as ssh does), e.g.
  ci/workbench.sh -- vdaq capture --seconds 2
  ci/workbench.sh -- 'vdaq info && arecord -l'
and the workbench exits with its exit status (Ctrl-C ends QEMU and the device). Either way
QEMU and the device are stopped on exit and nothing is left running.

Options:
  --kernel K          plain (default: Linux 7.2), debug (Linux 6.12 with KASAN, lockdep and
                      kmemleak; its source comes with ci/setup.sh test), stock (Debian's
                      linux-image 6.12, fetched by ci/setup.sh; no vdaq.ko, so the driver is
                      virtio_snd), or a path to any bzImage
  --modules DIR       with a bzImage: its modules directory (lib/modules/RELEASE of a
                      `make modules_install INSTALL_MOD_PATH=...`); the guest gets virtio-pci,
                      9p and virtio_snd with their dependencies from it (none needed if built in)
  --ko FILE.ko        add a module to the initramfs (/lib/modules/extra), loaded at boot after
                      the driver; repeatable, loaded in order. (Modules in the shared
                      directory can also be insmod-ed from /mnt/work without a rebuild.)
  --driver D          vdaq (default with vdaq's kernels), virtio_snd (Linux's own; arecord)
                      or none: which driver the guest loads for the device
  --share DIR         host directory mounted at /mnt/work in the guest (virtio-9p; default:
                      the current directory); files the guest writes there are root's
  --no-share          no shared directory
  --smp N             vCPUs (default 1)
  --memory SIZE       guest RAM, QEMU syntax (default 512M)
  --accel A           auto (default: KVM if a guest really boots with it, else TCG), kvm, tcg
  --qemu-arg ARG      an extra QEMU argument; repeatable (e.g. --qemu-arg -s for gdb)
  --append ARGS       extra guest kernel arguments
  --device-config F   the device's TOML configuration (vdaq-device --config)
  --device-arg ARG    a vdaq-device flag; repeatable (e.g. --device-arg --stats-interval=1)
  --timeout S         with a COMMAND: stop the guest after S seconds (exit 124; default none)
  --verbose           kernel messages on the console too (default: quiet)
  -h, --help          this help

Logs: run/workbench/console.log (the guest console), device.log (vdaq-device), qemu.log,
share/dmesg.txt (the guest's dmesg at power-off); run/workbench-PID while another workbench
runs; VDAQ_RUN_DIR moves run/. Images are built
and cached on first use (ci/setup.sh installs what they need: run it first on a new machine).
EOF
}

kernel=plain modules="" driver="" share=$PWD append="" timeout=0 verbose=0
kos=() qemu_args=() device_args=()
want_value() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) want_value "$@"; kernel=$2; shift 2 ;;
    --modules) want_value "$@"; modules=$2; shift 2 ;;
    --ko) want_value "$@"; kos+=("$2"); shift 2 ;;
    --driver) want_value "$@"; driver=$2; shift 2 ;;
    --share) want_value "$@"; share=$2; shift 2 ;;
    --no-share) share=""; shift ;;
    --smp) want_value "$@"; VM_SMP=$2; shift 2 ;;
    --memory) want_value "$@"; VM_MEM=$2; shift 2 ;;
    --accel) want_value "$@"; VDAQ_ACCEL=$2; shift 2 ;;
    --qemu-arg) want_value "$@"; qemu_args+=("$2"); shift 2 ;;
    --append) want_value "$@"; append+=" $2"; shift 2 ;;
    --device-config) want_value "$@"; device_args=(--config "$(realpath "$2")" ${device_args[@]+"${device_args[@]}"}); shift 2 ;;
    --device-arg) want_value "$@"; device_args+=("$2"); shift 2 ;;
    --timeout) want_value "$@"; timeout=$2; shift 2 ;;
    --verbose) verbose=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
command_words=("$@")
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds (got '$timeout')"
[[ "${VM_SMP:-1}" =~ ^[1-9][0-9]*$ ]] || die "--smp must be a positive number (got '$VM_SMP')"
case "$driver" in "" | vdaq | virtio_snd | none) ;; *) die "--driver must be vdaq, virtio_snd or none" ;; esac
export VDAQ_ACCEL

case "$kernel" in
  plain | debug | stock) variant=$kernel ;;
  *)
    [ -f "$kernel" ] || die "--kernel must be plain, debug, stock or a bzImage file (got '$kernel')"
    variant=custom
    VM_CUSTOM_KERNEL=$(realpath "$kernel")
    VM_CUSTOM_MODULES=$modules
    ;;
esac
[ -z "$modules" ] || [ "$variant" = custom ] || die "--modules goes with a bzImage given to --kernel"
if [ "$driver" = vdaq ] && { [ "$variant" = stock ] || [ "$variant" = custom ]; }; then
  die "--driver vdaq needs vdaq's kernel (plain or debug): vdaq.ko builds only against it (with your own build, use --ko and --driver none)"
fi
[ -z "$driver" ] || append+=" vdaq.driver=$driver"
VM_EXTRA_KOS=(${kos[@]+"${kos[@]}"})
VM_QEMU_ARGS=(${qemu_args[@]+"${qemu_args[@]}"})
if [ -n "$share" ]; then
  [ -d "$share" ] || die "--share: no directory '$share'"
  VM_WORK_DIR=$(realpath "$share")
fi

# Stop QEMU and the device however we end (exit, Ctrl-C, a signal).
trap vm_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Builds what changed, quietly (the first run builds the guest kernel: minutes).
cargo build --quiet --release --manifest-path "$VDAQ_ROOT/Cargo.toml" -p vdaq-device

# run/workbench, or run/workbench-PID while another workbench holds it: two at once must not
# share (vm_run empties its directory).
mkdir -p "$VDAQ_RUN_DIR"
name=workbench
exec {lock_fd}>"$VDAQ_RUN_DIR/.workbench.lock"
if ! flock -n "$lock_fd"; then
  name="workbench-$$"
  note "another workbench is using $VDAQ_RUN_DIR/workbench: this one's logs go to $VDAQ_RUN_DIR/$name"
fi
script="$VDAQ_RUN_DIR/$name.guest.sh"
if [ "${#command_words[@]}" -gt 0 ]; then
  mode="command"
  printf '%s\n' "# ci/workbench.sh's command" "${command_words[*]}" >"$script"
  VM_TIMEOUT=$timeout
else
  mode=shell
  echo "# ci/workbench.sh: interactive mode (unused)" >"$script"
  VM_TIMEOUT=0
  # Ctrl-C belongs to the guest's foreground program; Ctrl-A X quits.
  VM_CONSOLE_SIGNAL=off
fi
if [ "$verbose" = 1 ]; then append+=" loglevel=7"; else append+=" quiet"; fi
VM_APPEND="vdaq.mode=$mode${append}"
VM_CONSOLE=stdio
rc=0
vm_run "$name" "$variant" "$script" ${device_args[@]+"${device_args[@]}"} || rc=$?
case "$rc" in
  124) note "the command did not finish in $timeout s; logs in $VM_DIR" ;;
  125) note "the guest ended without an exit status (QEMU quit, or the guest crashed); logs in $VM_DIR" ;;
  *) [ "$mode" = command ] || note "guest powered off; logs in $VM_DIR" ;;
esac
exit "$rc"
