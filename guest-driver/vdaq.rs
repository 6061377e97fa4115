// SPDX-License-Identifier: GPL-2.0

//! vdaq: driver for the vdaq virtual data-acquisition card, a virtio-sound (id 25) capture
//! device.
//!
//! Supported:
//! - every capture stream of each device as its own /dev/vdaqN (a misc device; one open file
//!   per node, EBUSY otherwise), started by VDAQ_IOC_START or the first read(), stopped and
//!   released by VDAQ_IOC_STOP or the close; up to 16 streams per device;
//! - parameters (VDAQ_IOC_SET_PARAMS while stopped): rate, channels and format among those the
//!   stream offers, period bytes (whole frames, up to 1 MiB) and 2 periods up to the stream's
//!   share of the receive ring (the capture streams share it evenly; three entries per period
//!   without indirect descriptors); default 48 kHz, S16, 2 channels, 1024-frame periods, 16
//!   periods (or as many as the share holds);
//! - VDAQ_IOC_INFO: what the stream offers and its current parameters;
//! - read(): whole periods, each preceded by a `uapi::PeriodHeader` (sequence, interrupt
//!   timestamp, frames, frames lost before it); O_NONBLOCK gives EAGAIN, blocking reads sleep
//!   interruptibly; a buffer too small for one record gives EINVAL;
//! - poll(): EPOLLIN | EPOLLRDNORM when a period is ready, EPOLLERR | EPOLLHUP when the device
//!   is gone, EPOLLERR when the stream stalled;
//! - stall detection by a watchdog timer: a started stream whose device holds buffers but
//!   completes none for four periods (at least 200 ms; a full ring because of a slow reader is
//!   not a stall) is stalled: sleeping readers wake with EIO, poll() sleepers wake with
//!   EPOLLERR, O_ASYNC owners get one kill_fasync(SIGIO, POLL_ERR). VDAQ_IOC_STOP, the close
//!   or a new start asks the device to stop (EIO while it stays silent, after the 1 s control
//!   time-out); once it answers, the stream starts again as usual;
//! - fasync: one kill_fasync(SIGIO, POLL_IN) for each receive interrupt that completed at
//!   least one period of the stream, and kill_fasync(SIGIO, POLL_HUP) when the device goes;
//! - mmap (zero copy): the stream's status page, its period records and its period buffers,
//!   read-only and shared (`uapi::MmapLayout`, VDAQ_IOC_MMAP_LAYOUT); the interrupt handler
//!   writes each completed period's record, then moves `head`; VDAQ_IOC_MMAP_ACK gives
//!   periods back to the device (read() of a period does too). Buffers are split pages
//!   mapped one by one, so a mapping keeps its pages after removal until it is unmapped;
//!   SET_PARAMS is refused while a mapping exists;
//! - VDAQ_IOC_STATS: the stream's statistics;
//! - XRUN events (selected in SET_PARAMS) counted as frames lost before the next period.
//!
//! The receive callback and the watchdog run in hard-interrupt context: the rings and the
//! queues are guarded by an irqsave spinlock.
//!
//! The driver's logic, by concern: `stream` (a stream's parameters, period messages and ring
//! of completed periods), `device` (the state the interrupt handlers and the files share, the
//! receive and event handlers, the stall watchdog), `control` (the control queue; starting
//! and stopping a stream), `node` (the file operations of /dev/vdaqN, an ioctl a method) and
//! `probe` (binding, and removal by drop). It is safe Rust but for one call in that drop.
//! Every other `unsafe` FFI call lives in the abstractions under it: `virtio`, `miscdev`,
//! `mm`, `pages` and `kernel_sync`. docs/DRIVER-UPSTREAM.md maps each of those to its
//! upstream Rust-for-Linux counterpart, and says which stay local and why.

use kernel::prelude::*;

mod compat;
mod control;
mod device;
mod kernel_sync;
mod miscdev;
mod mm;
mod node;
mod pages;
mod probe;
mod stream;
mod virtio;

// The definitions shared with the device and the app (proto/src): cargo fmt formats them with
// the workspace's settings, so the kernel's rustfmt check leaves them alone.
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/format.rs"]
mod format;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/uapi.rs"]
mod uapi;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/virtio_snd.rs"]
mod virtio_snd;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/wire.rs"]
mod wire;

use probe::VdaqDriver;

module! {
    type: VdaqModule,
    name: "vdaq",
    description: "Driver for the vdaq virtual data-acquisition card (virtio-sound capture)",
    license: "GPL",
}

struct VdaqModule {
    _driver: Pin<KBox<virtio::Registration<VdaqDriver>>>,
}

impl kernel::Module for VdaqModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let driver = KBox::pin_init(virtio::Registration::register(module), GFP_KERNEL)?;
        Ok(Self { _driver: driver })
    }
}
