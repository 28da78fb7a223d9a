//! Interning of call stacks: each distinct (stack, label set) becomes a small
//! integer [`SiteId`] once, and per-site allocation counters live beside it.
//!
//! Lookups are lock-free (an open-addressing index of atomics, probed with
//! acquire loads), because in `full` mode every allocation looks up its stack
//! and almost every lookup finds one that exists. Inserts take one spin lock.
//! Records and frames are never moved or freed, so a [`SiteId`] handed out
//! stays valid for the life of the process; an index that has grown is
//! replaced, and the old one is kept for readers still probing it (the sizes
//! double, so all old indexes together are smaller than the current one).

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::raw_mem::{self, Arena};
use super::spinlock::SpinLock;

/// Index of an interned (stack, labels) pair.
pub type SiteId = u32;

/// Site ids fit in 24 bits (they are packed into live-table entries).
pub(crate) const MAX_SITES: u32 = 1 << 24;
/// Site charged when the table is full or out of memory: no frames.
pub(crate) const OVERFLOW_SITE: SiteId = 0;

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = (MAX_SITES as usize) >> CHUNK_BITS;

/// One interned site: its identity (read by every lookup, written once) and
/// its allocation counters (written by every allocation), on separate cache
/// lines so that counting never slows down other threads' lookups.
#[repr(C)]
pub(crate) struct SiteRecord {
    key: SiteKey,
    pub(crate) counters: SiteCounters,
}

#[repr(C, align(64))]
struct SiteKey {
    hash: u64,
    frames: *const usize,
    depth: u32,
    labels: u32,
    /// `unloaded::epoch()` when the site was made: which unloads of code
    /// (`dlclose`) came after its frames were captured.
    epoch: u32,
}

/// The counters split exact figures (blocks tracked one by one in `full`
/// mode) from estimates (sampled blocks, each already scaled by its weight),
/// so that exact counts stay integers.
#[repr(C, align(64))]
pub(crate) struct SiteCounters {
    pub(crate) exact_objects: AtomicU64,
    pub(crate) exact_bytes: AtomicU64,
    /// `f64` bits of the estimated number of allocations.
    pub(crate) estimated_objects: AtomicU64,
    /// `f64` bits of the estimated bytes allocated.
    pub(crate) estimated_bytes: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SiteRecord>() == 128);

impl SiteRecord {
    /// Return addresses, innermost first.
    pub(crate) fn frames(&self) -> &[usize] {
        if self.key.frames.is_null() {
            return &[];
        }
        // SAFETY: `frames` points to `depth` words copied into the arena when
        // the record was created; arena memory is never freed or rewritten.
        unsafe { std::slice::from_raw_parts(self.key.frames, self.key.depth as usize) }
    }

    pub(crate) fn labels(&self) -> u32 {
        self.key.labels
    }

    /// Return addresses, innermost first, with those in code unloaded since
    /// they were captured marked (see `unloaded::mark`).
    pub(crate) fn frames_now(&self) -> Vec<usize> {
        let mut frames = self.frames().to_vec();
        super::unloaded::mark(&mut frames, self.key.epoch);
        frames
    }

    pub(crate) fn add_exact(&self, bytes: u64) {
        self.counters.exact_objects.fetch_add(1, Ordering::Relaxed);
        self.counters
            .exact_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_estimate(&self, objects: f64, bytes: f64) {
        add_f64(&self.counters.estimated_objects, objects);
        add_f64(&self.counters.estimated_bytes, bytes);
    }
}

fn add_f64(cell: &AtomicU64, value: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + value).to_bits())
    });
}

/// Reads an `f64` counter written by [`SiteRecord::add_estimate`].
pub(crate) fn load_f64(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

/// A thread's memory of the sites it interned lately: a stack met again
/// (a loop's allocations, a request's repeated calls) is recognised by
/// comparing its frames with one remembered site's, without hashing them
/// or probing the shared index. Direct-mapped on the innermost frames and
/// the depth; a slot holds a site id + 1, 0 for none.
pub(crate) struct RecentSites([Cell<u32>; RECENT_SITES]);

const RECENT_SITES: usize = 64;
/// Innermost frames that choose a stack's slot: deep enough to reach past
/// the allocating library's frames (`format!`'s, a collection's growth)
/// into the code that called it.
const RECENT_KEY_FRAMES: usize = 6;

impl RecentSites {
    pub(crate) const fn new() -> Self {
        RecentSites([const { Cell::new(0) }; RECENT_SITES])
    }

    /// The slot for a stack: mixes the depth and the innermost return
    /// addresses, which tell apart most call paths that meet in one
    /// allocating function.
    fn slot(&self, frames: &[usize]) -> &Cell<u32> {
        let mut key = frames.len() as u64;
        for &f in frames.iter().take(RECENT_KEY_FRAMES) {
            key = (key ^ f as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        &self.0[(key >> (64 - RECENT_SITES.trailing_zeros())) as usize]
    }
}

/// Header of an index allocation; `cap` slots follow it.
#[repr(C)]
struct IndexHeader {
    cap: usize,
}

/// Hash of a stack and its label set.
pub(crate) fn hash_site(frames: &[usize], labels: u32) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ u64::from(labels);
    for &f in frames {
        h = (h ^ f as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    h ^ (h >> 32)
}

/// Maps a hash onto `[0, cap)` without a division.
fn reduce(hash: u64, cap: usize) -> usize {
    ((u128::from(hash) * cap as u128) >> 64) as usize
}

fn slot_value(hash: u64, id: SiteId) -> u64 {
    (hash & 0xFFFF_FFFF_0000_0000) | (u64::from(id) + 1)
}

struct Inserter {
    arena: Arena,
    /// Sites used in the current index, for its load factor.
    indexed: usize,
}

/// Where the table keeps its records, for a reader of this process's
/// memory from outside: see `collect::tables`.
pub(crate) mod layout {
    use super::*;

    pub(crate) const CHUNKS_OFFSET: usize = std::mem::offset_of!(StackTable, chunks);
    pub(crate) const COUNT_OFFSET: usize = std::mem::offset_of!(StackTable, count);
    pub(crate) const CHUNK_RECORDS: usize = CHUNK_LEN;
    pub(crate) const CHUNK_COUNT: usize = CHUNKS;
    pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<SiteRecord>();
    pub(crate) const FRAMES_OFFSET: usize =
        std::mem::offset_of!(SiteRecord, key) + std::mem::offset_of!(SiteKey, frames);
    pub(crate) const DEPTH_OFFSET: usize =
        std::mem::offset_of!(SiteRecord, key) + std::mem::offset_of!(SiteKey, depth);
}

pub(crate) struct StackTable {
    inserter: SpinLock<Inserter>,
    index: AtomicPtr<IndexHeader>,
    chunks: [AtomicPtr<SiteRecord>; CHUNKS],
    /// Number of records published; ids below it are valid.
    count: AtomicU32,
}

impl StackTable {
    pub(crate) const fn new() -> Self {
        StackTable {
            inserter: SpinLock::new(Inserter {
                arena: Arena::new(),
                indexed: 0,
            }),
            index: AtomicPtr::new(std::ptr::null_mut()),
            chunks: [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS],
            count: AtomicU32::new(0),
        }
    }

    /// Number of sites interned (ids are `0..len`).
    pub(crate) fn len(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// The record of a site id below [`StackTable::len`].
    pub(crate) fn record(&self, id: SiteId) -> &SiteRecord {
        let chunk = self.chunks[(id >> CHUNK_BITS) as usize].load(Ordering::Acquire);
        assert!(!chunk.is_null(), "site id {id} was never published");
        // SAFETY: a published id's chunk pointer is non-null (checked), points
        // to CHUNK_LEN records, and the record was initialised before the id
        // was published with release ordering; records are never freed.
        unsafe { &*chunk.add(id as usize & (CHUNK_LEN - 1)) }
    }

    fn slots(header: NonNull<IndexHeader>) -> &'static [AtomicU64] {
        // SAFETY: an index allocation is a header followed by `cap` zeroed
        // u64 slots (see `new_index`), never freed.
        unsafe {
            let cap = header.as_ref().cap;
            let first = header.as_ptr().add(1).cast::<AtomicU64>();
            std::slice::from_raw_parts(first, cap)
        }
    }

    fn find_in(
        &self,
        header: NonNull<IndexHeader>,
        hash: u64,
        frames: &[usize],
        labels: u32,
    ) -> Option<SiteId> {
        let slots = Self::slots(header);
        let cap = slots.len();
        let mut i = reduce(hash, cap);
        for _ in 0..cap {
            let v = slots[i].load(Ordering::Acquire);
            if v == 0 {
                return None;
            }
            if v & 0xFFFF_FFFF_0000_0000 == hash & 0xFFFF_FFFF_0000_0000 {
                let id = (v & 0xFFFF_FFFF) as SiteId - 1;
                let rec = self.record(id);
                if rec.key.hash == hash && rec.key.labels == labels && rec.frames() == frames {
                    return Some(id);
                }
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        None
    }

    /// [`StackTable::intern`], first asking the calling thread's `recent`
    /// sites: one comparison of frames when the stack was met lately.
    #[inline]
    pub(crate) fn intern_recent(
        &self,
        recent: &RecentSites,
        frames: &[usize],
        labels: u32,
    ) -> SiteId {
        let slot = recent.slot(frames);
        let remembered = slot.get();
        if remembered != 0 {
            let rec = self.record(remembered - 1);
            if rec.key.labels == labels && rec.frames() == frames {
                return remembered - 1;
            }
        }
        let id = self.intern(frames, labels);
        if id != OVERFLOW_SITE {
            slot.set(id + 1);
        }
        id
    }

    /// Returns the site of `frames` (innermost first) with `labels`,
    /// interning it if new. Falls back to [`OVERFLOW_SITE`] when the table is
    /// full or memory runs out.
    pub(crate) fn intern(&self, frames: &[usize], labels: u32) -> SiteId {
        let hash = hash_site(frames, labels);
        if let Some(header) = NonNull::new(self.index.load(Ordering::Acquire)) {
            if let Some(id) = self.find_in(header, hash, frames, labels) {
                return id;
            }
        }
        let mut inserter = self.inserter.lock();
        if self.len() == 0 && self.push_record(&mut inserter, 0, &[], 0).is_none() {
            return OVERFLOW_SITE;
        }
        let mut header = NonNull::new(self.index.load(Ordering::Acquire));
        if let Some(h) = header {
            if let Some(id) = self.find_in(h, hash, frames, labels) {
                return id;
            }
        }
        let needs_growth = match header {
            None => true,
            // SAFETY: published index headers are valid forever.
            Some(h) => (inserter.indexed + 1) * 10 > unsafe { h.as_ref().cap } * 7,
        };
        if needs_growth {
            match self.grow_index(&inserter, header) {
                Some(h) => header = Some(h),
                None => return OVERFLOW_SITE,
            }
        }
        let Some(header) = header else {
            return OVERFLOW_SITE;
        };
        let Some(id) = self.push_record(&mut inserter, hash, frames, labels) else {
            return OVERFLOW_SITE;
        };
        let slots = Self::slots(header);
        let mut i = reduce(hash, slots.len());
        while slots[i].load(Ordering::Relaxed) != 0 {
            i = if i + 1 == slots.len() { 0 } else { i + 1 };
        }
        slots[i].store(slot_value(hash, id), Ordering::Release);
        inserter.indexed += 1;
        id
    }

    /// Creates and publishes a record. Caller holds the inserter lock.
    fn push_record(
        &self,
        inserter: &mut Inserter,
        hash: u64,
        frames: &[usize],
        labels: u32,
    ) -> Option<SiteId> {
        let id = self.count.load(Ordering::Relaxed);
        if id >= MAX_SITES {
            return None;
        }
        let chunk_slot = &self.chunks[(id >> CHUNK_BITS) as usize];
        let mut chunk = chunk_slot.load(Ordering::Relaxed);
        if chunk.is_null() {
            chunk = raw_mem::map_zeroed(CHUNK_LEN * std::mem::size_of::<SiteRecord>())?
                .as_ptr()
                .cast();
            chunk_slot.store(chunk, Ordering::Release);
        }
        let stored_frames = if frames.is_empty() {
            std::ptr::null()
        } else {
            let p = inserter
                .arena
                .alloc(std::mem::size_of_val(frames))?
                .as_ptr()
                .cast::<usize>();
            // SAFETY: the arena returned space for `frames.len()` words,
            // disjoint from `frames`.
            unsafe { std::ptr::copy_nonoverlapping(frames.as_ptr(), p, frames.len()) };
            p.cast_const()
        };
        // SAFETY: `chunk` holds CHUNK_LEN records and this slot is unused
        // (ids are handed out once, under the inserter lock); nobody reads it
        // before `count` is published below.
        unsafe {
            chunk.add(id as usize & (CHUNK_LEN - 1)).write(SiteRecord {
                key: SiteKey {
                    hash,
                    frames: stored_frames,
                    depth: frames.len() as u32,
                    labels,
                    epoch: super::unloaded::epoch(),
                },
                counters: SiteCounters {
                    exact_objects: AtomicU64::new(0),
                    exact_bytes: AtomicU64::new(0),
                    estimated_objects: AtomicU64::new(0f64.to_bits()),
                    estimated_bytes: AtomicU64::new(0f64.to_bits()),
                },
            });
        }
        self.count.store(id + 1, Ordering::Release);
        Some(id)
    }

    /// Replaces the index by one twice as large. Caller holds the inserter
    /// lock. The old index stays allocated for concurrent readers.
    fn grow_index(
        &self,
        inserter: &Inserter,
        old: Option<NonNull<IndexHeader>>,
    ) -> Option<NonNull<IndexHeader>> {
        let _ = inserter;
        // SAFETY: published index headers are valid forever.
        let old_cap = old.map_or(0, |h| unsafe { h.as_ref().cap });
        let cap = (old_cap * 2).max(4096);
        let bytes = std::mem::size_of::<IndexHeader>() + cap * 8;
        let header = raw_mem::map_zeroed(bytes)?.cast::<IndexHeader>();
        // SAFETY: fresh, exclusively owned mapping large enough for the header.
        unsafe { header.as_ptr().write(IndexHeader { cap }) };
        let slots = Self::slots(header);
        if let Some(old) = old {
            for v in Self::slots(old) {
                let v = v.load(Ordering::Relaxed);
                if v == 0 {
                    continue;
                }
                let hash = self.record((v & 0xFFFF_FFFF) as SiteId - 1).key.hash;
                let mut i = reduce(hash, cap);
                while slots[i].load(Ordering::Relaxed) != 0 {
                    i = if i + 1 == cap { 0 } else { i + 1 };
                }
                slots[i].store(v, Ordering::Relaxed);
            }
        }
        self.index.store(header.as_ptr(), Ordering::Release);
        Some(header)
    }

    /// Bytes of memory the table holds (index, records, frames), approximate.
    pub(crate) fn memory_bytes(&self) -> usize {
        let records = self.len() as usize * std::mem::size_of::<SiteRecord>();
        let index = NonNull::new(self.index.load(Ordering::Acquire))
            // SAFETY: published index headers are valid forever.
            .map_or(0, |h| unsafe { h.as_ref().cap } * 8);
        records + index * 2
    }

    /// Locks inserts (fork handlers).
    pub(crate) fn lock_for_fork(&self) {
        self.inserter.raw_lock();
    }

    /// # Safety
    /// Only after [`StackTable::lock_for_fork`] on this thread (or inherited by
    /// a fork child's only thread).
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inserter.raw_unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_each_stack_once_and_keeps_ids_stable_across_growth() {
        let table = Box::leak(Box::new(StackTable::new()));
        let mut ids = Vec::new();
        for i in 0..10_000usize {
            let frames = [i, i + 1, 7];
            ids.push(table.intern(&frames, (i % 3) as u32));
        }
        for (i, &expected) in ids.iter().enumerate() {
            let frames = [i, i + 1, 7];
            let id = table.intern(&frames, (i % 3) as u32);
            assert_eq!(id, expected);
            assert_eq!(table.record(id).frames(), &frames);
            assert_ne!(id, OVERFLOW_SITE);
        }
        // Same frames, other labels: another site.
        assert_ne!(table.intern(&[0, 1, 7], 9), ids[0]);
        assert_eq!(table.len(), 10_002);
    }

    /// The recent-sites memory answers what the table answers: for stacks
    /// met again, for stacks that share their slot (more stacks than slots,
    /// same innermost frames), and for the same stack under other labels.
    #[test]
    fn recent_sites_agree_with_the_table() {
        let table = Box::leak(Box::new(StackTable::new()));
        let recent = RecentSites::new();
        let stacks: Vec<Vec<usize>> = (0..40)
            .map(|k| vec![0x1000, 0x2000, 0x3000, 0x4000 + k % 5, 0x5000 + k])
            .collect();
        for round in 0..3 {
            for (k, frames) in stacks.iter().enumerate() {
                let labels = (k % 2) as u32;
                let via_recent = table.intern_recent(&recent, frames, labels);
                assert_eq!(
                    via_recent,
                    table.intern(frames, labels),
                    "round {round}, stack {k}"
                );
                assert_eq!(table.record(via_recent).frames(), &frames[..]);
                assert_eq!(table.record(via_recent).labels(), labels);
                let other_labels = table.intern_recent(&recent, frames, labels + 2);
                assert_ne!(other_labels, via_recent);
            }
        }
        // Twice the stacks, once per label set, plus the overflow site.
        assert_eq!(table.len(), 1 + 2 * stacks.len() as u32);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let table: &'static StackTable = Box::leak(Box::new(StackTable::new()));
        let results: Vec<Vec<SiteId>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..5000usize).map(|i| table.intern(&[i, 42], 0)).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        assert_eq!(table.len(), 5001);
    }
}
