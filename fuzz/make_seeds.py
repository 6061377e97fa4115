#!/usr/bin/env python3
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


def main():
    seeds = {
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
