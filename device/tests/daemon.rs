// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vdaq-device process: statistics on SIGUSR1, a clean stop on SIGTERM and SIGINT, fresh
//! device state for each connection, and configuration errors that name the field.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::Harness;
use vdaq_proto::virtio_snd::code;

/// The daemon under test; killed (by PID, with a time-out) if a test fails midway.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("vdaq-daemon-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_at(&dir.join("vdaq.sock"), args)
    }

    fn start_at(socket: &Path, args: &[&str]) -> Self {
        let socket = socket.to_path_buf();
        let child = Command::new(env!("CARGO_BIN_EXE_vdaq-device"))
            .arg("--socket-path")
            .arg(&socket)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start vdaq-device");
        Self { child, socket }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the daemon");
    }

    /// Waits up to 5 s for the exit; returns the status code and the log.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().ok().and_then(|s| s.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        (status, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigusr1_prints_statistics_and_sigterm_stops_cleanly_with_a_summary() {
    let d = Daemon::start("term", &[]);
    wait_for(&d.socket);
    let mut h = Harness::connect(&d.socket);
    assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK);
    // The device publishes its statistics just after answering.
    std::thread::sleep(Duration::from_millis(100));
    d.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(200));
    d.signal(Signal::SIGTERM);
    let socket = d.socket.clone();
    let (status, log) = d.wait();
    drop(h);
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("statistics: stream 0:"), "{log}");
    assert!(log.contains("SIGTERM: stopping; totals: stream 0:"), "{log}");
    assert!(log.contains("control requests 1 (0 refused)"), "{log}");
    assert!(!socket.exists(), "the socket is removed");
}

#[test]
fn only_the_daemons_user_may_connect_to_its_socket() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("mode", &[]);
    wait_for(&d.socket);
    let mode = std::fs::metadata(&d.socket).map(|m| m.permissions().mode()).unwrap_or(0o777);
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}: group and others have no access");
    d.signal(Signal::SIGTERM);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
}

#[test]
fn with_connect_the_device_dials_qemu_and_again_after_a_hang_up() {
    let dir = std::env::temp_dir().join(format!("vdaq-connect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("qemu.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
    let d = Daemon::start_at(&path, &["--connect"]);
    for round in 0..2 {
        let mut h = Harness::accept(&listener);
        assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK, "round {round}");
        drop(h);
    }
    assert!(path.exists(), "QEMU's socket is left alone");
    d.signal(Signal::SIGTERM);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("connecting to"), "{log}");
    assert!(path.exists(), "QEMU's socket is not removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_fd_the_device_serves_connections_on_the_inherited_listener() {
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("vdaq-fd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("parent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vdaq-device"));
    cmd.args(["--fd", &fd.to_string()]).stderr(Stdio::piped()).stdout(Stdio::null());
    // SAFETY: the closure only calls fcntl (async-signal-safe) on a descriptor that the
    // parent holds open (`listener` outlives the spawn), in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            // SAFETY: `fd` is open in the child, inherited from the parent's listener.
            let b = BorrowedFd::borrow_raw(fd);
            fcntl(b, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start vdaq-device");
    let d = Daemon { child, socket: path.clone() };
    drop(listener);
    for round in 0..2 {
        let mut h = Harness::connect(&path);
        assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK, "round {round}");
        drop(h);
    }
    d.signal(Signal::SIGTERM);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains(&format!("listening on the socket passed as descriptor {fd}")), "{log}");
    assert!(path.exists(), "the parent's socket is not removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fd_of_standard_output_is_refused_with_exit_2() {
    let child = Command::new(env!("CARGO_BIN_EXE_vdaq-device"))
        .args(["--fd", "1"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start vdaq-device");
    let d = Daemon { child, socket: PathBuf::new() };
    let (status, log) = d.wait();
    assert_eq!(status, Some(2), "{log}");
    assert!(log.contains("--fd 1: 0, 1 and 2 are standard"), "{log}");
}

#[test]
fn print_capabilities_prints_json_and_exits_whatever_else_is_given() {
    let out = Command::new(env!("CARGO_BIN_EXE_vdaq-device"))
        .args(["--no-such-flag", "--print-capabilities", "--channels-max", "300"])
        .output()
        .expect("run vdaq-device");
    assert!(out.status.success(), "{out:?}");
    let caps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(caps["type"], "sound");
    assert!(caps["features"].is_array(), "{caps}");
}

#[test]
fn version_is_the_workspace_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_vdaq-device"))
        .arg("--version")
        .output()
        .expect("run vdaq-device");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("vdaq-device {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_long_stats_interval_does_not_hold_up_the_end() {
    let d = Daemon::start("stats", &["--stats-interval", "3600", "--once"]);
    wait_for(&d.socket);
    let mut h = Harness::connect(&d.socket);
    assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK);
    let hung_up = Instant::now();
    drop(h);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(hung_up.elapsed() < Duration::from_secs(2), "{:?}: {log}", hung_up.elapsed());
}

/// The statistics file, parsed.
fn stats_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the statistics file"))
        .expect("the statistics file is JSON")
}

#[test]
fn the_statistics_file_is_written_at_start_each_interval_on_sigusr1_and_at_the_end() {
    let dir = std::env::temp_dir().join(format!("vdaq-daemon-{}-json", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("stats.json");
    let _ = std::fs::remove_file(&json);
    let d = Daemon::start_at(
        &dir.join("vdaq.sock"),
        &["--stats-json", json.to_str().unwrap(), "--stats-interval", "0.2", "--free-run"],
    );
    wait_for(&d.socket);
    let v = stats_json(&json);
    assert_eq!(v["control_requests"], 0, "zeros before a driver connects: {v}");
    let mut h = Harness::connect(&d.socket);
    assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let b = h.post_rx(0, 160, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(h.wait_rx(1, Duration::from_secs(1)).len(), 1);
    let _ = b;
    // A statistics line (0.2 s) rewrites it.
    std::thread::sleep(Duration::from_millis(500));
    let v = stats_json(&json);
    assert_eq!(v["streams"][0]["frames_delivered"], 80, "{v}");
    assert_eq!(v["streams"][0]["buffers_completed"], 1, "{v}");
    assert_eq!(v["control_requests"], 3, "{v}");
    assert!(v["broken"].is_null(), "{v}");
    // SIGTERM writes the totals last.
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    std::thread::sleep(Duration::from_millis(100));
    d.signal(Signal::SIGTERM);
    let (status, log) = d.wait();
    drop(h);
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(stats_json(&json)["control_requests"], 4, "{log}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_statistics_file_that_cannot_be_written_is_refused_at_start_with_exit_2() {
    let d = Daemon::start("json-bad", &["--stats-json", "/nonexistent-vdaq-dir/stats.json"]);
    let (status, log) = d.wait();
    assert_eq!(status, Some(2), "{log}");
    assert!(log.contains("--stats-json /nonexistent-vdaq-dir/stats.json"), "{log}");
}

#[test]
fn sigint_stops_an_idle_daemon() {
    let d = Daemon::start("int", &[]);
    wait_for(&d.socket);
    d.signal(Signal::SIGINT);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
}

#[test]
fn each_connection_gets_a_fresh_device() {
    let d = Daemon::start("fresh", &[]);
    wait_for(&d.socket);
    let mut h = Harness::connect(&d.socket);
    assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    drop(h);
    // The daemon listens again; the new connection finds the stream in its initial state.
    std::thread::sleep(Duration::from_millis(100));
    wait_for(&d.socket);
    let mut h = Harness::connect(&d.socket);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_BAD_MSG, "not started any more");
    assert_eq!(h.set_params(0, 8_000, 1, 640, 160, false), code::S_OK);
    drop(h);
    d.signal(Signal::SIGTERM);
    let (status, log) = d.wait();
    assert_eq!(status, Some(0), "{log}");
    // The second "connection closed" may race with SIGTERM; the first must be there.
    assert!(log.contains("connection closed"), "{log}");
}

#[test]
fn configuration_errors_name_the_field_and_exit_2() {
    let d = Daemon::start("bad", &["--channels-max", "300"]);
    let (status, log) = d.wait();
    assert_eq!(status, Some(2));
    assert!(log.contains("channels_max = 300 is out of range (1 to 255)"), "{log}");
}
