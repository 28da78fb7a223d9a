//! Names of code addresses already symbolised, kept across periodic sets.
//!
//! Each periodic set is named in a fresh child of the service (see
//! `writer_process.rs`), which starts without parsed debug information: on
//! a Rust service every set parsed the same DWARF again (270–400 ms of a
//! core per set for the lab's 88 MB binary), although a service in steady
//! state allocates from the same few thousand call sites set after set.
//! The names found are written to this memo, a region shared with the
//! writer children (created in the service before the first set, written
//! by the children), so a set whose addresses were all named before reads
//! no debug information at all. The service holds the names (a few hundred
//! bytes per address, in pages touched only as written), never the parse.
//!
//! The memo is valid for one set of loaded code: it records a fingerprint
//! of the process's executable file mappings and is emptied when they
//! change (a library loaded or closed), so an address is never named after
//! code that was mapped there before.
//!
//! One process uses the memo at a time (a lock word holding its pid, taken
//! with a compare-and-swap and never waited for: a symbolisation that does
//! not get it symbolises everything, as before). A holder that died (a
//! writer child killed at its timeout) is recognised by its pid and
//! replaced. Records below the committed length are never changed while
//! the lock is free, so a holder reads them without further care.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

use super::symbolize::SymFrame;
use crate::collect::raw_mem;

/// Bytes reserved for the memo (committed only as written).
const CAPACITY: usize = 16 << 20;

/// The memo's header, at the start of its region.
#[repr(C)]
struct Header {
    /// The fingerprint of the code mappings the records were made for.
    fingerprint: AtomicU64,
    /// Bytes of records after the header.
    committed: AtomicU64,
    /// The pid of the process using the memo, 0 for none.
    holder: AtomicI32,
}

const RECORDS_AT: usize = std::mem::size_of::<Header>().next_multiple_of(64);

/// The memo of this process, once [`create`] made it.
static MEMO: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the memo, once, in the process whose children will use it (the
/// service, before its first periodic set). Best effort: without it every
/// set symbolises everything.
pub(crate) fn create() {
    if !MEMO.load(Ordering::Acquire).is_null() {
        return;
    }
    if let Some(region) = raw_mem::map_shared_zeroed(CAPACITY) {
        if MEMO
            .compare_exchange(
                std::ptr::null_mut(),
                region.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: the region was mapped just above with this size and
            // was never published, so nothing else refers to it.
            unsafe { raw_mem::unmap(region, CAPACITY) };
        }
    }
}

/// The names of `addrs` (as [`super::symbolize`] gives them: for each, its
/// frames innermost first, empty when unknown), taken from the memo where
/// it has them; the others are named by `symbolize` and added to it.
/// Without a memo (none created, or the maps unreadable): `symbolize`.
pub(crate) fn names(
    addrs: &[u64],
    symbolize: impl FnOnce(&[u64]) -> Vec<Vec<SymFrame>>,
) -> Vec<Vec<SymFrame>> {
    let (Some(region), Some(fingerprint)) = (
        NonNull::new(MEMO.load(Ordering::Acquire)),
        code_fingerprint(),
    ) else {
        return symbolize(addrs);
    };
    // SAFETY: a published memo is a CAPACITY-byte region that stays mapped
    // for the life of the process (and of its children, which inherit it).
    let memo = unsafe { Memo::at(region, CAPACITY) };
    memo.names(addrs, fingerprint, symbolize)
}

/// A fingerprint of this process's executable file mappings (address
/// ranges, inodes and paths), from `/proc/self/maps`; `None` if they
/// cannot be read (then the memo is not used).
fn code_fingerprint() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if perms.contains('x') {
            let inode = fields.nth(2).unwrap_or("");
            let path = fields.next().unwrap_or("");
            (range, inode, path).hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

/// A memo over a region of its own.
pub(crate) struct Memo {
    header: NonNull<Header>,
    records: NonNull<u8>,
    capacity: usize,
}

impl Memo {
    /// # Safety
    /// `region` is `len` (> [`RECORDS_AT`]) bytes of zero-initialised or
    /// memo-formatted memory, 8-byte aligned, mapped while the memo is used.
    pub(crate) unsafe fn at(region: NonNull<u8>, len: usize) -> Memo {
        Memo {
            header: region.cast(),
            // SAFETY: RECORDS_AT < len, so the pointer stays in the region.
            records: unsafe { region.add(RECORDS_AT) },
            capacity: len - RECORDS_AT,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is in the region (see `at`), and its fields
        // are atomics, shared with other processes only through them.
        unsafe { self.header.as_ref() }
    }

    /// See [`names`]; `fingerprint`: of the code mappings now.
    pub(crate) fn names(
        &self,
        addrs: &[u64],
        fingerprint: u64,
        symbolize: impl FnOnce(&[u64]) -> Vec<Vec<SymFrame>>,
    ) -> Vec<Vec<SymFrame>> {
        let Some(_held) = self.hold() else {
            return symbolize(addrs);
        };
        let header = self.header();
        if header.fingerprint.load(Ordering::Acquire) != fingerprint {
            header.committed.store(0, Ordering::Release);
            header.fingerprint.store(fingerprint, Ordering::Release);
        }
        let committed = (header.committed.load(Ordering::Acquire) as usize).min(self.capacity);
        let mut known = decode(self.bytes(0, committed));
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !known.names.contains_key(a))
            .collect();
        let named = if missing.is_empty() {
            Vec::new()
        } else {
            symbolize(&missing)
        };
        let mut appender = Appender {
            at: committed,
            strings: &mut known.strings,
            out: Vec::new(),
        };
        for (addr, frames) in missing.iter().zip(&named) {
            appender.address(*addr, frames);
        }
        let appended = appender.out;
        if !appended.is_empty() && appended.len() <= self.capacity - committed {
            // SAFETY: the bytes after `committed` are ours alone while the
            // memo is held, and `appended` fits in the region.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    appended.as_ptr(),
                    self.records.as_ptr().add(committed),
                    appended.len(),
                );
            }
            header
                .committed
                .store((committed + appended.len()) as u64, Ordering::Release);
        }
        let fresh: HashMap<u64, &Vec<SymFrame>> = missing.iter().copied().zip(&named).collect();
        addrs
            .iter()
            .map(|a| match fresh.get(a) {
                Some(frames) => (*frames).clone(),
                None => known.names.get(a).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The records' bytes `[from, to)` (both within the capacity).
    fn bytes(&self, from: usize, to: usize) -> &[u8] {
        // SAFETY: the range lies in the records part of the region, and
        // while the memo is held no other process writes below the
        // committed length.
        unsafe { std::slice::from_raw_parts(self.records.as_ptr().add(from), to - from) }
    }

    /// Takes the memo for this process, unless a live process holds it.
    fn hold(&self) -> Option<Held<'_>> {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let holder = &self.header().holder;
        let current = holder.load(Ordering::Acquire);
        // SAFETY: kill with signal 0 only checks that the process exists.
        let dead = current != 0 && unsafe { libc::kill(current, 0) } != 0;
        let expected = if dead { current } else { 0 };
        holder
            .compare_exchange(expected, me, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Held { holder })
    }
}

/// The memo, held until dropped.
struct Held<'a> {
    holder: &'a AtomicI32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

/// A record holding a string: its length (u32), then its bytes.
const STRING: u8 = 0;
/// A record holding an address's frames: the address (u64), the frame
/// count (u32), then per frame its line (i64) and the offsets of its name's
/// and file's string records (u32 each). The lab's 1,150 addresses take
/// 190 KB so, against 760 KB with every string written out (the same
/// files and function names again and again).
const ADDRESS: u8 = 1;

/// What the memo holds.
#[derive(Default)]
struct Contents {
    /// Frames by address.
    names: HashMap<u64, Vec<SymFrame>>,
    /// The offset of each string's record.
    strings: HashMap<String, u32>,
}

/// Writes records to be appended at offset `at` of the records.
struct Appender<'a> {
    at: usize,
    strings: &'a mut HashMap<String, u32>,
    out: Vec<u8>,
}

impl Appender<'_> {
    /// The offset of `s`'s record, written first if the memo has none.
    fn string(&mut self, s: &str) -> u32 {
        if let Some(&at) = self.strings.get(s) {
            return at;
        }
        let at = (self.at + self.out.len()) as u32;
        self.out.push(STRING);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.strings.insert(s.to_string(), at);
        at
    }

    /// Writes `addr`'s frames (after the strings they need).
    fn address(&mut self, addr: u64, frames: &[SymFrame]) {
        let refs: Vec<(i64, u32, u32)> = frames
            .iter()
            .map(|f| (f.line, self.string(&f.name), self.string(&f.file)))
            .collect();
        self.out.push(ADDRESS);
        self.out.extend_from_slice(&addr.to_le_bytes());
        self.out
            .extend_from_slice(&(refs.len() as u32).to_le_bytes());
        for (line, name, file) in refs {
            self.out.extend_from_slice(&line.to_le_bytes());
            self.out.extend_from_slice(&name.to_le_bytes());
            self.out.extend_from_slice(&file.to_le_bytes());
        }
    }
}

/// Every whole record of `bytes`. A record cut short, a string that is not
/// UTF-8 or a reference to no string ends the reading: what follows it is
/// not trusted.
fn decode(bytes: &[u8]) -> Contents {
    let mut contents = Contents::default();
    let mut by_offset: HashMap<u32, String> = HashMap::new();
    let mut at: usize = 0;
    let mut take = |n: usize| -> Option<(usize, &[u8])> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some((at - n, b))
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    while let Some((start, tag)) = take(1) {
        let whole = match tag[0] {
            STRING => (|| {
                let len = u32_of(take(4)?.1) as usize;
                let text = std::str::from_utf8(take(len)?.1).ok()?.to_string();
                by_offset.insert(start as u32, text);
                Some(())
            })(),
            ADDRESS => (|| {
                let addr = u64_of(take(8)?.1);
                let count = u32_of(take(4)?.1) as usize;
                let mut frames = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    let line = u64_of(take(8)?.1) as i64;
                    let name = by_offset.get(&u32_of(take(4)?.1))?.clone();
                    let file = by_offset.get(&u32_of(take(4)?.1))?.clone();
                    frames.push(SymFrame { name, file, line });
                }
                contents.names.insert(addr, frames);
                Some(())
            })(),
            _ => None,
        };
        if whole.is_none() {
            break;
        }
    }
    contents.strings = by_offset.into_iter().map(|(at, s)| (s, at)).collect();
    contents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, line: i64) -> SymFrame {
        SymFrame {
            name: name.into(),
            file: format!("src/{name}.rs"),
            line,
        }
    }

    /// A fake symbolizer that names address `a` `f<a>` (two frames for
    /// even addresses, none for multiples of 5) and counts what it names.
    fn namer(count: &mut usize) -> impl FnMut(&[u64]) -> Vec<Vec<SymFrame>> + '_ {
        move |addrs| {
            *count += addrs.len();
            addrs
                .iter()
                .map(|&a| match a {
                    a if a % 5 == 0 => Vec::new(),
                    a if a % 2 == 0 => vec![
                        frame(&format!("inl{a}"), 1),
                        frame(&format!("f{a}"), a as i64),
                    ],
                    a => vec![frame(&format!("f{a}"), a as i64)],
                })
                .collect()
        }
    }

    fn memo(len: usize) -> (Memo, NonNull<u8>) {
        let region = raw_mem::map_shared_zeroed(len).unwrap();
        // SAFETY: a fresh zeroed mapping of `len` bytes, unmapped by the test.
        (unsafe { Memo::at(region, len) }, region)
    }

    #[test]
    fn names_each_address_once_and_gives_the_same_names_again() {
        let (memo, region) = memo(1 << 20);
        let addrs: Vec<u64> = (1..=40).collect();
        let mut named = 0;
        let first = memo.names(&addrs, 7, namer(&mut named));
        assert_eq!(named, 40);
        let mut again = 0;
        let second = memo.names(&addrs, 7, namer(&mut again));
        assert_eq!(again, 0, "every address came from the memo");
        assert_eq!(first, second);
        let mut direct = 0;
        assert_eq!(first, namer(&mut direct)(&addrs));
        // New addresses among known ones: only those are named.
        let mixed: Vec<u64> = (30..=50).collect();
        let mut some = 0;
        let third = memo.names(&mixed, 7, namer(&mut some));
        assert_eq!(some, 10);
        assert_eq!(third, namer(&mut direct)(&mixed));
        // SAFETY: the region was mapped by `memo` with this size.
        unsafe { raw_mem::unmap(region, 1 << 20) };
    }

    #[test]
    fn other_code_mappings_empty_the_memo() {
        let (memo, region) = memo(1 << 20);
        let mut n = 0;
        memo.names(&[1, 2, 3], 7, namer(&mut n));
        let mut after = 0;
        let renamed = memo.names(&[1, 2, 3], 8, |a: &[u64]| {
            after += a.len();
            vec![vec![frame("other", 9)]; a.len()]
        });
        assert_eq!(after, 3, "a library loaded or closed: nothing is trusted");
        assert_eq!(renamed[0], vec![frame("other", 9)]);
        // SAFETY: the region was mapped by `memo` with this size.
        unsafe { raw_mem::unmap(region, 1 << 20) };
    }

    #[test]
    fn a_full_memo_still_names_everything() {
        let len = RECORDS_AT + 64;
        let (memo, region) = memo(len);
        let addrs: Vec<u64> = (1..=20).collect();
        let mut n = 0;
        let first = memo.names(&addrs, 7, namer(&mut n));
        let mut again = 0;
        assert_eq!(memo.names(&addrs, 7, namer(&mut again)), first);
        assert_eq!(again, 20, "nothing fitted, so nothing was kept");
        // SAFETY: the region was mapped by `memo` with this size.
        unsafe { raw_mem::unmap(region, len) };
    }

    #[test]
    fn a_live_holder_is_never_waited_for_and_a_dead_one_is_replaced() {
        let (memo, region) = memo(1 << 20);
        // Held by a live process (ours, as another user would hold it).
        memo.header().holder.store(1, Ordering::Release);
        let mut n = 0;
        memo.names(&[1, 2], 7, namer(&mut n));
        let mut again = 0;
        memo.names(&[1, 2], 7, namer(&mut again));
        assert_eq!(again, 2, "init holds it: named without the memo");
        // Held by a process that exited.
        // SAFETY: the child runs nothing but `_exit` (no allocation, no
        // lock another thread may hold).
        let dead = unsafe { libc::fork() };
        if dead == 0 {
            // SAFETY: the child only exits.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(dead, std::ptr::null_mut(), 0) };
        memo.header().holder.store(dead, Ordering::Release);
        let mut used = 0;
        memo.names(&[1, 2], 7, namer(&mut used));
        let mut last = 0;
        memo.names(&[1, 2], 7, namer(&mut last));
        assert_eq!((used, last), (2, 0));
        assert_eq!(memo.header().holder.load(Ordering::Acquire), 0);
        // SAFETY: the region was mapped by `memo` with this size.
        unsafe { raw_mem::unmap(region, 1 << 20) };
    }

    #[inline(never)]
    fn a_function_of_this_binary() -> usize {
        std::hint::black_box(42)
    }

    #[test]
    fn names_from_the_memo_are_blazesyms() {
        let (memo, region) = memo(1 << 20);
        let fingerprint = code_fingerprint().unwrap();
        let here = a_function_of_this_binary as *const () as usize as u64;
        let addrs = [
            here + 1,
            names_from_the_memo_are_blazesyms as *const () as usize as u64 + 4,
            8,
        ];
        let direct = super::super::symbolize::symbolize_now(&addrs);
        assert!(direct[0]
            .iter()
            .any(|f| f.name.contains("a_function_of_this_binary")));
        assert!(direct[2].is_empty(), "an address outside any code");
        let first = memo.names(&addrs, fingerprint, super::super::symbolize::symbolize_now);
        let mut named = 0;
        let second = memo.names(&addrs, fingerprint, |a: &[u64]| {
            named += a.len();
            super::super::symbolize::symbolize_now(a)
        });
        assert_eq!((&first, &second, named), (&direct, &direct, 0));
        // SAFETY: the region was mapped by `memo` with this size.
        unsafe { raw_mem::unmap(region, 1 << 20) };
    }

    #[test]
    fn records_cut_short_end_the_reading() {
        let mut strings = HashMap::new();
        let mut appender = Appender {
            at: 0,
            strings: &mut strings,
            out: Vec::new(),
        };
        appender.address(1, &[frame("a", 1)]);
        let whole = appender.out.len();
        appender.address(2, &[frame("b", 2), frame("a", 3)]);
        let bytes = appender.out;
        for cut in whole..bytes.len() {
            let known = decode(&bytes[..cut]);
            assert_eq!(known.names.len(), 1, "cut at {cut}");
        }
        let all = decode(&bytes);
        assert_eq!(all.names[&2], vec![frame("b", 2), frame("a", 3)]);
        assert_eq!(all.strings.len(), 4, "a, src/a.rs, b, src/b.rs: each once");
    }
}
