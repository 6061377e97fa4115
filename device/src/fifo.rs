//! The device FIFO: the intermediate buffer between the sample clock and the guest's buffers.
//!
//! Like a hardware FIFO it holds at most `capacity` bytes; the producer writes whole periods,
//! the consumer (the copy into guest memory) takes whole guest buffers.

/// A byte ring buffer of fixed capacity.
#[derive(Debug, Default)]
pub struct Fifo {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl Fifo {
    /// An empty FIFO holding up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self { buf: vec![0; capacity], head: 0, len: 0 }
    }

    /// Maximum fill level in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Current fill level in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the FIFO holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can still be pushed.
    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }

    /// Discards the content.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Appends `n` bytes that `fill` writes, in at most two contiguous pieces (the second when
    /// the ring wraps); `fill` gets each piece and the byte offset of that piece within the `n`.
    /// Returns false, writing nothing, when fewer than `n` bytes are free.
    pub fn push_with(&mut self, n: usize, mut fill: impl FnMut(&mut [u8], usize)) -> bool {
        if n > self.free() {
            return false;
        }
        let cap = self.capacity();
        let tail = (self.head + self.len) % cap.max(1);
        let first = n.min(cap - tail);
        fill(&mut self.buf[tail..tail + first], 0);
        if first < n {
            fill(&mut self.buf[..n - first], first);
        }
        self.len += n;
        true
    }

    /// The oldest `n` bytes as at most two contiguous pieces, without removing them, or `None`
    /// when fewer than `n` bytes are held.
    pub fn peek(&self, n: usize) -> Option<(&[u8], &[u8])> {
        if n > self.len {
            return None;
        }
        let first = n.min(self.capacity() - self.head);
        Some((&self.buf[self.head..self.head + first], &self.buf[..n - first]))
    }

    /// Removes the oldest `n` bytes (at most the fill level).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.head = (self.head + n) % self.capacity();
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_seq(f: &mut Fifo, start: u8, n: usize) -> bool {
        f.push_with(n, |piece, off| {
            for (i, b) in piece.iter_mut().enumerate() {
                *b = start.wrapping_add((off + i) as u8);
            }
        })
    }

    fn peek_vec(f: &Fifo, n: usize) -> Vec<u8> {
        let (a, b) = f.peek(n).expect("enough bytes");
        [a, b].concat()
    }

    #[test]
    fn refuses_a_push_that_does_not_fit_and_keeps_content() {
        let mut f = Fifo::new(8);
        assert!(push_seq(&mut f, 0, 6));
        assert!(!push_seq(&mut f, 100, 3));
        assert_eq!(f.len(), 6);
        assert_eq!(peek_vec(&f, 6), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn wraps_around_preserving_order() {
        let mut f = Fifo::new(8);
        assert!(push_seq(&mut f, 0, 6));
        f.consume(4);
        assert!(push_seq(&mut f, 10, 6));
        assert_eq!(f.len(), 8);
        let (a, b) = f.peek(8).expect("full");
        assert_eq!((a.len(), b.len()), (4, 4));
        assert_eq!(peek_vec(&f, 8), vec![4, 5, 10, 11, 12, 13, 14, 15]);
        assert!(f.peek(9).is_none());
        f.consume(8);
        assert!(f.is_empty());
    }
}
