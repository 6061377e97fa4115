// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A log-linear (HDR-style) histogram of latencies: fixed memory, allocation-free recording,
//! percentiles over any number of samples.
//!
//! Values below 2^SUB_BITS have a bucket each (exact). Above, each power of two is cut into
//! 2^(SUB_BITS-1) equal buckets, so a bucket is at most 1/2^(SUB_BITS-1) of its lower bound
//! wide. A percentile is the middle of the bucket holding the value of that rank (clamped to
//! the smallest and largest value seen), so it is within [`RELATIVE_ERROR`] of the exact
//! value. The whole u64 range fits in [`BUCKETS`] counters (about 30 KiB), allocated once.

/// Bits of the value kept below the leading one (with it): 2^SUB_BITS exact buckets first.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB / 2;
/// Buckets covering every u64.
pub const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * HALF) as usize;
/// The largest error of a percentile relative to the exact value: 1/128.
#[cfg(test)]
pub const RELATIVE_ERROR: f64 = 1.0 / SUB as f64;

/// Counts of values by log-linear bucket, with their number, smallest and largest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = top + 1 - SUB_BITS; // >= 1: keeps SUB_BITS bits, the leading one first
    let sub = v >> shift; // in HALF..SUB
    (SUB + u64::from(shift - 1) * HALF + (sub - HALF)) as usize
}

/// The values of bucket `i`: its lowest and its width.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let shift = (i - SUB) / HALF + 1;
    let sub = (i - SUB) % HALF + HALF;
    (sub << shift, 1 << shift)
}

impl Histogram {
    /// An empty histogram (its one allocation).
    pub fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, min: u64::MAX, max: 0 }
    }

    /// Counts `v`: no allocation, no lock, constant time (signal-handler safe).
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c += 1;
        }
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value of rank round((n - 1) * p) in sorted order, within [`RELATIVE_ERROR`]
    /// (0 when empty).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total - 1) as f64 * p.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let (low, width) = bounds(i);
                return (low + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Empties it (keeping its memory).
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts this thread's allocations (the tests run on several threads).
    struct Counting;
    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }
    // SAFETY: forwards to the system allocator unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract is the system allocator's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(i >= last, "{v}");
            last = i;
            let (low, width) = bounds(i);
            assert!(low <= v && v - low < width, "{v}: bucket {i} is {low}+{width}");
            assert!(width == 1 || (width as f64) / (low as f64) <= 2.0 * RELATIVE_ERROR);
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_within_the_error_over_ten_million_samples() {
        // Log-uniform from 1 us to about 17 s, by xorshift: many powers of two.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = Vec::with_capacity(10_000_000);
        let mut h = Histogram::new();
        for _ in 0..10_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (1u64 << (x % 24)) | ((x >> 40) % (1 << (x % 24)));
            values.push(v);
            h.record(v);
        }
        assert_eq!(h.len(), 10_000_000);
        values.sort_unstable();
        for p in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            let exact = values[((values.len() - 1) as f64 * p).round() as usize];
            let got = h.percentile(p);
            let err = got.abs_diff(exact) as f64;
            assert!(err <= exact as f64 * RELATIVE_ERROR, "p{p}: {got} for {exact}");
        }
        assert_eq!(h.max(), *values.last().unwrap());
        // Past 2^20 periods, unlike the sample buffer it replaced.
        assert!(h.percentile(0.5) > 0);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 51);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.percentile(1.0), 100);
        h.clear();
        assert_eq!((h.len(), h.percentile(0.5), h.max()), (0, 0, 0));
    }

    #[test]
    fn recording_allocates_nothing() {
        let mut h = Histogram::new();
        let before = allocations();
        for v in 0..1_000_000u64 {
            h.record(v.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
        h.record(u64::MAX);
        assert_eq!(allocations(), before);
        assert!(allocations() > 0, "the counting allocator is in use");
    }
}
