#!/usr/bin/env bash
# Conformance: Linux's own virtio_snd driver and arecord capture from vdaq-device in one boot
# of the plain guest kernel; each capture is checked on the host: arecord's exit status, the
# exact byte count, the guest's elapsed stream time against the rate (within 5%), and the
# content: the counter in every frame (every channel equal, +1 per frame from 0, no gap) on
# stream 0, and on stream 1 a 1 kHz sine whose frequency (by crossings of the mean) must be
# within 0.1%. The last case repeats the first in the same boot: RELEASE then PREPARE again
# must work.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=../vm.sh
source "$VDAQ_ROOT/ci/vm.sh"
trap vm_cleanup EXIT
vm_build_device

VDAQ_APP=${VDAQ_APP:-$("$VDAQ_ROOT/images/build-app.sh")}
# Relative tolerance of the stream's elapsed time.
TOLERANCE=0.05

# Frequency of the sine on stream 1 and the relative tolerance of its measurement.
SINE_HZ=1000
SINE_TOLERANCE=0.001

# name pcm rate alsa-format channels seconds [arecord args]; pcm 0 carries the counter,
# pcm 1 the sine.
CASES=${ARECORD_CASES:-"s16-48k-2ch 0 48000 S16_LE 2 3
s32-384k-8ch 0 384000 S32_LE 8 3
sine-s16-48k-2ch 1 48000 S16_LE 2 3
again-s16-48k-2ch 0 48000 S16_LE 2 3"}

vdaq_format() {
  case "$1" in
    U8) echo "u8 1" ;; S16_LE) echo "s16 2" ;; S32_LE) echo "s32 4" ;;
    FLOAT_LE) echo "float 4" ;; FLOAT64_LE) echo "float64 8" ;;
    *) die "no vdaq format for ALSA format $1" ;;
  esac
}

passed=0
failed=0
result() {
  local name=$1 problems=$2
  if [ -z "$problems" ]; then
    printf 'ok   arecord %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL arecord %s:%s\n' "$name" "$problems"
    failed=$((failed + 1))
  fi
}

cases_file="$VDAQ_RUN_DIR/arecord.cases"
mkdir -p "$VDAQ_RUN_DIR"
printf '%s\n' "$CASES" >"$cases_file"
VM_SHARE_FILES=("$cases_file")
device_config="$VDAQ_RUN_DIR/arecord-device.toml"
cat >"$device_config" <<EOF
# Stream 0: the counter on every channel. Stream 1: a sine.
[[stream]]
[[stream]]
[[stream.channel]]
source = "sine"
frequency = $SINE_HZ
amplitude = 10000.0
EOF
say "arecord conformance: $(grep -c . "$cases_file") captures in one boot"
guest_rc=0
read -r -a device_args <<<"--config $device_config ${ARECORD_DEVICE_ARGS:-}"
VM_TIMEOUT=${VM_TIMEOUT:-240} vm_run arecord plain "$VDAQ_ROOT/ci/guest/arecord-cases.sh" \
  ${device_args[@]+"${device_args[@]}"} || guest_rc=$?
grep '^case ' "$VM_DIR/console.log" | sed 's/^/    guest: /' || true

while read -r name _ rate format channels seconds _; do
  [ -n "$name" ] || continue
  share="$VM_DIR/share"
  problems=""
  read -r vformat width < <(vdaq_format "$format")
  frames=$((rate * seconds))
  rc=$(cat "$share/$name.rc" 2>/dev/null || echo missing)
  [ "$rc" = 0 ] || problems+=" arecord exit status $rc;"
  bytes=$(stat -c %s "$share/$name.raw" 2>/dev/null || echo 0)
  want=$((frames * channels * width))
  [ "$bytes" -eq "$want" ] || problems+=" $bytes bytes, expected $want;"
  stream=0 wall=0
  [ -f "$share/$name.time" ] && read -r stream wall <"$share/$name.time"
  if ! awk -v t="$stream" -v d="$seconds" -v tol="$TOLERANCE" \
    'BEGIN { exit !(t >= d * (1 - tol) && t <= d * (1 + tol)) }'; then
    problems+=" stream time ${stream} s, expected ${seconds} s within 5%;"
  fi
  if [ -s "$share/$name.raw" ] && [[ "$name" == sine-* ]]; then
    report=$("$VDAQ_APP" analyze --format "$vformat" --channels "$channels" --rate "$rate" \
      "$share/$name.raw" 2>&1) || true
    hz=$(sed -n 's/.*"frequency_hz":\([0-9.]*\).*/\1/p' <<<"$report")
    if ! awk -v f="${hz:-0}" -v w="$SINE_HZ" -v tol="$SINE_TOLERANCE" \
      'BEGIN { exit !(f >= w * (1 - tol) && f <= w * (1 + tol)) }'; then
      problems+=" sine at ${hz:-?} Hz, expected $SINE_HZ Hz within 0.1% ($report);"
    fi
    note "$name: sine measured at $hz Hz"
  elif [ -s "$share/$name.raw" ]; then
    if ! report=$("$VDAQ_APP" verify --format "$vformat" --channels "$channels" \
      --frames "$frames" --first 0 "$share/$name.raw" 2>&1); then
      problems+=" counter check failed: $(echo "$report" | tr '\n' ' ');"
    fi
  fi
  note "$name: $bytes bytes, stream ${stream} s (arecord wall ${wall} s)"
  result "$name" "$problems"
done <"$cases_file"

if [ "$guest_rc" -ne 0 ]; then
  printf 'FAIL arecord guest script exited %s\n' "$guest_rc"
  failed=$((failed + 1))
fi
if [ "$failed" -ne 0 ]; then
  vm_show_logs "$VM_DIR"
fi
echo "arecord: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
