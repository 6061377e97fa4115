//! Command line of the vdaq-device daemon.

use std::path::PathBuf;

use clap::Parser;
use vdaq_proto::virtio_snd::RATES;

use crate::source::Source;
use crate::stream::StreamCaps;
use vdaq_proto::format::SampleFormat;

/// A vhost-user backend emulating a data-acquisition card over the virtio-sound capture
/// protocol. QEMU connects with `-device vhost-user-snd-pci`; each capture stream delivers
/// frames at the rate the guest driver sets, paced by CLOCK_MONOTONIC.
///
/// Example:
///   vdaq-device --socket-path /tmp/vdaq.sock --channels-max 8 --stats-interval 1
///   qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=512M,share=on \
///       -machine q35,memory-backend=mem -chardev socket,id=c0,path=/tmp/vdaq.sock \
///       -device vhost-user-snd-pci,chardev=c0
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
pub struct Cli {
    /// Unix socket to listen on for QEMU's vhost-user connection.
    #[arg(long, value_name = "PATH")]
    pub socket_path: PathBuf,
    /// Number of capture streams.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub streams: u8,
    /// Sample formats offered (comma-separated: u8, s16, s32, float, float64).
    #[arg(long, value_delimiter = ',', default_value = "u8,s16,s32,float,float64", value_parser = parse_format)]
    pub formats: Vec<SampleFormat>,
    /// Frame rates offered in Hz (comma-separated, each from the virtio-snd table).
    #[arg(long, value_delimiter = ',', value_parser = parse_rate,
          default_value = "5512,8000,11025,16000,22050,32000,44100,48000,64000,88200,96000,176400,192000,384000")]
    pub rates: Vec<u32>,
    /// Fewest channels a stream accepts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub channels_min: u8,
    /// Most channels a stream accepts.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..))]
    pub channels_max: u8,
    /// Deliver frames as fast as the guest posts buffers instead of at the sample rate
    /// (throughput benchmarks).
    #[arg(long)]
    pub free_run: bool,
    /// Log a statistics line every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub stats_interval: f64,
    /// Serve one connection, then exit (default: serve connections until killed).
    #[arg(long)]
    pub once: bool,
}

fn parse_format(s: &str) -> Result<SampleFormat, String> {
    SampleFormat::from_name(s).ok_or_else(|| {
        let names: Vec<_> = SampleFormat::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format '{s}' (one of {})", names.join(", "))
    })
}

fn parse_rate(s: &str) -> Result<u32, String> {
    let hz: u32 = s.parse().map_err(|_| format!("'{s}' is not a rate in Hz"))?;
    if RATES.contains(&hz) {
        Ok(hz)
    } else {
        Err(format!("{hz} Hz is not a virtio-snd rate (one of {RATES:?})"))
    }
}

impl Cli {
    /// The streams the flags describe, or a message naming the bad flag.
    pub fn stream_caps(&self) -> Result<Vec<StreamCaps>, String> {
        if self.channels_min > self.channels_max {
            return Err(format!(
                "--channels-min {} is larger than --channels-max {}",
                self.channels_min, self.channels_max
            ));
        }
        if self.stats_interval.is_nan() || self.stats_interval < 0.0 {
            return Err(format!(
                "--stats-interval {} must be 0 or more seconds",
                self.stats_interval
            ));
        }
        let mut formats = self.formats.clone();
        formats.sort_by_key(|f| f.wire_code());
        formats.dedup();
        let mut rates = self.rates.clone();
        rates.sort_unstable();
        rates.dedup();
        let caps = StreamCaps {
            formats,
            rates,
            channels_min: self.channels_min,
            channels_max: self.channels_max,
            source: Source::Counter,
            paced: !self.free_run,
        };
        Ok(vec![caps; usize::from(self.streams)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["vdaq-device", "--socket-path", "/tmp/s"].iter().chain(args))
    }

    #[test]
    fn defaults_offer_every_spec_rate_and_format() {
        let caps = parse(&[]).expect("defaults parse").stream_caps().expect("valid");
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].rates, RATES.to_vec());
        assert_eq!(caps[0].formats, SampleFormat::ALL.to_vec());
        assert_eq!((caps[0].channels_min, caps[0].channels_max), (1, 8));
        assert!(caps[0].paced);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let e = parse(&["--rates", "48000,44000"]).expect_err("bad rate").to_string();
        assert!(e.contains("44000 Hz is not a virtio-snd rate"), "{e}");
        let e = parse(&["--formats", "s24"]).expect_err("bad format").to_string();
        assert!(e.contains("unknown format 's24'"), "{e}");
        assert!(parse(&["--channels-max", "0"]).is_err());
        assert!(parse(&["--channels-max", "256"]).is_err());
        let e = parse(&["--channels-min", "4", "--channels-max", "2"])
            .expect("parses")
            .stream_caps()
            .expect_err("min > max");
        assert!(e.contains("--channels-min 4"), "{e}");
    }
}
