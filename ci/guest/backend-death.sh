# shellcheck shell=dash
# Guest side of the backend-death test (debug kernel): the app streams with a realtime signal
# when the host kills vdaq-device (SIGKILL). The driver's watchdog must find the stream
# stalled (EIO, one POLL_ERR signal), a new reader must get EIO within the control time-out,
# and rmmod must work. Nothing is bound again afterwards: QEMU 10.0 aborts when a driver
# starts a vhost-user-snd device whose backend is gone (see docs/FAULTS.md).
set -u
out=/mnt/host
uptime_s() { read -r t _ </proc/uptime && echo "$t"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }

echo "death test: insmod vdaq.ko"
insmod /lib/modules/vdaq.ko || exit 20

echo "death test: streaming with SIGRTMIN+1 when the backend is killed"
vdaq capture --rt-signal 1 --seconds 60 >"$out/death.json" 2>"$out/death.err" &
app=$!
sleep 1
t0=$(uptime_s)
: >"$out/kill-device"
wait "$app"
echo $? >"$out/death.rc"
elapsed "$t0" "$(uptime_s)" >"$out/death-seconds"

echo "death test: a new reader"
t0=$(uptime_s)
dd if=/dev/vdaq0 of=/dev/null bs=1M count=1 2>"$out/death-reader.err"
echo $? >"$out/death-reader.rc"
elapsed "$t0" "$(uptime_s)" >"$out/death-reader-seconds"

echo "death test: rmmod vdaq"
rmmod vdaq
echo $? >"$out/death-rmmod.rc"
exit 0
