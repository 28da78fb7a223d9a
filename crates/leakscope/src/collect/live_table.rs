//! The side table of tracked live blocks: address → (size, site, flags).
//!
//! Blocks are remembered here rather than in headers, so blocks the profiler
//! never tracked carry no cost and no layout change. The table is split into
//! 64 shards by address hash, each an open-addressing table (linear probing,
//! backward-shift deletion, no tombstones) behind its own spin lock, so
//! threads freeing unrelated blocks rarely meet. Shard memory comes from
//! `mmap` and grows by half when 70% full, which keeps the cost per tracked
//! block near 16 bytes / load factor ≈ 27 bytes on average. (Linear probing
//! degrades fast above that: an unsuccessful search, which every insert is,
//! takes about 6 probes at 70%, 13 at 80% and 23 at 85%; at 80%, full
//! mode's frees spent a third more in the table. Robin Hood order was
//! tried and cost more: every slot it passes needs its home recomputed.)

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::raw_mem;
use super::spinlock::{SpinGuard, SpinLock};
use super::stack_table::{SiteId, MAX_SITES};

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
const MIN_CAPACITY: usize = 256;
const MAX_LOAD_PERCENT: usize = 70;

const SIZE_BITS: u32 = 38;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
const SAMPLED_BIT: u64 = 1 << 38;
const IN_FILTER_BIT: u64 = 1 << 39;
const SITE_SHIFT: u32 = 40;
const _: () = assert!(MAX_SITES as u64 <= 1 << (64 - SITE_SHIFT));

/// What the profiler remembers about one tracked block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveEntry {
    /// Size in bytes (blocks of 256 GiB and more are recorded as 256 GiB − 1).
    pub(crate) size: u64,
    pub(crate) site: SiteId,
    /// Tracked by sampling: it stands for `weight(size)` blocks.
    pub(crate) sampled: bool,
    /// Counted in the free-path filter (see `filter`).
    pub(crate) in_filter: bool,
}

impl LiveEntry {
    fn pack(self) -> u64 {
        self.size.min(SIZE_MASK)
            | if self.sampled { SAMPLED_BIT } else { 0 }
            | if self.in_filter { IN_FILTER_BIT } else { 0 }
            | (u64::from(self.site) << SITE_SHIFT)
    }

    fn unpack(v: u64) -> Self {
        LiveEntry {
            size: v & SIZE_MASK,
            sampled: v & SAMPLED_BIT != 0,
            in_filter: v & IN_FILTER_BIT != 0,
            site: (v >> SITE_SHIFT) as SiteId,
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    /// Block address; 0 marks an empty slot (no block lives at address 0).
    addr: usize,
    meta: u64,
}

pub(crate) struct Shard {
    slots: Option<NonNull<Slot>>,
    cap: usize,
    len: usize,
}

// SAFETY: the slot memory is owned by the shard and only touched under the
// shard's lock.
unsafe impl Send for Shard {}

#[repr(align(64))]
struct PaddedShard(SpinLock<Shard>);

pub(crate) struct LiveTable {
    shards: [PaddedShard; SHARDS],
    /// Bytes of slot memory mapped, for the memory-per-block figure.
    mapped_bytes: AtomicUsize,
}

/// Where the table keeps its blocks, for a reader of this process's memory
/// from outside (`leakscope attach`, a core file): see `collect::tables`.
pub(crate) mod layout {
    use super::*;

    pub(crate) const SHARDS_OFFSET: usize = std::mem::offset_of!(LiveTable, shards);
    pub(crate) const SHARD_COUNT: usize = SHARDS;
    pub(crate) const SHARD_STRIDE: usize = std::mem::size_of::<PaddedShard>();
    const SHARD_IN_PADDING: usize =
        std::mem::offset_of!(PaddedShard, 0) + SpinLock::<Shard>::VALUE_OFFSET;
    pub(crate) const SHARD_SLOTS_OFFSET: usize =
        SHARD_IN_PADDING + std::mem::offset_of!(Shard, slots);
    pub(crate) const SHARD_CAP_OFFSET: usize = SHARD_IN_PADDING + std::mem::offset_of!(Shard, cap);
    pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
    pub(crate) const SLOT_ADDR_OFFSET: usize = std::mem::offset_of!(Slot, addr);
    pub(crate) const SLOT_META_OFFSET: usize = std::mem::offset_of!(Slot, meta);
    /// A slot's `meta` word: size in the low `SIZE_BITS`, then the sampled
    /// flag, then the site from `SITE_SHIFT`.
    pub(crate) const META_SIZE_BITS: u32 = SIZE_BITS;
    pub(crate) const META_SAMPLED_BIT: u32 = SAMPLED_BIT.trailing_zeros();
    pub(crate) const META_SITE_SHIFT: u32 = SITE_SHIFT;
    // `Option<NonNull<Slot>>` is one word, 0 for none.
    const _: () = assert!(std::mem::size_of::<Option<NonNull<Slot>>>() == 8);
}

fn address_hash(addr: usize) -> u64 {
    (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Shards group addresses by 2 MiB region, not by a hash of the whole
/// address: allocators hand each thread memory from its own regions (glibc
/// arenas, jemalloc/mimalloc thread caches and segments), so a thread's
/// inserts and frees keep meeting the same few shard locks, whose cache lines
/// then stay on its core. Within a shard, slots are placed by the full hash.
const REGION_SHIFT: u32 = 21;

fn shard_of(addr: usize) -> usize {
    ((addr as u64 >> REGION_SHIFT).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS))
        as usize
}

fn home(hash: u64, cap: usize) -> usize {
    ((u128::from(hash) * cap as u128) >> 64) as usize
}

impl Shard {
    fn slots(&self) -> &[Slot] {
        match self.slots {
            // SAFETY: `slots` points to `cap` initialised (zeroed or written)
            // slots owned by this shard.
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.cap) },
            None => &[],
        }
    }

    fn slots_mut(&mut self) -> &mut [Slot] {
        match self.slots {
            // SAFETY: as in `slots`, and `&mut self` means we hold the lock.
            Some(p) => unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), self.cap) },
            None => &mut [],
        }
    }

    fn find(&self, addr: usize, hash: u64) -> Option<usize> {
        self.probe(addr, hash).and_then(Result::ok)
    }

    /// Walks `addr`'s probe sequence: `Ok(i)` where it is, or `Err(i)` for
    /// the empty slot where it would go; `None` before the first growth.
    fn probe(&self, addr: usize, hash: u64) -> Option<Result<usize, usize>> {
        let slots = self.slots();
        if slots.is_empty() {
            return None;
        }
        let mut i = home(hash, self.cap);
        loop {
            let s = slots[i].addr;
            if s == addr {
                return Some(Ok(i));
            }
            if s == 0 {
                return Some(Err(i));
            }
            i = if i + 1 == self.cap { 0 } else { i + 1 };
        }
    }

    /// Grows so one more entry fits under the load limit. False if the kernel
    /// refused memory.
    fn reserve_one(&mut self, mapped: &AtomicUsize) -> bool {
        if (self.len + 1) * 100 <= self.cap * MAX_LOAD_PERCENT {
            return true;
        }
        let new_cap = (self.cap + self.cap / 2).max(MIN_CAPACITY);
        let bytes = new_cap * std::mem::size_of::<Slot>();
        let Some(mem) = raw_mem::map_zeroed(bytes) else {
            return false;
        };
        let old = self.slots.replace(mem.cast());
        let old_cap = std::mem::replace(&mut self.cap, new_cap);
        if let Some(old) = old {
            // SAFETY: `old` held `old_cap` slots and is now exclusively ours.
            let old_slots = unsafe { std::slice::from_raw_parts(old.as_ptr(), old_cap) };
            for s in old_slots.iter().filter(|s| s.addr != 0) {
                self.place(*s);
            }
            let old_bytes = old_cap * std::mem::size_of::<Slot>();
            // SAFETY: the old mapping was created by map_zeroed with this size
            // and nothing refers to it any more.
            unsafe { raw_mem::unmap(old.cast(), old_bytes) };
            mapped.fetch_sub(old_bytes, Ordering::Relaxed);
        }
        mapped.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    /// Puts a slot into its probe sequence (the address must be absent).
    fn place(&mut self, slot: Slot) {
        let cap = self.cap;
        let mut i = home(address_hash(slot.addr), cap);
        let slots = self.slots_mut();
        while slots[i].addr != 0 {
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        slots[i] = slot;
    }

    /// Removes slot `i`, shifting later members of the cluster back so that no
    /// probe sequence is broken.
    fn remove_at(&mut self, mut hole: usize) {
        let cap = self.cap;
        let slots = self.slots_mut();
        let mut j = hole;
        loop {
            j = if j + 1 == cap { 0 } else { j + 1 };
            let addr = slots[j].addr;
            if addr == 0 {
                break;
            }
            let h = home(address_hash(addr), cap);
            // The entry at j may move into the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                slots[hole] = slots[j];
                hole = j;
            }
        }
        slots[hole] = Slot { addr: 0, meta: 0 };
        self.len -= 1;
    }
}

impl LiveTable {
    pub(crate) const fn new() -> Self {
        LiveTable {
            shards: [const {
                PaddedShard(SpinLock::new(Shard {
                    slots: None,
                    cap: 0,
                    len: 0,
                }))
            }; SHARDS],
            mapped_bytes: AtomicUsize::new(0),
        }
    }

    fn shard(&self, addr: usize) -> &SpinLock<Shard> {
        &self.shards[shard_of(addr)].0
    }

    /// Records a live block. Returns the entry it replaced if the address was
    /// already present (its free was never seen), and `Err` when memory for
    /// the table could not be had (the block then goes untracked).
    ///
    /// `entry_for` is called under the shard lock, so it can look at state
    /// that changes only while every shard is locked (the profiling mode).
    pub(crate) fn insert(
        &self,
        addr: usize,
        entry_for: impl FnOnce() -> LiveEntry,
    ) -> Result<Option<LiveEntry>, ()> {
        let hash = address_hash(addr);
        let mut shard = self.shard(addr).lock();
        let entry = entry_for();
        let slot = Slot {
            addr,
            meta: entry.pack(),
        };
        match shard.probe(addr, hash) {
            Some(Ok(i)) => {
                let old = LiveEntry::unpack(shard.slots()[i].meta);
                shard.slots_mut()[i] = slot;
                return Ok(Some(old));
            }
            // One probe finds both the absence and the place, unless the
            // shard must grow first (which moves every slot).
            Some(Err(i)) if (shard.len + 1) * 100 <= shard.cap * MAX_LOAD_PERCENT => {
                shard.slots_mut()[i] = slot;
            }
            _ => {
                if !shard.reserve_one(&self.mapped_bytes) {
                    return Err(());
                }
                shard.place(slot);
            }
        }
        shard.len += 1;
        Ok(None)
    }

    /// Changes the entry of a live block in place; false if it is not tracked.
    pub(crate) fn update(&self, addr: usize, f: impl FnOnce(&mut LiveEntry)) -> bool {
        let hash = address_hash(addr);
        let mut shard = self.shard(addr).lock();
        let Some(i) = shard.find(addr, hash) else {
            return false;
        };
        let slot = &mut shard.slots_mut()[i];
        let mut entry = LiveEntry::unpack(slot.meta);
        f(&mut entry);
        slot.meta = entry.pack();
        true
    }

    /// Forgets a block; returns what was recorded for it.
    pub(crate) fn remove(&self, addr: usize) -> Option<LiveEntry> {
        let hash = address_hash(addr);
        let shard = self.shard(addr).lock();
        Self::remove_locked(shard, addr, hash)
    }

    /// Like [`LiveTable::remove`], but gives up (returns `None`) instead of
    /// waiting if the shard is locked: for frees that arrive while this thread
    /// may itself hold the lock (a signal handler inside the profiler).
    pub(crate) fn try_remove(&self, addr: usize) -> Option<LiveEntry> {
        let hash = address_hash(addr);
        let shard = self.shard(addr).try_lock()?;
        Self::remove_locked(shard, addr, hash)
    }

    fn remove_locked(mut shard: SpinGuard<'_, Shard>, addr: usize, hash: u64) -> Option<LiveEntry> {
        let i = shard.find(addr, hash)?;
        let entry = LiveEntry::unpack(shard.slots()[i].meta);
        shard.remove_at(i);
        Some(entry)
    }

    /// Visits every live block, one shard at a time (each shard is a
    /// consistent picture; the whole is not frozen).
    /// `f` runs under the shard's lock: it must not free or move a block
    /// (a free in full mode looks the block up, maybe in this very shard).
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, LiveEntry)) {
        for shard in &self.shards {
            let shard = shard.0.lock();
            for s in shard.slots().iter().filter(|s| s.addr != 0) {
                f(s.addr, LiveEntry::unpack(s.meta));
            }
        }
    }

    /// Visits every live block mutably while all shards are locked; used for
    /// mode transitions, which must look atomic to concurrent frees.
    pub(crate) fn with_all_locked(
        &self,
        mut f: impl FnMut(usize, &mut LiveEntry),
        after: impl FnOnce(),
    ) {
        let mut guards: [Option<SpinGuard<'_, Shard>>; SHARDS] = [const { None }; SHARDS];
        for (g, shard) in guards.iter_mut().zip(&self.shards) {
            *g = Some(shard.0.lock());
        }
        for shard in guards.iter_mut().flatten() {
            for s in shard.slots_mut().iter_mut().filter(|s| s.addr != 0) {
                let mut e = LiveEntry::unpack(s.meta);
                f(s.addr, &mut e);
                s.meta = e.pack();
            }
        }
        after();
    }

    /// Visits every live block without taking locks.
    ///
    /// # Safety
    /// Every shard lock must be held by the caller (see
    /// [`LiveTable::lock_for_fork`]), or the caller is a fork child's only
    /// thread.
    pub(crate) unsafe fn for_each_unlocked(&self, mut f: impl FnMut(usize, LiveEntry)) {
        for shard in &self.shards {
            // SAFETY: forwarded from the caller.
            let shard = unsafe { shard.0.get_unlocked() };
            for s in shard.slots().iter().filter(|s| s.addr != 0) {
                f(s.addr, LiveEntry::unpack(s.meta));
            }
        }
    }

    /// Number of tracked blocks, without taking locks.
    ///
    /// # Safety
    /// As [`LiveTable::for_each_unlocked`].
    pub(crate) unsafe fn len_unlocked(&self) -> usize {
        // SAFETY: forwarded from the caller.
        self.shards
            .iter()
            .map(|s| unsafe { s.0.get_unlocked() }.len)
            .sum()
    }

    /// Number of tracked blocks.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len).sum()
    }

    /// Bytes of memory the table occupies.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.mapped_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn lock_for_fork(&self) {
        for s in &self.shards {
            s.0.raw_lock();
        }
    }

    /// # Safety
    /// Only after [`LiveTable::lock_for_fork`] on this thread (or inherited by
    /// a fork child's only thread).
    pub(crate) unsafe fn unlock_after_fork(&self) {
        for s in &self.shards {
            // SAFETY: forwarded from the caller.
            unsafe { s.0.raw_unlock() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(size: u64, site: SiteId) -> LiveEntry {
        LiveEntry {
            size,
            site,
            sampled: size % 2 == 0,
            in_filter: site % 2 == 0,
        }
    }

    #[test]
    fn packs_every_field() {
        let e = LiveEntry {
            size: (1 << 38) - 1,
            site: MAX_SITES - 1,
            sampled: true,
            in_filter: false,
        };
        assert_eq!(LiveEntry::unpack(e.pack()), e);
        let huge = LiveEntry {
            size: u64::MAX,
            ..e
        };
        assert_eq!(LiveEntry::unpack(huge.pack()).size, (1 << 38) - 1);
    }

    #[test]
    fn matches_a_hashmap_under_random_churn() {
        let table = Box::leak(Box::new(LiveTable::new()));
        let mut model: HashMap<usize, LiveEntry> = HashMap::new();
        let mut x = 0x1234_5678u64;
        for step in 0..400_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Addresses from a small range so removals hit and clusters form.
            let addr = 16 * (1 + (x % 50_000) as usize);
            if x % 3 == 0 {
                assert_eq!(table.remove(addr), model.remove(&addr), "step {step}");
            } else {
                let e = entry(x >> 40, (x % 1000) as SiteId);
                let old = table.insert(addr, || e).unwrap();
                assert_eq!(old, model.insert(addr, e), "step {step}");
            }
        }
        assert_eq!(table.len(), model.len());
        let mut seen = HashMap::new();
        table.for_each(|a, e| {
            seen.insert(a, e);
        });
        assert_eq!(seen, model);
        assert!(table.memory_bytes() <= model.len() * 40 + SHARDS * MIN_CAPACITY * 16);
    }
}
