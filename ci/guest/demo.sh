# shellcheck shell=dash
# Guest side of the demo: Linux's virtio_snd captures from vdaq for a while; the device's log
# line each second shows frames/s and its FIFO level while the guest records.
set -u
seconds=$(cat /mnt/host/demo-seconds 2>/dev/null || echo 10)
modprobe virtio_snd || exit 10
sleep 0.5
echo "demo: capturing ${seconds} s of 48 kHz, 2 channels, S16 (counter signal) with arecord"
arecord -D hw:0,0 -t raw -f S16_LE -c 2 -r 48000 -d "$seconds" /tmp/demo.raw || exit 1
ls -l /tmp/demo.raw
vdaq verify --format s16 --channels 2 /tmp/demo.raw
