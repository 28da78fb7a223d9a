//! Code unloaded while the program runs (`dlclose`): return addresses
//! captured in it name nothing any more, and a later library may be mapped
//! at the same addresses. The front end reports each unload
//! (`frontend::code_unloaded`); every site records the count of unloads
//! when it was made, so its frames in code unloaded after that are marked
//! and shown as unknown, while sites captured in the code mapped there
//! later keep their names.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Unloads so far.
static EPOCH: AtomicU32 = AtomicU32::new(0);

/// Each unloaded range, with the epoch it ended.
static RANGES: Mutex<Vec<(u64, u64, u32)>> = Mutex::new(Vec::new());

/// The top bit of a marked return address (user-space code is far below).
pub(crate) const UNLOADED_BIT: usize = 1 << 63;

/// Unloads so far (read when a site is made).
pub(crate) fn epoch() -> u32 {
    EPOCH.load(Ordering::Acquire)
}

/// Records that the code in `[start, end)` was unloaded.
pub fn code_unloaded(start: u64, end: u64) {
    let _untracked = super::thread::UntrackedScope::enter();
    let mut ranges = RANGES.lock().unwrap_or_else(|e| e.into_inner());
    let ended = EPOCH.load(Ordering::Acquire);
    ranges.push((start, end, ended));
    EPOCH.store(ended + 1, Ordering::Release);
}

/// Marks the return addresses of a site made at `site_epoch` that lie in
/// code unloaded since.
pub(crate) fn mark(frames: &mut [usize], site_epoch: u32) {
    if site_epoch == epoch() {
        return;
    }
    let ranges = RANGES.lock().unwrap_or_else(|e| e.into_inner());
    for f in frames.iter_mut() {
        let addr = *f as u64;
        if ranges
            .iter()
            .any(|&(start, end, ended)| ended >= site_epoch && addr > start && addr <= end)
        {
            *f |= UNLOADED_BIT;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_frames_captured_before_their_code_went() {
        let before = epoch();
        code_unloaded(0x7000_0000_1000, 0x7000_0000_2000);
        let after = epoch();
        let mut old = [0x7000_0000_1800usize, 0x5555_0000_0000];
        mark(&mut old, before);
        assert_eq!(old, [0x7000_0000_1800 | UNLOADED_BIT, 0x5555_0000_0000]);
        // Captured after the unload: code mapped there since.
        let mut new = [0x7000_0000_1800usize];
        mark(&mut new, after);
        assert_eq!(new, [0x7000_0000_1800]);
    }
}
