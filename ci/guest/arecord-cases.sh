# shellcheck shell=dash
# Guest side of the conformance test: Linux's virtio_snd + arecord capture each case listed in
# /mnt/host/arecord.cases ("NAME PCM RATE ALSA_FORMAT CHANNELS SECONDS [ARECORD_ARG...]", PCM
# being the ALSA device number, one per vdaq stream), in order, in one
# boot. For each case it writes NAME.raw (the capture), NAME.rc (arecord's exit status) and
# NAME.time ("STREAM_SECONDS WALL_SECONDS": from the stream entering RUNNING, and from arecord's
# start, to arecord's exit).
set -u
[ -f /mnt/host/arecord.cases ] || { echo "no /mnt/host/arecord.cases"; exit 12; }
modprobe virtio_snd || exit 10
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ -e /dev/snd/pcmC0D0c ] && break
  sleep 0.2
done
[ -e /dev/snd/pcmC0D0c ] || { echo "no capture device"; ls -l /dev/snd; exit 11; }

# A FIFO nobody writes: `read -t` on it sleeps without forking a process.
mkfifo /tmp/never

# Prints the uptime at which the capture stream enters RUNNING (shell builtins only: no fork
# per poll, so the poller barely competes with arecord for the guest's CPU).
wait_running() {
  local status=/proc/asound/card0/pcm$1c/sub0/status line up rest
  while :; do
    read -r line <"$status" || true
    case "$line" in "state: RUNNING"*) break ;; esac
    # shellcheck disable=SC3045 # busybox ash has read -t
    read -r -t 0.002 _ <>/tmp/never || true
  done
  read -r up rest </proc/uptime
  echo "$up"
}

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

rc_all=0
while read -r name pcm rate format channels seconds extra; do
  [ -n "$name" ] || continue
  case "$name" in \#*) continue ;; esac
  wait_running "$pcm" >/tmp/running &
  poller=$!
  read -r t0 _ </proc/uptime
  # shellcheck disable=SC2086 # extra arecord arguments are split on purpose
  arecord -q -D "hw:0,$pcm" -t raw -f "$format" -c "$channels" -r "$rate" -d "$seconds" $extra "/tmp/$name.raw"
  rc=$?
  read -r t1 _ </proc/uptime
  kill "$poller" 2>/dev/null
  wait "$poller" 2>/dev/null
  running=$(cat /tmp/running)
  [ -n "$running" ] || running=$t0
  echo "$rc" >"/mnt/host/$name.rc"
  echo "$(secs "$running" "$t1") $(secs "$t0" "$t1")" >"/mnt/host/$name.time"
  mv "/tmp/$name.raw" "/mnt/host/$name.raw" 2>/dev/null
  echo "case $name: arecord exit $rc, $(cat "/mnt/host/$name.time") s (stream, wall)"
  [ "$rc" -eq 0 ] || rc_all=1
done </mnt/host/arecord.cases
exit "$rc_all"
