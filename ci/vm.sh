# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# shellcheck shell=bash
# Boots guests with the vdaq device: source it after lib.sh.
#
#   vm_run NAME VARIANT GUEST_SCRIPT [DEVICE_ARG...]
#
# starts vdaq-device on a fresh socket, boots QEMU (vhost-user-snd-pci, memfd-shared RAM, the
# run directory shared over virtio-9p as /mnt/host), runs GUEST_SCRIPT in the guest, and stops
# QEMU and the device by PID with timeouts. Everything the run leaves is in $VM_DIR:
# console.log, device.log, qemu.log, device-stats.json (vdaq-device's last statistics, its
# --stats-json) and share/ (guest outputs, dmesg.txt, exit-status).
# Returns the guest script's exit status (124 on a time-out, 125 when the guest did not finish).
#
# VM_SOUND=qemu boots with QEMU's own virtio-sound-pci (`-audiodev none`: clocked silence,
# MSI-X) instead of a vhost-user sound backend: no backend process is started (the device
# arguments, VM_DEVICE_CMD and the device markers below have nothing to act on), and the
# memfd-shared RAM stays as it is (harmless without vhost-user). Default: VM_SOUND=vhost-user.
#
# VM_RNG=1 adds rust-vmm's vhost-device-rng ($RNG_BIN, installed by ci/setup.sh) as a
# vhost-user-rng-pci device (INTx, like the sound device), for the benchmarks.
#
# Environment: VDAQ_ACCEL=auto|kvm|tcg (auto boots a KVM probe once and falls back to TCG),
# VM_TIMEOUT seconds (default 300; 0: no limit), VM_LIVE=1 prints the console and the device log as they come,
# VM_SMP vCPUs (default 1), VM_MEM guest RAM (default 512M), VM_QEMU_ARGS (array) extra QEMU
# arguments, VM_WORK_DIR a host directory shared as mount tag "work" (the guest's init mounts it
# at /mnt/work when the kernel command line has vdaq.work, which this adds), VM_CONSOLE=stdio puts
# the serial console (multiplexed with QEMU's monitor: Ctrl-A C, Ctrl-A X quits) on this
# process's terminal while still logging it to console.log (default: file, console.log only),
# VM_CONSOLE_SIGNAL=off passes Ctrl-C to the guest instead of ending QEMU (stdio console),
# VM_DEVICE_WRAPPER (e.g. "strace -f") runs the device under another program, VM_DEVICE_USER
# (when run as root) as that unprivileged user, VM_DEVICE_CMD
# replaces it with another sound backend (run as `$VM_DEVICE_CMD SOCKET DEVICE_ARG...`: the
# benchmarks' peer), the array VM_SHARE_FILES lists files to put beside guest.sh, and
# VM_SHARE_DIR a directory whose contents go there too. A guest script that creates
# stats-device, freeze-device, thaw-device or kill-device in /mnt/host has the device log its statistics (SIGUSR1), stopped (SIGSTOP),
# continued (SIGCONT) or killed (SIGKILL: a backend that dies); mark-device has its content
# appended to device.log. The file is removed when that is done.

VDAQ_RUN_DIR=${VDAQ_RUN_DIR:-$VDAQ_ROOT/run}
VDAQ_DEVICE_BIN=${VDAQ_DEVICE_BIN:-$VDAQ_ROOT/target/release/vdaq-device}
VM_PIDS=()
VM_TEMP_DIRS=()
# Where vdaq-device keeps its statistics file (--stats-json) during the boot, when not in VM_DIR.
VM_STATS_JSON=""

# Stops every process this library started; for the caller's EXIT trap.
vm_cleanup() {
  local pid
  for pid in "${VM_PIDS[@]}"; do
    stop_pid "$pid" 5
  done
  VM_PIDS=()
  # The device's last statistics, kept with the logs before its own directory goes.
  if [ -n "$VM_STATS_JSON" ] && [ -f "$VM_STATS_JSON" ] && [ -n "${VM_DIR:-}" ] &&
    [ "$VM_STATS_JSON" != "$VM_DIR/device-stats.json" ]; then
    cp "$VM_STATS_JSON" "$VM_DIR/device-stats.json" 2>/dev/null || true
  fi
  VM_STATS_JSON=""
  # A stdio console left the terminal raw if QEMU could not restore it.
  if [ -n "${VM_STTY:-}" ]; then
    stty "$VM_STTY" 2>/dev/null || true
    VM_STTY=""
  fi
  local dir
  for dir in ${VM_TEMP_DIRS[@]+"${VM_TEMP_DIRS[@]}"}; do
    rm -rf "$dir"
  done
  VM_TEMP_DIRS=()
}

vm_build_device() {
  say "Building vdaq-device (release)"
  cargo build --quiet --release --manifest-path "$VDAQ_ROOT/Cargo.toml" -p vdaq-device
}

# Prints the accelerator to use: kvm only if a guest really boots with it.
vm_accel() {
  local choice=${VDAQ_ACCEL:-auto} probe_dir pid i
  case "$choice" in
    kvm | tcg) echo "$choice"; return 0 ;;
    auto) ;;
    *) die "VDAQ_ACCEL must be auto, kvm or tcg (got '$choice')" ;;
  esac
  if [ -n "${VDAQ_ACCEL_PROBED:-}" ]; then echo "$VDAQ_ACCEL_PROBED"; return 0; fi
  VDAQ_ACCEL_PROBED=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    probe_dir=$(mktemp -d)
    qemu-system-x86_64 -accel kvm -cpu host -m 256M -smp 1 -nodefaults -display none \
      -no-reboot -kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
      -append "console=ttyS0 panic=-1 vdaq.probe" -serial "file:$probe_dir/console.log" \
      >"$probe_dir/qemu.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 300; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      grep -qs 'vdaq-guest: ready' "$probe_dir/console.log" && break
      sleep 0.1
    done
    if grep -qs 'vdaq-guest: ready' "$probe_dir/console.log"; then
      VDAQ_ACCEL_PROBED=kvm
    fi
    stop_pid "$pid" 2
    rm -rf "$probe_dir"
  fi
  export VDAQ_ACCEL_PROBED
  echo "$VDAQ_ACCEL_PROBED"
}

# Selects the kernel's images (builds them when missing) into VM_KERNEL and VM_INITRD:
#   plain, debug  vdaq's own kernels (images/build-kernel.sh: Linux 7.2, and 6.12 with the
#                 detectors), with vdaq.ko built for each
#   stock         Debian's linux-image 6.12 from bookworm-backports (images/stock-kernel.sh;
#                 fetched by ci/setup.sh), with the modules the guest needs from its package
#   custom        the bzImage in VM_CUSTOM_KERNEL, with the modules the guest needs from the
#                 modules directory VM_CUSTOM_MODULES (lib/modules/RELEASE; empty: none)
# The array VM_EXTRA_KOS adds .ko files to the initramfs (/lib/modules/extra, loaded in that
# order by the init's workbench modes).
vm_images() {
  local variant=$1 kdir root
  local kos=(${VM_EXTRA_KOS[@]+"${VM_EXTRA_KOS[@]}"})
  case "$variant" in
    plain | debug)
      kdir=$("$VDAQ_ROOT/images/build-kernel.sh" "$variant")
      VM_KERNEL="$kdir/arch/x86/boot/bzImage"
      VM_INITRD=$("$VDAQ_ROOT/images/build-initramfs.sh" "$variant" ${kos[@]+"${kos[@]}"})
      ;;
    stock)
      root=$("$VDAQ_ROOT/images/stock-kernel.sh")
      VM_KERNEL=$(echo "$root"/boot/vmlinuz-*)
      VM_INITRD=$("$VDAQ_ROOT/images/build-initramfs.sh" stock ${kos[@]+"${kos[@]}"})
      ;;
    custom)
      [ -f "${VM_CUSTOM_KERNEL:-}" ] || die "no kernel image '${VM_CUSTOM_KERNEL:-}'"
      VM_KERNEL=$VM_CUSTOM_KERNEL
      VM_INITRD=$("$VDAQ_ROOT/images/build-initramfs.sh" custom "${VM_CUSTOM_MODULES:-}" \
        ${kos[@]+"${kos[@]}"})
      ;;
    *) die "unknown kernel '$variant' (plain, debug, stock or custom)" ;;
  esac
}

# Sets `cpu` and adds the guest's clock to `append` (vm_run's locals) for accelerator $1.
vm_cpu_and_clock() {
  if [ "$1" = kvm ]; then
    cpu=host
  else
    cpu=max
    # A TCG guest reads the host's TSC; calibrating it against the emulated PIT fails when
    # the host is busy (the guest then falls back to jiffies and its clock runs slow). Give
    # it the frequency instead.
    if [ -z "${VDAQ_TSC_KHZ:-}" ]; then
      local app
      app=$("$VDAQ_ROOT/images/build-app.sh")
      VDAQ_TSC_KHZ=$("$app" tsc-khz || true)
      export VDAQ_TSC_KHZ
      note "host TSC: ${VDAQ_TSC_KHZ:-unknown} kHz (passed to TCG guests)"
    fi
    [ -n "$VDAQ_TSC_KHZ" ] && append+=" tsc_early_khz=$VDAQ_TSC_KHZ tsc=reliable"
  fi
}

# Starts the sound device of the boot on socket $1 with device arguments $2...: vdaq-device
# (or VM_DEVICE_CMD) for vhost-user, nothing for QEMU's own; sets `dev_pid` and `sound_dev`
# and reads `run_as` (vm_run's locals).
vm_start_sound() {
  local sock=$1 i
  shift
  # Appended to, so that the marks of ci/vm.sh's loop (below) land between the device's lines.
  : >"$VM_DIR/device.log"
  dev_pid=""
  case "${VM_SOUND:-vhost-user}" in
    qemu)
      echo "QEMU's virtio-sound-pci with -audiodev none: no backend process" >>"$VM_DIR/device.log"
      sound_dev=(-audiodev "none,id=snd0" -device "virtio-sound-pci,audiodev=snd0")
      ;;
    vhost-user)
      if [ -n "${VM_DEVICE_CMD:-}" ]; then
        "$VM_DEVICE_CMD" "$sock" "$@" >>"$VM_DIR/device.log" 2>&1 &
      else
        local bin=$VDAQ_DEVICE_BIN stats=() arg
        [ "${#run_as[@]}" -eq 0 ] || bin="$(dirname "$sock")/vdaq-device"
        # The statistics as JSON beside the socket (a directory the device may write), unless
        # the caller keeps them elsewhere; vm_cleanup copies them to VM_DIR/device-stats.json.
        VM_STATS_JSON="$(dirname "$sock")/device-stats.json"
        for arg in "$@"; do
          case "$arg" in --stats-json | --stats-json=*) VM_STATS_JSON="" ;; esac
        done
        [ -z "$VM_STATS_JSON" ] || stats=(--stats-json "$VM_STATS_JSON")
        ${VM_DEVICE_WRAPPER:-} ${run_as[@]+"${run_as[@]}"} env RUST_LOG="${RUST_LOG:-info}" \
          "$bin" --socket-path "$sock" --once ${stats[@]+"${stats[@]}"} "$@" \
          >>"$VM_DIR/device.log" 2>&1 &
      fi
      dev_pid=$!
      VM_PIDS+=("$dev_pid")
      # 30 s at most: a peer script may build what it needs first (ci/peer/).
      for ((i = 0; i < 300; i++)); do
        [ -S "$sock" ] && break
        kill -0 "$dev_pid" 2>/dev/null || break
        sleep 0.1
      done
      if [ ! -S "$sock" ]; then
        cat "$VM_DIR/device.log" >&2
        stop_pid "$dev_pid"
        die "${VM_DEVICE_CMD:-vdaq-device} did not create its socket"
      fi
      # Who the device runs as (the owner of its /proc entry), for the guest: /mnt/host/device-user.
      stat -c %U "/proc/$dev_pid" >"$VM_DIR/share/device-user" 2>/dev/null || true
      sound_dev=(-chardev "socket,id=vdaq0,path=$sock" -device "vhost-user-snd-pci,chardev=vdaq0")
      ;;
    *) die "VM_SOUND must be vhost-user or qemu (got '$VM_SOUND')" ;;
  esac
}

# Until QEMU ($1) ends or the time limit ($3 s, 0: none) passes, carries out the guest's
# requests on the device ($2, empty for QEMU's own): files in the shared directory named
# freeze, thaw, kill, stats or mark + "-device", each removed once done.
vm_serve_markers() {
  local qemu_pid=$1 dev_pid=$2 limit=$3 marker deadline
  deadline=$((SECONDS + limit))
  while kill -0 "$qemu_pid" 2>/dev/null && { [ "$limit" -eq 0 ] || [ "$SECONDS" -lt "$deadline" ]; }; do
    # A guest script can make the device go silent, come back or die (stall and fault tests):
    # it creates a marker in the shared directory; the marker is removed once done.
    for marker in freeze thaw kill stats mark; do
      [ -e "$VM_DIR/share/$marker-device" ] || continue
      # With QEMU's own sound device there is no backend process to signal.
      [ -n "$dev_pid" ] || [ "$marker" = mark ] || { rm -f "$VM_DIR/share/$marker-device"; continue; }
      case "$marker" in
        mark) cat "$VM_DIR/share/mark-device" >>"$VM_DIR/device.log" ;;
        # Only vdaq-device prints statistics on SIGUSR1; it would end another backend.
        stats) [ -n "${VM_DEVICE_CMD:-}" ] || kill -USR1 "$dev_pid" 2>/dev/null || true ;;
        freeze) kill -STOP "$dev_pid" 2>/dev/null || true ;;
        thaw) kill -CONT "$dev_pid" 2>/dev/null || true ;;
        # Reaped here, so that bash does not report the job as "Killed".
        kill) { kill -KILL "$dev_pid" && wait "$dev_pid"; } 2>/dev/null || true ;;
      esac
      rm -f "$VM_DIR/share/$marker-device"
    done
    sleep 0.05
  done
}

vm_run() {
  local name=$1 variant=$2 script=$3
  shift 3
  local accel cpu sock dev_pid qemu_pid rc tail_pid=""
  vm_images "$variant"
  accel=$(vm_accel)
  local append=${VM_APPEND:-}
  vm_cpu_and_clock "$accel"
  VM_DIR="$VDAQ_RUN_DIR/$name"
  rm -rf "$VM_DIR"
  mkdir -p "$VM_DIR/share"
  cp "$script" "$VM_DIR/share/guest.sh"
  local f
  for f in ${VM_SHARE_FILES[@]+"${VM_SHARE_FILES[@]}"}; do
    cp "$f" "$VM_DIR/share/"
  done
  if [ -n "${VM_SHARE_DIR:-}" ]; then
    cp -r "$VM_SHARE_DIR/." "$VM_DIR/share/"
  fi
  sock="$VM_DIR/vdaq.sock"
  local run_as=()
  if [ -n "${VM_DEVICE_USER:-}" ] && [ "$(id -u)" -eq 0 ]; then
    # The device as an unprivileged user: its socket and a copy of the binary in a directory
    # of its own that the user can reach (the repository may be under a private home).
    local own
    own=$(mktemp -d /tmp/vdaq-device.XXXXXX)
    cp "$VDAQ_DEVICE_BIN" "$own/vdaq-device"
    chown -R "$VM_DEVICE_USER" "$own"
    chmod 0755 "$own"
    sock="$own/vdaq.sock"
    VM_TEMP_DIRS+=("$own")
    run_as=(setpriv --reuid="$VM_DEVICE_USER" --regid="$(id -g "$VM_DEVICE_USER")" --clear-groups)
  fi

  local sound_dev=()
  vm_start_sound "$sock" "$@"

  local extra=()
  if [ "${VM_RNG:-0}" = 1 ]; then
    # vhost-device-rng numbers its sockets: --socket-path rng.sock listens on rng.sock0.
    local rng_sock="$VM_DIR/rng.sock0" rng_pid
    [ -x "$RNG_BIN" ] || die "no vhost-device-rng at $RNG_BIN: run ci/setup.sh"
    "$RNG_BIN" --socket-path "$VM_DIR/rng.sock" --socket-count 1 >"$VM_DIR/rng.log" 2>&1 &
    rng_pid=$!
    VM_PIDS+=("$rng_pid")
    for ((i = 0; i < 100; i++)); do
      [ -S "$rng_sock" ] && break
      sleep 0.1
    done
    [ -S "$rng_sock" ] || die "vhost-device-rng did not create its socket"
    extra+=(-chardev "socket,id=rng0,path=$rng_sock" -device "vhost-user-rng-pci,chardev=rng0,vectors=0")
  fi
  if [ -n "${VM_WORK_DIR:-}" ]; then
    [ -d "$VM_WORK_DIR" ] || die "no directory '$VM_WORK_DIR' to share"
    extra+=(-virtfs "local,path=$VM_WORK_DIR,mount_tag=work,security_model=none,id=work")
    append+=" vdaq.work"
  fi
  local mem=${VM_MEM:-512M}
  note "booting $variant kernel under $accel ($name)"
  echo "$accel" >"$VM_DIR/accel"
  : >"$VM_DIR/console.log"
  local qemu=(qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp "${VM_SMP:-1}" -m "$mem"
    -nodefaults -display none -no-reboot
    -object "memory-backend-memfd,id=mem,size=$mem,share=on" -machine "q35,memory-backend=mem"
    -kernel "$VM_KERNEL" -initrd "$VM_INITRD"
    -append "console=ttyS0 panic=-1 loglevel=4 $append"
    -virtfs "local,path=$VM_DIR/share,mount_tag=host,security_model=none,id=host"
    "${sound_dev[@]}" ${extra[@]+"${extra[@]}"} ${VM_QEMU_ARGS[@]+"${VM_QEMU_ARGS[@]}"})
  case "${VM_CONSOLE:-file}" in
    file)
      "${qemu[@]}" -serial "file:$VM_DIR/console.log" >"$VM_DIR/qemu.log" 2>&1 &
      ;;
    stdio)
      # The console on our terminal (and in console.log). A background job's stdin would be
      # /dev/null: give QEMU ours explicitly. QEMU makes the terminal raw; restored below.
      [ -t 0 ] && VM_STTY=$(stty -g)
      "${qemu[@]}" -chardev "stdio,id=con0,mux=on,signal=${VM_CONSOLE_SIGNAL:-on},logfile=$VM_DIR/console.log" \
        -serial chardev:con0 -mon chardev=con0 0<&0 2>"$VM_DIR/qemu.log" &
      ;;
    *) die "VM_CONSOLE must be file or stdio (got '$VM_CONSOLE')" ;;
  esac
  qemu_pid=$!
  VM_PIDS+=("$qemu_pid")
  if [ "${VM_LIVE:-0}" = 1 ]; then
    tail -q -n +1 -f --pid="$qemu_pid" "$VM_DIR/console.log" "$VM_DIR/device.log" &
    tail_pid=$!
  fi

  local limit=${VM_TIMEOUT:-300}
  vm_serve_markers "$qemu_pid" "$dev_pid" "$limit"
  rc=125
  if kill -0 "$qemu_pid" 2>/dev/null; then
    printf 'error: %s: the guest did not finish in %s s\n' "$name" "${VM_TIMEOUT:-300}" >&2
    rc=124
  fi
  stop_pid "$qemu_pid" 5
  [ -n "$tail_pid" ] && stop_pid "$tail_pid" 1
  # The device and any other backend started for this boot.
  vm_cleanup
  if [ "$rc" -ne 124 ] && [ -f "$VM_DIR/share/exit-status" ]; then
    rc=$(cat "$VM_DIR/share/exit-status")
  fi
  return "$rc"
}

# Prints the last lines of a run's logs (for failure reports).
vm_show_logs() {
  local dir=${1:-$VM_DIR} f
  for f in console.log device.log qemu.log; do
    [ -s "$dir/$f" ] || continue
    printf -- '----- %s (last 40 lines) -----\n' "$dir/$f" >&2
    tail -n 40 "$dir/$f" >&2
  done
}
