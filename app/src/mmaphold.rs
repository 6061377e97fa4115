// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq mmap-hold`: device removal while the ring is mapped. Maps the ring, starts the
//! stream, waits for periods, removes the device (writes 1 to a sysfs `remove` file), then
//! reads every page of the mapping and checks the periods still published in it; the ioctls
//! must then give ENODEV. Prints JSON; exits 0 when all held.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{
    Info, MmapLayout, VDAQ_IOC_INFO, VDAQ_IOC_MMAP_LAYOUT, VDAQ_IOC_SET_PARAMS, VDAQ_IOC_START,
};

use crate::mmap::{Ring, RingMemory};
use crate::sys;
use crate::verify::CounterChecker;

/// Runs the check; `Ok(json)` when the mapping held, `Err(json or reason)` otherwise.
pub fn run(device: &str, remove_path: &Path, periods_before: u64) -> Result<String, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(device)
        .map_err(|e| crate::capture::open_error(device, e).to_string())?;
    let fd = file.as_raw_fd();
    let info: Info = sys::ioctl_read(fd, VDAQ_IOC_INFO).map_err(|e| format!("INFO: {e}"))?;
    let mut p = info.params;
    let format = SampleFormat::from_wire(p.format as u8)
        .ok_or_else(|| format!("unknown format {}", p.format))?;
    // 20 ms periods, as many as the ring holds up to 16.
    p.period_bytes = (p.rate / 50).max(1) * format.width() as u32 * p.channels;
    p.periods = 16.min(info.max_periods);
    sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &p).map_err(|e| format!("SET_PARAMS: {e}"))?;
    let layout: MmapLayout =
        sys::ioctl_read(fd, VDAQ_IOC_MMAP_LAYOUT).map_err(|e| format!("MMAP_LAYOUT: {e}"))?;
    let ring = Ring::new(&layout, &p, sys::page_size())?;
    let map = sys::Mapping::new(fd, ring.mapping_bytes).map_err(|e| format!("mmap: {e}"))?;
    ring.check_status(&map)?;
    sys::ioctl_none(fd, VDAQ_IOC_START).map_err(|e| format!("START: {e}"))?;
    let want = periods_before.clamp(1, ring.periods);
    let deadline = Instant::now() + Duration::from_secs(10);
    while map.head() < want {
        if Instant::now() > deadline {
            return Err(format!("head {} after 10 s, waiting for {want}", map.head()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(remove_path, "1")
        .map_err(|e| format!("writing 1 to {}: {e}", remove_path.display()))?;
    // Every page must still be readable (a fault here kills the process: the scenario sees
    // the signal).
    let pages = ring.mapping_bytes.div_ceil(sys::page_size());
    let sum = map.touch_pages();
    let (head, tail) = (map.head(), map.tail());
    let mut checker = CounterChecker::new(format, p.channels as usize);
    let mut problems = Vec::new();
    if head < want || head - tail > ring.periods {
        problems.push(format!("head {head} tail {tail} after the removal"));
    }
    let mut announced = 0;
    for seq in tail..head.min(tail + ring.periods) {
        match ring.period(&map, seq) {
            Ok(period) => {
                announced += period.header.frames_lost;
                let lost = checker.check(period.frames);
                if lost > announced {
                    problems.push(format!("period {seq}: {lost} frames lost unannounced"));
                }
                announced = announced.saturating_sub(lost);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let report = checker.finish(0);
    // Sequences restart at START and nothing was given back: the first period is frame 0.
    if tail == 0 && report.first != Some(0) {
        problems.push(format!("first counter {:?}, expected 0", report.first));
    }
    if report.frames == 0 || report.corrupt_frames > 0 || report.reorders > 0 {
        problems.push(format!("counter: {report:?}"));
    }
    let layout_after = sys::ioctl_read::<MmapLayout>(fd, VDAQ_IOC_MMAP_LAYOUT);
    let errno_after = layout_after.as_ref().err().and_then(io::Error::raw_os_error);
    if errno_after != Some(libc::ENODEV) {
        problems.push(format!("MMAP_LAYOUT after the removal: {layout_after:?}, expected ENODEV"));
    }
    drop(map);
    drop(file);
    let json = serde_json::json!({
        "ok": problems.is_empty(), "problems": problems, "head": head, "tail": tail,
        "periods": ring.periods, "pages_read": pages, "page_byte_sum": sum,
        "counter": report.to_value(), "ioctl_errno_after_removal": errno_after,
    })
    .to_string();
    if problems.is_empty() {
        Ok(json)
    } else {
        Err(json)
    }
}
