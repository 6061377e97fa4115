// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The C header of the /dev/vdaqN user API, proto/include/vdaq.h, is rendered from the Rust
//! definitions: this test fails when the committed header differs (run with VDAQ_BLESS=1 to
//! rewrite it). The header follows the kernel's uapi conventions (`__u32`/`__u64` from
//! <linux/types.h>, the ioctl numbers as `_IOR`/`_IOW`/`_IO` from <linux/ioctl.h>, no libc
//! header, plain C90). A C program compiled here checks, with static assertions, every
//! struct's size and field offsets against the Rust layout and every ioctl macro's expansion
//! against the Rust constant, for 64-bit and for 32-bit (`-m32`) programs alike.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write;
use std::mem::{offset_of, size_of};

use vdaq_proto::uapi::*;

macro_rules! strukt {
    ($out:ident, $checks:ident, $rust:ty, $c:literal, [$(($field:ident, $ctype:literal, $doc:literal)),* $(,)?]) => {{
        writeln!($out, "struct {} {{", $c).unwrap();
        $( writeln!($out, "\t{}; /* {} */", decl($ctype, stringify!($field)), $doc).unwrap(); )*
        writeln!($out, "}};\n").unwrap();
        writeln!($checks, "_Static_assert(sizeof(struct {}) == {}, \"size of {}\");", $c, size_of::<$rust>(), $c).unwrap();
        $( writeln!(
            $checks,
            "_Static_assert(offsetof(struct {}, {}) == {}, \"offset of {}.{}\");",
            $c, stringify!($field), offset_of!($rust, $field), $c, stringify!($field)
        ).unwrap(); )*
    }};
}

/// A C declaration: `decl("__u32[3]", "x")` is `__u32 x[3]`.
fn decl(ctype: &str, name: &str) -> String {
    match ctype.split_once('[') {
        Some((base, dims)) => format!("{base} {name}[{dims}"),
        None => format!("{ctype} {name}"),
    }
}

/// The header, and the C assertions (sizes, offsets, ioctl numbers) that check it against
/// the Rust definitions.
fn render() -> (String, String) {
    let mut o = String::new();
    let mut checks = String::new();
    // The uapi convention (the kernel's own headers), or the licences of vdaq's user space.
    o.push_str("/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note)");
    o.push_str(" OR Apache-2.0 OR BSD-3-Clause */\n");
    o.push_str("/*\n * The user API of /dev/vdaqN (vdaq.ko).\n *\n");
    o.push_str(
        " * Generated from proto/src/uapi.rs by proto/tests/c_header.rs: do not edit\n * (VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header rewrites it).\n */\n",
    );
    o.push_str("#ifndef _UAPI_LINUX_VDAQ_H\n#define _UAPI_LINUX_VDAQ_H\n\n");
    o.push_str("#include <linux/ioctl.h>\n#include <linux/types.h>\n\n");
    writeln!(o, "#define VDAQ_PERIOD_MAGIC 0x{PERIOD_MAGIC:08x}u").unwrap();
    writeln!(o, "#define VDAQ_PERIOD_FLAG_LOST 0x{PERIOD_FLAG_LOST:x}u").unwrap();
    writeln!(o, "#define VDAQ_PERIOD_FLAG_ERROR 0x{PERIOD_FLAG_ERROR:x}u\n").unwrap();
    strukt!(
        o,
        checks,
        PeriodHeader,
        "vdaq_period_header",
        [
            (magic, "__u32", "VDAQ_PERIOD_MAGIC"),
            (flags, "__u32", "VDAQ_PERIOD_FLAG_*"),
            (sequence, "__u64", "period number since start"),
            (timestamp_ns, "__u64", "CLOCK_MONOTONIC of the interrupt"),
            (frames, "__u32", "frames in this period"),
            (bytes, "__u32", "bytes of frames after this header"),
            (frames_lost, "__u64", "frames lost just before this period"),
        ]
    );
    strukt!(
        o,
        checks,
        Params,
        "vdaq_params",
        [
            (rate, "__u32", "frames per second"),
            (channels, "__u32", "samples per frame"),
            (format, "__u32", "virtio-snd format code"),
            (period_bytes, "__u32", "bytes per period"),
            (periods, "__u32", "periods in the ring"),
            (reserved, "__u32[3]", "must be 0"),
        ]
    );
    strukt!(
        o,
        checks,
        Info,
        "vdaq_info",
        [
            (streams, "__u32", "capture streams of the device"),
            (stream, "__u32", "virtio-snd stream id of this node"),
            (formats, "__u64", "bit n: virtio-snd format code n"),
            (rates, "__u64", "bit n: the n-th virtio-snd rate"),
            (channels_min, "__u32", "fewest channels"),
            (channels_max, "__u32", "most channels"),
            (max_periods, "__u32", "most periods"),
            (max_period_bytes, "__u32", "largest period"),
            (params, "struct vdaq_params", "current parameters"),
            (started, "__u32", "1 while started"),
            (reserved, "__u32", "0"),
        ]
    );
    strukt!(
        o,
        checks,
        Stats,
        "vdaq_stats",
        [
            (periods, "__u64", "periods completed"),
            (frames, "__u64", "frames completed"),
            (frames_lost, "__u64", "frames lost (XRUN events)"),
            (xruns, "__u64", "XRUN events"),
            (rx_interrupts, "__u64", "receive interrupts"),
            (rx_interrupts_with_data, "__u64", "receive interrupts that completed periods"),
            (signals_sent, "__u64", "kill_fasync(SIGIO, POLL_IN) calls"),
            (periods_read, "__u64", "periods read"),
            (stalls, "__u64", "times found stalled"),
            (stall_signals, "__u64", "kill_fasync(SIGIO, POLL_ERR) calls"),
            (error_periods, "__u64", "periods completed with an error status (frames lost)"),
            (reserved, "__u64[5]", "0"),
        ]
    );
    writeln!(o, "#define VDAQ_MMAP_MAGIC 0x{MMAP_MAGIC:08x}u").unwrap();
    writeln!(o, "#define VDAQ_MMAP_VERSION {MMAP_VERSION}u\n").unwrap();
    strukt!(
        o,
        checks,
        MmapLayout,
        "vdaq_mmap_layout",
        [
            (mapping_bytes, "__u64", "bytes of the whole mapping (whole pages)"),
            (records_offset, "__u64", "offset of the records (struct vdaq_mmap_record[periods])"),
            (buffers_offset, "__u64", "offset of period buffer 0 (page aligned)"),
            (buffer_stride, "__u64", "distance between buffers (period_bytes in whole pages)"),
            (periods, "__u32", "period buffers and records"),
            (period_bytes, "__u32", "bytes per period"),
            (reserved, "__u64", "0"),
        ]
    );
    strukt!(
        o,
        checks,
        MmapStatus,
        "vdaq_mmap_status",
        [
            (magic, "__u32", "VDAQ_MMAP_MAGIC"),
            (version, "__u32", "VDAQ_MMAP_VERSION"),
            (
                head,
                "__u64",
                "next sequence to complete: records tail..head ready; load with acquire"
            ),
            (tail, "__u64", "oldest sequence not given back (VDAQ_IOC_MMAP_ACK or read)"),
            (reserved, "__u64[5]", "0"),
        ]
    );
    strukt!(
        o,
        checks,
        MmapRecord,
        "vdaq_mmap_record",
        [
            (
                header,
                "struct vdaq_period_header",
                "as read() gives it; sequence s at index s % periods"
            ),
            (buffer, "__u32", "buffer of the frames: buffers_offset + buffer * buffer_stride"),
            (reserved, "__u32", "0"),
        ]
    );
    let magic = char::from_u32(IOC_TYPE).unwrap();
    writeln!(
        o,
        "/* ioctl type: Documentation/userspace-api/ioctl/ioctl-number.rst lists none for it */"
    )
    .unwrap();
    writeln!(o, "#define VDAQ_IOC_MAGIC '{magic}'\n").unwrap();
    // (name, macro, number, argument type, the Rust constant)
    let ioctls: [(&str, &str, u32, &str, u32); 7] = [
        ("VDAQ_IOC_INFO", "_IOR", 0x01, "struct vdaq_info", VDAQ_IOC_INFO),
        ("VDAQ_IOC_SET_PARAMS", "_IOW", 0x02, "struct vdaq_params", VDAQ_IOC_SET_PARAMS),
        ("VDAQ_IOC_START", "_IO", 0x03, "", VDAQ_IOC_START),
        ("VDAQ_IOC_STOP", "_IO", 0x04, "", VDAQ_IOC_STOP),
        ("VDAQ_IOC_MMAP_LAYOUT", "_IOR", 0x05, "struct vdaq_mmap_layout", VDAQ_IOC_MMAP_LAYOUT),
        ("VDAQ_IOC_MMAP_ACK", "_IOW", 0x06, "__u64", VDAQ_IOC_MMAP_ACK),
        ("VDAQ_IOC_STATS", "_IOR", 0x10, "struct vdaq_stats", VDAQ_IOC_STATS),
    ];
    for (name, mac, nr, ty, v) in ioctls {
        if ty.is_empty() {
            writeln!(o, "#define {name} {mac}(VDAQ_IOC_MAGIC, 0x{nr:02x})").unwrap();
        } else {
            writeln!(o, "#define {name} {mac}(VDAQ_IOC_MAGIC, 0x{nr:02x}, {ty})").unwrap();
        }
        writeln!(
            checks,
            "_Static_assert({name} == 0x{v:08x}u, \"{name} is not the Rust constant\");"
        )
        .unwrap();
    }
    o.push_str("\n#endif /* _UAPI_LINUX_VDAQ_H */\n");
    (o, checks)
}

fn header_path() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/include/vdaq.h")
}

/// Compiles `source` (named `name`) with `cc` and `args`; panics with the compiler's output
/// when it fails.
fn compile(name: &str, source: &str, args: &[&str]) {
    let dir = std::env::temp_dir().join(format!("vdaq-header-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(name);
    std::fs::write(&c, source).unwrap();
    let out = std::process::Command::new("cc")
        .args(args)
        .arg("-fsyntax-only")
        .arg(&c)
        .output()
        .expect("run cc");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "cc {args:?} {name}:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn c_header_matches_the_rust_definitions() {
    let path = header_path();
    let (want, checks) = render();
    if std::env::var_os("VDAQ_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header"
    );
    // The C compiler checks the layout and every ioctl macro's expansion.
    let program = format!(
        "#include <stddef.h>\n#include \"{path}\"\n\n{checks}\nint main(void) {{ return 0; }}\n"
    );
    compile("check.c", &program, &["-std=c11", "-Wall", "-Wextra", "-Werror"]);
    // The same layout for 32-bit processes: vdaq.ko's compat_ioctl passes their ioctls to the
    // 64-bit handler unchanged, which is right only if it is (and the numbers, which encode
    // the sizes, are the same). Needs gcc-multilib (ci/setup.sh installs it).
    compile("check32.c", &program, &["-m32", "-std=c11", "-Wall", "-Wextra", "-Werror"]);
}

#[test]
fn c_header_is_plain_c90_without_libc() {
    // As the kernel's own check of its uapi headers (usr/include/Makefile) builds them: C90,
    // pedantic; and nothing from libc (no <stdint.h>, no <stddef.h>), only <linux/...>.
    let path = header_path();
    let text = std::fs::read_to_string(path).unwrap();
    let includes: Vec<&str> = text.lines().filter(|l| l.starts_with("#include")).collect();
    assert!(
        !includes.is_empty() && includes.iter().all(|l| l.starts_with("#include <linux/")),
        "{path} includes {includes:?}: a uapi header takes its types from <linux/...> only"
    );
    let program = format!("#include \"{path}\"\nint main(void) {{ return 0; }}\n");
    compile("c90.c", &program, &["-std=c90", "-pedantic", "-Wall", "-Wextra", "-Werror"]);
}
