//! Valgrind's leak-check heuristics: interior pointers of shapes that C++
//! (and a few C libraries) make on purpose, which the leak check at exit
//! takes as references to their block's start (Valgrind does so by default;
//! `LEAKSCOPE_LEAK_HEURISTICS` chooses, with Valgrind's names).
//!
//! Each test reads only the block's first words and, for multiple
//! inheritance, the words its vtable pointers lead to, all through the
//! checked [`Memory`]; none allocates (this runs in the snapshot child).

use super::image::{Memory, RegionKind};
use crate::config::Heuristics;

const WORD: u64 = 8;

/// Words looked at from a candidate vtable pointer for function pointers.
const VTABLE_WORDS: u64 = 20;

/// Which heuristic of `set` (one bit of [`Heuristics`]) makes `ptr`, a
/// pointer inside the block `[start, start + size)` but not to its start, a
/// reference to the block; 0 if none. Tried in Valgrind's order, so a block
/// both `length64` and `newarray` would accept counts as `length64`.
pub(crate) fn reachedness<M: Memory>(mem: &M, start: u64, size: u64, ptr: u64, set: u8) -> u8 {
    let offset = ptr - start;
    let first = || mem.word(start);
    if set & Heuristics::STD_STRING != 0 && offset == 3 * WORD {
        // The old libstdc++ string: length, capacity, reference count, then
        // the characters and their terminating NUL.
        if let (Some(length), Some(capacity)) = (first(), mem.word(start + WORD)) {
            if capacity.checked_add(3 * WORD + 1) == Some(size) && length <= capacity {
                return Heuristics::STD_STRING;
            }
        }
    }
    if set & Heuristics::LENGTH64 != 0 && offset == WORD {
        // A length of the rest of the block, then the rest (sqlite does so).
        if first().is_some_and(|n| n > 0 && n == size - WORD) {
            return Heuristics::LENGTH64;
        }
    }
    if set & Heuristics::NEW_ARRAY != 0 && offset == WORD {
        // `new T[n]` for a T with a destructor: the count, then n elements.
        if first().is_some_and(|n| n > 0 && (size - WORD) % n == 0) {
            return Heuristics::NEW_ARRAY;
        }
    }
    if set & Heuristics::MULTIPLE_INHERITANCE != 0 && offset % WORD == 0 {
        // A pointer to a later base of an object: both it and the object's
        // start hold vtable pointers.
        let plausible = |w: u64| w % WORD == 0 && w >= 4096;
        if let (Some(inner), Some(outer)) = (mem.word(ptr), first()) {
            if plausible(inner)
                && plausible(outer)
                && is_vtable(mem, inner)
                && is_vtable(mem, outer)
            {
                return Heuristics::MULTIPLE_INHERITANCE;
            }
        }
    }
    0
}

/// Whether `addr` looks like a vtable: it lies in a readable mapped file,
/// and of the words from it (at most [`VTABLE_WORDS`], within its mapping)
/// the first two that are not null point into mapped executable code, with
/// no other non-null word before them.
fn is_vtable<M: Memory>(mem: &M, addr: u64) -> bool {
    let maps = mem.maps();
    let Some(region) = maps
        .region(addr)
        .filter(|r| r.readable && r.kind == RegionKind::File)
    else {
        return false;
    };
    let last = (addr + VTABLE_WORDS * WORD).min(region.end - WORD);
    let mut code_pointers = 0;
    let mut at = addr;
    while at <= last {
        let Some(w) = mem.word(at) else {
            return false;
        };
        at += WORD;
        if w == 0 {
            continue;
        }
        let is_code = maps
            .region(w)
            .is_some_and(|r| r.executable && r.kind == RegionKind::File);
        if !is_code {
            return false;
        }
        code_pointers += 1;
        if code_pointers == 2 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::image::Maps;

    /// A memory of a few words at fixed addresses over a fixed map.
    struct Words {
        maps: Maps,
        base: u64,
        words: Vec<u64>,
    }

    impl Memory for Words {
        fn maps(&self) -> &Maps {
            &self.maps
        }
        fn is_guard_page(&self, _: u64) -> bool {
            false
        }
        fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
            let i = (start.checked_sub(self.base)? / WORD) as usize;
            let j = (end.checked_sub(self.base)? / WORD) as usize;
            self.words.get(i..j)
        }
    }

    const HEAP: u64 = 0x10000;
    const VTABLES: u64 = 0x20000;
    const CODE: u64 = 0x30000;

    fn memory(words: Vec<u64>) -> Words {
        let maps = Maps::parse(
            b"10000-20000 rw-p 00000000 00:00 0\n\
              20000-30000 r--p 00000000 08:01 5 /bin/prog\n\
              30000-40000 r-xp 00000000 08:01 5 /bin/prog\n",
        )
        .unwrap();
        Words {
            maps,
            base: HEAP,
            words,
        }
    }

    #[test]
    fn an_old_abi_string_is_held_by_a_pointer_to_its_characters() {
        // length 10, capacity 16, refcount 0, then 17 bytes of characters.
        let mem = memory(vec![10, 16, 0, 0, 0, 0]);
        let size = 3 * WORD + 16 + 1;
        assert_eq!(
            reachedness(&mem, HEAP, size, HEAP + 24, Heuristics::ALL.0),
            Heuristics::STD_STRING
        );
        assert_eq!(reachedness(&mem, HEAP, size, HEAP + 24, 0), 0);
        // A longer length than capacity is no string.
        let mem = memory(vec![17, 16, 0, 0, 0, 0]);
        assert_eq!(
            reachedness(&mem, HEAP, size, HEAP + 24, Heuristics::ALL.0),
            0
        );
    }

    #[test]
    fn a_length_prefix_and_an_element_count_are_told_apart() {
        // 8 + 40 bytes, the first word 40: length64 first.
        let mem = memory(vec![40, 0, 0, 0, 0, 0]);
        assert_eq!(
            reachedness(&mem, HEAP, 48, HEAP + 8, Heuristics::ALL.0),
            Heuristics::LENGTH64
        );
        assert_eq!(
            reachedness(&mem, HEAP, 48, HEAP + 8, Heuristics::NEW_ARRAY),
            Heuristics::NEW_ARRAY
        );
        // Five elements of 8 bytes: a new[] array only.
        let mem = memory(vec![5, 0, 0, 0, 0, 0]);
        assert_eq!(
            reachedness(&mem, HEAP, 48, HEAP + 8, Heuristics::ALL.0),
            Heuristics::NEW_ARRAY
        );
        // Seven does not divide 40; a pointer further in is none of these.
        let mem = memory(vec![7, 0, 0, 0, 0, 0]);
        assert_eq!(reachedness(&mem, HEAP, 48, HEAP + 8, Heuristics::ALL.0), 0);
        let mem = memory(vec![5, 0, 0, 0, 0, 0]);
        assert_eq!(
            reachedness(&mem, HEAP, 48, HEAP + 16, Heuristics::NEW_ARRAY),
            0
        );
    }

    #[test]
    fn a_second_base_is_found_by_its_vtable_pointers() {
        // Two vtables (at the start of the read-only mapping), each with two
        // code pointers after a null offset word; the object holds one at
        // its start and one at 16.
        let mut words = vec![0u64; 16384];
        let vt = ((VTABLES - HEAP) / WORD) as usize;
        words[vt..vt + 3].copy_from_slice(&[0, CODE + 0x10, CODE + 0x20]);
        words[vt + 4..vt + 7].copy_from_slice(&[0, CODE + 0x30, CODE + 0x40]);
        words[0] = VTABLES;
        words[2] = VTABLES + 32;
        let mem = memory(words.clone());
        assert_eq!(
            reachedness(&mem, HEAP, 32, HEAP + 16, Heuristics::ALL.0),
            Heuristics::MULTIPLE_INHERITANCE
        );
        // The second word points into the heap, not a vtable.
        words[2] = HEAP + 64;
        let mem = memory(words.clone());
        assert_eq!(reachedness(&mem, HEAP, 32, HEAP + 16, Heuristics::ALL.0), 0);
        // A "vtable" whose first non-null word is data, not code.
        words[2] = VTABLES + 32;
        words[vt + 5] = HEAP;
        let mem = memory(words);
        assert_eq!(reachedness(&mem, HEAP, 32, HEAP + 16, Heuristics::ALL.0), 0);
    }
}
