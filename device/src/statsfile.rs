// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The statistics file (`--stats-json FILE`): the device's statistics ([`DeviceStats`]) as one
//! JSON object, replaced whole (written beside the file, then renamed over it) so that a reader
//! never sees half of one.

use std::io;
use std::path::{Path, PathBuf};

use crate::backend::DeviceStats;

/// The statistics as the file holds them: pretty JSON, one final newline.
pub fn render(stats: &DeviceStats) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(stats)?;
    text.push('\n');
    Ok(text)
}

/// The temporary file beside `path` that is renamed over it.
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
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
        assert!(!temporary(&path).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_in_a_missing_directory_is_an_error() {
        let path = Path::new("/nonexistent-vdaq-dir/stats.json");
        assert!(write(path, &DeviceStats::default()).is_err());
    }
}
