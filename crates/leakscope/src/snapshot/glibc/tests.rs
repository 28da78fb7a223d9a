//! The walker on a heap built by hand in a fake address space (glibc
//! 2.36's layout): which chunks are blocks, and that damage to any list or
//! header fails the walk instead of giving a wrong block set.

use super::layout::{self, HEADER, IS_MMAPPED, PREV_INUSE};
use super::*;
use crate::snapshot::image::{Maps, Memory};

const LIBC_DATA: u64 = 0x7000_0000_0000;
const ARENA: u64 = LIBC_DATA + 0x100;
const HEAP: u64 = 0x5555_0000_0000;
const HEAP_LEN: u64 = 0x21000;
const TLS: u64 = 0x7100_0000_0000;
const TP: u64 = TLS + 0x1000;
const MMAPPED: u64 = 0x7200_0000_0000;
const KEY: u64 = 0x1234_5678_9abc_def0;

/// A sparse address space: regions of words.
struct Fake {
    maps: Maps,
    regions: Vec<(u64, Vec<u64>)>,
}

impl Fake {
    fn new() -> Fake {
        let text = format!(
            "{:x}-{:x} rw-p 00000000 00:00 0 [heap]\n\
             {:x}-{:x} rw-p 00000000 08:01 1 /usr/lib/libc.so.6\n\
             {:x}-{:x} rw-p 00000000 00:00 0 \n\
             {:x}-{:x} rw-p 00000000 00:00 0 \n",
            HEAP,
            HEAP + HEAP_LEN,
            LIBC_DATA,
            LIBC_DATA + 0x4000,
            TLS,
            TLS + 0x2000,
            MMAPPED,
            MMAPPED + 0x40000,
        );
        let maps = Maps::parse(text.as_bytes()).unwrap();
        let regions = maps
            .regions()
            .iter()
            .map(|r| (r.start, vec![0; ((r.end - r.start) / 8) as usize]))
            .collect();
        Fake { maps, regions }
    }

    fn set(&mut self, addr: u64, value: u64) {
        let (start, words) = self
            .regions
            .iter_mut()
            .find(|(s, w)| *s <= addr && addr < *s + 8 * w.len() as u64)
            .expect("address in the fake space");
        words[((addr - *start) / 8) as usize] = value;
    }

    fn chunk(&mut self, at: u64, size: u64, flags: u64) {
        self.set(at + 8, size | flags);
    }
}

impl Memory for Fake {
    fn maps(&self) -> &Maps {
        &self.maps
    }

    fn is_guard_page(&self, _addr: u64) -> bool {
        false
    }

    fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
        let (s, w) = self
            .regions
            .iter()
            .find(|(s, w)| *s <= start && end <= *s + 8 * w.len() as u64)?;
        (start % 8 == 0 && end >= start)
            .then(|| &w[((start - s) / 8) as usize..((end - s) / 8) as usize])
    }
}

const TCACHE: u64 = HEAP;
const IN_USE: u64 = HEAP + 0x290;
const CACHED: u64 = IN_USE + 0x30;
const FREE: u64 = CACHED + 0x30;
const AFTER_FREE: u64 = FREE + 0x100;
const FAST: u64 = AFTER_FREE + 0x40;
const TOP: u64 = FAST + 0x20;

/// A main arena and heap: a thread's tcache structure, a block in use, a
/// chunk in the tcache, a free chunk in the unsorted bin, a block in use
/// after it, a fast-bin chunk, the top chunk; one mmapped chunk.
fn heap() -> Fake {
    let mut f = Fake::new();
    let l = layout::for_version(2, 36).unwrap();
    for i in 0..layout::BIN_PAIRS as u64 {
        let own = ARENA + l.bins + 16 * i - 16;
        f.set(ARENA + l.bins + 16 * i, own);
        f.set(ARENA + l.bins + 16 * i + 8, own);
    }
    f.set(ARENA + l.top, TOP);
    f.set(ARENA + l.next, ARENA);
    f.set(ARENA + l.system_mem, HEAP_LEN);
    // The thread's tcache, named from its thread-locals.
    f.chunk(TCACHE, 0x290, PREV_INUSE);
    f.set(TP - 64, TCACHE + HEADER);
    f.chunk(IN_USE, 0x30, PREV_INUSE);
    f.chunk(CACHED, 0x30, PREV_INUSE);
    // Bin 1 (48-byte chunks): one entry, the last (its link decodes to 0).
    f.set(TCACHE + HEADER, 1 << 16);
    f.set(TCACHE + HEADER + 128 + 8, CACHED + HEADER);
    f.set(CACHED + HEADER, (CACHED + HEADER) >> 12);
    f.set(CACHED + HEADER + 8, KEY);
    // A free chunk, linked in the unsorted bin.
    f.chunk(FREE, 0x100, PREV_INUSE);
    let unsorted = ARENA + l.bins - 16;
    f.set(FREE + 16, unsorted);
    f.set(FREE + 24, unsorted);
    f.set(ARENA + l.bins, FREE);
    f.set(ARENA + l.bins + 8, FREE);
    f.set(AFTER_FREE, 0x100);
    f.chunk(AFTER_FREE, 0x40, 0);
    // A fast-bin chunk (bin 0: 32 bytes), last in its list.
    f.chunk(FAST, 0x20, PREV_INUSE);
    f.set(ARENA + l.fastbins.unwrap(), FAST);
    f.set(FAST + HEADER, (FAST + HEADER) >> 12);
    f.chunk(TOP, HEAP + HEAP_LEN - TOP, PREV_INUSE);
    // An mmapped chunk of 64 KiB at the start of its mapping.
    f.chunk(MMAPPED, 0x10000, IS_MMAPPED);
    f
}

fn walk_fake(f: &Fake) -> Result<(Vec<WalkedBlock>, HeapStats), WalkError> {
    let prep = Prepared::for_tests(
        layout::for_version(2, 36).unwrap(),
        &[(LIBC_DATA, LIBC_DATA + 0x4000)],
    );
    let mut out = MmapVec::new();
    let mut stats = HeapStats::default();
    walk(
        &prep,
        f,
        &[ThreadRef { tp: TP, sp: 0 }],
        &mut out,
        &mut stats,
    )?;
    Ok((out.to_vec(), stats))
}

#[test]
fn tells_blocks_from_free_and_glibc_chunks() {
    let (blocks, stats) = walk_fake(&heap()).unwrap();
    assert_eq!(
        blocks,
        [
            WalkedBlock {
                addr: IN_USE + HEADER,
                usable: 0x28
            },
            WalkedBlock {
                addr: AFTER_FREE + HEADER,
                usable: 0x38
            },
            WalkedBlock {
                addr: MMAPPED + HEADER,
                usable: 0x10000 - HEADER
            },
        ]
    );
    let a = &stats.per_arena[0];
    assert_eq!((a.in_use_chunks, a.in_use_bytes), (2, 0x70));
    assert_eq!((a.tcache_chunks, a.fast_chunks, a.bin_chunks), (1, 1, 1));
    assert_eq!((a.bin_bytes, a.internal_bytes), (0x100, 0x290));
    assert_eq!(a.top_bytes, HEAP + HEAP_LEN - TOP);
    assert_eq!(stats.mmapped_chunks, 1);
    assert_eq!(stats.threads_with_tcache, 1);
}

#[test]
fn damage_fails_the_walk() {
    /// What is damaged, how, and the error the walk must end with.
    type Damage = (&'static str, fn(&mut Fake), WalkError);
    let cases: [Damage; 4] = [
        (
            "a chunk size that overruns top",
            |f| f.chunk(AFTER_FREE, 0x1000, 0),
            WalkError::MainHeapMismatch,
        ),
        (
            "a misaligned fast-bin link",
            |f| f.set(FAST + HEADER, ((FAST + HEADER) >> 12) ^ 0x5555_0000_0008),
            WalkError::BadFastBin,
        ),
        (
            "an in-use chunk of the main arena flagged as another arena's",
            |f| f.chunk(IN_USE, 0x30, PREV_INUSE | layout::NON_MAIN_ARENA),
            WalkError::ArenaFlagMismatch,
        ),
        (
            "a main arena whose top is outside the program break area",
            |f| f.set(ARENA + 96, TLS),
            WalkError::NoMainArena,
        ),
    ];
    for (what, damage, expected) in cases {
        let mut f = heap();
        damage(&mut f);
        assert_eq!(walk_fake(&f).err(), Some(expected), "{what}");
    }
}

#[test]
fn a_tcache_that_does_not_decode_is_an_error_when_libc_names_it() {
    let mut f = heap();
    // The count says two chunks, the list holds one.
    f.set(TCACHE + HEADER, 2 << 16);
    let mut prep = Prepared::for_tests(
        layout::for_version(2, 36).unwrap(),
        &[(LIBC_DATA, LIBC_DATA + 0x4000)],
    );
    prep.libc_tls = Some((-0x100, 0x100));
    let mut out = MmapVec::new();
    let mut stats = HeapStats::default();
    let r = walk(
        &prep,
        &f,
        &[ThreadRef { tp: TP, sp: 0 }],
        &mut out,
        &mut stats,
    );
    assert_eq!(r, Err(WalkError::BadTcache));
}
