//! Where glibc's malloc keeps what the walker reads, per glibc version.
//!
//! Offsets are for 64-bit targets (x86-64, aarch64): `struct malloc_state`
//! (an arena), `heap_info` (the header of each 64 MiB heap of a non-main
//! arena) and `tcache_perthread_struct`. They were read from glibc's
//! `malloc/malloc.c` and `malloc/arena.c` of each release; the walker also
//! checks them against the live structures, so a layout that does not fit
//! fails the snapshot instead of giving a wrong answer.

/// The layout of one family of glibc releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The releases this layout was read from.
    pub(crate) releases: &'static str,
    /// Offset of `fastbinsY` (ten chunk pointers, safe-linked lists), if
    /// the release has fast bins.
    pub(crate) fastbins: Option<u64>,
    /// Offset of `top` (the chunk at the end of the arena's current heap).
    pub(crate) top: u64,
    /// Offset of `bins` (127 `fd`/`bk` pairs, the first is the unsorted bin).
    pub(crate) bins: u64,
    /// Offset of `next` (the circular list of arenas).
    pub(crate) next: u64,
    /// Offset of `system_mem` (bytes the arena got from the system).
    pub(crate) system_mem: u64,
    /// `sizeof (struct malloc_state)`.
    pub(crate) arena_size: u64,
    /// `sizeof (heap_info)`: a non-main heap's first chunk follows it (or,
    /// in an arena's first heap, the arena itself follows it).
    pub(crate) heap_info_size: u64,
    /// Entries of `tcache_perthread_struct` (its 16-bit counts come first).
    pub(crate) tcache_bins: usize,
    /// The tcache bins holding one chunk size each (the rest, from 2.42,
    /// hold ranges of larger sizes).
    pub(crate) tcache_small_bins: usize,
    /// Whether a tcache bin's 16-bit number counts free slots (2.42 on)
    /// rather than the chunks in the bin.
    pub(crate) tcache_counts_slots: bool,
    /// How far before `mp_.sbrk_base` the 32-bit `mp_.n_mmaps` sits.
    pub(crate) n_mmaps_before_sbrk_base: u64,
    /// How an mmapped chunk records its mapping: until 2.42 its size is the
    /// mapping's bytes from the chunk on, and `prev_size` the offset of the
    /// chunk in the mapping; from 2.43 its size leaves out the header, and
    /// `prev_size`'s low bit marks huge pages.
    pub(crate) mmapped: MmappedEncoding,
    /// Whether glibc's count of mmapped bytes (`mp_.mmapped_mem`) is the
    /// sum of the mappings. In 2.43 it is not: growing an mmapped chunk with
    /// `realloc` (`mremap_chunk`) adds 16 bytes too many each time (it
    /// subtracts the new chunk size, which no longer counts the header).
    pub(crate) mmapped_bytes_exact: bool,
}

/// See [`Layout::mmapped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MmappedEncoding {
    SizeWithHeader,
    SizeWithoutHeader,
}

impl MmappedEncoding {
    /// For an mmapped chunk's `prev_size` and size (flags removed): its
    /// offset in the mapping, the mapping's bytes from its start, and the
    /// bytes the user may use.
    pub(crate) fn decode(self, prev_size: u64, size: u64) -> (u64, u64, u64) {
        match self {
            MmappedEncoding::SizeWithHeader => {
                (prev_size, prev_size + size, size.saturating_sub(HEADER))
            }
            MmappedEncoding::SizeWithoutHeader => {
                let offset = prev_size & !1;
                (offset, offset + size + HEADER, size.saturating_sub(8))
            }
        }
    }
}

/// Bins of an arena: `NBINS - 1` pairs of list heads.
pub(crate) const BIN_PAIRS: usize = 127;
/// Fast bins (`NFASTBINS` on 64-bit targets).
pub(crate) const FAST_BINS: usize = 10;
/// Non-main heaps are this large and aligned to it (`HEAP_MAX_SIZE`, twice
/// the largest default mmap threshold on 64-bit targets).
pub(crate) const HEAP_MAX: u64 = 64 << 20;
/// Chunk header flags, in the low bits of the size word.
pub(crate) const PREV_INUSE: u64 = 1;
pub(crate) const IS_MMAPPED: u64 = 2;
pub(crate) const NON_MAIN_ARENA: u64 = 4;
pub(crate) const SIZE_FLAGS: u64 = 7;
/// The smallest chunk (`MINSIZE`).
pub(crate) const MIN_CHUNK: u64 = 32;
/// The chunk header (`CHUNK_HDR_SZ`): the user's block starts this far in.
pub(crate) const HEADER: u64 = 16;

/// 2.32 to 2.34: safe-linked free lists; `heap_info` without `pagesize`.
const GLIBC_2_32: Layout = Layout {
    releases: "2.32-2.34",
    fastbins: Some(16),
    top: 96,
    bins: 112,
    next: 2160,
    system_mem: 2184,
    arena_size: 2200,
    heap_info_size: 32,
    tcache_bins: 64,
    tcache_small_bins: 64,
    tcache_counts_slots: false,
    n_mmaps_before_sbrk_base: 32,
    mmapped: MmappedEncoding::SizeWithHeader,
    mmapped_bytes_exact: true,
};

/// 2.35 to 2.41 (Debian 12's 2.36, Ubuntu 24.04's 2.39, Debian 13's 2.41):
/// `heap_info` gained `pagesize`.
const GLIBC_2_35: Layout = Layout {
    releases: "2.35-2.41",
    heap_info_size: 48,
    n_mmaps_before_sbrk_base: 36,
    ..GLIBC_2_32
};

/// 2.42: tcache bins for large chunks (76 bins; counts become free slots).
const GLIBC_2_42: Layout = Layout {
    releases: "2.42",
    tcache_bins: 76,
    tcache_counts_slots: true,
    ..GLIBC_2_35
};

/// 2.43 (Debian's current development release, Ubuntu 26.04): fast bins
/// removed from the arena; mmapped chunks encoded anew.
const GLIBC_2_43: Layout = Layout {
    releases: "2.43",
    fastbins: None,
    top: 8,
    bins: 24,
    next: 2072,
    system_mem: 2096,
    arena_size: 2112,
    mmapped: MmappedEncoding::SizeWithoutHeader,
    mmapped_bytes_exact: false,
    ..GLIBC_2_42
};

/// The layout of glibc `major.minor`, if known.
pub(crate) fn for_version(major: u32, minor: u32) -> Option<&'static Layout> {
    match (major, minor) {
        (2, 32..=34) => Some(&GLIBC_2_32),
        (2, 35..=41) => Some(&GLIBC_2_35),
        (2, 42) => Some(&GLIBC_2_42),
        (2, 43) => Some(&GLIBC_2_43),
        _ => None,
    }
}

/// Parses `gnu_get_libc_version()`'s text ("2.36").
pub(crate) fn parse_version(text: &[u8]) -> Option<(u32, u32)> {
    let mut parts = text.split(|&b| b == b'.');
    let number = |p: Option<&[u8]>| -> Option<u32> {
        let p = p?;
        let digits = p.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&p[..digits]).ok()?.parse().ok()
    };
    Some((number(parts.next())?, number(parts.next())?))
}

impl Layout {
    /// The chunk size of a thread's `tcache_perthread_struct`: its 16-bit
    /// counts, its entry pointers, and the chunk header, rounded as
    /// `request2size` does.
    pub(crate) fn tcache_chunk_size(&self) -> u64 {
        let bytes = (self.tcache_bins as u64 * 2).next_multiple_of(8) + self.tcache_bins as u64 * 8;
        (bytes + 8 + 15) & !15
    }

    /// The chunk size a small tcache bin holds.
    pub(crate) fn tcache_bin_chunk_size(&self, bin: usize) -> u64 {
        MIN_CHUNK + 16 * bin as u64
    }

    /// The address of the first chunk of a non-main arena's first heap.
    pub(crate) fn first_chunk_after_arena(&self, arena: u64) -> u64 {
        let end = arena + self.arena_size;
        // Aligned so that the user's block (16 bytes in) is 16-aligned.
        (end + HEADER).next_multiple_of(16) - HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_layouts() {
        assert_eq!(parse_version(b"2.36"), Some((2, 36)));
        assert_eq!(parse_version(b"2.43.9000"), Some((2, 43)));
        assert_eq!(parse_version(b"x"), None);
        assert_eq!(for_version(2, 36).unwrap().heap_info_size, 48);
        assert_eq!(for_version(2, 33).unwrap().heap_info_size, 32);
        assert!(for_version(2, 31).is_none());
        assert!(for_version(2, 44).is_none());
        assert!(for_version(2, 43).unwrap().fastbins.is_none());
    }

    #[test]
    fn sizes_match_glibc() {
        // 64 counts and 64 pointers: glibc's 0x290 chunk.
        assert_eq!(for_version(2, 36).unwrap().tcache_chunk_size(), 0x290);
        // 76 of each from 2.42.
        assert_eq!(for_version(2, 42).unwrap().tcache_chunk_size(), 0x300);
        // The first chunk after a 2.36 arena in its heap: 48 + 2200 bytes
        // in, aligned so that the user's block is 16-aligned.
        let l = for_version(2, 36).unwrap();
        let h = 0x7f00_0000_0000u64;
        let first = l.first_chunk_after_arena(h + l.heap_info_size);
        assert_eq!((first + HEADER) % 16, 0);
        assert!(first >= h + 48 + 2200 && first < h + 48 + 2200 + 16);
    }
}
