// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Zero-copy capture through a mapping of /dev/vdaqN: the ring logic, over any
//! [`RingMemory`] (the real mapping in `sys`, a byte buffer in the tests). Nothing here trusts
//! the driver: every offset and length it reports is checked against the layout before a byte
//! is looked at, and a head that moved backwards or further than the ring holds is an error.
//!
//! The driver's protocol (proto/src/uapi.rs): `status.head` (acquire) is the sequence of the
//! next period it will complete, `status.tail` the oldest not given back; the record of
//! sequence `s` is at index `s % periods` and names the buffer holding its frames (not
//! necessarily `s % periods`); `VDAQ_IOC_MMAP_ACK` with `n` gives back every period below `n`.

use std::ops::Range;

use vdaq_proto::uapi::{
    MmapLayout, MmapRecord, MmapStatus, Params, PeriodHeader, MMAP_MAGIC, MMAP_VERSION,
    PERIOD_MAGIC,
};

/// The mapping as the ring logic reads it.
pub trait RingMemory {
    /// Bytes mapped (from offset 0 of the layout).
    fn len(&self) -> usize;
    /// `MmapStatus::magic` and `version`.
    fn magic_version(&self) -> (u32, u32);
    /// `MmapStatus::head`, loaded with acquire order.
    fn head(&self) -> u64;
    /// `MmapStatus::tail`.
    fn tail(&self) -> u64;
    /// A copy of the record at `offset` (8-byte aligned; `offset + 48 <= len()`).
    fn record(&self, offset: usize) -> MmapRecord;
    /// The bytes of `range` (within `len()`).
    fn bytes(&self, range: Range<usize>) -> &[u8];
}

/// A layout checked against the parameters and the page size, in offsets of the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub mapping_bytes: usize,
    pub records_offset: usize,
    pub buffers_offset: usize,
    pub stride: usize,
    pub periods: u64,
    pub period_bytes: usize,
}

const RECORD: usize = std::mem::size_of::<MmapRecord>();

impl Ring {
    /// Checks `layout` (VDAQ_IOC_MMAP_LAYOUT) for parameters `p` and pages of `page` bytes:
    /// everything page aligned that must be, the status then the records before the buffers,
    /// every buffer inside the mapping, the numbers those of `p`.
    pub fn new(layout: &MmapLayout, p: &Params, page: usize) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{why}: {layout:?} for {p:?}, pages of {page} bytes"));
        let n = |v: u64| usize::try_from(v).ok();
        let (Some(mapping_bytes), Some(records_offset), Some(buffers_offset), Some(stride)) = (
            n(layout.mapping_bytes),
            n(layout.records_offset),
            n(layout.buffers_offset),
            n(layout.buffer_stride),
        ) else {
            return bad("offsets beyond the address space");
        };
        let periods = layout.periods as usize;
        let period_bytes = layout.period_bytes as usize;
        if layout.periods != p.periods || layout.period_bytes != p.period_bytes {
            return bad("periods or period_bytes differ from the parameters");
        }
        if page == 0 || mapping_bytes == 0 || mapping_bytes % page != 0 {
            return bad("mapping_bytes is not a non-zero multiple of the page size");
        }
        if records_offset < std::mem::size_of::<MmapStatus>() || records_offset % 8 != 0 {
            return bad("the records overlap the status or are not 8-byte aligned");
        }
        let records_end = periods.checked_mul(RECORD).and_then(|b| b.checked_add(records_offset));
        if records_end.is_none_or(|end| end > buffers_offset) {
            return bad("the records do not fit before the buffers");
        }
        if buffers_offset % page != 0 || stride % page != 0 || stride < period_bytes.max(1) {
            return bad("the buffers are not page aligned or smaller than a period");
        }
        let buffers_end = periods.checked_mul(stride).and_then(|b| b.checked_add(buffers_offset));
        if periods < 1 || buffers_end.is_none_or(|end| end > mapping_bytes) {
            return bad("the buffers do not fit in the mapping");
        }
        if layout.reserved != 0 {
            return bad("reserved is not 0");
        }
        Ok(Self {
            mapping_bytes,
            records_offset,
            buffers_offset,
            stride,
            periods: u64::from(layout.periods),
            period_bytes,
        })
    }

    /// Checks the status block of a fresh mapping of this layout.
    pub fn check_status(&self, mem: &(impl RingMemory + ?Sized)) -> Result<(), String> {
        if mem.len() < self.mapping_bytes {
            return Err(format!(
                "{} bytes mapped, the layout has {}",
                mem.len(),
                self.mapping_bytes
            ));
        }
        match mem.magic_version() {
            (MMAP_MAGIC, MMAP_VERSION) => Ok(()),
            (magic, version) => Err(format!(
                "status magic {magic:#x} version {version} (want {MMAP_MAGIC:#x} {MMAP_VERSION})"
            )),
        }
    }

    /// The record of sequence `seq`: its header and frames, checked.
    pub fn period<'m>(
        &self,
        mem: &'m (impl RingMemory + ?Sized),
        seq: u64,
    ) -> Result<Period<'m>, RecordError> {
        let index = (seq % self.periods) as usize;
        let r = mem.record(self.records_offset + index * RECORD);
        let h = r.header;
        if h.magic != PERIOD_MAGIC {
            return Err(RecordError::BadMagic { seq, magic: h.magic });
        }
        if h.sequence != seq {
            return Err(RecordError::WrongSequence { seq, found: h.sequence });
        }
        if u64::from(r.buffer) >= self.periods {
            return Err(RecordError::BadBuffer { seq, buffer: r.buffer });
        }
        if h.bytes as usize > self.period_bytes {
            return Err(RecordError::TooLong { seq, bytes: h.bytes });
        }
        let start = self.buffers_offset + r.buffer as usize * self.stride;
        Ok(Period {
            header: h,
            buffer: r.buffer,
            frames: mem.bytes(start..start + h.bytes as usize),
        })
    }

    /// The sequences ready to take: from `next` (where the consumer is; periods below the
    /// tail were given back by read()) to `head`.
    pub fn ready(&self, next: u64, tail: u64, head: u64) -> Result<Range<u64>, RingError> {
        if head < tail || next > head {
            return Err(RingError::Behind { next, tail, head });
        }
        if head - tail > self.periods {
            return Err(RingError::Overrun { tail, head, periods: self.periods });
        }
        Ok(next.max(tail)..head)
    }

    /// Takes every ready period from `next` on, in order, until `take` returns false; returns
    /// where the consumer is then (what to acknowledge). A bad record goes to `take` as an
    /// error (and counts as taken: giving it back is all that can be done with it).
    pub fn drain<'m, M: RingMemory + ?Sized>(
        &self,
        mem: &'m M,
        next: u64,
        mut take: impl FnMut(u64, Result<Period<'m>, RecordError>) -> bool,
    ) -> Result<u64, RingError> {
        // Head first (acquire): the tail cannot pass it, and the records below it are written.
        let head = mem.head();
        let tail = mem.tail();
        let mut at = self.ready(next, tail, head)?.start;
        while at < head {
            if !take(at, self.period(mem, at)) {
                break;
            }
            at += 1;
        }
        Ok(at)
    }
}

/// A ready period in the mapping.
#[derive(Clone, Copy, Debug)]
pub struct Period<'m> {
    pub header: PeriodHeader,
    pub buffer: u32,
    pub frames: &'m [u8],
}

/// A record the driver published that cannot be right (counted as a bad record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    BadMagic { seq: u64, magic: u32 },
    WrongSequence { seq: u64, found: u64 },
    BadBuffer { seq: u64, buffer: u32 },
    TooLong { seq: u64, bytes: u32 },
}

/// The ring's indexes cannot be right: the capture ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The head is behind the tail or behind what was taken already.
    Behind { next: u64, tail: u64, head: u64 },
    /// More periods ready than the ring holds.
    Overrun { tail: u64, head: u64, periods: u64 },
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Behind { next, tail, head } => {
                write!(f, "mmap ring: head {head} behind tail {tail} or the consumer's {next}")
            }
            Self::Overrun { tail, head, periods } => {
                write!(f, "mmap ring: head {head} is more than {periods} periods past tail {tail}")
            }
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::BadMagic { seq, magic } => write!(f, "record {seq}: magic {magic:#x}"),
            Self::WrongSequence { seq, found } => write!(f, "record {seq}: sequence {found}"),
            Self::BadBuffer { seq, buffer } => write!(f, "record {seq}: buffer {buffer}"),
            Self::TooLong { seq, bytes } => write!(f, "record {seq}: {bytes} bytes"),
        }
    }
}

/// A mapping in plain memory, written like the driver writes it: for the unit tests here and
/// in the capture.
#[cfg(test)]
pub mod fake {
    use super::*;
    use vdaq_proto::wire::Pod;

    #[derive(Debug)]
    pub struct FakeMapping(pub Vec<u8>);

    impl FakeMapping {
        pub fn new(ring: &Ring) -> Self {
            let mut m = Self(vec![0; ring.mapping_bytes]);
            let s = MmapStatus { magic: MMAP_MAGIC, version: MMAP_VERSION, ..Default::default() };
            m.0[..64].copy_from_slice(s.as_bytes());
            m
        }
        pub fn set_head_tail(&mut self, head: u64, tail: u64) {
            self.0[8..16].copy_from_slice(&head.to_le_bytes());
            self.0[16..24].copy_from_slice(&tail.to_le_bytes());
        }
        /// Publishes period `seq` in `buffer` with `frames`.
        pub fn publish(&mut self, ring: &Ring, seq: u64, buffer: u32, frames: &[u8], lost: u64) {
            let header = PeriodHeader {
                magic: PERIOD_MAGIC,
                sequence: seq,
                bytes: frames.len() as u32,
                frames_lost: lost,
                ..Default::default()
            };
            let r = MmapRecord { header, buffer, reserved: 0 };
            let at = ring.records_offset + (seq % ring.periods) as usize * RECORD;
            self.0[at..at + RECORD].copy_from_slice(r.as_bytes());
            // A buffer out of the ring (a lying driver) gets no frames.
            if u64::from(buffer) < ring.periods {
                let b = ring.buffers_offset + buffer as usize * ring.stride;
                let n = frames.len().min(ring.stride);
                self.0[b..b + n].copy_from_slice(&frames[..n]);
            }
        }
    }

    impl RingMemory for FakeMapping {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn magic_version(&self) -> (u32, u32) {
            MmapStatus::from_prefix(&self.0).map_or((0, 0), |s| (s.magic, s.version))
        }
        fn head(&self) -> u64 {
            MmapStatus::from_prefix(&self.0).map_or(0, |s| s.head)
        }
        fn tail(&self) -> u64 {
            MmapStatus::from_prefix(&self.0).map_or(0, |s| s.tail)
        }
        fn record(&self, offset: usize) -> MmapRecord {
            MmapRecord::from_prefix(&self.0[offset..]).unwrap_or_default()
        }
        fn bytes(&self, range: Range<usize>) -> &[u8] {
            &self.0[range]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMapping;
    use super::*;
    use crate::verify::CounterChecker;
    use vdaq_proto::format::SampleFormat;

    const PAGE: usize = 4096;

    fn params(periods: u32, period_bytes: u32) -> Params {
        Params { rate: 48_000, channels: 2, format: 5, period_bytes, periods, reserved: [0; 3] }
    }

    /// The layout a driver would give: status and records in the first pages, then the
    /// buffers, each rounded up to whole pages.
    fn layout(p: &Params) -> MmapLayout {
        let records = 64 + p.periods as u64 * RECORD as u64;
        let buffers_offset = records.div_ceil(PAGE as u64) * PAGE as u64;
        let stride = u64::from(p.period_bytes).div_ceil(PAGE as u64) * PAGE as u64;
        MmapLayout {
            mapping_bytes: buffers_offset + stride * u64::from(p.periods),
            records_offset: 64,
            buffers_offset,
            buffer_stride: stride,
            periods: p.periods,
            period_bytes: p.period_bytes,
            reserved: 0,
        }
    }

    fn frames(first: u64, n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in first..first + n {
            let mut s = [0u8; 2];
            SampleFormat::S16.encode_counter(i, &mut s);
            out.extend_from_slice(&s);
            out.extend_from_slice(&s);
        }
        out
    }

    #[test]
    fn layouts_are_checked() {
        let p = params(4, 1000);
        let good = layout(&p);
        assert!(Ring::new(&good, &p, PAGE).is_ok());
        let broken: [fn(&mut MmapLayout); 8] = [
            |l| l.mapping_bytes -= 1,
            |l| l.records_offset = 8,
            |l| l.buffers_offset = 64 + 2 * RECORD as u64,
            |l| l.buffers_offset += 8,
            |l| l.buffer_stride = 512,
            |l| l.mapping_bytes -= PAGE as u64,
            |l| l.periods = 5,
            |l| l.buffer_stride = u64::MAX / 2,
        ];
        for b in broken {
            let mut l = good;
            b(&mut l);
            assert!(Ring::new(&l, &p, PAGE).is_err(), "{l:?}");
        }
    }

    #[test]
    fn sequences_wrap_and_buffers_need_not_follow_them() {
        let p = params(3, 400);
        let ring = Ring::new(&layout(&p), &p, PAGE).unwrap_or_else(|e| panic!("{e}"));
        let mut m = FakeMapping::new(&ring);
        ring.check_status(&m).unwrap_or_else(|e| panic!("{e}"));
        let mut checker = CounterChecker::new(SampleFormat::S16, 2);
        let mut next = 0;
        // Ten rounds of two periods each: sequences wrap the three records many times; the
        // buffers rotate the other way.
        for round in 0..10u64 {
            for seq in next..next + 2 {
                let buffer = (2 * ring.periods - 1 - seq % ring.periods) as u32 % 3;
                m.publish(&ring, seq, buffer, &frames(seq * 100, 100), 0);
            }
            m.set_head_tail(next + 2, next);
            let mut seen = Vec::new();
            next = ring
                .drain(&m, next, |seq, period| {
                    let period = period.unwrap_or_else(|e| panic!("{e}"));
                    seen.push((seq, period.buffer));
                    checker.check(period.frames);
                    true
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(next, 2 * round + 2);
            assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [2 * round, 2 * round + 1]);
        }
        let r = checker.finish(0);
        assert!(r.is_clean() && r.frames == 2000, "{r:?}");
    }

    #[test]
    fn drain_stops_when_asked_and_starts_at_the_tail() {
        let p = params(4, 400);
        let ring = Ring::new(&layout(&p), &p, PAGE).unwrap_or_else(|e| panic!("{e}"));
        let mut m = FakeMapping::new(&ring);
        for seq in 0..4 {
            m.publish(&ring, seq, seq as u32, &frames(seq * 100, 100), 0);
        }
        m.set_head_tail(4, 0);
        let mut n = 0;
        let at = ring.drain(&m, 0, |_, _| {
            n += 1;
            n < 2
        });
        assert_eq!(at, Ok(1));
        // read() took two periods meanwhile: the tail is past the consumer.
        m.set_head_tail(4, 2);
        let mut seqs = Vec::new();
        assert_eq!(
            ring.drain(&m, 1, |s, _| {
                seqs.push(s);
                true
            }),
            Ok(4)
        );
        assert_eq!(seqs, [2, 3]);
    }

    #[test]
    fn bad_records_are_refused_not_followed() {
        let p = params(4, 400);
        let ring = Ring::new(&layout(&p), &p, PAGE).unwrap_or_else(|e| panic!("{e}"));
        let mut m = FakeMapping::new(&ring);
        m.publish(&ring, 0, 0, &frames(0, 100), 0);
        // Claims more bytes than a period: refused, never read past its buffer.
        m.publish(&ring, 1, 1, &vec![0u8; 404], 0);
        m.publish(&ring, 2, 7, &frames(200, 100), 0);
        m.publish(&ring, 7, 3, &frames(300, 100), 0);
        m.set_head_tail(4, 0);
        let mut got = Vec::new();
        assert_eq!(
            ring.drain(&m, 0, |_, p| {
                got.push(p.map(|p| p.frames.len()));
                true
            }),
            Ok(4)
        );
        assert_eq!(
            got,
            [
                Ok(400),
                Err(RecordError::TooLong { seq: 1, bytes: 404 }),
                Err(RecordError::BadBuffer { seq: 2, buffer: 7 }),
                Err(RecordError::WrongSequence { seq: 3, found: 7 }),
            ]
        );
    }

    #[test]
    fn impossible_heads_are_errors() {
        let p = params(4, 400);
        let ring = Ring::new(&layout(&p), &p, PAGE).unwrap_or_else(|e| panic!("{e}"));
        let mut m = FakeMapping::new(&ring);
        fn never(_: u64, _: Result<Period<'_>, RecordError>) -> bool {
            panic!("no period may be taken")
        }
        m.set_head_tail(9, 4);
        assert_eq!(
            ring.drain(&m, 4, never),
            Err(RingError::Overrun { tail: 4, head: 9, periods: 4 })
        );
        m.set_head_tail(u64::MAX, 0);
        assert!(matches!(ring.drain(&m, 0, never), Err(RingError::Overrun { .. })));
        m.set_head_tail(3, 5);
        assert!(matches!(ring.drain(&m, 5, never), Err(RingError::Behind { .. })));
        m.set_head_tail(3, 0);
        assert!(matches!(ring.drain(&m, 4, never), Err(RingError::Behind { .. })));
        m.set_head_tail(8, 4);
        assert_eq!(ring.drain(&m, 8, never), Ok(8));
    }
}
