// SPDX-License-Identifier: GPL-2.0

//! /dev/vdaqN: the file operations of a stream's node.

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

use crate::device::VdaqDev;
use crate::miscdev::{
    self, AttributeGroups, KiocbExt, MiscDevice, MiscDeviceRegistration, PollTableExt, StatsFile,
};
use crate::mm::{self, VmaExt};
use crate::stream::{alloc_periods, MAX_PERIOD_BYTES};
use crate::uapi::{self, PeriodHeader, Stats};
use crate::wire::Pod;

/// What the files of one /dev/vdaqN share: the device and the node's stream.
pub(crate) struct StreamNode {
    pub(crate) dev: Arc<VdaqDev>,
    pub(crate) id: u32,
}

/// The ioctls, one method each.
impl StreamNode {
    /// VDAQ_IOC_INFO: what the stream offers and its parameters.
    fn info(&self, arg: usize) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let info = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            uapi::Info {
                streams: s.caps.streams,
                stream: id,
                formats: s.caps.formats,
                rates: s.caps.rates,
                channels_min: u32::from(s.caps.channels_min),
                channels_max: u32::from(s.caps.channels_max),
                max_periods: s.caps.max_periods,
                max_period_bytes: MAX_PERIOD_BYTES,
                params: s.params.to_uapi(),
                started: u32::from(s.running),
                reserved: 0,
            }
        };
        crate::compat::user_slice(arg, core::mem::size_of::<uapi::Info>())
            .writer()
            .write_slice(info.as_bytes())
    }

    /// VDAQ_IOC_SET_PARAMS: new parameters, checked against what the stream offers; EBUSY
    /// while it runs, while the device holds its periods or while they are mapped.
    fn set_params(&self, arg: usize) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let mut raw = uapi::Params::default();
        crate::compat::user_slice(arg, core::mem::size_of::<uapi::Params>())
            .reader()
            .read_slice(raw.as_bytes_mut())?;
        let _serial = dev.control_lock.lock();
        let (caps, running) = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            (s.caps, s.running)
        };
        if running {
            return Err(EBUSY);
        }
        let p = caps.check(&raw)?;
        let periods = alloc_periods(id, &p)?;
        let old = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            // The device still holds messages of these parameters (it never returned
            // them after a stall), or a process maps their pages: keep them.
            if s.posted > 0 || s.mappings > 0 {
                return Err(EBUSY);
            }
            s.params = p;
            s.install(periods)
        };
        // The old period buffers are freed outside the lock.
        drop(old);
        Ok(())
    }

    /// VDAQ_IOC_START (EBUSY when started).
    fn start(&self) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let _serial = dev.control_lock.lock();
        if dev.state.lock().stream(id)?.running {
            return Err(EBUSY);
        }
        dev.start_stream(id)
    }

    /// VDAQ_IOC_STOP (EBADFD when neither started nor stalled).
    fn stop(&self) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let _serial = dev.control_lock.lock();
        let (running, stalled) = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            (s.running, s.stalled)
        };
        if !running && !stalled {
            return Err(Error::from_errno(-(bindings::EBADFD as i32)));
        }
        // A stalled stream stays stalled until the device answers STOP.
        dev.stop_stream(id)
    }

    /// VDAQ_IOC_MMAP_LAYOUT: where the mapping's parts are.
    fn mmap_layout(&self, arg: usize) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let layout = {
            let mut st = dev.state.lock();
            if st.gone {
                return Err(ENODEV);
            }
            st.stream(id)?.pool.as_ref().ok_or(EINVAL)?.layout()
        };
        crate::compat::user_slice(arg, core::mem::size_of::<uapi::MmapLayout>())
            .writer()
            .write_slice(layout.as_bytes())
    }

    /// VDAQ_IOC_MMAP_ACK: gives mapped periods back to the device.
    fn mmap_ack(&self, arg: usize) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let mut upto = [0u8; 8];
        crate::compat::user_slice(arg, upto.len())
            .reader()
            .read_slice(&mut upto)?;
        dev.give_back(id, u64::from_ne_bytes(upto))
    }

    /// VDAQ_IOC_STATS: the stream's statistics.
    fn stats(&self, arg: usize) -> Result {
        let (dev, id) = (&self.dev, self.id);
        let stats = dev.state.lock().stream(id)?.stats;
        crate::compat::user_slice(arg, core::mem::size_of::<Stats>())
            .writer()
            .write_slice(stats.as_bytes())
    }
}

#[vtable]
impl MiscDevice for StreamNode {
    /// Every file of the node holds the node.
    type Ptr = Arc<StreamNode>;
    type RegistrationData = Arc<StreamNode>;
    const OWNER: Option<&'static ThisModule> = Some(&crate::THIS_MODULE);
    const ATTRIBUTE_GROUPS: AttributeGroups = <Self as StatsFile>::GROUPS;

    fn open(_file: &miscdev::File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Self>> {
        let node = misc.data();
        // Not under `control_lock`: the misc core holds its global lock during open, and a
        // control request to a silent device holds `control_lock` for seconds. `open` stays
        // set until release has stopped the stream, so a new open cannot meet a stopping one.
        let dev = &node.dev;
        let mut st = dev.state.lock();
        if st.gone {
            return Err(ENODEV);
        }
        let s = st.stream(node.id)?;
        if s.open {
            return Err(EBUSY);
        }
        s.open = true;
        Ok(node.clone())
    }

    fn release(node: Arc<Self>, file: &miscdev::File) {
        let (dev, id) = (&node.dev, node.id);
        // The LDD3 rule: leave the async queue on release (the VFS does it too; harmless).
        let _ = dev.set_async(id, -1, file, false);
        // Read without `control_lock`: only this file starts the stream, and no other
        // operation of it runs during release. A stopped stream's close so does not wait for
        // another stream's control request.
        let (gone, running) = {
            let mut st = dev.state.lock();
            let gone = st.gone;
            (gone, st.stream(id).is_ok_and(|s| s.running))
        };
        if !gone && running {
            let _serial = dev.control_lock.lock();
            let _ = dev.stop_stream(id);
        }
        if let Ok(s) = dev.state.lock().stream(id) {
            s.open = false;
        }
    }

    fn read_iter(
        kiocb: miscdev::Kiocb<'_, Arc<Self>>,
        out: &mut miscdev::IovIterDest<'_>,
    ) -> Result<usize> {
        let node = kiocb.file();
        let (dev, id) = (&node.dev, node.id);
        let (record, running) = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            (
                core::mem::size_of::<PeriodHeader>() + s.params.period_bytes() as usize,
                s.running,
            )
        };
        if out.len() < record {
            return Err(EINVAL);
        }
        if !running {
            // A read of a stopped stream starts it.
            let _serial = dev.control_lock.lock();
            if !dev.state.lock().stream(id)?.running {
                dev.start_stream(id)?;
            }
        }
        let first = loop {
            let next = {
                let mut st = dev.state.lock();
                if st.gone {
                    return Err(ENODEV);
                }
                let s = st.stream(id)?;
                if s.stalled {
                    return Err(EIO);
                }
                s.ready.pop()
            };
            if let Some(r) = next {
                break r;
            }
            if kiocb.is_nonblocking() {
                return Err(EAGAIN);
            }
            // The watchdog wakes us if the device goes silent.
            dev.readers.wait_until(None, || {
                let mut st = dev.state.lock();
                st.gone
                    || st
                        .stream(id)
                        .map_or(true, |s| !s.ready.is_empty() || s.stalled)
            })?;
        };
        let mut total = dev.copy_out(id, first, out)?;
        // Whole periods only: more if they are ready and fit, without waiting.
        while out.len() >= record {
            let Some(r) = dev.state.lock().stream(id)?.ready.pop() else {
                break;
            };
            total += dev.copy_out(id, r, out)?;
        }
        Ok(total)
    }

    fn poll(
        node: ArcBorrow<'_, Self>,
        file: &miscdev::File,
        table: &miscdev::PollTable<'_>,
    ) -> u32 {
        let dev = &node.dev;
        table.register_wait_queue(file, &dev.readers);
        let mut st = dev.state.lock();
        let mut mask = 0;
        if st.gone {
            mask |= bindings::EPOLLERR | bindings::EPOLLHUP;
        }
        if let Ok(s) = st.stream(node.id) {
            if !s.ready.is_empty() {
                mask |= bindings::EPOLLIN | bindings::EPOLLRDNORM;
            } else if s.stalled {
                mask |= bindings::EPOLLERR;
            }
        }
        mask
    }

    fn ioctl(
        node: ArcBorrow<'_, Self>,
        _file: &miscdev::File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize> {
        let done = match cmd {
            uapi::VDAQ_IOC_INFO => node.info(arg),
            uapi::VDAQ_IOC_SET_PARAMS => node.set_params(arg),
            uapi::VDAQ_IOC_START => node.start(),
            uapi::VDAQ_IOC_STOP => node.stop(),
            uapi::VDAQ_IOC_MMAP_LAYOUT => node.mmap_layout(arg),
            uapi::VDAQ_IOC_MMAP_ACK => node.mmap_ack(arg),
            uapi::VDAQ_IOC_STATS => node.stats(arg),
            _ => Err(ENOTTY),
        };
        done.map(|()| 0)
    }

    fn fasync(node: ArcBorrow<'_, Self>, fd: i32, file: &miscdev::File, on: bool) -> Result<i32> {
        node.dev.set_async(node.id, fd, file, on)
    }

    /// Maps the stream's status, records and period buffers read-only (MAP_SHARED only).
    fn mmap(node: ArcBorrow<'_, Self>, _file: &miscdev::File, vma: &mm::VmaNew) -> Result {
        if !vma.is_shared() {
            return Err(EINVAL);
        }
        if vma.writable() {
            return Err(EPERM);
        }
        vma.try_clear_maywrite()?;
        vma.set_dontexpand();
        vma.set_dontdump();
        let (dev, id) = (&node.dev, node.id);
        // Counted before the pages go in: SET_PARAMS cannot replace them meanwhile.
        let pool = {
            let mut st = dev.state.lock();
            if st.gone {
                return Err(ENODEV);
            }
            let s = st.stream(id)?;
            let pool = s.pool.clone().ok_or(EINVAL)?;
            s.mappings += 1;
            pool
        };
        let mapped = pool.map_into(vma);
        if mapped.is_err() {
            Self::mapping_closed(node);
        }
        mapped
    }

    fn mapping_opened(node: ArcBorrow<'_, Self>) {
        if let Ok(s) = node.dev.state.lock().stream(node.id) {
            s.mappings += 1;
        }
    }

    fn mapping_closed(node: ArcBorrow<'_, Self>) {
        if let Ok(s) = node.dev.state.lock().stream(node.id) {
            s.mappings = s.mappings.saturating_sub(1);
        }
    }
}

impl StatsFile for StreamNode {
    /// `stats`: the stream's statistics (the fields of `VDAQ_IOC_STATS`), whether it is
    /// started, and its ring's head and tail, one `name value` line each.
    fn show_stats(node: &Arc<Self>, out: &mut miscdev::SysfsText<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        let (s, started, head, tail) = {
            let mut st = node.dev.state.lock();
            let Ok(s) = st.stream(node.id) else {
                return Ok(());
            };
            (s.stats, s.running, s.sequence, s.tail())
        };
        let fields: [(&str, u64); 14] = [
            ("started", u64::from(started)),
            ("head", head),
            ("tail", tail),
            ("periods", s.periods),
            ("frames", s.frames),
            ("frames_lost", s.frames_lost),
            ("xruns", s.xruns),
            ("rx_interrupts", s.rx_interrupts),
            ("rx_interrupts_with_data", s.rx_interrupts_with_data),
            ("signals_sent", s.signals_sent),
            ("periods_read", s.periods_read),
            ("stalls", s.stalls),
            ("stall_signals", s.stall_signals),
            ("error_periods", s.error_periods),
        ];
        for (name, value) in fields {
            writeln!(out, "{} {}", name, value)?;
        }
        Ok(())
    }
}
