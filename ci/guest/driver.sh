# shellcheck shell=dash
# Guest side of the driver test (debug kernel): vdaq.ko binds the device, the app captures
# asynchronously with a realtime signal (F_SETSIG) and with plain SIGIO, the module is
# unloaded and loaded again for a second capture. Results go to /mnt/host/*.json; the host
# checks them and dmesg.
set -u
out=/mnt/host
# The sound device's virtio name: its interrupt line in /proc/interrupts has that name.
irq=""
for d in /sys/bus/virtio/devices/*; do
  [ "$(cat "$d/device")" = 0x0019 ] && irq=$(basename "$d")
done
echo "driver test: sound device is $irq"
step() { echo "driver test: $*"; }

step "insmod vdaq.ko"
insmod /lib/modules/vdaq.ko || exit 20
[ -c /dev/vdaq0 ] || { echo "no /dev/vdaq0"; exit 21; }

step "user API self-test"
vdaq selftest >"$out/selftest.tap"
echo $? >"$out/selftest.rc"
cat "$out/selftest.tap"

step "capture 3 s with F_SETSIG SIGRTMIN+1"
vdaq capture --seconds 3 --rt-signal 1 --irq-name "$irq" --live >"$out/rt.out"
echo $? >"$out/rt.rc"
tail -n 1 "$out/rt.out" >"$out/rt.json"

step "capture 3 s with plain SIGIO"
vdaq capture --seconds 3 --irq-name "$irq" >"$out/sigio.json"
echo $? >"$out/sigio.rc"

step "a slow reader: reads every 300 ms with a 4-period ring"
vdaq capture --seconds 2 --periods 4 --slow-read-ms 300 >"$out/slow.json"
echo $? >"$out/slow.rc"

step "PCI removal through sysfs while a reader is blocked, then rescan"
pci=$(basename "$(dirname "$(readlink -f "/sys/bus/virtio/devices/$irq")")")
dd if=/dev/vdaq0 of=/dev/null bs=65536 2>"$out/removal-reader.err" &
reader=$!
sleep 1
echo 1 >"/sys/bus/pci/devices/$pci/remove"
wait "$reader"
echo $? >"$out/removal-reader.rc"
[ -e /dev/vdaq0 ] && echo present >"$out/removal-node" || echo gone >"$out/removal-node"
echo 1 >/sys/bus/pci/rescan
sleep 1
node=""
for n in /dev/vdaq*; do
  [ -c "$n" ] && node=$n && break
done
echo "${node:-none}" >"$out/rescan-node"
vdaq capture --device "${node:-/dev/vdaq0}" --seconds 1 >"$out/rescan.json"
echo $? >"$out/rescan.rc"

step "rmmod vdaq"
rmmod vdaq
echo $? >"$out/rmmod1.rc"

step "insmod again and capture 1 s"
insmod /lib/modules/vdaq.ko && vdaq capture --seconds 1 >"$out/second.json"
echo $? >"$out/second.rc"

step "a device that goes silent: the blocked reader gets EIO"
dd if=/dev/vdaq0 of=/dev/null bs=65536 2>"$out/stall-reader.err" &
reader=$!
sleep 1
read -r t0 _ </proc/uptime
touch /mnt/host/freeze-device
wait "$reader"
echo $? >"$out/stall-reader.rc"
read -r t1 _ </proc/uptime
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$out/stall-seconds"
touch /mnt/host/thaw-device
sleep 0.5

step "rmmod vdaq"
rmmod vdaq
echo $? >"$out/rmmod2.rc"

# Give the detectors a chance: a kmemleak scan, and a moment for hung-task reports.
mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -w /sys/kernel/debug/kmemleak ]; then
  echo scan >/sys/kernel/debug/kmemleak
  sleep 1
  cat /sys/kernel/debug/kmemleak >"$out/kmemleak.txt"
fi
exit 0
