#!/usr/bin/env bash
# The benchmarks' peer device (P6): rust-vmm's vhost-device-sound with its ALSA backend, on
# SOCKET, capturing the counter signal, for ci/vm.sh's VM_DEVICE_CMD.
#
#   ci/peer/vhost-device-sound.sh SOCKET fifo|file RATE CHANNELS FORMAT PERIOD_FRAMES
#
# Its capture stream reads ALSA's default PCM, which an .asoundrc beside SOCKET makes ALSA's
# `file` plugin (`infile`) over the `null` PCM. `null` has no clock, so what the plugin reads
# sets the pace: `fifo` has `vdaq feed` write one period per period time into a FIFO (real
# time; it ends with this process), `file` gives it a regular file of 60 s of counter frames
# (no pace at all: the backend completes periods as fast as the guest queues them).
#
# Known start-up race (vhost-device-sound 0.3.0, vhost-user-backend 0.20): QEMU hands each queue
# a kick eventfd that is already signalled. If the backend's one queue thread reads the event
# queue's kick only after QEMU enabled that ring, it calls its event handler, which takes none
# of the buffers Linux posted there, and with EVENT_IDX it loops for as long as buffers are
# pending: forever, at 100% CPU, and the control queue is never served (virtio_snd: "control
# message (0x00000100) timeout", probe error -110). We found no way of feeding or starting it
# that avoids this (QEMU's vhost-user-snd-pci passes the backend's features through, so
# event_idx=off has no effect; its CLI has no multi-thread switch): ci/bench.py boots again
# when the guest cannot probe, and records each failure.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[ "$#" -eq 6 ] || die "usage: $0 SOCKET fifo|file RATE CHANNELS FORMAT PERIOD_FRAMES"
sock=$1 source=$2 rate=$3 channels=$4 format=$5 period=$6
[ -x "$SOUND_BIN" ] || die "no vhost-device-sound at $SOUND_BIN: run ci/setup.sh"
app=$("$VDAQ_ROOT/images/build-app.sh")
dir="$(dirname "$sock")/peer"
rm -rf "$dir"
mkdir -p "$dir"
infile="$dir/counter.$source"
case "$source" in
  fifo)
    mkfifo "$infile"
    # Started before the backend, which opens the PCM (and so the FIFO) at start-up.
    "$app" feed --format "$format" --channels "$channels" --rate "$rate" \
      --period-frames "$period" "$infile" &
    ;;
  file)
    "$app" feed --format "$format" --channels "$channels" --rate "$rate" \
      --frames "$((rate * 60))" "$infile"
    ;;
  *) die "source must be fifo or file, not $source" ;;
esac
cat >"$dir/.asoundrc" <<ASOUNDRC
pcm.!default {
  type asym
  playback.pcm "null"
  capture.pcm { type file slave.pcm "null" file "/dev/null" infile "$infile" format "raw" }
}
ASOUNDRC
echo "peer: vhost-device-sound --backend alsa, capture from $infile ($source)"
exec env HOME="$dir" RUST_LOG="${RUST_LOG:-info}" "$SOUND_BIN" --socket "$sock" --backend alsa
