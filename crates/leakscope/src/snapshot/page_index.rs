//! From a 4 KiB page to the first and last block touching it, for the
//! conservative scan's lookups (one per word that may be a pointer).
//!
//! Pages are grouped by the 2 MiB region they lie in: a small hash
//! directory maps each region that any block touches to a dense leaf of 512
//! entries, one per page. Heaps are dense within regions (glibc's arenas,
//! the `[heap]`) and sparse between them, so the leaves hold about 8 bytes
//! per page of heap (2 MiB per GiB, cache-friendly) and the directory a few
//! kilobytes, where a hash table keyed by page would be 16 bytes per slot,
//! twice as many slots as pages, and a cache miss per lookup.

use super::mmap_vec::MmapVec;

pub(crate) const PAGE_SHIFT: u32 = 12;
/// Pages per leaf: a 2 MiB region.
const LEAF_SHIFT: u32 = 9;
const LEAF_PAGES: usize = 1 << LEAF_SHIFT;
/// A leaf entry of a page no block touches.
const EMPTY: (u32, u32) = (u32::MAX, 0);

pub(crate) struct PageIndex {
    /// `(region number + 1, leaf)`; a zero key marks an empty slot.
    directory: MmapVec<(u64, u32)>,
    mask: usize,
    /// `LEAF_PAGES` entries per region: `(first block, last block)`.
    leaves: MmapVec<(u32, u32)>,
}

impl PageIndex {
    /// Indexes `spans` (`(start, end)` of each block, in address order,
    /// not overlapping).
    pub(crate) fn build(spans: &[(u64, u64)]) -> Option<PageIndex> {
        let regions = regions_touched(spans);
        let cap = (regions * 2).next_power_of_two().max(16);
        let mut index = PageIndex {
            directory: MmapVec::filled(cap, (0, 0))?,
            mask: cap - 1,
            leaves: MmapVec::filled(regions.checked_mul(LEAF_PAGES)?, EMPTY)?,
        };
        let mut leaves_used = 0u32;
        // The region last added and its leaf: blocks come in address order,
        // so each region is added once, by the first block touching it.
        let mut current = (u64::MAX, 0u32);
        for (i, &(start, end)) in spans.iter().enumerate() {
            let last = (end.max(start + 1) - 1) >> PAGE_SHIFT;
            for page in (start >> PAGE_SHIFT)..=last {
                let region = page >> LEAF_SHIFT;
                if region != current.0 {
                    current = (region, leaves_used);
                    index.insert(region, leaves_used);
                    leaves_used += 1;
                }
                let entry = &mut index.leaves[leaf_slot(current.1, page)];
                if entry.0 == u32::MAX {
                    *entry = (i as u32, i as u32);
                } else {
                    entry.1 = i as u32;
                }
            }
        }
        Some(index)
    }

    fn home(&self, region: u64) -> usize {
        (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    fn insert(&mut self, region: u64, leaf: u32) {
        let mut i = self.home(region);
        while self.directory[i].0 != 0 {
            i = (i + 1) & self.mask;
        }
        self.directory[i] = (region + 1, leaf);
    }

    /// Where `page`'s entry is in the leaves, if any block touches its region.
    #[inline(always)]
    pub(crate) fn slot(&self, page: u64) -> Option<usize> {
        let region = page >> LEAF_SHIFT;
        let mut i = self.home(region);
        loop {
            let (key, leaf) = self.directory[i];
            if key == region + 1 {
                return Some(leaf_slot(leaf, page));
            }
            if key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The entry at `slot` (from [`PageIndex::slot`]), for prefetching.
    #[inline(always)]
    pub(crate) fn entry(&self, slot: usize) -> &(u32, u32) {
        &self.leaves[slot]
    }

    /// The first and last block touching the page whose entry is at `slot`.
    #[inline(always)]
    pub(crate) fn blocks_at(&self, slot: usize) -> Option<(u32, u32)> {
        let e = self.leaves[slot];
        (e.0 != u32::MAX).then_some(e)
    }

    /// The first and last block touching `page`.
    #[inline(always)]
    pub(crate) fn get(&self, page: u64) -> Option<(u32, u32)> {
        self.blocks_at(self.slot(page)?)
    }
}

#[inline(always)]
fn leaf_slot(leaf: u32, page: u64) -> usize {
    leaf as usize * LEAF_PAGES + (page as usize & (LEAF_PAGES - 1))
}

/// How many 2 MiB regions the spans touch (each counted once: the spans
/// are in address order).
fn regions_touched(spans: &[(u64, u64)]) -> usize {
    let mut n = 0;
    let mut last_counted = u64::MAX;
    for &(start, end) in spans {
        let first = start >> (PAGE_SHIFT + LEAF_SHIFT);
        let last = (end.max(start + 1) - 1) >> (PAGE_SHIFT + LEAF_SHIFT);
        let from = if last_counted != u64::MAX && first <= last_counted {
            last_counted + 1
        } else {
            first
        };
        if last >= from {
            n += (last - from + 1) as usize;
            last_counted = last;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks in three regions far apart, one spanning several regions.
    #[test]
    fn finds_the_blocks_of_every_page_and_none_elsewhere() {
        let base = 0x5555_0000_0000u64;
        let spans = [
            (base + 16, base + 48),
            (base + 64, base + 4096 + 8),
            (base + 8192, base + 8200),
            // 5 MiB from far away: three regions.
            (base + (1 << 30), base + (1 << 30) + (5 << 20)),
            (0x7f00_0000_0000, 0x7f00_0000_0010),
        ];
        let index = PageIndex::build(&spans).unwrap();
        let page = |a: u64| a >> PAGE_SHIFT;
        assert_eq!(index.get(page(base)), Some((0, 1)));
        assert_eq!(index.get(page(base + 4096)), Some((1, 1)));
        assert_eq!(index.get(page(base + 8192)), Some((2, 2)));
        assert_eq!(index.get(page(base + 3 * 4096)), None);
        for off in [0, 2 << 20, (5 << 20) - 1] {
            assert_eq!(index.get(page(base + (1 << 30) + off)), Some((3, 3)));
        }
        assert_eq!(index.get(page(base + (1 << 30) + (5 << 20))), None);
        assert_eq!(index.get(page(0x7f00_0000_0000)), Some((4, 4)));
        assert_eq!(index.get(page(0x7f00_0020_0000)), None);
        assert_eq!(regions_touched(&spans), 1 + 3 + 1);
    }

    #[test]
    fn regions_are_counted_once_when_blocks_share_them() {
        let spans: Vec<(u64, u64)> = (0..10_000u64)
            .map(|i| (0x1000_0000 + i * 512, 0x1000_0000 + i * 512 + 512))
            .collect();
        // 5,120,000 bytes from a 2 MiB boundary: three regions.
        assert_eq!(regions_touched(&spans), 3);
        let index = PageIndex::build(&spans).unwrap();
        assert_eq!(index.get(0x1000_0000 >> PAGE_SHIFT), Some((0, 7)));
    }
}
