# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
# shellcheck shell=dash
# Guest side of the demo: vdaq.ko drives the device and the vdaq app captures asynchronously
# (a realtime signal per interrupt, F_SETSIG), printing frames/s, periods, signals and losses
# each second, then its summary; the device's log shows its side (frames/s, FIFO level,
# interrupts) at the same time.
set -u
seconds=$(cat /mnt/host/demo-seconds 2>/dev/null || echo 10)
insmod /lib/modules/vdaq.ko || exit 10
echo "demo: capturing ${seconds} s from /dev/vdaq0 (48 kHz, 2 channels, S16, counter signal)"
vdaq capture --seconds "$seconds" --rt-signal 1 --live
