//! The side table of tracked live blocks: address → (size, site, flags).
//!
//! Blocks are remembered here rather than in headers, so blocks the profiler
//! never tracked carry no cost and no layout change. The table is split into
//! 256 shards by address region, each behind its own spin lock, so threads
//! freeing unrelated blocks rarely meet. Each shard is a bucketed cuckoo
//! table: a block lives in one of two buckets of four 16-byte slots (one
//! cache line each), chosen by two hashes of its address; an insert that
//! finds both full moves a resident to its other bucket. So a lookup reads at
//! most two lines and eight slots whatever the load, a removal just empties
//! its slot, and the table can run 85% full: shard memory comes from `mmap`
//! and grows by half at 85%, about 16 bytes / 0.7 ≈ 23 bytes per tracked
//! block on average. (Linear probing, before, had to stop at 70%, where an
//! insert's search took about 6 probes and a removal shifted the rest of
//! its cluster back: about 105 and 135 instructions per insert and removal
//! on the request workload, against about 80 and 45 now.)

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::raw_mem;
use super::spinlock::{SpinGuard, SpinLock};
use super::stack_table::{SiteId, MAX_SITES};

const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
/// Slots per bucket: one 64-byte cache line of 16-byte slots.
const BUCKET: usize = 4;
const BUCKET_BYTES: usize = BUCKET * std::mem::size_of::<Slot>();
/// Slots of a shard's first table (a multiple of [`BUCKET`]).
const MIN_CAPACITY: usize = 256;
const MAX_LOAD_PERCENT: usize = 85;
/// Residents moved at most to make room for one block before the shard
/// grows instead (at 85% load, an insert moves about one on average).
const MAX_KICKS: usize = 64;

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
    /// Each shard's slot array and capacity, mirrored outside its lock so
    /// that a caller can ask for an address's slot line before taking the
    /// lock (see [`LiveTable::prefetch`]). Written under the shard's lock
    /// when it grows, read without ordering: a stale pair only makes the
    /// prefetch miss. Apart from the locks, so that these lines stay shared
    /// in every core's cache while the lock lines move between cores.
    slot_hints: [SlotHint; SHARDS],
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

struct SlotHint {
    base: AtomicUsize,
    cap: AtomicUsize,
}

fn address_hash(addr: usize) -> u64 {
    (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Shards group addresses by region, not by a hash of the whole address:
/// allocators hand each thread memory from its own regions, so a thread's
/// inserts and frees keep meeting the same few shard locks, whose cache
/// lines then stay on its core. Within a shard, blocks are placed by hashes
/// of the whole address.
///
/// 2 MiB regions suit glibc (a thread's arena heap is 64 MiB) and jemalloc.
/// mimalloc hands out 64 KiB pages, one thread's each, interleaved with
/// other threads' within 2 MiB: there 64 KiB regions (see
/// [`use_page_regions`]). Measured on 4 threads, 2 cores: mimalloc's
/// contended shard locks fell from 175,000–592,000 to 3,700–28,000 per run
/// (with 256 shards; 64 left pages of different threads sharing shards)
/// and its full-mode time from 4.4× to 2.8× the allocator alone, where
/// 64 KiB regions made glibc's 10% slower (`bench/RESULTS.md`).
static REGION_SHIFT: AtomicU32 = AtomicU32::new(COARSE_REGION_SHIFT);
const COARSE_REGION_SHIFT: u32 = 21;
const PAGE_REGION_SHIFT: u32 = 16;

/// Shards by 64 KiB region from now on. Only before anything is tracked:
/// a block recorded under one mapping would not be found under the other.
pub(crate) fn use_page_regions() {
    REGION_SHIFT.store(PAGE_REGION_SHIFT, Ordering::Relaxed);
}

#[inline(always)]
fn shard_of(addr: usize) -> usize {
    let shift = REGION_SHIFT.load(Ordering::Relaxed);
    ((addr as u64 >> shift).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS)) as usize
}

fn home(hash: u64, buckets: usize) -> usize {
    ((u128::from(hash) * buckets as u128) >> 64) as usize
}

/// A second hash, independent of [`address_hash`], for the other bucket.
fn second_hash(addr: usize) -> u64 {
    let a = addr as u64;
    (a ^ (a >> 29)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// The two buckets (of `buckets`) where the block at `addr` may be.
fn buckets_of(addr: usize, buckets: usize) -> (usize, usize) {
    (
        home(address_hash(addr), buckets),
        home(second_hash(addr), buckets),
    )
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

    /// Buckets of [`BUCKET`] slots (one cache line each).
    fn buckets(&self) -> usize {
        self.cap / BUCKET
    }

    /// The slot holding `addr`, if it is tracked.
    #[inline]
    fn find(&self, addr: usize) -> Option<usize> {
        let slots = self.slots();
        if slots.is_empty() {
            return None;
        }
        let (b1, b2) = buckets_of(addr, self.buckets());
        position_in(bucket(slots, b1), |s| s.addr == addr)
            .map(|i| b1 * BUCKET + i)
            .or_else(|| position_in(bucket(slots, b2), |s| s.addr == addr).map(|i| b2 * BUCKET + i))
    }

    /// Puts a slot for an address that is absent: into a free slot of one
    /// of its two buckets, or else by moving residents to their other
    /// bucket (at most [`MAX_KICKS`] moves). When no place is found the
    /// moves are undone and the slot comes back: the table must grow.
    fn place(&mut self, slot: Slot) -> Result<(), Slot> {
        let buckets = self.buckets();
        if buckets == 0 {
            return Err(slot);
        }
        let slots = self.slots_mut();
        let (b1, b2) = buckets_of(slot.addr, buckets);
        if let Some(i) = free_in(slots, b1).or_else(|| free_in(slots, b2)) {
            slots[i] = slot;
            return Ok(());
        }
        let mut path = [0usize; MAX_KICKS];
        let mut carried = slot;
        let mut bucket = b1;
        // Victims rotate through the bucket's slots, starting at a place
        // that varies by address, so that two blocks do not evict each other
        // back and forth.
        let start = slot.addr >> 4;
        for (kick, step) in path.iter_mut().enumerate() {
            let victim = bucket * BUCKET + (start + kick) % BUCKET;
            *step = victim;
            carried = std::mem::replace(&mut slots[victim], carried);
            let (v1, v2) = buckets_of(carried.addr, buckets);
            bucket = if v1 == bucket { v2 } else { v1 };
            if let Some(i) = free_in(slots, bucket) {
                slots[i] = carried;
                return Ok(());
            }
        }
        for &victim in path.iter().rev() {
            carried = std::mem::replace(&mut slots[victim], carried);
        }
        Err(carried)
    }

    /// Moves every slot into a larger table (by half, or more if the
    /// placement fails at that size). False if the kernel refused memory;
    /// the table is then unchanged.
    fn grow(&mut self, mapped: &AtomicUsize) -> bool {
        let mut new_cap = self.cap.max(MIN_CAPACITY);
        'sizes: loop {
            new_cap = (new_cap + new_cap / 2).next_multiple_of(BUCKET);
            let bytes = new_cap * std::mem::size_of::<Slot>();
            let Some(mem) = raw_mem::map_zeroed(bytes) else {
                return false;
            };
            let mut fresh = Shard {
                slots: Some(mem.cast()),
                cap: new_cap,
                len: self.len,
            };
            for s in self.slots().iter().filter(|s| s.addr != 0) {
                if fresh.place(*s).is_err() {
                    // SAFETY: `mem` was mapped above with `bytes` and is
                    // referred to by nothing else.
                    unsafe { raw_mem::unmap(mem.cast(), bytes) };
                    continue 'sizes;
                }
            }
            let old = std::mem::replace(self, fresh);
            if let Some(old_slots) = old.slots {
                let old_bytes = old.cap * std::mem::size_of::<Slot>();
                // SAFETY: the old mapping was created by map_zeroed with this
                // size, every block in it was copied, and nothing refers to
                // it any more (it is read only under this shard's lock).
                unsafe { raw_mem::unmap(old_slots.cast(), old_bytes) };
                mapped.fetch_sub(old_bytes, Ordering::Relaxed);
            }
            mapped.fetch_add(bytes, Ordering::Relaxed);
            return true;
        }
    }

    /// Empties slot `i`.
    fn remove_at(&mut self, i: usize) {
        self.slots_mut()[i] = Slot { addr: 0, meta: 0 };
        self.len -= 1;
    }
}

/// The slots of bucket `b` (below `slots.len() / BUCKET`).
#[inline(always)]
fn bucket(slots: &[Slot], b: usize) -> &[Slot; BUCKET] {
    let first = b * BUCKET;
    slots[first..first + BUCKET]
        .try_into()
        .expect("a bucket is BUCKET slots")
}

/// The first slot of a bucket that satisfies `test`, unrolled: an insert
/// tests all eight slots of a block's two buckets.
#[inline(always)]
fn position_in(bucket: &[Slot; BUCKET], test: impl Fn(&Slot) -> bool) -> Option<usize> {
    (0..BUCKET).find(|&i| test(&bucket[i]))
}

/// An empty slot of bucket `b`.
fn free_in(slots: &[Slot], b: usize) -> Option<usize> {
    position_in(bucket(slots, b), |s| s.addr == 0).map(|i| b * BUCKET + i)
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
            slot_hints: [const {
                SlotHint {
                    base: AtomicUsize::new(0),
                    cap: AtomicUsize::new(0),
                }
            }; SHARDS],
            mapped_bytes: AtomicUsize::new(0),
        }
    }

    /// Starts loading what an insert or removal of `addr` will touch (the
    /// shard's lock line and the address's two buckets), so that the cache
    /// misses overlap with other work instead of following one another.
    /// Both lines are random for a large table: without this, a tracked
    /// allocation and its free each wait on two misses in a row.
    #[inline(always)]
    pub(crate) fn prefetch(&self, addr: usize) {
        let shard = shard_of(addr);
        raw_mem::prefetch_address(&self.shards[shard] as *const PaddedShard as usize);
        let hint = &self.slot_hints[shard];
        let cap = hint.cap.load(Ordering::Relaxed);
        if cap != 0 {
            let (b1, b2) = buckets_of(addr, cap / BUCKET);
            let base = hint.base.load(Ordering::Relaxed);
            raw_mem::prefetch_address(base.wrapping_add(b1 * BUCKET_BYTES));
            raw_mem::prefetch_address(base.wrapping_add(b2 * BUCKET_BYTES));
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
    #[inline(always)]
    pub(crate) fn insert(
        &self,
        addr: usize,
        entry_for: impl FnOnce() -> LiveEntry,
    ) -> Result<Option<LiveEntry>, ()> {
        let shard_index = shard_of(addr);
        let mut shard = self.shards[shard_index].0.lock();
        let entry = entry_for();
        let mut slot = Slot {
            addr,
            meta: entry.pack(),
        };
        if let Some(i) = shard.find(addr) {
            let old = LiveEntry::unpack(shard.slots()[i].meta);
            shard.slots_mut()[i] = slot;
            return Ok(Some(old));
        }
        let mut room = (shard.len + 1) * 100 <= shard.cap * MAX_LOAD_PERCENT;
        loop {
            if room {
                match shard.place(slot) {
                    Ok(()) => break,
                    Err(back) => slot = back,
                }
            }
            if !shard.grow(&self.mapped_bytes) {
                return Err(());
            }
            let hint = &self.slot_hints[shard_index];
            hint.base.store(
                shard.slots.map_or(0, |p| p.as_ptr() as usize),
                Ordering::Relaxed,
            );
            hint.cap.store(shard.cap, Ordering::Relaxed);
            room = true;
        }
        shard.len += 1;
        Ok(None)
    }

    /// Changes the entry of a live block in place; false if it is not tracked.
    pub(crate) fn update(&self, addr: usize, f: impl FnOnce(&mut LiveEntry)) -> bool {
        let mut shard = self.shard(addr).lock();
        let Some(i) = shard.find(addr) else {
            return false;
        };
        let slot = &mut shard.slots_mut()[i];
        let mut entry = LiveEntry::unpack(slot.meta);
        f(&mut entry);
        slot.meta = entry.pack();
        true
    }

    /// Forgets a block; returns what was recorded for it.
    #[inline(always)]
    pub(crate) fn remove(&self, addr: usize) -> Option<LiveEntry> {
        self.prefetch(addr);
        let shard = self.shard(addr).lock();
        Self::remove_locked(shard, addr)
    }

    /// Like [`LiveTable::remove`], but gives up (returns `None`) instead of
    /// waiting if the shard is locked: for frees that arrive while this thread
    /// may itself hold the lock (a signal handler inside the profiler).
    pub(crate) fn try_remove(&self, addr: usize) -> Option<LiveEntry> {
        let shard = self.shard(addr).try_lock()?;
        Self::remove_locked(shard, addr)
    }

    fn remove_locked(mut shard: SpinGuard<'_, Shard>, addr: usize) -> Option<LiveEntry> {
        let i = shard.find(addr)?;
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

    /// Fills one table of the first size until a block finds no place: every
    /// block placed before stays findable, and the refused placement leaves
    /// the table exactly as it was (its moves undone).
    #[test]
    fn a_refused_placement_changes_nothing() {
        let bytes = MIN_CAPACITY * std::mem::size_of::<Slot>();
        let mem = raw_mem::map_zeroed(bytes).expect("memory for a test table");
        let mut shard = Shard {
            slots: Some(mem.cast()),
            cap: MIN_CAPACITY,
            len: 0,
        };
        let mut placed = Vec::new();
        let refused = (1..).map(|k| 48 * k).find_map(|addr| {
            let before: Vec<(usize, u64)> =
                shard.slots().iter().map(|s| (s.addr, s.meta)).collect();
            match shard.place(Slot {
                addr,
                meta: addr as u64,
            }) {
                Ok(()) => {
                    shard.len += 1;
                    placed.push(addr);
                    None
                }
                Err(back) => {
                    let after: Vec<(usize, u64)> =
                        shard.slots().iter().map(|s| (s.addr, s.meta)).collect();
                    assert_eq!(before, after, "a refused placement moved blocks");
                    Some(back.addr)
                }
            }
        });
        assert_eq!(refused, Some(48 * (placed.len() + 1)));
        // Two choices of four slots fill most of the table before refusing.
        assert!(
            placed.len() * 100 >= MIN_CAPACITY * 90,
            "{} placed",
            placed.len()
        );
        for &addr in &placed {
            let i = shard.find(addr).expect("a placed block is found");
            assert_eq!(shard.slots()[i].meta, addr as u64);
        }
        let mapped = AtomicUsize::new(bytes);
        assert!(shard.grow(&mapped));
        assert_eq!(shard.len, placed.len());
        assert!(placed.iter().all(|&a| shard.find(a).is_some()));
        assert_eq!(
            mapped.load(Ordering::Relaxed),
            shard.cap * std::mem::size_of::<Slot>()
        );
        // SAFETY: the test owns the shard's mapping; nothing refers to it.
        unsafe { raw_mem::unmap(shard.slots.unwrap().cast(), mapped.into_inner()) };
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
