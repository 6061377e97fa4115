# shellcheck shell=dash
# Guest side of the driver test (debug kernel, a device with two capture streams): vdaq.ko
# binds the device, the user API self-test runs, the app captures with a realtime signal
# (F_SETSIG), plain SIGIO, poll() and blocking reads, from both streams at once, and as a slow
# reader; then teardown (rmmod while open, PCI removal under a blocked reader, rescan,
# unbind/bind and insmod/rmmod loops) and a device that goes silent (frozen with SIGSTOP by
# the host) under a blocked reader, a poll() sleeper and a signal owner, and comes back.
# Results go to /mnt/host; the host checks them (ci/check_driver.py) and dmesg.
set -u
out=/mnt/host
step() { echo "driver test: $*"; }

# Sets $irq to the sound device's virtio name (its interrupt line in /proc/interrupts).
find_device() {
  irq=""
  for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device")" = 0x0019 ] && irq=$(basename "$d")
  done
}

# Asks the host to freeze, thaw or kill the device, and waits until it has.
host_do() {
  : >"$out/$1-device"
  i=0
  while [ -e "$out/$1-device" ] && [ "$i" -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
  done
}

uptime_s() { read -r t _ </proc/uptime && echo "$t"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }

# Prints the first /dev/vdaq node that exists.
any_node() {
  for n in /dev/vdaq*; do
    [ -c "$n" ] && echo "$n" && return 0
  done
  echo none
}

find_device
echo "driver test: sound device is $irq"

step "insmod vdaq.ko"
insmod /lib/modules/vdaq.ko || exit 20
for n in 0 1; do
  [ -c "/dev/vdaq$n" ] && echo present >"$out/node$n" || echo missing >"$out/node$n"
done
vdaq info --device /dev/vdaq1 >"$out/info1.json"

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

step "capture 1 s with poll(), then with blocking reads"
vdaq capture --seconds 1 --mode poll >"$out/poll.json"
echo $? >"$out/poll.rc"
vdaq capture --seconds 1 --mode read >"$out/read.json"
echo $? >"$out/read.rc"

step "both streams at once: /dev/vdaq0 and /dev/vdaq1, 2 s each"
vdaq capture --device /dev/vdaq0 --seconds 2 >"$out/dual0.json" &
first=$!
vdaq capture --device /dev/vdaq1 --seconds 2 >"$out/dual1.json"
echo $? >"$out/dual1.rc"
wait "$first"
echo $? >"$out/dual0.rc"

step "a slow reader: reads every 300 ms with a 4-period ring"
# The device's and the driver's loss counts, before and after.
vdaq stats --device /dev/vdaq0 >"$out/slow-before.json"
host_do stats
vdaq capture --seconds 2 --periods 4 --slow-read-ms 300 >"$out/slow.json"
echo $? >"$out/slow.rc"
sleep 0.2
host_do stats
vdaq stats --device /dev/vdaq0 >"$out/slow-after.json"

step "rmmod while a node is open is refused; after the close it works"
exec 3</dev/vdaq1
rmmod vdaq 2>"$out/rmmod-open.err"
echo $? >"$out/rmmod-open.rc"
[ -d /sys/module/vdaq ] && echo loaded >"$out/rmmod-open.module" || echo unloaded >"$out/rmmod-open.module"
exec 3<&-
rmmod vdaq
echo $? >"$out/rmmod-closed.rc"
insmod /lib/modules/vdaq.ko
find_device

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
find_device
node=$(any_node)
echo "$node" >"$out/rescan-node"
vdaq capture --device "$node" --seconds 1 >"$out/rescan.json"
echo $? >"$out/rescan.rc"

step "unbind and bind 5 times, reading from a new node each time"
: >"$out/rebind.rcs"
for i in 1 2 3 4 5; do
  echo "$irq" >/sys/bus/virtio/drivers/vdaq/unbind
  echo "$irq" >/sys/bus/virtio/drivers/vdaq/bind
  dd if="$(any_node)" of=/dev/null bs=1M count=1 2>/dev/null
  echo "$i $?" >>"$out/rebind.rcs"
done

step "rmmod and insmod 5 times, reading each time"
: >"$out/reload.rcs"
for i in 1 2 3 4 5; do
  rmmod vdaq && insmod /lib/modules/vdaq.ko && dd if=/dev/vdaq0 of=/dev/null bs=1M count=1 2>/dev/null
  echo "$i $?" >>"$out/reload.rcs"
done
vdaq capture --seconds 1 >"$out/second.json"
echo $? >"$out/second.rc"

step "the device goes silent under a blocked reader: EIO"
dd if=/dev/vdaq0 of=/dev/null bs=65536 2>"$out/stall-reader.err" &
reader=$!
sleep 1
t0=$(uptime_s)
host_do freeze
wait "$reader"
echo $? >"$out/stall-reader.rc"
elapsed "$t0" "$(uptime_s)" >"$out/stall-seconds"
host_do thaw

step "the device goes silent under a poll() sleeper: POLLERR, the app reports the stall"
vdaq capture --mode poll --seconds 60 >"$out/stall-poll.json" 2>"$out/stall-poll.err" &
app=$!
sleep 1
t0=$(uptime_s)
host_do freeze
wait "$app"
echo $? >"$out/stall-poll.rc"
elapsed "$t0" "$(uptime_s)" >"$out/stall-poll-seconds"
host_do thaw

step "the device goes silent under a signal owner: a POLL_ERR signal, the app reports it"
vdaq capture --rt-signal 1 --seconds 60 >"$out/stall-sig.json" 2>"$out/stall-sig.err" &
app=$!
sleep 1
t0=$(uptime_s)
host_do freeze
wait "$app"
echo $? >"$out/stall-sig.rc"
elapsed "$t0" "$(uptime_s)" >"$out/stall-sig-seconds"
host_do thaw

step "the device is back: capture 1 s on the same node"
vdaq capture --seconds 1 >"$out/recovered.json"
echo $? >"$out/recovered.rc"

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
