#!/usr/bin/env python3
"""Checks the results of ci/guest/driver.sh (see ci/suites/driver.sh) and prints one line per
check and a "N passed, N failed" summary; exits 1 on any failure."""
import json
import re
import sys
from pathlib import Path

share = Path(sys.argv[1])
guest_rc = int(sys.argv[2])
RATE = 48000
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} driver {name}{'' if ok else ': ' + detail}")


def load(name):
    try:
        return json.loads((share / name).read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        return {"error": str(e)}


def rc(name):
    try:
        return int((share / name).read_text().strip())
    except (OSError, ValueError):
        return None


check("guest script", guest_rc == 0, f"exit status {guest_rc}")
tap = (share / "selftest.tap").read_text() if (share / "selftest.tap").exists() else ""
for line in tap.splitlines():
    if line.startswith("ok ") or line.startswith("not ok "):
        ok = line.startswith("ok ")
        name = line.split(" - ", 1)[-1]
        check(f"api: {name.split(':')[0]}", ok, name)
check("api: self-test ran", "selftest:" in tap and rc("selftest.rc") is not None, tap[-300:])
for run in ("rt", "sigio"):
    s = load(f"{run}.json")
    check(f"{run}: app exit status", rc(f"{run}.rc") == 0, f"{rc(f'{run}.rc')}: {s}")
    if "error" in s:
        check(f"{run}: summary", False, s["error"])
        continue
    c = s["counter"]
    check(f"{run}: at least 3 s of frames", s["frames"] >= 3 * RATE, f"{s['frames']} frames")
    check(f"{run}: counter has no gap", c["clean"] and c["gaps"] == 0 and c["missing_frames"] == 0,
          json.dumps(c))
    check(f"{run}: rate within 5%", abs(s["rate_hz"] - RATE) <= 0.05 * RATE,
          f"{s['rate_hz']:.1f} Hz over {s['stream_seconds']:.3f} s")
    d = s["driver"]
    if run == "rt":
        check("rt: app signals == driver kill_fasync calls", s["signals"] == d["signals_sent"],
              f"app {s['signals']}, driver {d['signals_sent']}")
        check("rt: every signal carried the device's fd and band POLLIN|POLLRDNORM",
              s["signals_with_wrong_fd"] == 0, f"{s['signals_with_wrong_fd']} with another fd or band")
        irq = s.get("irq_delta")
        # The INTx line also carries the control and event queues; during the run only a few
        # of those (XRUN events: none expected) happen, so the line's increase is the rx
        # interrupts plus at most a handful.
        ok = irq is not None and d["rx_interrupts_with_data"] <= irq <= d["rx_interrupts"] + 8 \
            and abs(irq - s["signals"]) <= 8
        check("rt: interrupt line increase matches the signals", ok,
              f"irq delta {irq}, rx interrupts {d['rx_interrupts']} "
              f"({d['rx_interrupts_with_data']} with data), signals {s['signals']}")
    else:
        check("sigio: no period left unread", s["unread_at_stop"] <= 1,
              f"{s['unread_at_stop']} periods completed but unread when signals stopped")
s = load("slow.json")
check("slow reader: app exit status", rc("slow.rc") == 0, f"{rc('slow.rc')}: {s}")
if "error" not in s:
    c, d = s["counter"], s["driver"]
    check("slow reader: frames were lost", s["frames_lost_reported"] > 0, json.dumps(s)[:300])
    # Every gap was announced in its period's header or just before (see the app's
    # unreported_frames); over the run the headers' total equals the gaps exactly.
    check("slow reader: every gap in the counter was announced in the headers",
          s["unreported_frames"] == 0 and s["frames_lost_reported"] >= c["missing_frames"],
          f"headers {s['frames_lost_reported']}, counter gaps {c['missing_frames']}, "
          f"unreported {s['unreported_frames']}, early {s['loss_mismatches']}")
    # The driver counts XRUN events as they come; periods lost after the last read are in its
    # count but in no header the app read.
    check("slow reader: the driver's count covers the headers' (whole periods)",
          d["frames_lost"] >= s["frames_lost_reported"] and d["frames_lost"] % 1024 == 0,
          f"driver {d['frames_lost']}, headers {s['frames_lost_reported']}")
device_log = (share.parent / "device.log").read_text(errors="replace") if (share.parent / "device.log").exists() else ""
m = re.findall(r"xruns (\d+) \((\d+) frames lost\)", device_log)
check("device counted whole periods lost", bool(m) and int(m[-1][1]) == int(m[-1][0]) * 1024 and int(m[-1][0]) > 0,
      str(m[-1:] if m else "no statistics line in the device log"))
def text(name):
    return (share / name).read_text(errors="replace").strip() if (share / name).exists() else ""


check("removal: the blocked reader ended with an error", rc("removal-reader.rc") not in (None, 0),
      f"dd exit status {rc('removal-reader.rc')}")
check("removal: the reader saw ENODEV", "No such device" in text("removal-reader.err"),
      text("removal-reader.err")[:200])
check("removal: /dev/vdaq0 went away", text("removal-node") == "gone", text("removal-node"))
check("rescan: the device came back and captures", rc("rescan.rc") == 0 and text("rescan-node") != "none",
      f"node {text('rescan-node')}, capture exit {rc('rescan.rc')}: {text('rescan.json')[:200]}")
check("stall: the blocked reader ended with EIO", rc("stall-reader.rc") not in (None, 0)
      and "Input/output error" in text("stall-reader.err"), f"{rc('stall-reader.rc')}: {text('stall-reader.err')[:200]}")
# The read ends within the stall time-out (4 periods, at least 200 ms) after the device went
# silent, plus the host's 0.1 s polling for the freeze marker; the release sends nothing to a
# stalled device.
try:
    stall_s = float(text("stall-seconds"))
except ValueError:
    stall_s = -1.0
check("stall: detected and the reader gone within 2 s", 0 <= stall_s <= 2.0, f"{stall_s} s")
for name in ("rmmod1", "second", "rmmod2"):
    check(f"{name} exit status", rc(f"{name}.rc") == 0, str(rc(f"{name}.rc")))

dmesg = (share / "dmesg.txt").read_text(errors="replace") if (share / "dmesg.txt").exists() else ""
check("dmesg captured", "vdaq" in dmesg, "no vdaq line in dmesg")
bad = re.compile(r"BUG:|WARNING:|Oops|KASAN|kernel BUG|possible (recursive|circular) locking|"
                 r"inconsistent lock state|blocked for more than|soft lockup|"
                 r"sleeping function called from invalid context")
reports = [l for l in dmesg.splitlines() if bad.search(l)]
check("no detector report in dmesg", not reports, "; ".join(reports[:5]))
leaks = (share / "kmemleak.txt").read_text() if (share / "kmemleak.txt").exists() else ""
check("no kmemleak report", "unreferenced object" not in leaks, leaks[:500])

failed = results.count(False)
print(f"driver: {len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
