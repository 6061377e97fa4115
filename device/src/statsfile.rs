// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The statistics file (`--stats-json FILE`): the device's statistics ([`DeviceStats`]) as one
//! JSON object, replaced whole (written beside the file, then renamed over it) so that a reader
//! never sees half of one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::DeviceStats;

/// The statistics as the file holds them: pretty JSON, one final newline.
pub fn render(stats: &DeviceStats) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(stats)?;
    text.push('\n');
    Ok(text)
}

/// A temporary file beside `path`, to be renamed over it: one of its own per write, because
/// the reporter, the signal thread and a connection's end may write at once, and a rename of a
/// file another writer is still filling would publish half of it.
fn temporary(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Replaces `path` with `stats`.
pub fn write(path: &Path, stats: &DeviceStats) -> io::Result<()> {
    let tmp = temporary(path);
    std::fs::write(&tmp, render(stats)?)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::GuestError;
    use crate::stream::StreamStats;

    #[test]
    fn the_file_is_the_statistics_as_json_with_their_field_names() {
        let stats = DeviceStats {
            streams: vec![StreamStats { frames_delivered: 4800, xruns: 2, ..Default::default() }],
            fifo_levels: vec![128],
            rx_interrupts: 7,
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&render(&stats).expect("render")).expect("JSON");
        assert_eq!(v["streams"][0]["frames_delivered"], 4800);
        assert_eq!(v["streams"][0]["xruns"], 2);
        assert_eq!(v["streams"][0]["faults"]["dropped"], 0);
        assert_eq!(v["fifo_levels"][0], 128);
        assert_eq!(v["rx_interrupts"], 7);
        assert!(v["broken"].is_null());
    }

    #[test]
    fn a_broken_device_says_why_in_words() {
        let stats = DeviceStats {
            broken: Some(GuestError::HeadInFlight { queue: 3, head: 5 }),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&render(&stats).expect("render")).expect("JSON");
        assert_eq!(
            v["broken"],
            "queue 3: head 5 was made available again while the device holds it"
        );
    }

    #[test]
    fn writing_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("vdaq-statsfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stats.json");
        std::fs::write(&path, "old contents that are longer than the new ones, by far")
            .expect("old");
        let stats = DeviceStats { control_requests: 3, ..Default::default() };
        write(&path, &stats).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), render(&stats).expect("render"));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["stats.json"], "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writers_at_once_each_publish_a_whole_file() {
        let dir = std::env::temp_dir().join(format!("vdaq-statsfile-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stats.json");
        let wholes: Vec<String> = (0..4u64)
            .map(|i| {
                let stats = DeviceStats { control_requests: i, ..Default::default() };
                render(&stats).expect("render")
            })
            .collect();
        std::thread::scope(|scope| {
            for i in 0..4u64 {
                let path = &path;
                scope.spawn(move || {
                    let stats = DeviceStats { control_requests: i, ..Default::default() };
                    for _ in 0..200 {
                        write(path, &stats).expect("write");
                    }
                });
            }
            // A reader never sees a file that is not one of the writers' whole texts.
            for _ in 0..500 {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    assert!(wholes.contains(&text), "a partial file: {text:?}");
                }
            }
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_in_a_missing_directory_is_an_error() {
        let path = Path::new("/nonexistent-vdaq-dir/stats.json");
        assert!(write(path, &DeviceStats::default()).is_err());
    }
}
