#!/usr/bin/env python3
"""Checks the results of a driver run (see ci/suites/driver.sh) and prints one line per check
and a "N passed, N failed" summary; exits 1 on any failure.

    check_driver.py SHARE GUEST_RC main    results of ci/guest/driver.sh
    check_driver.py SHARE GUEST_RC death   results of ci/guest/backend-death.sh
"""
import json
import re
import sys
from pathlib import Path

share = Path(sys.argv[1])
guest_rc = int(sys.argv[2])
run_kind = sys.argv[3] if len(sys.argv) > 3 else "main"
RATE = 48000
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} driver {name}{'' if ok else ': ' + detail}")


def load(name):
    """The last line of an app's JSON summary, or {"unreadable": why}."""
    try:
        return json.loads((share / name).read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        return {"unreadable": f"{name}: {e}"}


def text(name):
    return (share / name).read_text(errors="replace").strip() if (share / name).exists() else ""


def seconds(name):
    try:
        return float(text(name))
    except ValueError:
        return -1.0


def clean_capture(name, min_seconds):
    """A capture that must have succeeded: exit 0, enough frames, no gap, the rate within 5%."""
    s = load(f"{name}.json")
    check(f"{name}: app exit status", rc(f"{name}.rc") == 0, f"{rc(f'{name}.rc')}: {json.dumps(s)[:300]}")
    if "unreadable" in s:
        check(f"{name}: summary", False, s["unreadable"])
        return None
    c = s["counter"]
    check(f"{name}: at least {min_seconds} s of frames", s["frames"] >= min_seconds * s["params"]["rate"],
          f"{s['frames']} frames")
    check(f"{name}: counter has no gap", c["clean"] and c["gaps"] == 0 and c["missing_frames"] == 0,
          json.dumps(c))
    check(f"{name}: rate within 5%", abs(s["rate_hz"] - RATE) <= 0.05 * RATE,
          f"{s['rate_hz']:.1f} Hz over {s['stream_seconds']:.3f} s")
    return s


def stalled_capture(name, limit_s):
    """A capture the device's silence ended: exit 1 with EIO reported, within limit_s."""
    s = load(f"{name}.json")
    check(f"{name}: the app failed (exit 1)", rc(f"{name}.rc") == 1, str(rc(f"{name}.rc")))
    if "unreadable" in s:
        check(f"{name}: summary", False, s["unreadable"])
        return None
    check(f"{name}: the app reported EIO (stalled)", "EIO" in str(s.get("error")),
          f"error {s.get('error')}; stderr {text(name + '.err')[:200]}")
    check(f"{name}: the driver counted one stall", s["driver"]["stalls"] == 1, json.dumps(s["driver"]))
    took = seconds(f"{name}-seconds")
    # Stall time-out (4 periods, at least 200 ms) + the host's marker polling + the close,
    # whose STOP to a silent device times out after 1 s.
    check(f"{name}: over within {limit_s} s of the device going silent", 0 <= took <= limit_s, f"{took} s")
    return s


def rc(name):
    try:
        return int((share / name).read_text().strip())
    except (OSError, ValueError):
        return None


def main_run():
    tap = text("selftest.tap")
    for line in tap.splitlines():
        if line.startswith("ok ") or line.startswith("not ok "):
            ok = line.startswith("ok ")
            name = line.split(" - ", 1)[-1]
            check(f"api: {name.split(':')[0]}", ok, name)
    check("api: self-test ran", "selftest:" in tap and rc("selftest.rc") is not None, tap[-300:])
    check("nodes: one per capture stream (/dev/vdaq0, /dev/vdaq1)",
          text("node0") == "present" and text("node1") == "present", f"{text('node0')}, {text('node1')}")
    info1 = load("info1.json")
    check("nodes: /dev/vdaq1 is stream 1 of 2", info1.get("stream") == 1 and info1.get("streams") == 2,
          json.dumps(info1)[:300])
    for run in ("rt", "sigio"):
        s = clean_capture(run, 3)
        if s is None:
            continue
        d = s["driver"]
        if run == "rt":
            check("rt: app signals == driver kill_fasync calls", s["signals"] == d["signals_sent"],
                  f"app {s['signals']}, driver {d['signals_sent']}")
            check("rt: every signal carried the device's fd and band POLLIN|POLLRDNORM",
                  s["signals_with_wrong_fd"] == 0 and s["error_signals"] == 0,
                  f"{s['signals_with_wrong_fd']} with another fd or band, {s['error_signals']} POLLERR")
            irq = s.get("irq_delta")
            # The INTx line also carries the control and event queues; during the run only a
            # few of those (XRUN events: none expected) happen, so the line's increase is the
            # rx interrupts plus at most a handful.
            ok = irq is not None and d["rx_interrupts_with_data"] <= irq <= d["rx_interrupts"] + 8 \
                and abs(irq - s["signals"]) <= 8
            check("rt: interrupt line increase matches the signals", ok,
                  f"irq delta {irq}, rx interrupts {d['rx_interrupts']} "
                  f"({d['rx_interrupts_with_data']} with data), signals {s['signals']}")
        else:
            check("sigio: no period left unread", s["unread_at_stop"] <= 1,
                  f"{s['unread_at_stop']} periods completed but unread when signals stopped")
    for name in ("poll", "read"):
        s = clean_capture(name, 1)
        if s is not None:
            check(f"{name}: no signal was sent", s["driver"]["signals_sent"] == 0, json.dumps(s["driver"]))
    for name in ("dual0", "dual1"):
        clean_capture(name, 2)

    s = load("slow.json")
    check("slow reader: app exit status", rc("slow.rc") == 0, f"{rc('slow.rc')}: {json.dumps(s)[:300]}")
    if "unreadable" not in s:
        c, d = s["counter"], s["driver"]
        check("slow reader: frames were lost", s["frames_lost_reported"] > 0, json.dumps(s)[:300])
        # Every gap was announced in its period's header or just before (see the app's
        # unreported_frames); over the run the headers' total equals the gaps exactly.
        check("slow reader: every gap in the counter was announced in the headers",
              s["unreported_frames"] == 0 and s["frames_lost_reported"] >= c["missing_frames"],
              f"headers {s['frames_lost_reported']}, counter gaps {c['missing_frames']}, "
              f"unreported {s['unreported_frames']}, early {s['loss_mismatches']}")
        # The driver counts XRUN events as they come; periods lost after the last read are in
        # its count but in no header the app read.
        check("slow reader: the driver's count covers the headers' (whole periods)",
              d["frames_lost"] >= s["frames_lost_reported"] and d["frames_lost"] % 1024 == 0,
              f"driver {d['frames_lost']}, headers {s['frames_lost_reported']}")
    # The device logged its statistics (SIGUSR1) just before and after the slow run: its own
    # count of frames lost on stream 0 over the run must equal the driver's (XRUN events).
    log = share.parent / "device.log"
    device_log = log.read_text(errors="replace") if log.exists() else ""
    m = re.findall(r"statistics: stream 0: [^;]*xruns (\d+) \((\d+) frames lost\)", device_log)
    before, after = load("slow-before.json"), load("slow-after.json")
    if len(m) >= 2 and "frames_lost" in before and "frames_lost" in after:
        device_lost = int(m[-1][1]) - int(m[-2][1])
        driver_lost = after["frames_lost"] - before["frames_lost"]
        check("slow reader: the device's own count of lost frames equals the driver's",
              device_lost == driver_lost and device_lost > 0 and device_lost % 1024 == 0,
              f"device {device_lost}, driver {driver_lost}")
    else:
        check("slow reader: the device's own count of lost frames equals the driver's", False,
              f"device statistics lines {m}, driver {before} / {after}")

    check("rmmod while open: refused, the module stays", rc("rmmod-open.rc") not in (None, 0)
          and text("rmmod-open.module") == "loaded",
          f"{rc('rmmod-open.rc')}, {text('rmmod-open.module')}: {text('rmmod-open.err')[:200]}")
    check("rmmod after the close: done", rc("rmmod-closed.rc") == 0, str(rc("rmmod-closed.rc")))
    check("removal: the blocked reader ended with an error", rc("removal-reader.rc") not in (None, 0),
          f"dd exit status {rc('removal-reader.rc')}")
    check("removal: the reader saw ENODEV", "No such device" in text("removal-reader.err"),
          text("removal-reader.err")[:200])
    check("removal: /dev/vdaq0 went away", text("removal-node") == "gone", text("removal-node"))
    check("rescan: the device came back and captures", rc("rescan.rc") == 0 and text("rescan-node") != "none",
          f"node {text('rescan-node')}, capture exit {rc('rescan.rc')}: {text('rescan.json')[:200]}")
    for name, what in (("rebind", "unbind/bind"), ("reload", "rmmod/insmod")):
        lines = text(f"{name}.rcs").splitlines()
        check(f"{what} 5 times, each binding reads", len(lines) == 5 and all(l.endswith(" 0") for l in lines),
              "; ".join(lines))
    clean_capture("second", 1)

    check("stall: the blocked reader ended with EIO", rc("stall-reader.rc") not in (None, 0)
          and "Input/output error" in text("stall-reader.err"),
          f"{rc('stall-reader.rc')}: {text('stall-reader.err')[:200]}")
    # The read ends within the stall time-out after the device went silent (the close that
    # follows it is not timed here).
    took = seconds("stall-seconds")
    check("stall: the blocked reader woke within 2.5 s", 0 <= took <= 2.5, f"{took} s")
    stalled_capture("stall-poll", 3.0)
    s = stalled_capture("stall-sig", 3.0)
    if s is not None:
        check("stall-sig: one POLL_ERR signal sent and received (si_band POLLERR)",
              s["driver"]["stall_signals"] == 1 and s["error_signals"] == 1,
              f"driver {s['driver']['stall_signals']}, app {s['error_signals']}")
    clean_capture("recovered", 1)
    check("rmmod at the end", rc("rmmod2.rc") == 0, str(rc("rmmod2.rc")))


def death_run():
    s = load("death.json")
    check("death: the app failed (exit 1)", rc("death.rc") == 1, str(rc("death.rc")))
    if "unreadable" not in s:
        check("death: the app reported EIO", "EIO" in str(s.get("error")), f"{s.get('error')}; {text('death.err')[:200]}")
        check("death: frames arrived before the kill", s["frames"] > 0, str(s["frames"]))
        check("death: one POLL_ERR signal", s["error_signals"] == 1 and s["driver"]["stall_signals"] == 1,
              f"app {s['error_signals']}, driver {s['driver']['stall_signals']}")
    took = seconds("death-seconds")
    check("death: the app was done within 3 s of the kill", 0 <= took <= 3.0, f"{took} s")
    check("death: a new reader gets EIO", rc("death-reader.rc") not in (None, 0)
          and "Input/output error" in text("death-reader.err"),
          f"{rc('death-reader.rc')}: {text('death-reader.err')[:200]}")
    took = seconds("death-reader-seconds")
    check("death: ... after at most the 1 s control time-out", 0 <= took <= 2.0, f"{took} s")
    check("death: rmmod works with the backend dead", rc("death-rmmod.rc") == 0, str(rc("death-rmmod.rc")))


check("guest script", guest_rc == 0, f"exit status {guest_rc}")
{"main": main_run, "death": death_run}[run_kind]()

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
