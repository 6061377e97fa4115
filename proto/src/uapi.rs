// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The user API of /dev/vdaqN (the guest driver vdaq.ko): what read() returns and the ioctls.
//!
//! One definition for the driver (which includes this file) and the app.

use crate::wire::pod;

/// `PeriodHeader::magic`: "VDAQ" in little-endian byte order.
pub const PERIOD_MAGIC: u32 = u32::from_le_bytes(*b"VDAQ");

/// `PeriodHeader::flags`: frames were lost just before this period (see `frames_lost`).
pub const PERIOD_FLAG_LOST: u32 = 1 << 0;
/// `PeriodHeader::flags`: the device completed the period with an error status: it carries no
/// frames, and counts the period's frames in `frames_lost`.
pub const PERIOD_FLAG_ERROR: u32 = 1 << 1;

/// The record read() returns for each period: this header, then `bytes` bytes of interleaved
/// frames. A read returns whole records only (EINVAL when the buffer cannot hold one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodHeader {
    /// [`PERIOD_MAGIC`].
    pub magic: u32,
    /// `PERIOD_FLAG_*` bits.
    pub flags: u32,
    /// Number of this period since the stream was started (0 first).
    pub sequence: u64,
    /// CLOCK_MONOTONIC time of the interrupt that completed the period, in ns.
    pub timestamp_ns: u64,
    /// Frames in this period.
    pub frames: u32,
    /// Bytes of frames following this header.
    pub bytes: u32,
    /// Frames the device lost just before this period (overruns), and with
    /// [`PERIOD_FLAG_ERROR`] the period's own frames, which the device did not deliver.
    pub frames_lost: u64,
}

/// Driver statistics of one stream (`VDAQ_IOC_STATS`), since the device was bound.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Periods completed by the device.
    pub periods: u64,
    /// Frames completed by the device.
    pub frames: u64,
    /// Frames lost, from the device's XRUN events.
    pub frames_lost: u64,
    /// XRUN events received.
    pub xruns: u64,
    /// Receive-queue interrupts (callbacks) handled.
    pub rx_interrupts: u64,
    /// Receive-queue interrupts that completed at least one period.
    pub rx_interrupts_with_data: u64,
    /// kill_fasync(SIGIO, POLL_IN) calls.
    pub signals_sent: u64,
    /// Periods read by user space.
    pub periods_read: u64,
    /// Times the stream was found stalled (started, the device silent for a stall time-out).
    pub stalls: u64,
    /// kill_fasync(SIGIO, POLL_ERR) calls (one per stall, when O_ASYNC is set).
    pub stall_signals: u64,
    /// Periods the device completed with an error status (their frames count as lost).
    pub error_periods: u64,
    /// Reserved, 0.
    pub reserved: [u64; 5],
}

/// Stream parameters (`VDAQ_IOC_SET_PARAMS`, and in [`Info`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// Frames per second (a virtio-snd rate the stream offers).
    pub rate: u32,
    /// Samples per frame.
    pub channels: u32,
    /// Sample format: a virtio-snd format code (`virtio_snd::format`).
    pub format: u32,
    /// Bytes per period: a whole number of frames, at most [`Info::max_period_bytes`].
    pub period_bytes: u32,
    /// Periods in the ring: 2 to [`Info::max_periods`].
    pub periods: u32,
    /// Must be 0.
    pub reserved: [u32; 3],
}

/// What the device offers and how the stream is set (`VDAQ_IOC_INFO`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// Capture streams of the device (each has a node of its own).
    pub streams: u32,
    /// The virtio-snd stream id of this node.
    pub stream: u32,
    /// Offered formats: bit n set for virtio-snd format code n.
    pub formats: u64,
    /// Offered rates: bit n set for the n-th virtio-snd rate.
    pub rates: u64,
    /// Fewest channels.
    pub channels_min: u32,
    /// Most channels.
    pub channels_max: u32,
    /// Most periods the ring holds.
    pub max_periods: u32,
    /// Largest period in bytes.
    pub max_period_bytes: u32,
    /// The current parameters.
    pub params: Params,
    /// 1 while started.
    pub started: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// `MmapStatus::magic`: "VDQM" in little-endian byte order.
pub const MMAP_MAGIC: u32 = u32::from_le_bytes(*b"VDQM");
/// `MmapStatus::version` of this layout.
pub const MMAP_VERSION: u32 = 1;

/// Where things are in a mapping of /dev/vdaqN (`VDAQ_IOC_MMAP_LAYOUT`), for the current
/// parameters. The mapping is read-only and shared (`PROT_READ`, `MAP_SHARED`): first the
/// [`MmapStatus`] and the period records, then every period buffer, each starting on a page.
/// Any page-aligned part of it may be mapped; the whole of it is `mapping_bytes` from offset 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapLayout {
    /// Bytes of the whole mapping (a multiple of the page size).
    pub mapping_bytes: u64,
    /// Offset of the records: `periods` [`MmapRecord`]s, the one of sequence `s` at index
    /// `s % periods`.
    pub records_offset: u64,
    /// Offset of period buffer 0 (page aligned).
    pub buffers_offset: u64,
    /// Distance between two period buffers: `period_bytes` rounded up to whole pages.
    pub buffer_stride: u64,
    /// Period buffers (and records).
    pub periods: u32,
    /// Bytes per period.
    pub period_bytes: u32,
    /// Reserved, 0.
    pub reserved: u64,
}

/// The start of the mapping, written by the driver only. A period is the user's from the
/// moment `head` passes it until it is given back (`VDAQ_IOC_MMAP_ACK`, or a `read()` of it):
/// meanwhile the device does not write its buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapStatus {
    /// [`MMAP_MAGIC`].
    pub magic: u32,
    /// [`MMAP_VERSION`].
    pub version: u32,
    /// Sequence of the next period the driver will complete: records `tail..head` are ready.
    /// Stored after the records it publishes (release order): load it with acquire order.
    pub head: u64,
    /// Sequence of the oldest period not given back yet. Both restart at 0 on each start.
    pub tail: u64,
    /// Reserved, 0.
    pub reserved: [u64; 5],
}

/// One completed period in the mapping: its header (as `read()` gives it) and where its frames
/// are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapRecord {
    /// The period's header; `header.bytes` bytes of frames are in the buffer.
    pub header: PeriodHeader,
    /// Index of the period buffer holding the frames, at `buffers_offset + buffer * buffer_stride`.
    pub buffer: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

pod!(
    PeriodHeader = 40,
    Stats = 128,
    Params = 32,
    Info = 80,
    MmapLayout = 48,
    MmapStatus = 64,
    MmapRecord = 48
);

/// ioctl type shared by every vdaq ioctl: `'Y'` (0x59), numbers 0x00 to 0x1F.
///
/// Linux's list of ioctl types (Documentation/userspace-api/ioctl/ioctl-number.rst, 6.12)
/// has no entry for `'Y'`, and no ioctl in the 6.12 source uses it; the block 0x00-0x1F
/// leaves room to grow. (The type was `'V'` before: taken twice over, by linux/vt.h and
/// linux/videodev2.h, so a vdaq ioctl sent to a terminal or a V4L2 node could mean something
/// there.)
pub const IOC_TYPE: u32 = b'Y' as u32;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux's `_IOC(dir, type, nr, size)` on x86 and most architectures.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// Linux's `_IOR(type, nr, size)`.
pub const fn ior(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}

/// Linux's `_IOW(type, nr, size)`.
pub const fn iow(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}

/// Reads [`Info`].
pub const VDAQ_IOC_INFO: u32 = ior(IOC_TYPE, 0x01, core::mem::size_of::<Info>());
/// Sets [`Params`] while stopped: EINVAL for values the stream does not offer or a non-zero
/// reserved field, EBUSY while started.
pub const VDAQ_IOC_SET_PARAMS: u32 = iow(IOC_TYPE, 0x02, core::mem::size_of::<Params>());
/// Starts the stream (a read() of a stopped stream starts it too); EBUSY when started. A
/// stream that stalled is stopped first: EIO while the device stays silent.
pub const VDAQ_IOC_START: u32 = ioc(0, IOC_TYPE, 0x03, 0);
/// Stops the stream; periods not read are discarded. EBADFD when not started; EIO when the
/// stream stalled and the device still does not answer.
pub const VDAQ_IOC_STOP: u32 = ioc(0, IOC_TYPE, 0x04, 0);
/// Reads the [`MmapLayout`] for the current parameters. SET_PARAMS is refused (EBUSY) while
/// the file has a mapping.
pub const VDAQ_IOC_MMAP_LAYOUT: u32 = ior(IOC_TYPE, 0x05, core::mem::size_of::<MmapLayout>());
/// Gives back every period whose sequence is below the `u64` argument, so that the device
/// fills their buffers again. The argument must lie in `tail..=head` of [`MmapStatus`]
/// (EINVAL otherwise: periods already given back, or not completed yet).
pub const VDAQ_IOC_MMAP_ACK: u32 = iow(IOC_TYPE, 0x06, core::mem::size_of::<u64>());
/// Reads [`Stats`].
pub const VDAQ_IOC_STATS: u32 = ior(IOC_TYPE, 0x10, core::mem::size_of::<Stats>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_ior() {
        // _IOR('Y', 0x10, 128 bytes) as computed by <asm-generic/ioctl.h>.
        assert_eq!(VDAQ_IOC_STATS, 0x8080_5910);
        // _IOR('Y', 1, 80), _IOW('Y', 2, 32), _IO('Y', 3), _IO('Y', 4).
        assert_eq!(VDAQ_IOC_INFO, 0x8050_5901);
        assert_eq!(VDAQ_IOC_SET_PARAMS, 0x4020_5902);
        assert_eq!((VDAQ_IOC_START, VDAQ_IOC_STOP), (0x5903, 0x5904));
        // _IOR('Y', 5, 48), _IOW('Y', 6, 8).
        assert_eq!((VDAQ_IOC_MMAP_LAYOUT, VDAQ_IOC_MMAP_ACK), (0x8030_5905, 0x4008_5906));
        assert_eq!(&PERIOD_MAGIC.to_le_bytes(), b"VDAQ");
    }
}
