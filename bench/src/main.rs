// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq-bench-plot RESULTS.json OUT_DIR`: the SVG plots of a `ci/bench.py` run.
//!
//! - p1-throughput.svg: free-run MB/s by period size, read, SIGIO and mmap paths with the
//!   counter checked and unchecked, and the guest's copy bandwidth (the limit);
//! - p3-latency.svg: interrupt to SIGIO handler latency, log2 histogram;
//! - p4-jitter.svg: period jitter histograms of the paced 384 kHz runs;
//! - p5-device.svg: the device alone (polling and sleeping driver) against the host's write
//!   bandwidth, by period size;
//! - p6-arecord.svg: arecord captures through virtio_snd, stream time over real time for each
//!   run of each device (a failed run is a cross at 0; the legend says when a device's content
//!   is not checkable, QEMU's silence, or when none of its captures ran).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

type Res = Result<(), Box<dyn Error>>;

const SIZE: (u32, u32) = (800, 480);

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

/// Label of log2 bucket `i`: its lower bound in microseconds.
fn bucket_label(i: usize) -> String {
    let us = 1u64 << i;
    if us >= 1000 {
        format!("{} ms", us / 1000)
    } else {
        format!("{us} us")
    }
}

/// A chart with its title and room for the axis labels.
fn chart_builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    y_label_room: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_label_room);
    builder
}

/// A bar chart of log2-us histograms (several series side by side).
fn histograms(path: &Path, title: &str, series: &[(String, Vec<u64>)]) -> Res {
    let used: Vec<usize> = (0..series.iter().map(|s| s.1.len()).max().unwrap_or(0))
        .filter(|&i| series.iter().any(|s| s.1.get(i).copied().unwrap_or(0) > 0))
        .collect();
    let (first, last) = (used.first().copied().unwrap_or(0), used.last().copied().unwrap_or(0));
    let peak = series.iter().flat_map(|s| s.1.iter().copied()).max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = chart_builder(&root, title, 60)
        .build_cartesian_2d(first as f64 - 0.5..last as f64 + 0.5, 0u64..peak + peak / 10 + 1)?;
    chart
        .configure_mesh()
        .x_labels(last - first + 1)
        .x_label_formatter(&|x| bucket_label(x.round().max(0.0) as usize))
        .x_desc("from (log2 buckets)")
        .y_desc("periods")
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, (name, counts)) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let offset = -0.4 + width * k as f64;
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, &n)| {
                let x = i as f64 + offset;
                Rectangle::new([(x, 0), (x + width, n)], color.filled())
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Lines of MB/s by period size (KiB), both axes logarithmic (the limits are often orders of
/// magnitude above), plus optional horizontal limits.
fn by_period(
    path: &Path,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    limits: &[(String, f64)],
) -> Res {
    let values =
        || lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).chain(limits.iter().map(|l| l.1));
    let top = values().fold(1.0f64, f64::max);
    let bottom = values().filter(|v| *v > 0.0).fold(top, f64::min);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = chart_builder(&root, title, 70)
        .build_cartesian_2d((2.0f64..512.0).log_scale(), (bottom / 2.0..top * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("period (KiB)")
        .y_desc("MB/s (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let mut k = 0;
    for (name, points) in lines {
        let color = Palette99::pick(k).to_rgba();
        k += 1;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    for (name, value) in limits {
        let color = Palette99::pick(k).to_rgba();
        k += 1;
        chart
            .draw_series(LineSeries::new([(2.0, *value), (512.0, *value)], color.stroke_width(1)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(1)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Points by run number, one series per device; `None` (a failed run) is a cross at 0.
fn per_run(path: &Path, title: &str, series: &[(String, Vec<Option<f64>>)]) -> Res {
    let runs = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(1);
    let top = series.iter().flat_map(|s| s.1.iter().flatten().copied()).fold(1.2f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = chart_builder(&root, title, 60)
        .build_cartesian_2d(0.5f64..runs as f64 + 0.5, 0.0f64..top * 1.1)?;
    chart
        .configure_mesh()
        .x_labels(runs)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("run")
        .y_desc("stream time / real time")
        .draw()?;
    for (k, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        // Side by side within a run, so that equal values stay visible.
        let dx = (k as f64 - (series.len() - 1) as f64 / 2.0) * 0.12;
        let ok = values.iter().enumerate().filter_map(|(i, v)| v.map(|y| (i as f64 + 1.0 + dx, y)));
        chart
            .draw_series(ok.map(|p| Circle::new(p, 5, color.filled())))?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 5, y), 5, color.filled()));
        let failed = values.iter().enumerate().filter(|(_, v)| v.is_none());
        chart.draw_series(
            failed.map(|(i, _)| Cross::new((i as f64 + 1.0 + dx, 0.0), 6, color.stroke_width(2))),
        )?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn counts(v: &Value) -> Vec<u64> {
    arr(v).iter().map(|x| x.as_u64().unwrap_or(0)).collect()
}

fn run(results: &Value, out: &Path) -> Res {
    std::fs::create_dir_all(out)?;
    let p1 = &results["p1"];
    let mut lines = Vec::new();
    for path in ["read", "sigio", "mmap"] {
        for check in ["checked", "unchecked"] {
            let points: Vec<(f64, f64)> = arr(&p1["free_run"])
                .iter()
                .filter(|r| r["path"] == path && r["check"] == check)
                .map(|r| (num(&r["period_bytes"]) / 1024.0, num(&r["bytes_per_s"]) / 1e6))
                .collect();
            lines.push((format!("{path}, {check}"), points));
        }
    }
    // The limits measured in the same run: the user-space copy bounds every path, the kernel's
    // copy to user space every read() path (absent in results from before it was measured).
    let mut limits =
        vec![("guest memory copy".to_string(), num(&p1["guest_copy_bytes_per_s"]) / 1e6)];
    let kernel_copy = num(&p1["guest_kernel_copy_bytes_per_s"]) / 1e6;
    if kernel_copy > 0.0 {
        limits.push(("guest kernel copy to user".to_string(), kernel_copy));
    }
    by_period(
        &out.join("p1-throughput.svg"),
        "P1: free-run throughput through vdaq.ko and the app",
        &lines,
        &limits,
    )?;
    histograms(
        &out.join("p3-latency.svg"),
        "P3: interrupt to SIGIO handler latency",
        &[("SIGIO".to_string(), counts(&results["p3"]["log2_us_histogram"]))],
    )?;
    let jitter: Vec<(String, Vec<u64>)> = arr(&results["p4"])
        .iter()
        .map(|r| {
            (format!("{} ch", r["channels"]), counts(&r["period_jitter"]["log2_us_histogram"]))
        })
        .collect();
    histograms(&out.join("p4-jitter.svg"), "P4: period jitter, paced 384 kHz S32", &jitter)?;
    let p5 = arr(&results["p5"]["periods"]);
    let device =
        p5.iter().map(|r| (num(&r["period_bytes"]) / 1024.0, num(&r["device_bytes_per_s"]) / 1e6));
    let sleeping = p5
        .iter()
        .map(|r| (num(&r["period_bytes"]) / 1024.0, num(&r["device_sleeping_bytes_per_s"]) / 1e6));
    let host = p5
        .iter()
        .map(|r| (num(&r["period_bytes"]) / 1024.0, num(&r["host_write_bytes_per_s"]) / 1e6));
    by_period(
        &out.join("p5-device.svg"),
        "P5: the device alone (host harness) and host write bandwidth",
        &[
            ("device (polling driver)".to_string(), device.collect()),
            ("device (sleeping driver)".to_string(), sleeping.collect()),
            ("host write".to_string(), host.collect()),
        ],
        &[],
    )?;
    let p6: Vec<(String, Vec<Option<f64>>)> = arr(&results["p6"]["devices"])
        .iter()
        .map(|d| {
            let runs = arr(&d["run_results"]).iter();
            let ratio = |r: &Value| (r["ok"] == true).then(|| num(&r["elapsed_over_real"]));
            let mut name = d["device"].as_str().unwrap_or("?").to_string();
            if !d["error"].is_null() {
                name.push_str(": no capture ran");
            } else if d["content_checked"] == false {
                name.push_str(": content not checkable");
            }
            (name, runs.map(ratio).collect())
        })
        .collect();
    let runs = p6.iter().map(|d| d.1.len()).max().unwrap_or(0);
    let title = format!("P6: arecord through virtio_snd, {runs} captures each");
    per_run(&out.join("p6-arecord.svg"), &title, &p6)?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, results, out] = args.as_slice() else {
        eprintln!("usage: vdaq-bench-plot RESULTS.json OUT_DIR");
        return std::process::ExitCode::from(2);
    };
    let parsed = std::fs::read_to_string(results)
        .map_err(|e| format!("{results}: {e}"))
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("{results}: {e}")));
    match parsed.map_err(Into::into).and_then(|v| run(&v, Path::new(out))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vdaq-bench-plot: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
