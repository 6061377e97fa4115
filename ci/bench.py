#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""vdaq benchmarks: measure, then write results JSON, SVG plots and a markdown report.

    ci/bench.py [--out DIR]      the full run (about 10 minutes under TCG here)
    ci/bench.py --smoke          a short run that checks the outputs are produced and well formed
    ci/bench.py --only p6        one benchmark alone (with --smoke or not)

Measured in one run (ratios matter more than absolute numbers on a noisy machine):
  P1  the guest's memory copy bandwidth, and free-run throughput through vdaq.ko and the app by
      blocking reads, by SIGIO with read() and by mmap (zero copy) for periods of 4 to 256 KiB,
      each with the counter checked and unchecked, with the ratio to that limit; from these, a
      breakdown of a period's time by layer;
  P2  receive interrupts per second with 256-byte periods (free-run), beside the request rate of
      rust-vmm's vhost-device-rng through the guest's virtio_rng in the same boot;
  P3  interrupt timestamp to SIGIO handler latency in the guest: histogram and percentiles;
  P4  paced 384 kHz x 8 channels x S32, then 32 channels: xruns and a period-jitter histogram;
  P5  the device alone through the host harness (counter source; other sources separately)
      against the host's write-stream bandwidth;
  P6  arecord through Linux's virtio_snd, 10 captures each: vdaq against QEMU's own
      virtio-sound-pci (-audiodev none: silence, so content not checkable) and rust-vmm's
      vhost-device-sound (ALSA backend) reading the counter from a paced FIFO and, in the full
      run, from a plain file: bytes/s, stream time against real time, content, failed runs
      (with the reason when a device failed to start).

Benchmarks report; they do not pass or fail on numbers. The command fails only when a
measurement produced no result. Results schema: docs/BENCHMARKS.md.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402  (the scenario runner: boots, guest scripts, logs)

ROOT = e2e.ROOT
SCHEMA = "vdaq-bench/1"

# P1's free-run captures move `frames` 4-byte frames (512 MiB: the fastest paths take about half a
# second, so that START and STOP do not weigh on their rate); the ones that write a file
# `file_frames` (it lives in the guest's RAM).
FULL = {"check_seconds": 0.5, "latency_seconds": 10, "paced_seconds": 60, "frames": 128 << 20,
        "file_frames": 16 << 20, "device_run_ms": 700,
        "irq_frames": 1 << 22, "rng_reads": 20000, "p6_seconds": 5, "p6_runs": 10,
        "p6_peer_sources": ["fifo", "file"]}
SMOKE = {"check_seconds": 0.05, "latency_seconds": 1, "paced_seconds": 2, "frames": 1 << 18,
         "file_frames": 1 << 18, "device_run_ms": 100,
         "irq_frames": 1 << 15, "rng_reads": 500, "p6_seconds": 1, "p6_runs": 2,
         "p6_peer_sources": ["fifo"]}
# P6's capture settings: what vdaq, vhost-device-sound 0.3.0 (its rates stop at 48 kHz; its
# formats are U8, S16, S24 and S32) and QEMU 10.0's virtio-sound-pci (S8, U8, S16, U16, S32, U32,
# FLOAT; 5512 Hz to 384 kHz; 1 or 2 channels, the default stream parameters it reports at probe)
# all offer.
P6 = {"rate": 48000, "channels": 2, "format": "s16", "alsa_format": "S16_LE", "sample_bytes": 2,
      "period_frames": 4800}
# A P6 boot whose guest could not probe virtio_snd is tried again, this many boots in all, each
# failure recorded. vhost-device-sound 0.3.0 with EVENT_IDX can start with its one queue thread
# spinning forever on the event queue, and the probe's control messages then time out: the peer
# script hides EVENT_IDX from QEMU (ci/peer/vhost-user-no-event-idx.py), so this is a guard.
P6_BOOTS = 3
# How each kind of P6 device reaches the guest (results.json: a device's `transport`).
P6_TRANSPORT = {
    "vdaq": "vhost-user-snd-pci (INTx), vdaq-device",
    "qemu": "virtio-sound-pci in QEMU (MSI-X), -audiodev none",
    "peer": "vhost-user-snd-pci (INTx), vhost-device-sound 0.3.0 behind a relay hiding EVENT_IDX",
}


def say(msg):
    e2e.say(msg)


def machine(accel=None):
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            return None
    cpu = None
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "qemu": first(["qemu-system-x86_64", "--version"]), "rustc": first(["rustc", "--version"]),
        "accelerator": accel, "guest_kernel": guest_kernel_release(),
    }


def guest_kernel_release():
    """The release of the plain guest kernel the benchmarks boot (its build is cached by now)."""
    try:
        kdir = subprocess.run([str(ROOT / "images" / "build-kernel.sh"), "plain"], capture_output=True,
                              text=True, check=True).stdout.strip().splitlines()[-1]
        return (Path(kdir) / "include" / "config" / "kernel.release").read_text().strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def device_alone(durations, out_dir):
    """P5: cargo bench (device through the host harness against host write bandwidth)."""
    say("P5: the device alone through the host harness (cargo bench)")
    path = out_dir / "p5.json"
    env = dict(os.environ, VDAQ_BENCH_JSON=str(path), VDAQ_BENCH_RUN_MS=str(durations["device_run_ms"]))
    subprocess.run(["cargo", "bench", "--quiet", "-p", "vdaq-device", "--bench", "throughput"],
                   cwd=ROOT, env=env, check=True)
    return json.loads(path.read_text())


def run_guest(file, durations):
    """Boots once for the scenarios of `file` (values filled in) and returns {name: JSON}."""
    boot = e2e.Boot(ROOT / "ci" / "bench" / file, full=True)
    for sc in boot.scenarios:
        sc.run = sc.run.format(**durations)
    rc = e2e.run_boot(boot, boot.scenarios, live=False)
    results = {}
    for sc in boot.scenarios:
        value = e2e.last_json(e2e.read_text(boot.vm_dir / "share" / "sc" / sc.name / "stdout"))
        results[sc.name] = value
        print(f"    {sc.name}: {'ok' if value is not None else 'NO RESULT'}", file=sys.stderr)
    if rc != 0:
        print(f"bench: the {file} guest ended with status {rc}", file=sys.stderr)
    return results, boot


def p6_setup_failure(boot, rc):
    """Why a P6 boot ran none of its captures (None when its set-up succeeded)."""
    if any((boot.vm_dir / "share" / "sc" / sc.name / "rc").exists() for sc in boot.scenarios):
        return None
    dmesg = e2e.read_text(boot.vm_dir / "share" / "dmesg.txt")
    snd = [re.sub(r"^\[[ \d.]+\] ", "", l) for l in dmesg.splitlines() if "virtio_snd" in l]
    console = e2e.read_text(boot.vm_dir / "console.log").splitlines()
    why = "; ".join(snd[-3:]) or "; ".join(console[-3:]) or "no console output"
    return f"the guest's set-up failed (status {rc}): {why}"


def arecord_runs(label, durations, peer_source=None, sound=None):
    """P6: arecord captures through one device (vdaq, QEMU's own with `sound="qemu"`, or the
    peer reading `peer_source`), each checked on the host; returns the device's summary and
    runs. QEMU's device captures silence: its runs are checked for exit status, byte count and
    stream time (within 5% of real time) instead of content."""
    boot = e2e.Boot(ROOT / "ci" / "bench" / "p6.toml", full=True)
    boot.scenarios = boot.scenarios[:durations["p6_runs"]]
    for sc in boot.scenarios:
        sc.run = sc.run.format(**durations, **P6)
    if peer_source:
        boot.name = f"p6-peer-{peer_source}"
        boot.cfg["device_cmd"] = "ci/peer/vhost-device-sound.sh"
        boot.cfg["device"] = [peer_source, *(str(P6[k]) for k in ("rate", "channels", "format", "period_frames"))]
    if sound:
        boot.name = f"p6-{sound}"
        boot.cfg["sound"] = sound
    boot.vm_dir = e2e.RUN_DIR / f"e2e-{boot.name}"
    content_checked = sound != "qemu"
    boots = []
    for attempt in range(1, P6_BOOTS + 1):
        rc = e2e.run_boot(boot, boot.scenarios, live=False)
        failure = p6_setup_failure(boot, rc)
        boots.append({"status": rc, "setup_failure": failure})
        if failure is None:
            break
        print(f"bench: P6 {label}, boot {attempt} of {P6_BOOTS}: {failure}", file=sys.stderr)
        if attempt < P6_BOOTS:
            # Its logs stay beside the next boot's.
            kept = boot.vm_dir.with_name(f"{boot.vm_dir.name}.boot{attempt}")
            subprocess.run(["rm", "-rf", str(kept)], check=True)
            boot.vm_dir.rename(kept)
            boots[-1]["log"] = str(kept)
    boots[-1]["log"] = str(boot.vm_dir)
    if rc != 0:
        print(f"bench: the P6 guest ({label}) ended with status {rc}", file=sys.stderr)
    failure = boots[-1]["setup_failure"]
    app = e2e.host_app()
    frame_bytes = P6["channels"] * P6["sample_bytes"]
    seconds = durations["p6_seconds"]
    runs = []
    for sc in boot.scenarios:
        d = boot.vm_dir / "share" / "sc" / sc.name
        rc_text = e2e.read_text(d / "rc").strip()
        times = [float(v) for v in e2e.read_text(d / "time").split()]
        capture = d / "capture.raw"
        size = capture.stat().st_size if capture.exists() else 0
        content = None
        if size and content_checked:
            r = subprocess.run([app, "verify", "--format", P6["format"], "--channels", str(P6["channels"]),
                                str(capture)], capture_output=True, text=True)
            content = e2e.last_json(r.stdout)
        stream_s = times[0] if times else None
        exit_status = int(rc_text) if rc_text.lstrip("-").isdigit() else None
        error = e2e.read_text(d / "stderr").strip()[-200:] or None
        if exit_status is None:
            error = f"not run: {failure}" if failure else "the capture did not finish (see the boot's console log)"
        run = {
            "exit_status": exit_status,
            "bytes": size, "stream_seconds": stream_s, "wall_seconds": times[1] if len(times) > 1 else None,
            "bytes_per_s": size / stream_s if (size and stream_s) else None,
            "elapsed_over_real": stream_s / seconds if stream_s else None,
            # None: not checkable (QEMU's device captures silence).
            "content_clean": bool(content and content["clean"]) if content_checked else None,
            "silent": (size > 0 and not capture.read_bytes().strip(b"\0")) if not content_checked else None,
            "error": error,
        }
        exact = run["exit_status"] == 0 and size == seconds * P6["rate"] * frame_bytes
        if content_checked:
            run["ok"] = exact and run["content_clean"]
        else:
            run["ok"] = exact and stream_s is not None and abs(stream_s - seconds) <= 0.05 * seconds
        runs.append(run)
    ok = [r for r in runs if r["ok"]]
    median = lambda v: sorted(v)[len(v) // 2] if v else None  # noqa: E731
    print(f"    {label}: {len(ok)} of {len(runs)} runs ok", file=sys.stderr)
    return {
        "device": label, "runs": len(runs), "failed": len(runs) - len(ok),
        "transport": P6_TRANSPORT["peer" if peer_source else sound or "vdaq"]
        if not (peer_source and os.environ.get("VDAQ_PEER_EVENT_IDX") == "1")
        else "vhost-user-snd-pci (INTx), vhost-device-sound 0.3.0 with EVENT_IDX (VDAQ_PEER_EVENT_IDX=1)",
        "content_checked": content_checked,
        "content_clean": sum(bool(r["content_clean"]) for r in runs) if content_checked else None,
        "bytes_per_s_median": median([r["bytes_per_s"] for r in ok]),
        "elapsed_over_real_median": median([r["elapsed_over_real"] for r in ok]),
        # Every boot tried, the last one's log directory; `error`: why no capture ran.
        "boots": boots, "error": failure,
        "run_results": runs,
    }


def p6_devices(durations):
    """P6 for every device: vdaq, QEMU's own virtio-sound-pci, then the peer per source."""
    say("P6: arecord through virtio_snd: vdaq, QEMU's virtio-sound-pci, then vhost-device-sound")
    p6 = [arecord_runs("vdaq", durations),
          arecord_runs("QEMU virtio-sound-pci (-audiodev none)", durations, sound="qemu")]
    for source in durations["p6_peer_sources"]:
        p6.append(arecord_runs(f"vhost-device-sound ({source})", durations, peer_source=source))
    return p6


def breakdown(free, p5, copy, kernel_copy=None):
    """A period's time by layer, per period size: each layer is the difference between two P1
    paths that differ by that layer alone (same boot), and the device's own share is P5's."""
    def per_period_us(path, check, size):
        r = next((r for r in free if (r["path"], r["check"], r["period_bytes"]) == (path, check, size)), None)
        if not (r and r["bytes_per_s"]):
            return None
        return size / r["bytes_per_s"] * 1e6

    def minus(a, b):
        return None if a is None or b is None else a - b

    device = {r["period_bytes"]: r for r in (p5 or {}).get("periods", [])}
    rows = []
    for size in sorted({r["period_bytes"] for r in free}):
        floor = per_period_us("mmap", "unchecked", size)
        sigio = per_period_us("sigio", "unchecked", size)
        checked = per_period_us("mmap", "checked", size)
        read_checked = per_period_us("read", "checked", size)
        dev = device.get(size)
        rows.append({
            "period_bytes": size,
            # Host side: render and write into guest memory, used ring and notification.
            "device_us": size / dev["device_bytes_per_s"] * 1e6 if dev and dev["device_bytes_per_s"] else None,
            # Guest: interrupt through QEMU, the driver, SIGIO, the record ring and the ack
            # (no byte touched): the floor of every path.
            "transport_and_driver_us": floor,
            # read() instead of the mapping: the copy to user space.
            "copy_to_user_us": minus(sigio, floor),
            # The app's counter check of the mapped period.
            "check_us": minus(checked, floor),
            # Spooling and writing the file (tmpfs), on top of a checked read() capture.
            "file_write_us": minus(per_period_us("read", "file", size), read_checked),
            # Limits measured in the same run, per period of this size.
            "guest_copy_us": size / copy * 1e6 if copy else None,
            "guest_kernel_copy_us": size / kernel_copy * 1e6 if kernel_copy else None,
            "host_write_us": size / dev["host_write_bytes_per_s"] * 1e6 if dev and dev["host_write_bytes_per_s"] else None,
        })
    return rows


def summarise(paced, freerun, p5, p6, durations, command, mode, accel):
    copy = (paced.get("p1-copy-bandwidth") or {}).get("copy_bytes_per_s")
    free = []
    for name, s in sorted(freerun.items()):
        m = re.match(r"p1-(\w+)-(\d+)k-(checked|unchecked|file)$", name)
        if not (m and s):
            continue
        bps = s["frames"] * s["params"]["frame_bytes"] / s["wall_seconds"] if s["wall_seconds"] else None
        free.append({
            "path": m.group(1), "period_bytes": int(m.group(2)) * 1024, "check": m.group(3),
            "bytes_per_s": bps, "frames": s["frames"], "periods": s["periods"],
            "wall_seconds": s["wall_seconds"], "ratio_to_copy": (bps / copy) if (bps and copy) else None,
            "interrupts": s["driver"]["rx_interrupts_with_data"], "error": s["error"],
        })
    free.sort(key=lambda r: (r["path"], r["check"], r["period_bytes"]))
    irq, rng = freerun.get("p2-vdaq-interrupts"), freerun.get("p2-rng-requests")
    p2 = {
        "vdaq": None if not irq else {
            "period_bytes": irq["params"]["period_bytes"], "periods": irq["periods"],
            "interrupts": irq["driver"]["rx_interrupts_with_data"], "seconds": irq["wall_seconds"],
            "interrupts_per_s": irq["driver"]["rx_interrupts_with_data"] / irq["wall_seconds"]
            if irq["wall_seconds"] else None,
            "periods_per_s": irq["periods"] / irq["wall_seconds"] if irq["wall_seconds"] else None,
        },
        "rng": None if not rng else dict(rng, requests_per_s=rng["interrupts"] / rng["seconds"]
                                         if rng["seconds"] else None),
    }
    lat = paced.get("p3-sigio-latency")
    p3 = None if not lat else {
        "rate": lat["params"]["rate"], "period_bytes": lat["params"]["period_bytes"],
        "periods": lat["periods"], "latency_us": lat["latency_us"],
        "log2_us_histogram": lat["latency_log2_us_histogram"],
    }
    p4 = []
    for name in ("p4-384k-8ch", "p4-384k-32ch"):
        s = paced.get(name)
        if not s:
            continue
        p4.append({
            "rate": s["params"]["rate"], "channels": s["params"]["channels"], "format": "s32",
            "seconds": durations["paced_seconds"], "frames": s["frames"], "rate_hz": s["rate_hz"],
            "xruns": s["driver"]["xruns"], "frames_lost": s["driver"]["frames_lost"],
            "period_jitter": s["period_jitter"], "latency_us": s["latency_us"], "error": s["error"],
        })
    return {
        "schema": SCHEMA, "mode": mode, "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(accel),
        "p1": {"guest_copy_bytes_per_s": copy,
               "guest_kernel_copy_bytes_per_s": (paced.get("p1-kernel-copy") or {}).get("kernel_copy_bytes_per_s"),
               "free_run": free,
               "check": (paced.get("p1-check-bandwidth") or {}).get("results")},
        "breakdown": breakdown(free, p5, copy, (paced.get("p1-kernel-copy") or {}).get("kernel_copy_bytes_per_s")),
        "p2": p2, "p3": p3, "p4": p4, "p5": p5,
        "p6": {**{k: P6[k] for k in ("rate", "channels", "format", "period_frames")},
               "buffer_periods": 4, "seconds": durations["p6_seconds"], "runs": durations["p6_runs"],
               "devices": p6},
    }


def check(results):
    """The outputs a smoke run must produce; returns the problems."""
    problems = []
    if not results["machine"].get("guest_kernel"):
        problems.append("machine: no guest kernel release")
    p1 = results["p1"]
    if not isinstance(p1["guest_copy_bytes_per_s"], (int, float)):
        problems.append("P1: no guest copy bandwidth")
    if len(p1["free_run"]) != 26 or any(not r["bytes_per_s"] for r in p1["free_run"]):
        problems.append(f"P1: {len(p1['free_run'])} free-run results of 26, or one without a rate")
    if not p1.get("guest_kernel_copy_bytes_per_s"):
        problems.append("P1: no guest kernel copy bandwidth")
    if not p1["check"]:
        problems.append("P1: no counter-check bandwidth")
    if not any(r["transport_and_driver_us"] for r in results["breakdown"]):
        problems.append("breakdown: no layer measured")
    p2 = results["p2"]
    if not (p2["vdaq"] and p2["vdaq"]["interrupts_per_s"]) or not (p2["rng"] and p2["rng"]["requests_per_s"]):
        problems.append(f"P2: missing a rate: {p2}")
    if not results["p3"] or sum(results["p3"]["log2_us_histogram"]) == 0:
        problems.append("P3: no latency histogram")
    if len(results["p4"]) != 2 or any(sum(r["period_jitter"]["log2_us_histogram"]) == 0 for r in results["p4"]):
        problems.append("P4: missing runs or jitter histograms")
    if not results["p5"] or not results["p5"].get("periods"):
        problems.append("P5: no device-alone results")
    elif any(not r.get("device_runs_bytes_per_s") or not r.get("device_sleeping_bytes_per_s")
             for r in results["p5"]["periods"]):
        problems.append("P5: a period size without its polling runs or its sleeping-driver rate")
    if results["p6"] is not None:
        problems += check_p6(results["p6"])
    return problems


def check_p6(p6):
    """P6 must have a record of every run of every device (vdaq, QEMU's, at least one peer);
    vdaq's runs must have finished. Another device's failed runs are results, with the reason."""
    problems = []
    devices = p6["devices"]
    if len(devices) < 3:
        problems.append(f"P6: {len(devices)} devices, expected vdaq, QEMU's and at least one peer")
    for d in devices:
        if len(d["run_results"]) != p6["runs"]:
            problems.append(f"P6: {d['device']}: {len(d['run_results'])} run records of {p6['runs']}")
        elif d["device"] == "vdaq" and any(r["exit_status"] is None for r in d["run_results"]):
            problems.append(f"P6: vdaq: a run that did not finish ({d['error'] or 'see its log'})")
        elif any(r["exit_status"] is None and not r["error"] for r in d["run_results"]):
            problems.append(f"P6: {d['device']}: a run with neither an exit status nor a reason")
    return problems


def report(results, plots, path):
    m = results["machine"]
    mb = lambda v: f"{v / 1e6:.1f}" if v else "-"  # noqa: E731
    lines = [
        "# vdaq benchmark report", "",
        f"Command: `{results['command']}` ({results['mode']}), {results['date']}.", "",
        f"Machine: {m['cpu']} ({m['cpus']} CPUs), host kernel {m['kernel']}; {m['qemu']}; "
        f"guest kernel {m.get('guest_kernel')}, accelerator {m['accelerator']}; {m['rustc']}.", "",
        "## P1: free-run throughput against the guest's copy bandwidth", "",
        f"Guest memory copy: {mb(results['p1']['guest_copy_bytes_per_s'])} MB/s in user space (64 MiB); "
        f"the guest kernel's copy to user space (read() of a tmpfs file): "
        f"{mb(results['p1'].get('guest_kernel_copy_bytes_per_s'))} MB/s.", "",
        "| path | counter | period | MB/s | ratio to copy | interrupts |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["p1"]["free_run"]:
        ratio = f"{r['ratio_to_copy']:.3f}" if r["ratio_to_copy"] else "-"
        lines.append(f"| {r['path']} | {r['check']} | {r['period_bytes'] // 1024} KiB | {mb(r['bytes_per_s'])} "
                     f"| {ratio} | {r['interrupts']} |")
    if results["p1"]["check"]:
        lines += ["", "The counter check alone (16 MiB buffer, in the guest), against a copy of the same buffer:", "",
                  "| format | channels | check MB/s | copy MB/s | check / copy |", "| --- | --- | --- | --- | --- |"]
        for r in results["p1"]["check"]:
            lines.append(f"| {r['format']} | {r['channels']} | {r['check_mb_s']:.0f} | {r['memcpy_mb_s']:.0f} "
                         f"| {r['check_over_memcpy']:.2f} |")
    us = lambda v: f"{v:.0f}" if v is not None else "-"  # noqa: E731
    lines += ["", "## Where a period's time goes (us per period)", "",
              "Each guest layer is the difference of two P1 paths measured in the same boot; the device's "
              "share is P5's (host harness). Limits: the guest's copy and the host's write of one period.", "",
              "| period | device (host) | transport + driver | copy to user | check | file write "
              "| limit: guest copy | limit: guest kernel copy | limit: host write |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["breakdown"]:
        lines.append(f"| {r['period_bytes'] // 1024} KiB | {us(r['device_us'])} | {us(r['transport_and_driver_us'])} "
                     f"| {us(r['copy_to_user_us'])} | {us(r['check_us'])} | {us(r['file_write_us'])} "
                     f"| {us(r['guest_copy_us'])} | {us(r.get('guest_kernel_copy_us'))} | {us(r['host_write_us'])} |")
    p2 = results["p2"]
    lines += ["", "## P2: interrupts per second", "",
              "| device | what | per second |", "| --- | --- | --- |"]
    if p2["vdaq"]:
        v = p2["vdaq"]
        lines.append(f"| vdaq (free-run, {v['period_bytes']}-byte periods) | receive interrupts that completed periods "
                     f"| {v['interrupts_per_s']:.0f} ({v['periods_per_s']:.0f} periods) |")
    if p2["rng"]:
        r = p2["rng"]
        lines.append(f"| vhost-device-rng ({r['device']}, 64-byte reads of /dev/hwrng) | requests (interrupts) "
                     f"| {r['requests_per_s']:.0f} ({r['bytes'] / r['seconds'] / 1e3:.1f} kB/s) |")
    p3 = results["p3"]
    if p3:
        l = p3["latency_us"]
        lines += ["", "## P3: interrupt to SIGIO handler", "",
                  f"{p3['periods']} periods of {p3['period_bytes']} bytes at {p3['rate']} Hz: "
                  f"p50 {l['p50']} us, p90 {l['p90']} us, p99 {l['p99']} us, max {l['max']} us."]
    lines += ["", "## P4: paced 384 kHz S32", "",
              "| channels | seconds | frames/s | xruns | frames lost | jitter max us | latency p99 us |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["p4"]:
        lines.append(f"| {r['channels']} | {r['seconds']} | {r['rate_hz']:.0f} | {r['xruns']} | {r['frames_lost']} "
                     f"| {r['period_jitter']['max_us']} | {r['latency_us']['p99']} |")
    p5 = results["p5"]
    if p5:
        lines += ["", "## P5: the device alone (host harness) against host write bandwidth", "",
                  "The harness as the driver: polling the used ring (the device's rate; median of the runs, "
                  "min to max), and sleeping until the device signals (adds a thread round trip per batch). "
                  "Two host baselines: writes streaming through 64 MiB (memory), and writes into as many "
                  "period-sized slots as the harness keeps in flight (the same cache footprint as the device's).", "",
                  "| period | device MB/s (polling) | min to max | sleeping driver MB/s | host write MB/s (64 MiB) "
                  "| ratio | host write MB/s (same set) | ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in p5["periods"]:
            same = r.get("host_write_same_set_bytes_per_s")
            same_ratio = f"{r['ratio_same_set']:.3f}" if r.get("ratio_same_set") else "-"
            runs = r.get("device_runs_bytes_per_s") or []
            spread = f"{mb(min(runs))} to {mb(max(runs))}" if runs else "-"
            lines.append(f"| {r['period_bytes'] // 1024} KiB | {mb(r['device_bytes_per_s'])} | {spread} | "
                         f"{mb(r.get('device_sleeping_bytes_per_s'))} | "
                         f"{mb(r['host_write_bytes_per_s'])} | {r['ratio']:.3f} | {mb(same)} | {same_ratio} |")
        lines += ["", "| source (64 KiB periods) | device MB/s |", "| --- | --- |"]
        for r in p5["sources"]:
            lines.append(f"| {r['source']} | {mb(r['device_bytes_per_s'])} |")
    lines += report_p6(results["p6"])
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")


def report_p6(p6):
    lines = ["", "## P6: arecord through virtio_snd: vdaq, QEMU's virtio-sound-pci, vhost-device-sound", "",
             f"{p6['runs']} captures of {p6['seconds']} s each per device, "
             f"{p6['rate']} Hz, {p6['channels']} channels, {p6['format']}, {p6['period_frames']}-frame periods, "
             f"{p6['buffer_periods']}-period buffer. The counter's content is checked on the host (unbroken); "
             "QEMU's virtio-sound-pci with `-audiodev none` captures silence, so its content is not checkable: "
             "its runs count as ok with arecord's exit status 0, every byte, and a stream time within 5% of real "
             "time. A device that could not start is booted again (3 boots at most); its runs then carry the reason.",
             "", "| device | failed runs | content clean | kB/s (median of ok runs) | stream time / real time | boots |",
             "| --- | --- | --- | --- | --- | --- |"]
    notes, peer_timeout = [], False
    for d in p6["devices"]:
        kbs = f"{d['bytes_per_s_median'] / 1e3:.1f}" if d["bytes_per_s_median"] else "-"
        ratio = f"{d['elapsed_over_real_median']:.3f}" if d["elapsed_over_real_median"] else "-"
        if d["error"]:
            content = "-"
        elif d["content_checked"]:
            content = f"{d['content_clean']} of {d['runs']}"
        else:
            silent = sum(bool(r["silent"]) for r in d["run_results"])
            content = f"not checkable (silence: {silent} of {d['runs']} all zero)"
        boots = d.get("boots") or []
        lines.append(f"| {d['device']} | {d['failed']} of {d['runs']} | {content} | {kbs} | {ratio} | {len(boots)} |")
        for i, b in enumerate(boots, 1):
            if not b["setup_failure"]:
                continue
            last = i == len(boots)
            what = f"**no capture ran** (boot {i}, the last)" if last else f"boot {i}"
            notes.append(f"- {d['device']}, {what}: {b['setup_failure']} (log: `{b['log']}`)")
            peer_timeout |= "vhost-device-sound" in d["device"] and "control message" in b["setup_failure"]
    if peer_timeout:
        notes.append("- vhost-device-sound 0.3.0's control-message time-outs at probe: with EVENT_IDX its one "
                     "queue thread can start spinning on the event queue (an event handler that never takes the "
                     "buffers Linux posts there), a start-up race; the control queue then goes unanswered. "
                     "ci/peer/vhost-device-sound.sh hides EVENT_IDX (unless VDAQ_PEER_EVENT_IDX=1).")
    transports = "; ".join(f"{d['device']}: {d['transport']}" for d in p6["devices"] if d.get("transport"))
    return lines + ["", f"Transports: {transports}."] + ([""] + notes if notes else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="short runs; check the outputs")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default run/bench)")
    ap.add_argument("--only", choices=["p6"], help="one benchmark alone: its results, report section and plot")
    args = ap.parse_args()
    durations = SMOKE if args.smoke else FULL
    mode = "smoke" if args.smoke else "full"
    out = args.out or (e2e.RUN_DIR / ("bench-smoke" if args.smoke else "bench"))
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["ci/bench.py", *sys.argv[1:]])
    t0 = time.monotonic()

    # The benchmarks' layer of the set-up (the peers) on first use; quick when all is there.
    subprocess.run([str(ROOT / "ci" / "setup.sh"), "bench"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "vdaq-device"], cwd=ROOT, check=True)
    if args.only == "p6":
        return only_p6(durations, out, command, mode, t0)
    p5 = device_alone(durations, out)
    say("P1, P3, P4 in the guest (paced device)")
    paced, boot = run_guest("paced.toml", durations)
    accel_file = boot.vm_dir / "accel"
    accel = accel_file.read_text().strip() if accel_file.exists() else None
    say("P1: free-run throughput in the guest")
    freerun, _ = run_guest("freerun.toml", durations)
    p6 = p6_devices(durations)

    results = summarise(paced, freerun, p5, p6, durations, command, mode, accel)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    say("Plots (plotters)")
    subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "vdaq-bench-plot", "--",
                    str(out / "results.json"), str(out)], cwd=ROOT, check=True)
    plots = sorted(out.glob("*.svg"))
    report(results, plots, out / "report.md")
    print(f"bench: results {out / 'results.json'}, report {out / 'report.md'}, "
          f"{len(plots)} plots, in {time.monotonic() - t0:.0f} s")
    problems = check(results)
    for p in plots:
        try:
            root = xml.etree.ElementTree.parse(p).getroot()
            if not root.tag.endswith("svg"):
                problems.append(f"{p.name}: the document is not an SVG ({root.tag})")
        except xml.etree.ElementTree.ParseError as e:
            problems.append(f"{p.name}: not well-formed XML: {e}")
    if len(plots) < 5:
        problems.append(f"{len(plots)} plots, expected 5")
    for p in problems:
        print(f"bench: missing: {p}", file=sys.stderr)
    return 1 if problems else 0


def only_p6(durations, out, command, mode, t0):
    """`--only p6`: P6 alone; results.json holds P6 (the other sections empty), the report its
    section, the plots only p6-arecord.svg."""
    p6 = p6_devices(durations)
    accel_file = e2e.RUN_DIR / "e2e-p6" / "accel"
    accel = accel_file.read_text().strip() if accel_file.exists() else None
    results = summarise({}, {}, None, p6, durations, command, mode, accel)
    results["only"] = "p6"
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    say("Plots (plotters)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "vdaq-bench-plot", "--",
                        str(out / "results.json"), tmp], cwd=ROOT, check=True)
        plot = out / "p6-arecord.svg"
        shutil.copy(Path(tmp) / plot.name, plot)
    m = results["machine"]
    lines = ["# vdaq benchmark report: P6 alone", "",
             f"Command: `{command}` ({mode}), {results['date']}.", "",
             f"Machine: {m['cpu']} ({m['cpus']} CPUs), host kernel {m['kernel']}; {m['qemu']}; "
             f"guest kernel {m.get('guest_kernel')}, accelerator {m['accelerator']}; {m['rustc']}."]
    lines += report_p6(results["p6"]) + ["", f"![{plot.stem}]({plot.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"bench: results {out / 'results.json'}, report {out / 'report.md'}, in {time.monotonic() - t0:.0f} s")
    problems = check_p6(results["p6"])
    try:
        if not xml.etree.ElementTree.parse(plot).getroot().tag.endswith("svg"):
            problems.append(f"{plot.name}: the document is not an SVG")
    except xml.etree.ElementTree.ParseError as e:
        problems.append(f"{plot.name}: not well-formed XML: {e}")
    for p in problems:
        print(f"bench: missing: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
