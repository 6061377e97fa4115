// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The system calls the app needs that std does not offer: fcntl for asynchronous I/O
//! (F_SETOWN, O_ASYNC, F_SETSIG), sigaction with SA_SIGINFO, signal masks, the device's ioctl,
//! CLOCK_MONOTONIC, pipe sizes for `vdaq feed`, and the mapping of /dev/vdaqN (mmap, munmap,
//! mprotect, the status words loaded atomically). Every `unsafe` of the app is here.

use std::io;
use std::os::fd::RawFd;

use vdaq_proto::uapi::{Stats, VDAQ_IOC_STATS};
use vdaq_proto::wire::Pod;

/// fcntl command to choose the signal sent for O_ASYNC (Linux; libc lacks the constant).
const F_SETSIG: libc::c_int = 10;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// CLOCK_MONOTONIC in ns (the clock of the driver's period timestamps).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Makes this process the owner of `fd`'s signals, optionally with `signal` instead of SIGIO
/// (F_SETSIG: then the signal carries si_fd and si_band and, if realtime, queues), and turns
/// O_ASYNC on or off.
pub fn set_async(fd: RawFd, on: bool, signal: Option<i32>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        check(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
        if let Some(sig) = signal {
            check(libc::fcntl(fd, F_SETSIG, sig))?;
        }
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        let flags = if on { flags | libc::O_ASYNC } else { flags & !libc::O_ASYNC };
        check(libc::fcntl(fd, libc::F_SETFL, flags))?;
    }
    Ok(())
}

/// Sets or clears O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        check(libc::fcntl(fd, libc::F_SETFL, flags))?;
    }
    Ok(())
}

/// Waits up to `timeout` for `fd` to be readable or in error; true unless it timed out.
/// Interrupted waits count as ready (the caller's loop checks again).
pub fn poll_in(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd on the stack.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(true) } else { Err(e) };
    }
    Ok(n > 0)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set [`interrupted`] (without SA_RESTART: a blocking read or poll
/// returns EINTR) instead of killing the process, so that a capture ends with its summary and a
/// complete file.
pub fn catch_interrupts() -> io::Result<()> {
    INTERRUPTED.store(false, std::sync::atomic::Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        set_action(signal, on_interrupt as extern "C" fn(libc::c_int) as usize, 0)?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived (after [`catch_interrupts`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A signal handler with siginfo.
pub type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `signal` (SA_SIGINFO | SA_RESTART).
pub fn install_handler(signal: i32, handler: Handler) -> io::Result<()> {
    set_action(signal, handler as usize, libc::SA_SIGINFO | libc::SA_RESTART)
}

/// sigaction(`signal`) with `handler` (the address of an extern "C" fn whose signature matches
/// `flags`: with SA_SIGINFO a [`Handler`], else `fn(c_int)`) and an empty mask.
fn set_action(signal: i32, handler: usize, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: all-zero is a valid sigaction; the callers pass extern "C" fns of the signature
    // `flags` asks for, which live for the whole program.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        check(libc::sigaction(signal, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Blocks (`block`) or unblocks `signal` for this thread.
pub fn mask_signal(signal: i32, block: bool) {
    // SAFETY: a sigset on the stack, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// The file descriptor and band a queued (F_SETSIG) signal carries.
pub fn siginfo_fd_band(info: *const libc::siginfo_t) -> Option<(i32, i64)> {
    if info.is_null() {
        return None;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGIO-style
    // signals (si_code POLL_*) the `_sigpoll` union member holds si_band then si_fd.
    unsafe {
        if (*info).si_code <= 0 {
            return None;
        }
        #[repr(C)]
        struct SigPoll {
            signo: libc::c_int,
            errno: libc::c_int,
            code: libc::c_int,
            _pad: libc::c_int,
            band: libc::c_long,
            fd: libc::c_int,
        }
        let p = info.cast::<SigPoll>();
        Some(((*p).fd, (*p).band))
    }
}

/// Takes one pending `signal` (which must be blocked) without waiting: its si_fd and si_band,
/// or None when none is pending.
pub fn take_pending(signal: i32) -> Option<(i32, i64)> {
    // SAFETY: a sigset initialised by sigemptyset, a zero timeout and a siginfo buffer on the
    // stack that sigtimedwait fills.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        if libc::sigtimedwait(&set, &mut info, &zero) != signal {
            return None;
        }
        siginfo_fd_band(&info).or(Some((-1, 0)))
    }
}

/// SIGRTMIN + `n`.
pub fn sigrtmin(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// An ioctl that fills a `T` (the command's size must be `size_of::<T>()`).
pub fn ioctl_read<T: Pod + Default>(fd: RawFd, cmd: u32) -> io::Result<T> {
    let mut value = T::default();
    // SAFETY: the vdaq ioctls that read write exactly the size encoded in `cmd`, which the
    // uapi defines as `size_of::<T>()`; the buffer is that large.
    check(unsafe { libc::ioctl(fd, cmd as _, value.as_bytes_mut().as_mut_ptr()) })?;
    Ok(value)
}

/// An ioctl that passes a `T` to the driver.
pub fn ioctl_write<T: Pod>(fd: RawFd, cmd: u32, value: &T) -> io::Result<()> {
    // SAFETY: the driver reads `size_of::<T>()` bytes from a valid buffer of that size.
    check(unsafe { libc::ioctl(fd, cmd as _, value.as_bytes().as_ptr()) })?;
    Ok(())
}

/// An ioctl without argument.
pub fn ioctl_none(fd: RawFd, cmd: u32) -> io::Result<()> {
    // SAFETY: the command takes no argument.
    check(unsafe { libc::ioctl(fd, cmd as _, 0usize) })?;
    Ok(())
}

/// Reads the driver's statistics.
pub fn driver_stats(fd: RawFd) -> io::Result<Stats> {
    ioctl_read(fd, VDAQ_IOC_STATS)
}

/// Calls `read(2)` on `fd` (async-signal-safe, unlike `std`'s buffered paths).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// readv(2): fills `bufs` in order; returns the bytes read.
pub fn readv(fd: RawFd, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
        .collect();
    let count = libc::c_int::try_from(iov.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: every iovec points to a buffer borrowed mutably for this call, of its length.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Has the kernel send this process SIGTERM when its parent ends (a helper process that must
/// not outlive the one it serves).
pub fn end_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the unused arguments are zero.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Asks for a pipe buffer of at least `bytes` (the kernel rounds up to a power of two pages)
/// and returns the size it set.
pub fn set_pipe_size(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    let got = check(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) })?;
    Ok(got as usize)
}

/// Bytes waiting in the pipe `fd` (either end) to be read.
pub fn pipe_queued(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, to `n`.
    check(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// The TSC frequency in kHz, measured against CLOCK_MONOTONIC.
#[cfg(target_arch = "x86_64")]
pub fn tsc_khz() -> Option<u64> {
    // SAFETY: RDTSC has no preconditions on x86_64.
    let rdtsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (monotonic_ns(), rdtsc());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (t1, c1) = (monotonic_ns(), rdtsc());
    let ns = t1.checked_sub(t0).filter(|&ns| ns > 0)?;
    u64::try_from(u128::from(c1.wrapping_sub(c0)) * 1_000_000 / u128::from(ns)).ok()
}

/// The TSC frequency in kHz (not available on this architecture).
#[cfg(not(target_arch = "x86_64"))]
pub fn tsc_khz() -> Option<u64> {
    None
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf with a valid name has no other precondition.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// `VDAQ_IOC_MMAP_ACK`: gives back every period with a sequence below `n`.
pub fn mmap_ack(fd: RawFd, n: u64) -> io::Result<()> {
    // SAFETY: the driver reads one u64 from a valid u64 on the stack.
    check(unsafe { libc::ioctl(fd, vdaq_proto::uapi::VDAQ_IOC_MMAP_ACK as _, &n as *const u64) })?;
    Ok(())
}

/// A mapping of /dev/vdaqN (the only memory of the app the kernel writes behind its back):
/// unmapped when dropped. The mapping keeps the file open in the kernel until then.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// The whole mapping of a layout: `PROT_READ`, `MAP_SHARED`, from offset 0.
    pub fn new(fd: RawFd, len: usize) -> io::Result<Self> {
        Self::with(fd, len, libc::PROT_READ, libc::MAP_SHARED, 0)
    }

    /// mmap(NULL, `len`, `prot`, `flags`, `fd`, `offset`), for the self-test's refusals too.
    pub fn with(fd: RawFd, len: usize, prot: i32, flags: i32, offset: u64) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: a new mapping chosen by the kernel (no address given, no MAP_FIXED), so no
        // existing memory of the program is replaced.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len })
    }

    /// mprotect of the whole mapping (the self-test: making it writable must fail).
    pub fn protect(&self, prot: i32) -> io::Result<()> {
        // SAFETY: the range is exactly our mapping; changing its protection cannot invalidate
        // Rust references (we hand out only shared ones, and only read through them).
        check(unsafe { libc::mprotect(self.ptr.as_ptr().cast(), self.len, prot) })?;
        Ok(())
    }

    /// Reads one byte of every page (all the mapping must stay readable); their sum.
    pub fn touch_pages(&self) -> u64 {
        let page = page_size();
        (0..self.len)
            .step_by(page)
            // SAFETY: every offset is inside the mapping, which is readable until dropped.
            .map(|at| u64::from(unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at)) }))
            .sum()
    }

    /// The 64-bit word at `offset` of the status block, loaded atomically.
    fn status_word(&self, offset: usize, order: std::sync::atomic::Ordering) -> u64 {
        if offset + 8 > self.len {
            return 0;
        }
        // SAFETY: the mapping is page aligned, so `offset` (a multiple of 8) is 8-byte aligned
        // and inside it; the driver writes these words with atomic stores, and an AtomicU64
        // has the layout of a u64.
        let word =
            unsafe { &*self.ptr.as_ptr().add(offset).cast::<std::sync::atomic::AtomicU64>() };
        word.load(order)
    }
}

impl crate::mmap::RingMemory for Mapping {
    fn len(&self) -> usize {
        self.len
    }

    fn magic_version(&self) -> (u32, u32) {
        let w = self.status_word(0, std::sync::atomic::Ordering::Relaxed);
        (w as u32, (w >> 32) as u32)
    }

    fn head(&self) -> u64 {
        self.status_word(8, std::sync::atomic::Ordering::Acquire)
    }

    fn tail(&self) -> u64 {
        self.status_word(16, std::sync::atomic::Ordering::Acquire)
    }

    fn record(&self, offset: usize) -> vdaq_proto::uapi::MmapRecord {
        let size = std::mem::size_of::<vdaq_proto::uapi::MmapRecord>();
        if !offset.is_multiple_of(8) || offset.checked_add(size).is_none_or(|end| end > self.len) {
            return Default::default();
        }
        // SAFETY: inside the mapping and 8-byte aligned (checked above; the mapping is page
        // aligned); every byte pattern is a valid MmapRecord (Pod). A volatile read: the
        // driver may rewrite the slot of a period it got back.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset).cast()) }
    }

    fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        if range.start > range.end || range.end > self.len {
            return &[];
        }
        // SAFETY: inside the mapping (checked above), which stays mapped and readable while
        // `self` lives (even after the device is removed); any byte is a valid u8. The ring
        // only asks for buffers of periods that are the user's, which the device does not
        // write until they are given back (VDAQ_IOC_MMAP_ACK), after the last use of the
        // slice.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.len()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
