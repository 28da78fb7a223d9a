//! A counting filter that lets `free` skip the live table for blocks that were
//! never sampled.
//!
//! In sampled mode only about one block in `rate / size` is tracked, yet every
//! free must learn whether its block is one of them. Each tracked address adds
//! one to a saturating byte counter chosen by hashing it; a free whose counter
//! is zero cannot be tracked and returns after one load. Counters that reach
//! 255 stay there (so a decrement can never hide a tracked block); a non-zero
//! counter only costs a lookup in the live table.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const BITS: u32 = 16;
const LEN: usize = 1 << BITS;

pub(crate) struct FreeFilter {
    counters: [AtomicU8; LEN],
    /// False until the first address is added: lets `free` skip the filter
    /// entirely in a process that never tracked anything.
    used: AtomicBool,
}

fn index(addr: usize) -> usize {
    ((addr as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - BITS)) as usize
}

impl FreeFilter {
    pub(crate) const fn new() -> Self {
        FreeFilter {
            counters: [const { AtomicU8::new(0) }; LEN],
            used: AtomicBool::new(false),
        }
    }

    /// Could `addr` be tracked? False means certainly not.
    #[inline(always)]
    pub(crate) fn may_contain(&self, addr: usize) -> bool {
        self.used.load(Ordering::Acquire) && self.counters[index(addr)].load(Ordering::Acquire) != 0
    }

    pub(crate) fn add(&self, addr: usize) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Release);
        }
        let _ =
            self.counters[index(addr)].fetch_update(Ordering::Release, Ordering::Relaxed, |c| {
                (c < u8::MAX).then(|| c + 1)
            });
    }

    pub(crate) fn remove(&self, addr: usize) {
        let _ =
            self.counters[index(addr)].fetch_update(Ordering::Release, Ordering::Relaxed, |c| {
                (c != 0 && c < u8::MAX).then(|| c - 1)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forgets_a_present_address() {
        let f = Box::new(FreeFilter::new());
        assert!(!f.may_contain(0x1000));
        let addrs: Vec<usize> = (1..5000).map(|i| i * 48).collect();
        for &a in &addrs {
            f.add(a);
        }
        for &a in &addrs[..2500] {
            f.remove(a);
        }
        for &a in &addrs[2500..] {
            assert!(f.may_contain(a));
        }
        // Saturation sticks.
        for _ in 0..300 {
            f.add(0x10);
        }
        for _ in 0..300 {
            f.remove(0x10);
        }
        assert!(f.may_contain(0x10));
    }
}
