# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# shellcheck shell=dash
# Helpers for the end-to-end scenarios (ci/scenarios/*.toml), sourced in the guest (busybox
# sh) by the scenario runner and by every scenario's `run` snippet. /mnt/host is the run's
# shared directory; $OUT is the current scenario's own directory in it.

HOST=/mnt/host

# Sets and exports $VIRTIO: the sound device's virtio name (its interrupt line in
# /proc/interrupts).
find_device() {
  VIRTIO=""
  for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x0019 ] && VIRTIO=$(basename "$d")
  done
  export VIRTIO
}

# Asks the host to act on the device (freeze: SIGSTOP, thaw: SIGCONT, kill: SIGKILL, stats:
# SIGUSR1) and waits until it has (ci/vm.sh removes the marker).
host_do() {
  to_host "$1-device" "$1"
}

# Writes a line into the device's log (to find a scenario's part of it).
mark_device_log() {
  to_host mark-device "$*"
}

# to_host MARKER TEXT: leaves MARKER (holding TEXT) for ci/vm.sh and waits, 5 s at most, until
# the host has acted on it and removed it. Created by a rename: the host removes the marker as
# soon as it sees it, which a plain create could notice half-way.
to_host() {
  echo "$2" >"$HOST/$1.tmp" && mv "$HOST/$1.tmp" "$HOST/$1"
  i=0
  while [ -e "$HOST/$1" ] && [ "$i" -lt 250 ]; do
    sleep 0.02
    i=$((i + 1))
  done
}

uptime_s() { read -r t _ </proc/uptime && echo "$t"; }

# Prints the seconds since uptime $1.
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f\n", b - a }'; }

# Prints the first /dev/vdaq node that exists.
any_node() {
  for n in /dev/vdaq*; do
    [ -c "$n" ] && echo "$n" && return 0
  done
  echo none
}

# Runs scenario $1 (its snippet is $HOST/sc/$1/run.sh) with a time limit of $2 seconds.
run_scenario() {
  OUT=$HOST/sc/$1
  export OUT
  echo "=== scenario $1: begin"
  mark_device_log "=== scenario $1: begin"
  if [ -f "$HOST/before_each.sh" ]; then
    sh "$HOST/before_each.sh" >"$OUT/before_each.log" 2>&1
  fi
  find_device
  timeout -s KILL "$2" sh -c ". $HOST/prelude.sh; . \"\$OUT/run.sh\"" >"$OUT/stdout" 2>"$OUT/stderr"
  rc=$?
  echo "$rc" >"$OUT/rc"
  dmesg -c >"$OUT/dmesg.txt"
  # The device's statistics at the end of the scenario, in its part of the device log.
  host_do stats
  sleep 0.1
  mark_device_log "=== scenario $1: end"
  echo "=== scenario $1: end (exit $rc)"
}

# --- arecord (Linux's virtio_snd) ---

# Loads virtio_snd and waits for the capture device.
arecord_setup() {
  modprobe virtio_snd || return 1
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -e /dev/snd/pcmC0D0c ] && break
    sleep 0.2
  done
  [ -e /dev/snd/pcmC0D0c ] || { ls -l /dev/snd; return 1; }
  # A FIFO nobody writes: `read -t` on it sleeps without forking a process.
  [ -p /tmp/never ] || mkfifo /tmp/never
}

# Prints the uptime at which capture PCM $1 enters RUNNING (shell builtins only: no fork per
# poll, so the poller barely competes with arecord for the guest's CPU).
arecord_wait_running() {
  status=/proc/asound/card0/pcm$1c/sub0/status
  while :; do
    read -r line <"$status" || true
    case "$line" in "state: RUNNING"*) break ;; esac
    # shellcheck disable=SC3045 # busybox ash has read -t
    read -r -t 0.002 _ <>/tmp/never || true
  done
  uptime_s
}

# arecord_case PCM RATE ALSA_FORMAT CHANNELS SECONDS [default|small|ARECORD_ARG...]: captures
# to $OUT/capture.raw; writes $OUT/time ("STREAM_SECONDS WALL_SECONDS": from RUNNING, and from
# arecord's start, to its exit); returns arecord's exit status. "small" asks for 5 ms periods
# (at least 32 frames) and a 4-period buffer; "default" leaves arecord's own settings.
arecord_case() {
  pcm=$1 rate=$2 format=$3 channels=$4 seconds=$5
  shift 5
  case "${1:-default}" in
    default) [ $# -gt 0 ] && shift ;;
    small)
      shift
      period=$((rate / 200))
      [ "$period" -ge 32 ] || period=32
      set -- --period-size="$period" --buffer-size="$((period * 4))" "$@"
      ;;
  esac
  arecord_wait_running "$pcm" >/tmp/running &
  poller=$!
  t0=$(uptime_s)
  arecord -q -D "hw:0,$pcm" -t raw -f "$format" -c "$channels" -r "$rate" -d "$seconds" "$@" /tmp/capture.raw
  rc=$?
  t1=$(uptime_s)
  kill "$poller" 2>/dev/null
  wait "$poller" 2>/dev/null
  running=$(cat /tmp/running)
  [ -n "$running" ] || running=$t0
  awk -v r="$running" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f %.3f\n", b - r, b - a }' >"$OUT/time"
  mv /tmp/capture.raw "$OUT/capture.raw" 2>/dev/null
  return "$rc"
}
