//! The C header of the /dev/vdaqN user API, proto/include/vdaq.h, is rendered from the Rust
//! definitions: this test fails when the committed header differs (run with VDAQ_BLESS=1 to
//! rewrite it), and compiles it with the C compiler, whose static assertions check every
//! field's offset against the Rust layout.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write;
use std::mem::{offset_of, size_of};

use vdaq_proto::uapi::*;

macro_rules! strukt {
    ($out:ident, $rust:ty, $c:literal, [$(($field:ident, $ctype:literal, $doc:literal)),* $(,)?]) => {{
        writeln!($out, "struct {} {{", $c).unwrap();
        $( writeln!($out, "\t{}; /* {} */", decl($ctype, stringify!($field)), $doc).unwrap(); )*
        writeln!($out, "}};").unwrap();
        writeln!($out, "_Static_assert(sizeof(struct {}) == {}, \"size\");", $c, size_of::<$rust>()).unwrap();
        $( writeln!(
            $out,
            "_Static_assert(offsetof(struct {}, {}) == {}, \"offset\");",
            $c, stringify!($field), offset_of!($rust, $field)
        ).unwrap(); )*
        writeln!($out).unwrap();
    }};
}

/// A C declaration: `decl("uint32_t[3]", "x")` is `uint32_t x[3]`.
fn decl(ctype: &str, name: &str) -> String {
    match ctype.split_once('[') {
        Some((base, dims)) => format!("{base} {name}[{dims}"),
        None => format!("{ctype} {name}"),
    }
}

fn render() -> String {
    let mut o = String::new();
    o.push_str("/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */\n");
    o.push_str("/* The user API of /dev/vdaqN. Generated from proto/src/uapi.rs by proto/tests/c_header.rs:\n");
    o.push_str(
        " * do not edit (VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header rewrites it). */\n",
    );
    o.push_str("#ifndef VDAQ_H\n#define VDAQ_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n");
    writeln!(o, "#define VDAQ_PERIOD_MAGIC 0x{PERIOD_MAGIC:08x}u").unwrap();
    writeln!(o, "#define VDAQ_PERIOD_FLAG_LOST 0x{PERIOD_FLAG_LOST:x}u").unwrap();
    writeln!(o, "#define VDAQ_PERIOD_FLAG_ERROR 0x{PERIOD_FLAG_ERROR:x}u\n").unwrap();
    strukt!(
        o,
        PeriodHeader,
        "vdaq_period_header",
        [
            (magic, "uint32_t", "VDAQ_PERIOD_MAGIC"),
            (flags, "uint32_t", "VDAQ_PERIOD_FLAG_*"),
            (sequence, "uint64_t", "period number since start"),
            (timestamp_ns, "uint64_t", "CLOCK_MONOTONIC of the interrupt"),
            (frames, "uint32_t", "frames in this period"),
            (bytes, "uint32_t", "bytes of frames after this header"),
            (frames_lost, "uint64_t", "frames lost just before this period"),
        ]
    );
    strukt!(
        o,
        Params,
        "vdaq_params",
        [
            (rate, "uint32_t", "frames per second"),
            (channels, "uint32_t", "samples per frame"),
            (format, "uint32_t", "virtio-snd format code"),
            (period_bytes, "uint32_t", "bytes per period"),
            (periods, "uint32_t", "periods in the ring"),
            (reserved, "uint32_t[3]", "must be 0"),
        ]
    );
    strukt!(
        o,
        Info,
        "vdaq_info",
        [
            (streams, "uint32_t", "capture streams of the device"),
            (stream, "uint32_t", "virtio-snd stream id of this node"),
            (formats, "uint64_t", "bit n: virtio-snd format code n"),
            (rates, "uint64_t", "bit n: the n-th virtio-snd rate"),
            (channels_min, "uint32_t", "fewest channels"),
            (channels_max, "uint32_t", "most channels"),
            (max_periods, "uint32_t", "most periods"),
            (max_period_bytes, "uint32_t", "largest period"),
            (params, "struct vdaq_params", "current parameters"),
            (started, "uint32_t", "1 while started"),
            (reserved, "uint32_t", "0"),
        ]
    );
    strukt!(
        o,
        Stats,
        "vdaq_stats",
        [
            (periods, "uint64_t", "periods completed"),
            (frames, "uint64_t", "frames completed"),
            (frames_lost, "uint64_t", "frames lost (XRUN events)"),
            (xruns, "uint64_t", "XRUN events"),
            (rx_interrupts, "uint64_t", "receive interrupts"),
            (rx_interrupts_with_data, "uint64_t", "receive interrupts that completed periods"),
            (signals_sent, "uint64_t", "kill_fasync(SIGIO, POLL_IN) calls"),
            (periods_read, "uint64_t", "periods read"),
            (stalls, "uint64_t", "times found stalled"),
            (stall_signals, "uint64_t", "kill_fasync(SIGIO, POLL_ERR) calls"),
            (error_periods, "uint64_t", "periods completed with an error status (frames lost)"),
            (reserved, "uint64_t[5]", "0"),
        ]
    );
    writeln!(o, "#define VDAQ_MMAP_MAGIC 0x{MMAP_MAGIC:08x}u").unwrap();
    writeln!(o, "#define VDAQ_MMAP_VERSION {MMAP_VERSION}u\n").unwrap();
    strukt!(
        o,
        MmapLayout,
        "vdaq_mmap_layout",
        [
            (mapping_bytes, "uint64_t", "bytes of the whole mapping (whole pages)"),
            (
                records_offset,
                "uint64_t",
                "offset of the records (struct vdaq_mmap_record[periods])"
            ),
            (buffers_offset, "uint64_t", "offset of period buffer 0 (page aligned)"),
            (buffer_stride, "uint64_t", "distance between buffers (period_bytes in whole pages)"),
            (periods, "uint32_t", "period buffers and records"),
            (period_bytes, "uint32_t", "bytes per period"),
            (reserved, "uint64_t", "0"),
        ]
    );
    strukt!(
        o,
        MmapStatus,
        "vdaq_mmap_status",
        [
            (magic, "uint32_t", "VDAQ_MMAP_MAGIC"),
            (version, "uint32_t", "VDAQ_MMAP_VERSION"),
            (
                head,
                "uint64_t",
                "next sequence to complete: records tail..head ready; load with acquire"
            ),
            (tail, "uint64_t", "oldest sequence not given back (VDAQ_IOC_MMAP_ACK or read)"),
            (reserved, "uint64_t[5]", "0"),
        ]
    );
    strukt!(
        o,
        MmapRecord,
        "vdaq_mmap_record",
        [
            (
                header,
                "struct vdaq_period_header",
                "as read() gives it; sequence s at index s % periods"
            ),
            (buffer, "uint32_t", "buffer of the frames: buffers_offset + buffer * buffer_stride"),
            (reserved, "uint32_t", "0"),
        ]
    );
    for (name, v) in [
        ("VDAQ_IOC_INFO", VDAQ_IOC_INFO),
        ("VDAQ_IOC_SET_PARAMS", VDAQ_IOC_SET_PARAMS),
        ("VDAQ_IOC_START", VDAQ_IOC_START),
        ("VDAQ_IOC_STOP", VDAQ_IOC_STOP),
        ("VDAQ_IOC_MMAP_LAYOUT", VDAQ_IOC_MMAP_LAYOUT),
        ("VDAQ_IOC_MMAP_ACK", VDAQ_IOC_MMAP_ACK),
        ("VDAQ_IOC_STATS", VDAQ_IOC_STATS),
    ] {
        writeln!(o, "#define {name} 0x{v:08x}u").unwrap();
    }
    o.push_str("\n#endif /* VDAQ_H */\n");
    o
}

#[test]
fn c_header_matches_the_rust_definitions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/vdaq.h");
    let want = render();
    if std::env::var_os("VDAQ_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header"
    );
    // The C compiler checks the layout assertions.
    let dir = std::env::temp_dir().join(format!("vdaq-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("check.c");
    std::fs::write(&c, format!("#include \"{path}\"\nint main(void) {{ return 0; }}\n")).unwrap();
    let out = std::process::Command::new("cc")
        .arg("-std=c11")
        .arg("-fsyntax-only")
        .arg(&c)
        .output()
        .expect("run cc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}
