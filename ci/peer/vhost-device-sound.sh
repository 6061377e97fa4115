#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
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
# It runs behind ci/peer/vhost-user-no-event-idx.py, a relay of the vhost-user set-up messages
# that hides EVENT_IDX from QEMU (the rings and eventfds stay the backend's own): with EVENT_IDX,
# vhost-device-sound 0.3.0 can start with its queue thread spinning forever on the event queue,
# and virtio_snd's probe then times out (see the relay's description). VDAQ_PEER_EVENT_IDX=1
# runs it directly, EVENT_IDX and all. The relay is this script's process (ci/vm.sh stops it by
# PID); the backend and the feeder end with it (parent-death signals).
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
if [ "${VDAQ_PEER_EVENT_IDX:-0}" = 1 ]; then
  exec env HOME="$dir" RUST_LOG="${RUST_LOG:-info}" "$SOUND_BIN" --socket "$sock" --backend alsa
fi
backend_sock="$dir/backend.sock"
env HOME="$dir" RUST_LOG="${RUST_LOG:-info}" setpriv --pdeathsig KILL \
  "$SOUND_BIN" --socket "$backend_sock" --backend alsa &
exec python3 "$VDAQ_ROOT/ci/peer/vhost-user-no-event-idx.py" "$sock" "$backend_sock"
