//! Poisson sampling over allocated bytes, as Go's runtime does it.
//!
//! Sample points fall on the stream of bytes a thread allocates, with gaps
//! drawn from an exponential distribution of mean `rate`. An allocation is
//! sampled when a point falls inside it, which happens with probability
//! `p(s) = 1 - exp(-s / rate)` for a block of `s` bytes. Each sampled block
//! therefore stands for `1 / p(s)` blocks of its size: that weight makes every
//! figure an unbiased estimate (Horvitz–Thompson), and it is applied per block
//! before anything is summed.
//!
//! After a sample the next gap is drawn afresh from the end of the block;
//! by memorylessness this is still a Poisson process, so whether one block is
//! sampled is independent of every other block.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::thread::ThreadState;

/// Weight of a sampled block of `size` bytes at mean sampling gap `rate`: the
/// number of blocks of that size it stands for.
pub fn weight(size: u64, rate: u64) -> f64 {
    if rate <= 1 {
        return 1.0;
    }
    let p = -(-(size as f64) / rate as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        // A zero-size block is never sampled; keep the arithmetic finite.
        1.0
    }
}

/// Seed of every thread's generator when the user fixed one
/// (`LEAKSCOPE_SEED`), else 0 for "seed from the clock".
pub(crate) static SEED: AtomicU64 = AtomicU64::new(0);
static THREAD_COUNTER: AtomicU64 = AtomicU64::new(0);

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn initial_state(t: &ThreadState) -> u64 {
    let n = THREAD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = SEED.load(Ordering::Relaxed);
    let mixed = if seed != 0 {
        // Reproducible: the k-th thread to sample gets the k-th stream.
        splitmix64(seed ^ splitmix64(n))
    } else {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own; it is
        // async-signal-safe and does not allocate.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let here = t as *const ThreadState as u64;
        splitmix64(here ^ splitmix64(n) ^ (ts.tv_nsec as u64) ^ ((ts.tv_sec as u64) << 32))
    };
    mixed | 1
}

/// Next value of the thread's xorshift64* generator.
fn next_u64(t: &ThreadState) -> u64 {
    let mut x = t.rng.get();
    if x == 0 {
        x = initial_state(t);
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t.rng.set(x);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A gap drawn from Exp(mean = rate), in bytes.
fn next_gap(t: &ThreadState, rate: u64) -> i64 {
    // Uniform in (0, 1]: 53 random bits, shifted away from 0 so ln is finite.
    let u = ((next_u64(t) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let gap = -u.ln() * rate as f64;
    gap.min(i64::MAX as f64 / 2.0) as i64
}

/// Called when an allocation of `size` bytes drove this thread's countdown
/// below zero: a sample point falls inside the block, so it is sampled, and
/// the countdown is re-armed from the block's end.
///
/// The countdown may also have been negative *before* this allocation: on a
/// thread's first allocation, or after full mode or a mode switch parked it
/// at -1. Then no sample point was crossed; the first gap is drawn here and
/// the block is sampled only if it falls inside it.
///
/// `countdown` (the thread's countdown, `t.bytes_until_sample` or a front
/// end's own) already has `size` subtracted.
pub(crate) fn crossed(t: &ThreadState, countdown: &Cell<i64>, size: usize, rate: u64) -> bool {
    let before = countdown.get().wrapping_add(size as i64);
    if t.rng.get() == 0 || before < 0 {
        let gap = next_gap(t, rate);
        if gap >= size as i64 {
            countdown.set(gap - size as i64);
            return false;
        }
    }
    countdown.set(next_gap(t, rate));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_inverse_sampling_probability() {
        let rate = 1000;
        assert!((weight(1000, rate) - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // Tiny blocks stand for about rate/size blocks; huge ones for one.
        assert!((weight(1, rate) - 1000.5).abs() < 0.01);
        assert!((weight(1 << 30, rate) - 1.0).abs() < 1e-12);
        assert_eq!(weight(0, rate), 1.0);
        assert_eq!(weight(123, 1), 1.0);
    }

    #[test]
    fn gaps_have_the_requested_mean() {
        let t = ThreadState::new();
        let n = 200_000;
        let rate = 4096;
        let mean = (0..n).map(|_| next_gap(&t, rate) as f64).sum::<f64>() / n as f64;
        // Standard error of the mean is rate / sqrt(n) ≈ 9.2; allow 5 of them.
        assert!((mean - rate as f64).abs() < 46.0, "mean gap {mean}");
    }

    #[test]
    fn sampling_frequency_matches_probability() {
        let t = ThreadState::new();
        let (rate, size, n) = (4096u64, 512usize, 400_000);
        let mut hits = 0;
        for _ in 0..n {
            let left = t.bytes_until_sample.get() - size as i64;
            t.bytes_until_sample.set(left);
            if left < 0 && crossed(&t, &t.bytes_until_sample, size, rate) {
                hits += 1;
            }
        }
        let p = 1.0 - (-(size as f64) / rate as f64).exp();
        let expected = p * n as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (hits as f64 - expected).abs() < 5.0 * sd,
            "{hits} samples, expected {expected:.0} ± {sd:.0}"
        );
    }
}
