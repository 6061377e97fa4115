// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Test harness: plays the guest's part against the real vdaq backend, over a real unix socket.
//!
//! A vhost-user frontend (the `vhost` crate's `Frontend`), guest memory in a memfd shared with
//! the backend, and a small split-virtqueue driver with direct and indirect descriptors. The
//! backend runs in a thread of the test process (`daemon::serve_connection_with_stats`), so the
//! tests can also read its statistics. Every wait has a time-out: a test never hangs.

#![allow(dead_code)]
// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vdaq_device::backend::DeviceStats;
use vdaq_device::stream::StreamCaps;
use vdaq_proto::format::SampleFormat;
use vdaq_proto::virtio_snd::{code, Hdr, PcmHdr, PcmSetParams, PcmStatus, RATES};
use vdaq_proto::wire::{Le32, Pod};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Size of the harness's guest memory.
pub const MEM_SIZE: usize = 64 << 20;
/// Queue size, as QEMU's sound frontend uses.
pub const QUEUE_SIZE: u16 = 64;

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Guest memory backed by a memfd, with a bump allocator.
pub struct GuestMem {
    pub mem: GuestMemoryMmap,
    file: File,
    host_base: u64,
    next: u64,
}

impl GuestMem {
    fn new(size: usize) -> Self {
        let fd =
            nix::sys::memfd::memfd_create(c"vdaq-harness", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd_create");
        let file = File::from(fd);
        file.set_len(size as u64).expect("size the memfd");
        let region =
            MmapRegion::from_file(FileOffset::new(file.try_clone().expect("dup"), 0), size)
                .expect("map guest memory");
        let host_base = region.as_ptr() as u64;
        let region = GuestRegionMmap::new(region, GuestAddress(0)).expect("region");
        let mem = GuestMemoryMmap::from_regions(vec![region]).expect("guest memory");
        Self { mem, file, host_base, next: 0x1000 }
    }

    /// Allocates `len` bytes aligned to `align` (zeroed: the memfd starts zeroed and nothing is
    /// reused).
    pub fn alloc(&mut self, len: usize, align: u64) -> u64 {
        let at = self.next.div_ceil(align) * align;
        self.next = at + len as u64;
        assert!(self.next <= MEM_SIZE as u64, "harness guest memory exhausted");
        at
    }

    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(gpa)).expect("write guest memory");
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(gpa)).expect("read guest memory");
        v
    }

    fn write_u16(&self, gpa: u64, v: u16) {
        self.write(gpa, &v.to_le_bytes());
    }

    fn read_u16(&self, gpa: u64) -> u16 {
        let b = self.read(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn read_u32(&self, gpa: u64) -> u32 {
        let b = self.read(gpa, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    pub gpa: u64,
    pub len: u32,
    pub writable: bool,
}

/// A raw descriptor, for chains the device must refuse.
#[derive(Clone, Copy, Debug)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
}

/// A used-ring element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    pub len: u32,
}

/// The driver side of a split virtqueue.
pub struct Queue {
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    chains: Vec<Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
    last_head: u16,
    /// Chains are made available without a kick (see [`Queue::kick_again`]).
    pub quiet: bool,
}

impl Queue {
    fn new(mem: &mut GuestMem) -> Self {
        let n = usize::from(QUEUE_SIZE);
        Self {
            desc: mem.alloc(16 * n, 16),
            avail: mem.alloc(6 + 2 * n, 2),
            used: mem.alloc(6 + 8 * n, 4),
            free: (0..QUEUE_SIZE).rev().collect(),
            chains: vec![Vec::new(); n],
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(EFD_NONBLOCK).expect("kick eventfd"),
            call: EventFd::new(EFD_NONBLOCK).expect("call eventfd"),
            last_head: 0,
            quiet: false,
        }
    }

    fn write_desc(mem: &GuestMem, at: u64, d: RawDesc, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write(at, &b);
    }

    /// Makes a chain of raw descriptors available (in the ring, or in an indirect table) and
    /// kicks; returns the head id.
    pub fn add_raw(&mut self, mem: &mut GuestMem, descs: &[RawDesc], indirect: bool) -> u16 {
        self.add_raw_next(mem, descs, indirect, 0)
    }

    /// As [`Self::add_raw`], with `last_next` in the `next` field of the last descriptor (a
    /// chain whose last descriptor says NEXT points there).
    pub fn add_raw_next(
        &mut self,
        mem: &mut GuestMem,
        descs: &[RawDesc],
        indirect: bool,
        last_next: u16,
    ) -> u16 {
        let head;
        if indirect {
            let table = mem.alloc(16 * descs.len(), 16);
            for (i, d) in descs.iter().enumerate() {
                let last = i + 1 == descs.len();
                let flags = if last { d.flags } else { d.flags | VIRTQ_DESC_F_NEXT };
                let next = if last { last_next } else { (i + 1) as u16 };
                Self::write_desc(mem, table + 16 * i as u64, RawDesc { flags, ..*d }, next);
            }
            head = self.free.pop().expect("free descriptor");
            let d = RawDesc {
                addr: table,
                len: (16 * descs.len()) as u32,
                flags: VIRTQ_DESC_F_INDIRECT,
            };
            Self::write_desc(mem, self.desc + 16 * u64::from(head), d, 0);
            self.chains[usize::from(head)] = vec![head];
        } else {
            let ids: Vec<u16> =
                (0..descs.len()).map(|_| self.free.pop().expect("free descriptor")).collect();
            for (i, d) in descs.iter().enumerate() {
                let last = i + 1 == descs.len();
                let flags = if last { d.flags } else { d.flags | VIRTQ_DESC_F_NEXT };
                let next = if last { last_next } else { ids[i + 1] };
                Self::write_desc(
                    mem,
                    self.desc + 16 * u64::from(ids[i]),
                    RawDesc { flags, ..*d },
                    next,
                );
            }
            head = ids[0];
            self.chains[usize::from(head)] = ids;
        }
        self.publish(mem, head, !self.quiet);
        self.last_head = head;
        head
    }

    /// Puts `head` in the next avail slot, publishes the index and kicks when `kick`.
    fn publish(&mut self, mem: &mut GuestMem, head: u16, kick: bool) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        mem.write_u16(slot, head);
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_u16(self.avail + 2, self.avail_idx);
        fence(Ordering::SeqCst);
        if kick {
            self.kick.write(1).expect("kick");
        }
    }

    /// Makes `head` available again without touching its descriptors (a broken or hostile
    /// driver: the spec forbids it while the device holds the chain) and kicks.
    pub fn republish(&mut self, mem: &mut GuestMem, head: u16) {
        self.publish(mem, head, true);
    }

    /// Signals the call eventfd received since the last read (the eventfd's counter).
    pub fn take_calls(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }

    /// Sets the available index to `idx` (a driver may move it by at most the queue size
    /// past what the device took) and kicks.
    pub fn set_avail_idx(&mut self, mem: &mut GuestMem, idx: u16) {
        self.avail_idx = idx;
        mem.write_u16(self.avail + 2, idx);
        fence(Ordering::SeqCst);
        self.kick.write(1).expect("kick");
    }

    /// Kicks the device without making anything new available.
    pub fn kick_again(&self) {
        self.kick.write(1).expect("kick");
    }

    /// Head id of the chain added last.
    pub fn last_head(&self) -> u16 {
        self.last_head
    }

    /// Adds a chain of buffers.
    pub fn add(&mut self, mem: &mut GuestMem, parts: &[Part], indirect: bool) -> u16 {
        let descs: Vec<RawDesc> = parts
            .iter()
            .map(|p| RawDesc {
                addr: p.gpa,
                len: p.len,
                flags: if p.writable { VIRTQ_DESC_F_WRITE } else { 0 },
            })
            .collect();
        self.add_raw(mem, &descs, indirect)
    }

    /// Used elements not seen yet (does not wait).
    pub fn take_used(&mut self, mem: &GuestMem) -> Vec<Used> {
        let idx = mem.read_u16(self.used + 2);
        fence(Ordering::SeqCst);
        let mut out = Vec::new();
        while self.last_used != idx {
            let e = self.used + 4 + 8 * u64::from(self.last_used % QUEUE_SIZE);
            let used = Used { id: mem.read_u32(e) as u16, len: mem.read_u32(e + 4) };
            for d in std::mem::take(&mut self.chains[usize::from(used.id % QUEUE_SIZE)]) {
                self.free.push(d);
            }
            out.push(used);
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// Number of used elements the device published so far (without taking them).
    pub fn used_idx(&self, mem: &GuestMem) -> u16 {
        mem.read_u16(self.used + 2)
    }

    /// The device's `avail_event` (VIRTIO_F_EVENT_IDX): the avail index it wants a kick for,
    /// which it sets to the next chain to take whenever it re-enables notifications.
    pub fn avail_event(&self, mem: &GuestMem) -> u16 {
        mem.read_u16(self.used + 4 + 8 * u64::from(QUEUE_SIZE))
    }

    /// Waits (EVENT_IDX only) until the device has taken the first `n` chains made available,
    /// which a kick alone does not order against another queue's kick; false on timeout.
    pub fn wait_taken(&self, mem: &GuestMem, n: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.avail_event(mem) < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Waits until at least `n` used elements were taken, or `timeout` passes.
    pub fn wait_used(&mut self, mem: &GuestMem, n: usize, timeout: Duration) -> Vec<Used> {
        let deadline = Instant::now() + timeout;
        let mut out = self.take_used(mem);
        while out.len() < n && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // SAFETY: the eventfd outlives this borrow, which ends with the poll call.
            let call = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.call.as_raw_fd()) };
            let mut fds = [nix::poll::PollFd::new(call, nix::poll::PollFlags::POLLIN)];
            let ms = left.as_millis().min(100) as u16;
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            let _ = self.call.read();
            out.extend(self.take_used(mem));
        }
        out
    }
}

/// A running backend and the frontend connected to it.
pub struct Harness {
    pub fe: Frontend,
    pub mem: GuestMem,
    pub queues: Vec<Queue>,
    pub stats: Arc<Mutex<DeviceStats>>,
    done: mpsc::Receiver<Result<DeviceStats, String>>,
    dir: PathBuf,
    pub features: u64,
}

/// A temporary directory for the socket.
fn temp_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vdaq-harness-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The stream capabilities most tests use: one paced stream, S16/S32, 8 kHz and 48 kHz,
/// 1 to 2 channels.
pub fn caps(paced: bool) -> StreamCaps {
    StreamCaps {
        formats: vec![SampleFormat::S16, SampleFormat::S32],
        rates: vec![8_000, 48_000],
        channels_min: 1,
        channels_max: 2,
        signal: vdaq_device::source::StreamSignal::default(),
        paced,
        faults: Default::default(),
    }
}

impl Harness {
    /// Starts a backend with `streams`, connects and sets every queue up. `event_idx`
    /// negotiates VIRTIO_RING_F_EVENT_IDX.
    pub fn start(streams: Vec<StreamCaps>, event_idx: bool) -> Self {
        let dir = temp_dir();
        let socket = dir.join("vdaq.sock");
        let stats: Arc<Mutex<DeviceStats>> = Arc::default();
        let (tx, done) = mpsc::channel();
        {
            let socket = socket.clone();
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                let r =
                    vdaq_device::daemon::serve_connection_with_stats(&socket, streams, None, stats);
                let _ = tx.send(r);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let fe = loop {
            match Frontend::connect(&socket, 4) {
                Ok(fe) => break fe,
                Err(e) if Instant::now() > deadline => panic!("cannot connect to the backend: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Self::setup(fe, dir, stats, done, event_idx)
    }

    /// Connects to a backend listening on `socket` (another process), with every queue set
    /// up. Its statistics are not visible through `stats()`.
    pub fn connect(socket: &std::path::Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        let fe = loop {
            match Frontend::connect(socket, 4) {
                Ok(fe) => break fe,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot connect to {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let (_tx, done) = mpsc::channel();
        Self::setup(fe, temp_dir(), Arc::default(), done, false)
    }

    /// Waits for a device started with `--connect` to connect to `listener` (QEMU's part in
    /// `-chardev socket,...,server=on`), then sets the device up like [`Self::connect`].
    pub fn accept(listener: &std::os::unix::net::UnixListener) -> Self {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if Instant::now() > deadline => panic!("the device did not connect: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        let (_tx, done) = mpsc::channel();
        Self::setup(Frontend::from_stream(stream, 4), temp_dir(), Arc::default(), done, false)
    }

    fn setup(
        mut fe: Frontend,
        dir: PathBuf,
        stats: Arc<Mutex<DeviceStats>>,
        done: mpsc::Receiver<Result<DeviceStats, String>>,
        event_idx: bool,
    ) -> Self {
        let mut mem = GuestMem::new(MEM_SIZE);
        fe.set_owner().expect("set_owner");
        let offered = fe.get_features().expect("get_features");
        let mut want = (1 << 32) | (1 << 28) | (1 << 30); // VERSION_1, INDIRECT_DESC, PROTOCOL_FEATURES
        if event_idx {
            want |= 1 << 29;
        }
        let features = offered & want;
        fe.set_features(features).expect("set_features");
        let pf = fe.get_protocol_features().expect("get_protocol_features");
        fe.set_protocol_features(
            pf & (VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ),
        )
        .expect("set_protocol_features");
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem.host_base,
            mmap_offset: 0,
            mmap_handle: mem.file.as_raw_fd(),
        };
        fe.set_mem_table(&[region]).expect("set_mem_table");
        let mut queues = Vec::new();
        for q in 0..4 {
            let queue = Queue::new(&mut mem);
            fe.set_vring_num(q, QUEUE_SIZE).expect("set_vring_num");
            let cfg = VringConfigData {
                queue_max_size: QUEUE_SIZE,
                queue_size: QUEUE_SIZE,
                flags: 0,
                desc_table_addr: mem.host_base + queue.desc,
                used_ring_addr: mem.host_base + queue.used,
                avail_ring_addr: mem.host_base + queue.avail,
                log_addr: None,
            };
            fe.set_vring_addr(q, &cfg).expect("set_vring_addr");
            fe.set_vring_base(q, 0).expect("set_vring_base");
            fe.set_vring_call(q, &queue.call).expect("set_vring_call");
            fe.set_vring_kick(q, &queue.kick).expect("set_vring_kick");
            fe.set_vring_enable(q, true).expect("set_vring_enable");
            queues.push(queue);
        }
        Self { fe, mem, queues, stats, done, dir, features }
    }

    /// Tells the backend that guest memory is now only its first `size` bytes (as after a
    /// memory hot-unplug): chains it holds may point past the end. Returns once the backend
    /// has taken the new table (a request with a reply follows it on the same socket).
    pub fn shrink_memory(&mut self, size: usize) {
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: self.mem.host_base,
            mmap_offset: 0,
            mmap_handle: self.mem.file.as_raw_fd(),
        };
        self.fe.set_mem_table(&[region]).expect("set_mem_table");
        self.fe.get_features().expect("get_features");
    }

    /// Reads `len` bytes of configuration space.
    pub fn config(&mut self, len: u32) -> Vec<u8> {
        let (_, buf) = self
            .fe
            .get_config(0, len, VhostUserConfigFlags::WRITABLE, &vec![0; len as usize])
            .expect("get_config");
        buf
    }

    /// Sends a control request with a `response_len`-byte response buffer and returns the
    /// bytes the device wrote (the used length's worth).
    pub fn control(&mut self, request: &[u8], response_len: usize) -> Vec<u8> {
        let req = self.mem.alloc(request.len(), 8);
        self.mem.write(req, request);
        let resp = self.mem.alloc(response_len.max(1), 8);
        let parts = [
            Part { gpa: req, len: request.len() as u32, writable: false },
            Part { gpa: resp, len: response_len as u32, writable: true },
        ];
        self.queues[0].add(&mut self.mem, &parts, false);
        let used = self.queues[0].wait_used(&self.mem, 1, Duration::from_secs(5));
        assert_eq!(used.len(), 1, "no control response within 5 s");
        self.mem.read(resp, used[0].len as usize)
    }

    /// The status code of a control request.
    pub fn control_status(&mut self, request: &[u8]) -> u32 {
        let r = self.control(request, 4);
        Hdr::from_prefix(&r).map(|h| h.code.get()).unwrap_or(0)
    }

    /// A PCM command's status.
    pub fn pcm(&mut self, op: u32, stream: u32) -> u32 {
        self.control_status(pcm_hdr(op, stream).as_bytes())
    }

    /// SET_PARAMS with S16 at `rate` Hz; returns the status.
    pub fn set_params(
        &mut self,
        stream: u32,
        rate: u32,
        channels: u8,
        buffer: u32,
        period: u32,
        xruns: bool,
    ) -> u32 {
        self.control_status(set_params(stream, rate, channels, buffer, period, xruns).as_bytes())
    }

    /// Sets parameters, prepares and starts `stream`, then captures `periods` periods of
    /// `period` bytes (8 buffers in flight) and returns the frames' bytes, in order.
    pub fn capture(
        &mut self,
        stream: u32,
        format: SampleFormat,
        rate: u32,
        channels: u8,
        period: u32,
        periods: usize,
    ) -> Vec<u8> {
        let p = set_params_in(stream, format, rate, channels, 8 * period, period, false);
        assert_eq!(self.control_status(p.as_bytes()), code::S_OK, "set params");
        assert_eq!(self.pcm(code::R_PCM_PREPARE, stream), code::S_OK);
        assert_eq!(self.pcm(code::R_PCM_START, stream), code::S_OK);
        let mut pending: std::collections::VecDeque<RxBuffer> =
            (0..periods.min(8)).map(|_| self.post_rx(stream, period, false)).collect();
        let mut posted = pending.len();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(b) = pending.front().copied() {
            assert!(Instant::now() < deadline, "capture timed out");
            for u in self.wait_rx(1, Duration::from_millis(200)) {
                let done = pending.pop_front().expect("a posted buffer");
                assert_eq!((u.id, u.len), (done.head, period + 8), "in order, full");
                out.extend(self.rx_data(&done, u));
                if posted < periods {
                    self.repost_rx(&done);
                    pending.push_back(RxBuffer { head: self.queues[3].last_head(), ..done });
                    posted += 1;
                }
            }
            let _ = b;
        }
        assert_eq!(self.pcm(code::R_PCM_STOP, stream), code::S_OK);
        assert_eq!(self.pcm(code::R_PCM_RELEASE, stream), code::S_OK);
        out
    }

    /// Posts an rx message for `stream` with room for `payload` bytes of frames.
    pub fn post_rx(&mut self, stream: u32, payload: u32, indirect: bool) -> RxBuffer {
        let xfer = self.mem.alloc(4, 4);
        self.mem.write(xfer, &stream.to_le_bytes());
        let data = self.mem.alloc(payload as usize, 8);
        let status = self.mem.alloc(8, 8);
        let parts = [
            Part { gpa: xfer, len: 4, writable: false },
            Part { gpa: data, len: payload, writable: true },
            Part { gpa: status, len: 8, writable: true },
        ];
        let head = self.queues[3].add(&mut self.mem, &parts, indirect);
        RxBuffer { head, xfer, data, payload, status }
    }

    /// Posts `b`'s buffers again (after it completed).
    pub fn repost_rx(&mut self, b: &RxBuffer) {
        let parts = [
            Part { gpa: b.xfer, len: 4, writable: false },
            Part { gpa: b.data, len: b.payload, writable: true },
            Part { gpa: b.status, len: 8, writable: true },
        ];
        self.queues[3].add(&mut self.mem, &parts, false);
    }

    /// Posts an event buffer.
    pub fn post_event(&mut self) -> u64 {
        let ev = self.mem.alloc(8, 8);
        self.queues[1].add(&mut self.mem, &[Part { gpa: ev, len: 8, writable: true }], false);
        ev
    }

    /// Waits for at least one rx completion by polling the used ring, not the call eventfd
    /// (a polling driver: no thread wake-up on the driver's side); empty after `timeout`.
    pub fn poll_rx(&mut self, timeout: Duration) -> Vec<Used> {
        let deadline = Instant::now() + timeout;
        let queue = &mut self.queues[3];
        loop {
            let used = queue.take_used(&self.mem);
            if !used.is_empty() || Instant::now() >= deadline {
                return used;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    /// Waits for `n` rx completions.
    pub fn wait_rx(&mut self, n: usize, timeout: Duration) -> Vec<Used> {
        self.queues[3].wait_used(&self.mem, n, timeout)
    }

    /// The PCM status an rx buffer carries.
    pub fn rx_status(&self, b: &RxBuffer) -> PcmStatus {
        PcmStatus::from_prefix(&self.mem.read(b.status, 8)).expect("8 bytes")
    }

    /// The frames an rx buffer received.
    pub fn rx_data(&self, b: &RxBuffer, used: Used) -> Vec<u8> {
        self.mem.read(b.data, (used.len as usize).saturating_sub(8))
    }

    /// The device's statistics, once it has published them for what the harness saw (it
    /// publishes right after completing buffers, so a moment after).
    pub fn stats(&self) -> DeviceStats {
        std::thread::sleep(Duration::from_millis(50));
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Disconnects and waits for the backend to finish; returns its final statistics.
    pub fn finish(self) -> Result<DeviceStats, String> {
        let Harness { fe, done, dir, .. } = self;
        drop(fe);
        let r = done
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| Err("backend did not stop".into()));
        let _ = std::fs::remove_dir_all(dir);
        r
    }
}

/// An rx message posted by the harness.
#[derive(Clone, Copy, Debug)]
pub struct RxBuffer {
    pub head: u16,
    pub xfer: u64,
    pub data: u64,
    pub payload: u32,
    pub status: u64,
}

pub fn pcm_hdr(op: u32, stream: u32) -> PcmHdr {
    PcmHdr::new(op, stream)
}

pub fn set_params(
    stream: u32,
    rate: u32,
    channels: u8,
    buffer: u32,
    period: u32,
    xruns: bool,
) -> PcmSetParams {
    set_params_in(stream, SampleFormat::S16, rate, channels, buffer, period, xruns)
}

pub fn set_params_in(
    stream: u32,
    format: SampleFormat,
    rate: u32,
    channels: u8,
    buffer: u32,
    period: u32,
    xruns: bool,
) -> PcmSetParams {
    PcmSetParams {
        hdr: pcm_hdr(code::R_PCM_SET_PARAMS, stream),
        buffer_bytes: Le32::new(buffer),
        period_bytes: Le32::new(period),
        features: Le32::new(if xruns {
            1 << vdaq_proto::virtio_snd::pcm_feature::EVT_XRUNS
        } else {
            0
        }),
        channels,
        format: format.wire_code(),
        rate: RATES.iter().position(|&r| r == rate).expect("spec rate") as u8,
        padding: 0,
    }
}

/// Counter values of S16 frames (first channel of each frame).
pub fn s16_counters(bytes: &[u8], channels: usize) -> Vec<u16> {
    bytes.chunks_exact(2 * channels).map(|f| u16::from_le_bytes([f[0], f[1]])).collect()
}

/// One second: the tests' usual wait.
pub const SEC: Duration = Duration::from_secs(1);
/// 8 kHz mono S16 with 80-frame (10 ms) periods and a 4-period buffer.
pub const PERIOD: u32 = 160;
pub const BUFFER: u32 = 640;

/// A harness with stream 0 prepared at 8 kHz mono, 10 ms periods.
pub fn prepared(xruns: bool) -> Harness {
    let mut h = Harness::start(vec![caps(true)], false);
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, xruns), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    h
}
