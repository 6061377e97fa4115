#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""End-to-end scenarios in QEMU, described as data in ci/scenarios/*.toml.

    ci/e2e.py                  run every scenario
    ci/e2e.py NAME|BOOT|GLOB.. run the scenarios named (or every scenario of a boot file)
    ci/e2e.py --list           list the scenarios

Each file in ci/scenarios is one guest boot: its [boot] table gives the kernel variant
(`kernel`: plain for vdaq's Linux 7.2 kernel, debug for its Linux 6.12 kernel with the
detectors, or stock for Debian's own linux-image, see ci/vm.sh's vm_images), the device's flags (`device`) or configuration file
(`device_config`), a time limit (`timeout`), guest commands to run once (`setup`) and before each scenario (`before_each`),
files to put in the guest's /mnt/host (`share`), whether to add vhost-device-rng (`rng`), the
user to run the device as (`device_user`, when the suite runs as root), extra guest kernel
arguments (`append`), the guest's vCPUs (`smp`, default 1: races need 2), another backend to
run instead of vdaq-device (`device_cmd`, relative to the repository, given the socket and
`device`), and `sound = "qemu"` for QEMU's own virtio-sound-pci (`-audiodev none`) with no
backend at all (ci/vm.sh's VM_SOUND); its scenarios run in order in that boot, each with a `run` snippet
of guest shell (helpers in ci/guest/prelude.sh), an expected exit status (`exit`, default 0)
and `checks`: Python expressions over what the snippet left (see Checks below), and the
kernels it needs (`kernels`, with `kernels_why`: a run with --kernel another skips it, and
says so). Every
scenario's dmesg must also be free of detector reports. A [[matrix]] table makes a scenario
per combination of its `axes` (see `expand`).

Prints one line per scenario and a summary; a failing scenario is followed by its failed
checks, its stderr, and its part of the guest console, the device log and dmesg. Writes
run/e2e.tap (TAP 13) and run/e2e.junit.xml (with --kernel K: run/e2e-K.tap, and the boots'
directories run/e2e-BOOT-K/). Exits 1 when a scenario failed.
"""

import argparse
import ast
import fnmatch
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "ci" / "scenarios"
RUN_DIR = Path(os.environ.get("VDAQ_RUN_DIR", ROOT / "run"))

# Kernel reports that fail any scenario whose dmesg has them.
DETECTORS = re.compile(
    r"BUG:|WARNING:|Oops|KASAN|kernel BUG|possible (recursive|circular) locking|"
    r"inconsistent lock state|blocked for more than|soft lockup|irq lock inversion|"
    r"sleeping function called from invalid context|UBSAN")
DEFAULT_SCENARIO_TIMEOUT = 60
LOG_LINES = 40


class J(dict):
    """A JSON object whose keys read as attributes: j.counter.clean."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no '{name}' in {json.dumps(self)[:200]}") from None


def to_j(value):
    return json.loads(json.dumps(value), object_hook=J) if value is not None else None


def last_json(text):
    """The last line of `text` that is a JSON object (attribute access), or None."""
    for line in reversed(text.strip().splitlines()):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return to_j(v)
    return None


class CheckFailed(Exception):
    """A helper's explanation of why a check does not hold."""


def need(ok, why):
    if not ok:
        raise CheckFailed(why)
    return True


class Scenario:
    def __init__(self, boot, spec):
        self.boot = boot
        self.name = spec["name"]
        self.summary = spec.get("summary", "")
        self.run = spec["run"]
        self.exit = spec.get("exit", 0)
        self.checks = spec.get("checks", [])
        self.timeout = spec.get("timeout", DEFAULT_SCENARIO_TIMEOUT)
        # The kernels it can run on (None: any); `kernels_why` says what the others lack.
        self.kernels = spec.get("kernels")
        self.kernels_why = spec.get("kernels_why", "")
        self.results = []  # (description, ok, detail)
        self.logs = {}
        self.seconds = 0.0
        self.overruns = 0  # announced by arecord ('overrun!!!')

    @property
    def ok(self):
        return bool(self.results) and all(ok for _, ok, _ in self.results)


class Boot:
    def __init__(self, path, full):
        self.path = path
        self.name = path.stem
        spec = tomllib.loads(path.read_text())
        self.cfg = spec.get("boot", {})
        self.scenarios = [Scenario(self, s) for s in spec.get("scenario", [])]
        for m in spec.get("matrix", []):
            self.scenarios += [Scenario(self, s) for s in expand(m, full)]
        self.vm_dir = RUN_DIR / f"e2e-{self.name}"
        self.limit = None  # seconds, and the guest's exit status: set by run_boot
        self.rc = None


def expand(matrix, full):
    """The scenarios of a [[matrix]] table: its `axes` (name -> values) combined, substituted
    for {name} in name, summary, run and checks. `ci` says which combinations run without
    --full: "all", "cover" (each value of each axis at least once, cycling through the axes
    together) plus the `ci_extra` combinations, or "extra" (only the `ci_extra` ones)."""
    axes = matrix["axes"]
    names = list(axes)
    every = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]
    if full or matrix.get("ci", "all") == "all":
        chosen = every
    elif matrix["ci"] == "extra":
        chosen = matrix.get("ci_extra", [])
    else:
        longest = max(len(v) for v in axes.values())
        chosen = [{n: axes[n][i % len(axes[n])] for n in names} for i in range(longest)]
        chosen += [c for c in matrix.get("ci_extra", []) if c not in chosen]
    out = []
    for combo in chosen:
        def fill(text):
            return text.format(**combo)
        out.append({
            "name": fill(matrix["name"]), "summary": fill(matrix.get("summary", "")),
            "run": fill(matrix["run"]), "checks": [fill(c) for c in matrix.get("checks", [])],
            "exit": matrix.get("exit", 0), "timeout": matrix.get("timeout", DEFAULT_SCENARIO_TIMEOUT),
        })
    return out


def load(files, full=False):
    boots = [Boot(f, full) for f in files]
    names = [s.name for b in boots for s in b.scenarios]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        sys.exit(f"e2e: scenario names used twice: {', '.join(sorted(dupes))}")
    return boots


def say(msg):
    print(f"\033[1m==> {msg}\033[0m", file=sys.stderr, flush=True)


def host_app():
    out = subprocess.run([str(ROOT / "images/build-app.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


# --- Checks -------------------------------------------------------------------------------
#
# Names a check expression can use:
#   rc, stdout, stderr    the snippet's exit status and output (the runner writes $OUT/rc,
#                         $OUT/stdout, $OUT/stderr and $OUT/dmesg.txt: snippets use other names)
#   j                     the last line of stdout that is a JSON object (attribute access)
#   f(name), t(name), num(name)   a file in $OUT as JSON, text, or a number
#   fields(name)          a file in $OUT of `name value` lines (sysfs stats) as integers
#   dmesg, device_log     this scenario's part of dmesg and of the device's log
#   clean_capture(s, seconds)     an app summary with no error, an exact counter, enough
#                         frames and the rate within 5%
#   stalled(s)            an app summary ended by EIO, with one stall counted by the driver
#   tap_all_ok(text)      TAP output with a plan and every test ok
#   device_lost(stream)   frames the device counted lost on a stream during the scenario
#                         (from statistics lines it logged on SIGUSR1: host_do stats)
#   last_stats_line()     the device's last statistics line in the scenario's log part
#   device_stats()        vdaq-device's statistics at the end of the boot (its --stats-json
#                         file, ci/vm.sh's device-stats.json)
#   faults(stream)        what the device's injected faults did on a stream (dropped, errors,
#                         withheld, delayed, stalls, lies, storm_events), from device_stats()
#   arecord_ok(rate, fmt, channels, seconds), verify_counter(file, fmt, channels, frames),
#   analyze(file, fmt, channels, rate)   arecord captures, checked by the host's vdaq app
#   wav_info(file)        a WAV file's channels, bits, rate and frames


WIDTH = {"u8": 1, "s16": 2, "s32": 4, "float": 4, "float64": 8}
# ALSA's names of the formats, for arecord scenarios.
ALSA = {"U8": "u8", "S16_LE": "s16", "S32_LE": "s32", "FLOAT_LE": "float", "FLOAT64_LE": "float64"}


class Checks:
    """What a scenario's `checks` expressions can name: its outputs (`rc`, `stdout`, `j`, ...)
    and the check functions below, each of which returns True or raises CheckFailed."""

    def __init__(self, sc, sc_dir, app):
        self.sc, self.sc_dir, self.app = sc, sc_dir, app
        self.device_log = sc.logs.get("device", "")

    def text(self, name):
        return read_text(self.sc_dir / name)

    def f(self, name):
        v = last_json(self.text(name))
        need(v is not None, f"{name}: no JSON object in it ({self.text(name)[:200]!r})")
        return v

    def num(self, name):
        try:
            return float(self.text(name).strip())
        except ValueError:
            raise CheckFailed(f"{name}: not a number: {self.text(name)[:100]!r}") from None

    def fields(self, name):
        """A file of `name value` lines (e.g. a sysfs stats file) as an object of integers."""
        out = {}
        for line in self.text(name).splitlines():
            key, _, value = line.partition(" ")
            need(value.strip().lstrip("-").isdigit(), f"{name}: not a `name value` line: {line!r}")
            out[key] = int(value)
        need(out, f"{name}: empty")
        return to_j(out)

    @staticmethod
    def clean_capture(s, seconds):
        need(s is not None, "no JSON summary")
        need(s.error is None, f"the capture ended with an error: {s.error}")
        c = s.counter
        need(c.clean and c.gaps == 0 and c.missing_frames == 0, f"counter not clean: {json.dumps(c)}")
        rate = s.params.rate
        need(s.frames >= seconds * rate, f"{s.frames} frames, fewer than {seconds} s at {rate} Hz")
        need(abs(s.rate_hz - rate) <= 0.05 * rate,
             f"rate {s.rate_hz:.1f} Hz over {s.stream_seconds:.3f} s, not {rate} Hz within 5%")
        return True

    @staticmethod
    def stalled(s):
        need(s is not None, "no JSON summary")
        need("EIO" in str(s.error), f"error {s.error!r}, expected EIO")
        need(s.driver.stalls == 1, f"the driver counted {s.driver.stalls} stalls")
        return True

    def device_stats(self):
        """vdaq-device's statistics at the end of the boot (its --stats-json file)."""
        path = self.sc.boot.vm_dir / "device-stats.json"
        need(path.exists(), f"no {path.name}: the device left no statistics file")
        return to_j(json.loads(path.read_text()))

    def faults(self, stream):
        """The device's fault counts for `stream` at the end of the boot: each fault scenario
        has a stream of its own, idle after it."""
        streams = self.device_stats().streams
        need(stream < len(streams), f"the device has {len(streams)} streams, not {stream + 1}")
        return streams[stream].faults

    @staticmethod
    def tap_all_ok(out):
        lines = out.splitlines()
        bad = [l for l in lines if l.startswith("not ok")]
        plan = [l for l in lines if re.match(r"^1\.\.\d+$", l)]
        oks = [l for l in lines if l.startswith("ok ")]
        need(plan and not bad and len(oks) == int(plan[0][3:]),
             f"plan {plan}, {len(oks)} ok; failed: {'; '.join(bad) or 'none'}")
        return True

    def last_stats_line(self):
        """The device's last statistics line in the scenario's part of its log (the one the
        scenario's end asked for; a line asked for by the scenario before may land after the
        scenario's start mark)."""
        lines = [l for l in self.device_log.splitlines() if "statistics: " in l]
        need(lines, "no statistics line in the scenario's device log")
        return lines[-1]

    def device_lost(self, stream):
        m = re.findall(rf"statistics: .*?stream {stream}: [^;]*xruns \d+ \((\d+) frames lost\)", self.device_log)
        need(len(m) >= 2, f"fewer than two statistics lines in the device log: {m}")
        return int(m[-1]) - int(m[0])

    def arecord_ok(self, rate, fmt, channels, seconds):
        fmt = ALSA.get(fmt, fmt)
        raw = self.sc_dir / "capture.raw"
        size = raw.stat().st_size if raw.exists() else 0
        want = rate * seconds * channels * WIDTH[fmt]
        need(size == want, f"{size} bytes, expected {want}")
        time_text = self.text("time")
        try:
            stream_s = float(time_text.split()[0])
        except (IndexError, ValueError):
            raise CheckFailed(f"no stream time: {time_text!r}") from None
        overruns = self.overruns()
        if overruns == 0:
            need(abs(stream_s - seconds) <= 0.05 * seconds,
                 f"stream time {stream_s} s, expected {seconds} s within 5% (time: {time_text.strip()})")
        else:
            # Each recovery restarts the capture: the time the guest lost before it is in the
            # stream time and not in the data, so only the lower bound holds (the frames can
            # never come faster than the device's clock).
            need(stream_s >= 0.95 * seconds,
                 f"stream time {stream_s} s, expected at least {seconds} s less 5% "
                 f"({overruns} overruns announced; time: {time_text.strip()})")
        return True

    def overruns(self):
        """The overruns arecord announced (its 'overrun!!!' on standard error)."""
        return self.text("stderr").count("overrun!!!")

    def wav_info(self, name):
        import wave
        with wave.open(str(self.sc_dir / name)) as w:
            return {"channels": w.getnchannels(), "bits": 8 * w.getsampwidth(),
                    "rate": w.getframerate(), "frames": w.getnframes()}

    def verify_counter(self, name, fmt, channels, frames):
        """The counter unbroken, but for one restart at 0 per overrun arecord announced (each
        recovery is a new PREPARE, which starts a new acquisition: docs/CONFORMANCE.md)."""
        fmt = ALSA.get(fmt, fmt)
        overruns = self.overruns()
        r = subprocess.run([self.app, "verify", "--format", fmt, "--channels", str(channels), "--frames",
                            str(frames), "--first", "0", "--restarts-allowed", str(overruns),
                            str(self.sc_dir / name)], capture_output=True, text=True)
        need(r.returncode == 0,
             f"vdaq verify: {r.stdout.strip()} {r.stderr.strip()} ({overruns} overruns announced)")
        return True

    def analyze(self, name, fmt, channels, rate):
        fmt = ALSA.get(fmt, fmt)
        r = subprocess.run([self.app, "analyze", "--format", fmt, "--channels", str(channels), "--rate",
                            str(rate), str(self.sc_dir / name)], capture_output=True, text=True)
        need(r.returncode == 0, f"vdaq analyze: {r.stderr.strip()}")
        return to_j(json.loads(r.stdout))

    def names(self):
        """The names a check expression sees."""
        stdout = self.text("stdout")
        try:
            rc = int(self.text("rc"))
        except ValueError:
            rc = None
        return {
            "rc": rc,
            "stdout": stdout, "stderr": self.text("stderr"), "j": last_json(stdout),
            "f": self.f, "t": self.text, "num": self.num, "fields": self.fields,
            "dmesg": self.text("dmesg.txt"), "device_log": self.device_log,
            "clean_capture": self.clean_capture, "stalled": self.stalled, "tap_all_ok": self.tap_all_ok,
            "device_lost": self.device_lost, "arecord_ok": self.arecord_ok,
            "verify_counter": self.verify_counter, "faults": self.faults,
            "device_stats": self.device_stats, "wav_info": self.wav_info,
            "last_stats_line": self.last_stats_line,
            "analyze": self.analyze, "abs": abs, "len": len, "any": any, "all": all,
        }


def explain(expr, names):
    """The values of the operands of each comparison in `expr`, for a failed check."""
    parts = []
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                if isinstance(operand, ast.Constant):
                    continue
                src = ast.unparse(operand)
                try:
                    value = eval(compile(ast.Expression(operand), "<check>", "eval"), {"__builtins__": {}, **names})
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    value = f"<{e}>"
                parts.append(f"{src} = {str(value)[:200]}")
    return "; ".join(parts)


def evaluate(sc, app):
    sc_dir = sc.boot.vm_dir / "share" / "sc" / sc.name
    rc_file = sc_dir / "rc"
    if not rc_file.exists():
        why = "the scenario did not finish (the guest stopped before its end)"
        if sc.boot.rc == 124:
            why = f"the boot's time limit ({sc.boot.limit} s) ended it before this scenario finished"
        sc.results.append(("ran", False, why))
        return
    names = Checks(sc, sc_dir, app).names()
    sc.overruns = names["stderr"].count("overrun!!!")
    rc = names["rc"]
    why = f"exit status {rc}, expected {sc.exit}"
    if rc == 137:
        why += f" (killed at its {sc.timeout} s time limit)"
    sc.results.append((f"exit status {sc.exit}", rc == sc.exit, why))
    for expr in sc.checks:
        try:
            ok = bool(eval(expr, {"__builtins__": {}, **names}))
            detail = "" if ok else explain(expr, names)
        except CheckFailed as e:
            ok, detail = False, str(e)
        except Exception as e:  # noqa: BLE001 - a check that cannot be evaluated fails
            ok, detail = False, f"{type(e).__name__}: {e}"
        sc.results.append((expr, ok, detail))
    reports = [l for l in names["dmesg"].splitlines() if DETECTORS.search(l)]
    sc.results.append(("no detector report in dmesg", not reports, "; ".join(reports[:5])))


def early_boot_reports(console):
    """Detector reports raised inside start_kernel on the boot CPU (the report's call trace
    passes through `start_kernel`) before user space began ("vdaq-guest: ready"), so before
    vdaq.ko could run. Seen once in about a hundred debug boots under TCG (a KASAN
    wild-memory-access in handle_edge_irq during identify_cpu); the boot is run again once when
    it happens. Later, the boot CPU's idle task still runs under start_kernel: a report from an
    interrupt that lands there (vdaq.ko's watchdog among them) is the scenario's."""
    lines = console.splitlines()
    ready = next((i for i, l in enumerate(lines) if "vdaq-guest: ready" in l), len(lines))
    lines = lines[:ready]
    found = []
    for i, line in enumerate(lines):
        if not DETECTORS.search(line):
            continue
        for follow in lines[i + 1:i + 80]:
            if "start_kernel+" in follow:
                found.append(line)
                break
            if "=====" in follow or "end trace" in follow or DETECTORS.search(follow):
                break
    return found


def slice_between(text, begin, end):
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if begin in l), None)
    if start is None:
        return ""
    stop = next((i for i in range(start, len(lines)) if end in lines[i]), len(lines) - 1)
    return "\n".join(lines[start:stop + 1])


# --- Running a boot -----------------------------------------------------------------------

def guest_script(boot, scenarios):
    lines = [
        "# shellcheck shell=dash",
        "# Generated by ci/e2e.py: runs the scenarios of " + boot.name + ".toml in order.",
        ". /mnt/host/prelude.sh",
        "find_device",
        'echo "e2e: sound device is $VIRTIO"',
    ]
    if boot.cfg.get("smp"):
        # A boot that asks for vCPUs must get them: a guest kernel without ACPI once counted
        # one CPU under -smp 2, and the race scenarios ran on one vCPU unseen.
        n = int(boot.cfg["smp"])
        lines.append(f'cpus=$(grep -c ^processor /proc/cpuinfo); [ "$cpus" = {n} ] || '
                     f'{{ echo "e2e: the guest has $cpus CPUs, not {n}"; exit 3; }}')
    if boot.cfg.get("setup"):
        lines.append(f"{boot.cfg['setup']} || {{ echo 'e2e: set-up failed'; exit 3; }}")
    for sc in scenarios:
        lines.append(f"run_scenario {shlex.quote(sc.name)} {int(sc.timeout)}")
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def run_boot(boot, scenarios, live):
    stage = RUN_DIR / f"e2e-{boot.name}.stage"
    # The last run's logs go first: progress is read from the new console log only.
    subprocess.run(["rm", "-rf", str(stage), str(boot.vm_dir)], check=True)
    (stage / "sc").mkdir(parents=True)
    (stage / "prelude.sh").write_text((ROOT / "ci/guest/prelude.sh").read_text())
    if boot.cfg.get("before_each"):
        (stage / "before_each.sh").write_text(boot.cfg["before_each"] + "\n")
    # Files the guest needs (e.g. a driver of one's own), relative to the scenario file.
    for item in boot.cfg.get("share", []):
        src = (boot.path.parent / item).resolve()
        if not src.exists():
            sys.exit(f"e2e: {boot.path}: share: no {src}")
        subprocess.run(["cp", "-r", str(src), str(stage / src.name)], check=True)
    for sc in scenarios:
        (stage / "sc" / sc.name).mkdir()
        (stage / "sc" / sc.name / "run.sh").write_text(sc.run.strip() + "\n")
    script = RUN_DIR / f"e2e-{boot.name}.guest.sh"
    script.write_text(guest_script(boot, scenarios))
    device = list(boot.cfg.get("device", []))
    if boot.cfg.get("device_config"):
        conf = RUN_DIR / f"e2e-{boot.name}.device.toml"
        conf.write_text(boot.cfg["device_config"])
        device = ["--config", str(conf), *device]
    # The boot's own limit, but never less than its scenarios' limits need.
    limit = max(boot.cfg.get("timeout", 0), 120 + sum(sc.timeout for sc in scenarios))
    boot.limit = limit
    env = dict(os.environ, VM_SHARE_DIR=str(stage), VM_TIMEOUT=str(limit),
               VM_RNG="1" if boot.cfg.get("rng") else "0")
    if boot.cfg.get("device_user"):
        env["VM_DEVICE_USER"] = boot.cfg["device_user"]
    if boot.cfg.get("smp"):
        env["VM_SMP"] = str(int(boot.cfg["smp"]))
    if boot.cfg.get("append"):
        # Extra guest kernel arguments (e.g. panic_on_warn=1: a warning ends the boot).
        env["VM_APPEND"] = boot.cfg["append"]
    if boot.cfg.get("sound"):
        # "qemu": QEMU's own sound device instead of a vhost-user backend (no device process).
        env["VM_SOUND"] = boot.cfg["sound"]
    if boot.cfg.get("device_cmd"):
        # Another backend instead of vdaq-device (the benchmarks' peer), given `device`.
        env["VM_DEVICE_CMD"] = str(ROOT / boot.cfg["device_cmd"])
    cmd = ('source ci/lib.sh && source ci/vm.sh && trap vm_cleanup EXIT && '
           'vm_run "$@"')
    say(f"boot {boot.name}: {len(scenarios)} scenario(s) on the {boot.cfg.get('kernel', 'plain')} kernel")
    proc = subprocess.Popen(["bash", "-c", cmd, "e2e", f"e2e-{boot.name}", boot.cfg.get("kernel", "plain"),
                             str(script), *device], cwd=ROOT, env=env)
    # Progress from the guest console while it runs.
    console = boot.vm_dir / "console.log"
    seen = 0
    started, took = {}, {}
    while proc.poll() is None:
        time.sleep(0.5)
        seen = report_progress(console, seen, started, took, live)
    report_progress(console, seen, started, took, live)
    for sc in scenarios:
        sc.seconds = took.get(sc.name, 0.0)
    boot.rc = proc.returncode
    return proc.returncode


def report_progress(console, seen, started, took, live):
    try:
        lines = console.read_text(errors="replace").splitlines()
    except OSError:
        return seen
    for line in lines[seen:]:
        m = re.match(r"=== scenario (\S+): (begin|end \(exit (\d+)\))", line)
        if m and m.group(2) == "begin":
            started[m.group(1)] = time.monotonic()
            print(f"    {m.group(1)} ...", file=sys.stderr, flush=True)
        elif m:
            took[m.group(1)] = time.monotonic() - started.get(m.group(1), time.monotonic())
            print(f"    {m.group(1)} done in {took[m.group(1)]:.1f} s (exit {m.group(3)})",
                  file=sys.stderr, flush=True)
        elif live:
            print(f"    guest: {line}", file=sys.stderr, flush=True)
    return len(lines)


def read_text(path):
    return path.read_text(errors="replace") if path.exists() else ""


def collect_logs(boot, sc, console, device):
    """The scenario's parts of the boot's `console` and `device` logs, its stderr and dmesg."""
    begin, end = f"=== scenario {sc.name}: begin", f"=== scenario {sc.name}: end"
    sc.logs["console"] = slice_between(console, begin, end)
    sc.logs["device"] = slice_between(device, begin, end)
    share = boot.vm_dir / "share" / "sc" / sc.name
    sc.logs["stderr"] = read_text(share / "stderr")
    sc.logs["dmesg"] = read_text(share / "dmesg.txt")


def tail(text, n=LOG_LINES):
    return "\n".join(text.splitlines()[-n:])


def failure_report(sc):
    out = []
    for desc, ok, detail in sc.results:
        if not ok:
            out.append(f"      failed: {desc}" + (f"\n        {detail}" if detail else ""))
    for name in ("stderr", "console", "device", "dmesg"):
        body = tail(sc.logs.get(name, "")).strip()
        if body:
            out.append(f"      ----- {name} (last {LOG_LINES} lines) -----")
            out.extend("      " + l for l in body.splitlines())
    return "\n".join(out)


def write_tap(scenarios, path):
    lines = ["TAP version 13", f"1..{len(scenarios)}"]
    for i, sc in enumerate(scenarios, 1):
        lines.append(f"{'ok' if sc.ok else 'not ok'} {i} - {sc.name}: {sc.summary}")
        if not sc.ok:
            lines.append("  ---")
            lines.append("  message: |")
            lines.extend("    " + l for l in failure_report(sc).splitlines())
            lines.append("  ...")
    path.write_text("\n".join(lines) + "\n")


def plural(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def write_report(scenarios, path, command):
    """A markdown table of the results, with the command and the machine."""
    failed = sum(not sc.ok for sc in scenarios)
    lines = [
        f"Command: `{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on "
        f"`{os.uname().nodename}` ({os.cpu_count()} CPUs, {os.uname().release}).",
        "",
        f"{len(scenarios) - failed} passed, {failed} failed; arecord announced "
        f"{plural(sum(sc.overruns for sc in scenarios), 'overrun')}, in "
        f"{plural(sum(sc.overruns > 0 for sc in scenarios), 'capture')}.",
        "",
        "| scenario | result | what | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for sc in scenarios:
        failed = next(((d, detail) for d, ok, detail in sc.results if not ok), ("", ""))
        why = "" if sc.ok else f": {failed[0]}: {failed[1]}"[:160].replace("|", "/")
        result = "ok" if sc.ok else "FAIL" + why
        if sc.overruns:
            result += f" ({plural(sc.overruns, 'overrun')} announced)"
        lines.append(f"| {sc.name} | {result} | {sc.summary} | {sc.seconds:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def write_junit(boots, path):
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for boot, scenarios in boots:
        failures = sum(not sc.ok for sc in scenarios)
        out.append(f'  <testsuite name={quoteattr("e2e." + boot.name)} tests="{len(scenarios)}" failures="{failures}">')
        for sc in scenarios:
            out.append(f'    <testcase classname={quoteattr("e2e." + boot.name)} name={quoteattr(sc.name)} '
                       f'time="{sc.seconds:.1f}">')
            if not sc.ok:
                first = next(d for d, ok, _ in sc.results if not ok)
                out.append(f"      <failure message={quoteattr(first[:200])}>{escape(failure_report(sc))}</failure>")
            out.append(f"      <system-out>{escape(tail(sc.logs.get('console', '')))}</system-out>")
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    path.write_text("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="scenario names, boot names or glob patterns")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--file", action="append", type=Path, default=[],
                    help="scenario file(s) to use instead of ci/scenarios/*.toml")
    ap.add_argument("--live", action="store_true", help="print the guest console as it comes")
    ap.add_argument("--full", action="store_true",
                    help="every combination of the [[matrix]] tables (default: their CI subset)")
    ap.add_argument("--report", type=Path, help="also write the results as a markdown table")
    ap.add_argument("--kernel", help="the guest kernel of every boot (plain, debug, stock), "
                    "instead of each file's own")
    ap.add_argument("--device-config", type=Path,
                    help="vdaq-device's TOML configuration for every boot, instead of each file's")
    ap.add_argument("--module", type=Path,
                    help="a vdaq.ko to boot instead of the one built from guest-driver/ (e.g. "
                    "an old driver from ci/old-module.sh, to show a test failing on it)")
    args = ap.parse_args()
    if args.module:
        if not args.module.is_file():
            sys.exit(f"e2e: --module: no file {args.module}")
        # images/build-initramfs.sh takes it from the environment.
        os.environ["VDAQ_MODULE"] = str(args.module.resolve())

    boots = load(args.file or sorted(SCENARIOS.glob("*.toml")), args.full)
    # Another kernel's run keeps its own directories and reports (run/e2e-driver-plain/,
    # run/e2e-plain.tap) beside the default run's.
    suffix = f"-{args.kernel}" if args.kernel else ""
    skipped = []
    for b in boots:
        if args.kernel:
            b.cfg["kernel"] = args.kernel
            b.stem = b.name
            b.name += suffix
            b.vm_dir = RUN_DIR / f"e2e-{b.name}"
            skipped += [(sc, b.cfg["kernel"]) for sc in b.scenarios
                        if sc.kernels is not None and b.cfg["kernel"] not in sc.kernels]
            b.scenarios = [sc for sc in b.scenarios
                           if sc.kernels is None or b.cfg["kernel"] in sc.kernels]
        if args.device_config:
            b.cfg["device_config"] = args.device_config.read_text()
            b.cfg.pop("device", None)
    if args.list:
        for b in boots:
            for sc in b.scenarios:
                print(f"{sc.name:24} {b.name:14} {sc.summary}")
        return 0
    plan = []
    for b in boots:
        chosen = [sc for sc in b.scenarios
                  if not args.names or any(fnmatch.fnmatch(sc.name, n) or n in (b.name, getattr(b, "stem", b.name))
                                           for n in args.names)]
        if chosen:
            plan.append((b, chosen))
    if not plan:
        sys.exit(f"e2e: no scenario matches {' '.join(args.names)} (see --list)")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "vdaq-device"], cwd=ROOT, check=True)
    app = host_app()

    everything = []
    for boot, scenarios in plan:
        t0 = time.monotonic()
        guest_rc = run_boot(boot, scenarios, args.live)
        console = read_text(boot.vm_dir / "console.log")
        early = early_boot_reports(console)
        if early:
            # Not a scenario's doing: run the boot once more; a report that comes back fails
            # the first scenario as any other would.
            print(f"e2e: boot {boot.name}: a detector report in start_kernel, before any driver "
                  f"ran ({early[0].strip()}); booting again", file=sys.stderr)
            shutil.copy(boot.vm_dir / "console.log", RUN_DIR / f"e2e-{boot.name}.early-report.log")
            guest_rc = run_boot(boot, scenarios, args.live)
            console = read_text(boot.vm_dir / "console.log")
        device = read_text(boot.vm_dir / "device.log")
        for sc in scenarios:
            collect_logs(boot, sc, console, device)
            evaluate(sc, app)
        if guest_rc not in (0,):
            # The boot itself went wrong (time-out, crash): attach the console's end to the
            # scenarios that did not finish.
            for sc in scenarios:
                if not sc.ok and not sc.logs.get("console"):
                    sc.logs["console"] = console
            print(f"e2e: boot {boot.name}: the guest ended with status {guest_rc} "
                  "(124: time-out, 125: no exit status)", file=sys.stderr)
        late = [l for l in read_text(boot.vm_dir / "share" / "dmesg.txt").splitlines()
                if DETECTORS.search(l)]
        if late:
            scenarios[-1].results.append(("no detector report after the last scenario", False, "; ".join(late[:5])))
        print(f"    boot {boot.name} took {time.monotonic() - t0:.0f} s", file=sys.stderr)
        everything.extend(scenarios)

    print()
    for sc, kernel in skipped:
        print(f"skip {sc.name:24} not on the {kernel} kernel: runs on {', '.join(sc.kernels)} "
              f"({sc.kernels_why})")
    for sc in everything:
        checks = len(sc.results)
        overruns = f", {sc.overruns} overruns announced" if sc.overruns else ""
        print(f"{'ok  ' if sc.ok else 'FAIL'} {sc.name:24} {sc.summary} ({checks} checks{overruns})")
        if not sc.ok:
            print(failure_report(sc))
    tap, junit = RUN_DIR / f"e2e{suffix}.tap", RUN_DIR / f"e2e{suffix}.junit.xml"
    write_tap(everything, tap)
    if args.report:
        write_report(everything, args.report, " ".join(["ci/e2e.py", *sys.argv[1:]]))
    write_junit(plan, junit)
    failed_names = [sc.name for sc in everything if not sc.ok]
    failed = len(failed_names)
    # The names again on the last line, which a truncated log still shows.
    print(f"e2e: {len(everything) - failed} passed, {failed} failed"
          + (f" ({', '.join(failed_names)})" if failed_names else "")
          + (f", {len(skipped)} skipped on the {args.kernel} kernel" if skipped else "")
          + f" (TAP: {tap}, JUnit: {junit})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
