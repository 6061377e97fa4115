// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The C example, examples/sigio-capture.c, builds against proto/include/vdaq.h with the flags
//! the guest image uses (-Wall -Wextra -Werror -O2), so that a header change that breaks C
//! users fails here, in seconds, rather than in the image build; and it refuses what it
//! cannot do with exit status 2 (the capture itself runs in the guest: ci/scenarios/driver.toml,
//! scenario c-example-sigio).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn sigio_example_builds_against_the_header() {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = proto.join("../examples/sigio-capture.c");
    let dir = std::env::temp_dir().join(format!("vdaq-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("vdaq-sigio-example");
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-I"])
        .arg(proto.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    // Set-up errors are exit status 2 with a reason: not a vdaq node, a format it does not
    // check, no device argument.
    for (args, says) in [
        (&["/dev/null"][..], "VDAQ_IOC_INFO"),
        (&["-f", "float", "/dev/null"][..], "s16 and s32 only"),
        (&[][..], "usage"),
    ] {
        let run = Command::new(&exe).args(args).output().expect("run the example");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
