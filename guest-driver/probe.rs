// SPDX-License-Identifier: GPL-2.0

//! Binding a device: probe, ready (streams found, nodes made), the queue callbacks, and
//! removal by drop; the numbers of the nodes.

use kernel::bindings;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;
use kernel::{c_str, new_mutex};

use crate::device::{Collector, EventMsg, State, VdaqDev, EVENT_BUFFERS};
use crate::format;
use crate::kernel_sync::{FasyncList, HrTimer, WaitQueue};
use crate::miscdev::MiscDeviceRegistration;
use crate::node::StreamNode;
use crate::stream::{alloc_periods, Caps, Params, Stream, MAX_PERIODS};
use crate::virtio::{self, Virtqueue};
use crate::virtio_snd::{self, code, queue, Event, Hdr, PcmInfo, QueryInfo};
use crate::wire::Pod;

/// Most streams handled per device (the count comes from the device).
const MAX_STREAMS: u32 = 16;

/// The driver's data for one bound device: the device and its state, which open files may
/// keep after the device is gone. Dropped at unbinding, once the device was reset: the drop
/// removes the nodes and deletes the queues.
#[pin_data(PinnedDrop)]
pub(crate) struct VdaqDriver {
    vdev: virtio::Device,
    dev: Arc<VdaqDev>,
}

impl VdaqDriver {
    /// Reads every stream's PCM_INFO; the capture streams get their capabilities, default
    /// parameters and period messages, sharing `ring_periods` evenly.
    fn discover_streams(dev: &VdaqDev, ring_periods: u32) -> Result<u32> {
        let count = dev.state.lock().streams.len() as u32;
        if count == 0 {
            pr_err!("the device has no PCM stream\n");
            return Err(ENODEV);
        }
        let info_len = core::mem::size_of::<PcmInfo>();
        let query = QueryInfo::new(code::R_PCM_INFO, 0, count, info_len as u32);
        let header = size_of::<Hdr>();
        let resp = dev.control(query.as_bytes(), header + count as usize * info_len)?;
        let infos = resp.get(header..).ok_or(EIO)?;
        let captures = infos
            .chunks_exact(info_len)
            .filter_map(PcmInfo::from_prefix)
            .filter(|i| i.direction == virtio_snd::direction::INPUT)
            .count() as u32;
        if captures == 0 {
            pr_err!("the device has no capture stream\n");
            return Err(ENODEV);
        }
        // Whatever ring size the device reports, a stream never gets more than MAX_PERIODS.
        let max_periods = (ring_periods / captures).min(MAX_PERIODS);
        if max_periods < 2 {
            pr_err!("the receive ring holds fewer than two periods per capture stream\n");
            return Err(ENOSPC);
        }
        for (id, chunk) in infos.chunks_exact(info_len).enumerate() {
            let Some(info) = PcmInfo::from_prefix(chunk) else {
                continue;
            };
            if info.direction != virtio_snd::direction::INPUT {
                continue;
            }
            let caps = Caps {
                streams: captures,
                formats: info.formats.get(),
                rates: info.rates.get(),
                channels_min: info.channels_min,
                channels_max: info.channels_max,
                max_periods,
            };
            // The defaults must be offered: 48 kHz S16 stereo, else the nearest the stream has.
            let mut want = Params::DEFAULT.to_uapi();
            want.periods = want.periods.min(max_periods);
            if caps.check(&want).is_err() {
                let first_bit = |mask: u64| mask.trailing_zeros();
                want.rate = virtio_snd::rate_hz(first_bit(caps.rates) as u8).unwrap_or(0);
                want.format = first_bit(caps.formats);
                want.channels = u32::from(caps.channels_min.max(1));
                let width =
                    format::SampleFormat::from_wire(want.format as u8).map_or(0, |f| f.width());
                want.period_bytes = 1024 * width as u32 * want.channels;
            }
            let Ok(p) = caps.check(&want) else {
                pr_warn!(
                    "stream {} offers no format this driver handles: skipped\n",
                    id
                );
                continue;
            };
            let periods = alloc_periods(id as u32, &p)?;
            let old = {
                let mut st = dev.state.lock();
                let s = st.stream(id as u32)?;
                s.capture = true;
                s.caps = caps;
                s.params = p;
                s.install(periods)
            };
            drop(old);
        }
        Ok(captures)
    }
}

impl VdaqDriver {
    /// Finds the queues and makes the device's state (nothing started).
    fn new_state(vdev: &virtio::Device) -> Result<Arc<VdaqDev>> {
        let names = [
            c_str!("control"),
            c_str!("event"),
            c_str!("tx"),
            c_str!("rx"),
        ];
        let raw = vdev.find_vqs::<Self>(&names, &[false, true, false, true])?;
        let mut raw = raw.into_iter();
        let (Some(control), Some(events), Some(_tx), Some(rx)) =
            (raw.next(), raw.next(), raw.next(), raw.next())
        else {
            return Err(EINVAL);
        };
        let mut count =
            vdev.read_config_u32(core::mem::offset_of!(virtio_snd::Config, streams) as u32);
        if count > MAX_STREAMS {
            pr_warn!(
                "the device has {} streams: using the first {}\n",
                count,
                MAX_STREAMS
            );
            count = MAX_STREAMS;
        }
        let mut streams = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        let mut fasync = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for _ in 0..count {
            streams.push(Stream::new()?, GFP_KERNEL)?;
            fasync.push(FasyncList::new(), GFP_KERNEL)?;
        }
        // Every period is posted at once: no more than the ring holds (xfer header, frames
        // and status take three entries unless they go in an indirect table).
        let per_period = if vdev.has_indirect_descriptors() {
            1
        } else {
            3
        };
        let state = State {
            control: Some(Virtqueue::new(control)),
            events: Some(Virtqueue::new(events)),
            ring_periods: rx.size() / per_period,
            rx: Some(Virtqueue::new(rx)),
            gone: false,
            streams,
        };
        Arc::pin_init(
            pin_init!(VdaqDev {
                watchdog <- HrTimer::new(),
                state <- crate::new_spinlock_irq!(state, "vdaq:state"),
                readers <- WaitQueue::new(),
                fasync: fasync,
                control_lock <- new_mutex!((), "vdaq:control"),
                async_lock <- new_mutex!((), "vdaq:async"),
                nodes <- new_mutex!(KVec::new(), "vdaq:nodes"),
            }),
            GFP_KERNEL,
        )
    }
}

impl virtio::Driver for VdaqDriver {
    const NAME: &'static kernel::str::CStr = c_str!("vdaq");
    const ID_TABLE: &'static [virtio::DeviceId] = &[virtio::DeviceId::new(virtio_snd::DEVICE_ID)];

    fn probe(vdev: &virtio::Device, _id: &virtio::DeviceId) -> impl PinInit<Self, Error> {
        let dev = Self::new_state(vdev);
        try_pin_init!(Self {
            vdev: vdev.handle(),
            dev: dev?,
        }? Error)
    }

    fn ready(self: Pin<&Self>, vdev: &virtio::Device) -> Result {
        let dev = &self.dev;
        vdev.ready();
        let mut event_msgs = KVec::with_capacity(EVENT_BUFFERS, GFP_KERNEL)?;
        for _ in 0..EVENT_BUFFERS {
            event_msgs.push(
                KBox::new(
                    EventMsg {
                        event: Event::default(),
                    },
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        let ring_periods = {
            let mut st = dev.state.lock();
            if let Some(events) = st.events.as_mut() {
                for msg in event_msgs {
                    events.add(msg).map_err(|(e, _)| e)?;
                }
                events.kick();
            }
            st.ring_periods
        };
        let captures = Self::discover_streams(dev, ring_periods)?;
        // Bit n: stream n captures (no allocation under the spinlock).
        let capture_mask = {
            let st = dev.state.lock();
            st.streams
                .iter()
                .enumerate()
                .fold(0u32, |m, (id, s)| m | (u32::from(s.capture) << id))
        };
        // On an error, the unbinding that follows unregisters the nodes made so far.
        for id in (0..MAX_STREAMS).filter(|id| capture_mask & (1 << id) != 0) {
            let number = NodeNumber::take()?;
            let name = CString::try_from_fmt(format_args!("vdaq{}", number.0))?;
            let node = Arc::new(
                StreamNode {
                    dev: dev.clone(),
                    id,
                },
                GFP_KERNEL,
            )?;
            let reg = KBox::pin_init(
                MiscDeviceRegistration::register_named(name, node),
                GFP_KERNEL,
            )?;
            pr_info!(
                "virtio{}: stream {} is /dev/vdaq{}\n",
                vdev.index(),
                id,
                number.0
            );
            dev.nodes.lock().push((reg, number), GFP_KERNEL)?;
        }
        pr_info!(
            "virtio{} bound: {} capture stream(s)\n",
            vdev.index(),
            captures
        );
        Ok(())
    }

    fn callback(self: Pin<&Self>, queue_index: u32) {
        let dev = &self.dev;
        match queue_index {
            q if q == u32::from(queue::RX) => dev.collect_rx(Collector::Interrupt),
            q if q == u32::from(queue::EVENT) => dev.state.lock().drain_events(),
            _ => {}
        }
    }
}

#[pinned_drop]
impl PinnedDrop for VdaqDriver {
    fn drop(self: Pin<&mut Self>) {
        let (vdev, dev) = (&self.vdev, &self.dev);
        // The device was reset: no queue callback runs, nothing completes any more.
        // No new opens; open files keep the state alive and now see `gone`. Taking the nodes
        // out also breaks the cycle device -> node -> device.
        drop(core::mem::take(&mut *dev.nodes.lock()));
        let queues = {
            let mut st = dev.state.lock();
            st.gone = true;
            for (id, s) in st.streams.iter_mut().enumerate() {
                s.running = false;
                // A process that only waits for signals learns of it too (its read: ENODEV).
                if s.async_on {
                    if let Some(list) = dev.fasync.get(id) {
                        list.kill(bindings::SIGIO, bindings::POLL_HUP);
                    }
                }
            }
            (st.control.take(), st.events.take(), st.rx.take())
        };
        dev.watchdog.cancel();
        dev.readers.wake_all();
        let (control, events, rx) = queues;
        if let Some(mut q) = control {
            while q.detach_unused().is_some() {}
        }
        if let Some(mut q) = events {
            while q.detach_unused().is_some() {}
        }
        if let Some(mut q) = rx {
            while let Some(msg) = q.detach_unused() {
                dev.state.lock().recycle(msg);
            }
        }
        // SAFETY: the device was reset and every `Virtqueue` was dropped just above.
        unsafe { vdev.del_vqs() };
        pr_info!("virtio{} removed\n", vdev.index());
    }
}

/// The N of /dev/vdaqN: the lowest number free, taken while the node exists (so that a device
/// bound again gets /dev/vdaq0 again), given back when it is dropped, after the node.
pub(crate) struct NodeNumber(u32);

/// Bit n: /dev/vdaqn exists.
static NODE_NUMBERS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl NodeNumber {
    pub(crate) fn take() -> Result<Self> {
        use core::sync::atomic::Ordering;
        let mut used = NODE_NUMBERS.load(Ordering::Relaxed);
        loop {
            let n = (!used).trailing_zeros();
            if n >= 64 {
                pr_err!("no free /dev/vdaqN number (64 nodes exist)\n");
                return Err(ENOSPC);
            }
            let taken = used | (1 << n);
            match NODE_NUMBERS.compare_exchange(used, taken, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(Self(n)),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for NodeNumber {
    fn drop(&mut self) {
        NODE_NUMBERS.fetch_and(!(1 << self.0), core::sync::atomic::Ordering::AcqRel);
    }
}
