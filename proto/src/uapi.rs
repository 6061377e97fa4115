//! The user API of /dev/vdaqN (the guest driver vdaq.ko): what read() returns and the ioctls.
//!
//! One definition for the driver (which includes this file) and the app.

use crate::wire::pod;

/// `PeriodHeader::magic`: "VDAQ" in little-endian byte order.
pub const PERIOD_MAGIC: u32 = u32::from_le_bytes(*b"VDAQ");

/// `PeriodHeader::flags`: frames were lost just before this period (see `frames_lost`).
pub const PERIOD_FLAG_LOST: u32 = 1 << 0;
/// `PeriodHeader::flags`: the device completed the period with an error status.
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
    /// Frames the device lost just before this period (overruns).
    pub frames_lost: u64,
}

/// Driver statistics (`VDAQ_IOC_STATS`), since the device was bound.
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
}

pod!(PeriodHeader = 40, Stats = 64);

/// ioctl type ('V') shared by every vdaq ioctl.
pub const IOC_TYPE: u32 = b'V' as u32;

const IOC_READ: u32 = 2;

/// Linux's `_IOR(type, nr, size)` on x86 and most architectures.
pub const fn ior(ty: u32, nr: u32, size: usize) -> u32 {
    (IOC_READ << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// Reads [`Stats`].
pub const VDAQ_IOC_STATS: u32 = ior(IOC_TYPE, 0x10, core::mem::size_of::<Stats>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_ior() {
        // _IOR('V', 0x10, 64 bytes) as computed by <asm-generic/ioctl.h>.
        assert_eq!(VDAQ_IOC_STATS, 0x8040_5610);
        assert_eq!(&PERIOD_MAGIC.to_le_bytes(), b"VDAQ");
    }
}
