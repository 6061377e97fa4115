// SPDX-License-Identifier: GPL-2.0

//! The control queue: a request and its response, and the requests that start and stop a
//! stream.

use kernel::bindings;
use kernel::prelude::*;

use crate::device::{now_ns, VdaqDev};
use crate::kernel_sync::{self, Wait};
use crate::virtio::{Buffers, Message};
use crate::virtio_snd::{self, code, Hdr, PcmSetParams};
use crate::wire::{self, Le32, Pod};

/// How long a control request may take before the device is considered broken.
const CONTROL_TIMEOUT_MS: u32 = 1000;
/// A control request and room for its response.
pub(crate) struct CtlMsg {
    /// Tells a late answer to an abandoned (timed-out) request from the awaited one.
    pub(crate) id: u64,
    pub(crate) request: KVec<u8>,
    response: KVec<u8>,
}

impl Message for CtlMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [Some(&self.request[..]), None],
            writable: [Some(&mut self.response[..]), None],
        }
    }
}

impl VdaqDev {
    /// Sends a control request and waits (polling: the control queue has no interrupt) for
    /// its response, which must say OK.
    pub(crate) fn control(&self, request: &[u8], response_len: usize) -> Result<KVec<u8>> {
        let mut req = KVec::with_capacity(request.len(), GFP_KERNEL)?;
        req.extend_from_slice(request, GFP_KERNEL)?;
        let response = KVec::from_elem(0u8, response_len, GFP_KERNEL)?;
        let id = {
            static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
            NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
        };
        let msg = KBox::new(
            CtlMsg {
                id,
                request: req,
                response,
            },
            GFP_KERNEL,
        )?;
        {
            let mut st = self.state.lock();
            let ctl = st.control.as_mut().ok_or(ENODEV)?;
            ctl.add(msg).map_err(|(e, _)| e)?;
            ctl.kick();
        }
        // By time, not by count: msleep(1) sleeps at least a jiffy.
        let deadline = now_ns() + u64::from(CONTROL_TIMEOUT_MS) * 1_000_000;
        while now_ns() < deadline {
            let done = {
                let mut st = self.state.lock();
                st.control.as_mut().ok_or(ENODEV)?.get_buf()
            };
            if let Some((msg, len)) = done {
                if msg.id != id {
                    // The late answer of a request that timed out: drop it, keep waiting.
                    continue;
                }
                // The device's used length is a claim, not a fact: never past what was posted.
                let written = (len as usize).min(msg.response.len());
                let status = wire::Le32::from_prefix(&msg.response[..written])
                    .map(|s| s.get())
                    .unwrap_or(0);
                if status != code::S_OK {
                    pr_warn!(
                        "control request failed with status {:#x} ({} bytes)\n",
                        status,
                        len
                    );
                    return Err(EIO);
                }
                let mut response = KVec::with_capacity(written, GFP_KERNEL)?;
                response.extend_from_slice(&msg.response[..written], GFP_KERNEL)?;
                return Ok(response);
            }
            kernel_sync::sleep_ms(1);
        }
        pr_err!("control request timed out\n");
        Err(Error::from_errno(-(bindings::ETIMEDOUT as i32)))
    }

    fn pcm_command(&self, op: u32, stream: u32) -> Result {
        self.control(
            virtio_snd::PcmHdr::new(op, stream).as_bytes(),
            size_of::<Hdr>(),
        )
        .map(|_| ())
    }

    /// SET_PARAMS, PREPARE, post every period, START; arms the watchdog. A stalled stream is
    /// first stopped, which fails with EIO while the device stays silent.
    pub(crate) fn start_stream(&self, id: u32) -> Result {
        let (p, stalled) = {
            let mut st = self.state.lock();
            let s = st.stream(id)?;
            (s.params, s.stalled)
        };
        if stalled {
            self.stop_stream(id)?;
        }
        let set = PcmSetParams {
            hdr: virtio_snd::PcmHdr::new(code::R_PCM_SET_PARAMS, id),
            buffer_bytes: Le32::new(p.period_bytes().checked_mul(p.periods).ok_or(EINVAL)?),
            period_bytes: Le32::new(p.period_bytes()),
            features: Le32::new(1 << virtio_snd::pcm_feature::EVT_XRUNS),
            channels: p.channels,
            format: p.format,
            rate: p.rate_code,
            padding: 0,
        };
        self.control(set.as_bytes(), size_of::<Hdr>())?;
        self.pcm_command(code::R_PCM_PREPARE, id)?;
        let tick = {
            let mut st = self.state.lock();
            let s = st.stream(id)?;
            s.running = true;
            s.stalled = false;
            s.last_completion_ns = now_ns();
            s.sequence = 0;
            s.lost_before_next = 0;
            if let Some(pool) = &s.pool {
                pool.set_positions(0, 0);
            }
            let tick = s.stall_timeout_ns() / 4;
            // Messages the device kept through a stall are not in `spare`: post what is.
            for _ in 0..s.spare.len() {
                if let Some(msg) = st.stream(id)?.spare.pop() {
                    st.recycle(msg);
                }
            }
            tick
        };
        // Not `start`: re-arming a running watchdog at every START postpones it, and a stream
        // started and stopped every 25 ms kept a 50 ms watchdog from ever finding another
        // stream's stall (scenario race-watchdog-start). `running` is set above, under the
        // state lock, as `start_within` needs.
        self.watchdog.start_within(tick);
        if let Err(e) = self.pcm_command(code::R_PCM_START, id) {
            let _ = self.stop_stream(id);
            return Err(e);
        }
        Ok(())
    }

    /// STOP and RELEASE; the device returns every posted period on RELEASE. After a stall
    /// the device is asked too (it may only have paused); a silent one gives EIO.
    pub(crate) fn stop_stream(&self, id: u32) -> Result {
        let stalled = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let s = st.stream(id)?;
            s.running = false;
            let stalled = s.stalled;
            while let Some(r) = st.stream(id)?.ready.pop() {
                st.recycle(r.msg);
            }
            st.stream(id)?.publish_tail();
            stalled
        };
        let stopped = self.pcm_command(code::R_PCM_STOP, id);
        if stalled {
            if matches!(stopped, Err(e) if e.to_errno() == -(bindings::ETIMEDOUT as i32)) {
                return Err(EIO);
            }
            // It answers again (an error status too: a STOP that timed out earlier may have
            // reached it late): release the stream, which may then be started anew.
            self.state.lock().stream(id)?.stalled = false;
        }
        let released = self.pcm_command(code::R_PCM_RELEASE, id);
        // RELEASE answered only after the device returned every period (virtio-snd rule).
        let timeout = kernel::time::msecs_to_jiffies(1000) as kernel::ffi::c_long;
        let returned = self.readers.wait_until(Some(timeout), || {
            self.state.lock().stream(id).map_or(true, |s| s.posted == 0)
        });
        if !matches!(returned, Ok(Wait::Ready)) {
            pr_warn!(
                "stream {}: the device did not return every period on release\n",
                id
            );
        }
        if stalled {
            return released;
        }
        stopped.and(released)
    }
}
