#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""Writes the seed corpus of the fuzz targets (fuzz/seeds/TARGET/*): valid sessions and chains
that the fuzzer then mutates. The input formats are described at the top of each target."""
import struct
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"


def control_request(body, room):
    return bytes([0]) + struct.pack("<HH", len(body), room) + body


def pcm(code, stream):
    return struct.pack("<II", code, stream)


def session(stream, period, periods, channels=1, fmt=5, rate=1, features=0, ticks=12):
    """PCM_INFO, SET_PARAMS, PREPARE, buffers, START, time passing, STOP, RELEASE."""
    out = control_request(struct.pack("<IIII", 0x0100, 0, 3, 32), 4 + 3 * 32)
    out += control_request(struct.pack("<IIIIIBBBB", 0x0101, stream, period * periods, period,
                                       features, channels, fmt, rate, 0), 4)
    out += control_request(pcm(0x0102, stream), 4)
    for _ in range(periods):
        out += bytes([1, stream]) + struct.pack("<H", period)
    out += control_request(pcm(0x0104, stream), 4)
    for _ in range(ticks):
        out += bytes([2, 10]) + bytes([1, stream]) + struct.pack("<H", period)
    out += control_request(pcm(0x0105, stream), 4)
    out += control_request(pcm(0x0103, stream), 4)
    return out


def desc(addr, length, flags, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


NEXT, WRITE, INDIRECT = 1, 2, 4


def chain(descs, heads):
    return bytes([len(descs)]) + b"".join(descs) + b"".join(struct.pack("<H", h) for h in heads)


# The backend target (fuzz_targets/backend.rs): guest memory layout and operations.
DATA = 0x1_0000
Q_CONTROL, Q_EVENT, Q_TX, Q_RX = 0, 1, 2, 3


class Guest:
    """Builds a backend input: descriptors, guest memory writes, kicks and time."""

    def __init__(self, event_idx=False):
        self.out = bytes([1 if event_idx else 0])
        self.avail = [0, 0, 0, 0]

    def desc(self, q, idx, addr, length, flags, nxt=0):
        self.out += bytes([0, q, idx]) + struct.pack("<IIHH", addr, length, flags, nxt)

    def publish(self, q, head):
        self.out += bytes([1, q]) + struct.pack("<H", head)

    def kick(self, q):
        self.out += bytes([2, q])

    def time(self, stream, us):
        self.out += bytes([3, stream]) + struct.pack("<H", us // 10)

    def write(self, at16, data):
        self.out += bytes([4]) + struct.pack("<HB", at16, len(data)) + data

    def resume(self):
        self.out += bytes([7, 0])

    def control(self, body, room=4):
        """A request at DATA, its response right after, in descriptors 0 and 1."""
        self.write(0, body)
        self.desc(Q_CONTROL, 0, DATA, len(body), NEXT, 1)
        self.desc(Q_CONTROL, 1, DATA + 0x100, room, WRITE)
        self.publish(Q_CONTROL, 0)
        self.kick(Q_CONTROL)

    def rx(self, first, stream, period, slot):
        """An rx message in descriptors first..first+2; header, frames and status at slot."""
        base = DATA + 0x1000 + slot * 0x1000
        self.write((base - DATA) // 16, struct.pack("<I", stream))
        self.desc(Q_RX, first, base, 4, NEXT, first + 1)
        self.desc(Q_RX, first + 1, base + 0x10, period, NEXT | WRITE, first + 2)
        self.desc(Q_RX, first + 2, base + 0x10 + period, 8, WRITE)
        self.publish(Q_RX, first)

    def event_buffers(self, n):
        for i in range(n):
            self.desc(Q_EVENT, i, DATA + 0x800 + 8 * i, 8, WRITE)
            self.publish(Q_EVENT, i)
        self.kick(Q_EVENT)


def backend_session(stream, period, periods, rate=1, features=0, event_idx=False, ticks=8):
    g = Guest(event_idx)
    g.event_buffers(8)
    g.control(struct.pack("<IIII", 0x0100, 0, 3, 32), 4 + 3 * 32)
    g.control(struct.pack("<IIIIIBBBB", 0x0101, stream, period * periods, period, features, 1, 5,
                          rate, 0))
    g.control(pcm(0x0102, stream))
    for i in range(4):
        g.rx(3 * i, stream, period, i)
    g.kick(Q_RX)
    g.control(pcm(0x0104, stream))
    for t in range(ticks):
        g.time(stream, 10_000)
        g.rx(3 * (t % 4), stream, period, t % 4)
        g.kick(Q_RX)
    g.control(pcm(0x0105, stream))
    g.control(pcm(0x0103, stream))
    return g.out


def backend_hostile():
    g = Guest()
    g.control(struct.pack("<IIIIIBBBB", 0x0101, 0, 640, 160, 0, 1, 5, 1, 0))
    g.control(pcm(0x0102, 0))
    g.rx(0, 0, 160, 0)
    g.kick(Q_RX)
    for _ in range(20):
        g.publish(Q_RX, 0)  # the same head again and again
    g.kick(Q_RX)
    g.out += bytes([7, 1])  # a reset
    g.control(struct.pack("<IIII", 0x0100, 0, 1, 1 << 30), 4096)  # a huge item size
    g.desc(Q_RX, 5, DATA + 0x3000, 4, NEXT, 200)  # a next past the queue
    g.publish(Q_RX, 5)
    g.kick(Q_RX)
    return g.out


def backend_avail_index_far():
    """The available index 1000 past the device's, with EVENT_IDX (once a worker spinning)."""
    g = Guest(event_idx=True)
    g.control(pcm(0x0102, 0))
    g.out += bytes([5, Q_RX]) + struct.pack("<H", 1000)
    g.kick(Q_RX)
    g.out += bytes([7, 1])
    g.control(pcm(0x0102, 0))
    return g.out


def main():
    seeds = {
        "backend/paced-session": backend_session(0, 160, 4),
        "backend/event-idx-session": backend_session(0, 160, 4, event_idx=True),
        "backend/free-run": backend_session(1, 640, 4, rate=7),
        "backend/liar-xruns": backend_session(2, 160, 4, features=1 << 4, ticks=16),
        "backend/hostile": backend_hostile(),
        "backend/avail-index-far": backend_avail_index_far(),
        "control/paced-s16": session(0, 160, 4),
        "control/free-run-stereo": session(1, 640, 4, channels=2, rate=7),
        "control/faults-xruns": session(2, 160, 4, features=1 << 4, ticks=40),
        "control/chmap-and-jacks": control_request(struct.pack("<IIII", 0x0200, 0, 3, 24), 4 + 3 * 24)
        + control_request(struct.pack("<IIII", 1, 0, 1, 24), 100),
        "chain/rx-buffer": chain([desc(0x1000, 8, NEXT, 1), desc(0x2000, 160, NEXT | WRITE, 2),
                                  desc(0x3000, 8, WRITE)], [0]),
        "chain/two-chains": chain([desc(0x1000, 8, NEXT, 1), desc(0x2000, 168, WRITE),
                                   desc(0x4000, 8, NEXT, 3), desc(0x5000, 168, WRITE)], [0, 2]),
        "chain/into-the-hole": chain([desc(0xff00, 8, NEXT, 1), desc(0xfff0, 0x100, WRITE)], [0]),
        "chain/readable-after-writable": chain([desc(0x1000, 8, WRITE | NEXT, 1), desc(0x2000, 8, 0)], [0]),
        "chain/indirect": chain([desc(0x6000, 48, INDIRECT)], [0]),
        "chain/second-region": chain([desc(0x20000, 8, NEXT, 1), desc(0x2fff8, 8, WRITE)], [0]),
    }
    for name, data in seeds.items():
        path = SEEDS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    main()
