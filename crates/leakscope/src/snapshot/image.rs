//! The memory the analysis reads: the regions of an address space (from
//! `/proc/self/maps` in the snapshot child) and checked reads of them.
//!
//! Everything here is allocation-free (regions live in an [`MmapVec`]), so
//! the forked child can use it. The analysis and the heap walker read memory
//! only through [`Memory`], which refuses addresses outside a readable
//! region: a wrong pointer in a corrupt heap becomes an error, not a fault.

use super::mmap_vec::MmapVec;

/// What a region holds, from its name in the maps file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionKind {
    /// Anonymous memory (no name): mmapped chunks, arenas' heaps, thread
    /// stacks, other allocators.
    Anonymous,
    /// The program break area (`[heap]`): glibc's main arena.
    Brk,
    /// The main thread's stack (`[stack]`).
    MainStack,
    /// A mapped file.
    File,
    /// Anything else named in brackets (`[vdso]`, `[anon:...]`, ...).
    Special,
}

/// One mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) executable: bool,
    pub(crate) kind: RegionKind,
}

/// The regions of this process, sorted by address.
pub(crate) struct Maps {
    regions: MmapVec<Region>,
    /// leakscope's own mappings (its tables, the analysis's arrays),
    /// sorted: never the program's memory.
    own: MmapVec<(u64, u64)>,
}

/// Regions a process can have (Linux's default `vm.max_map_count` is
/// 65530): room for all is reserved before reading, so that the array is
/// never moved (an unmapped old array would still be listed as readable).
const MAX_REGIONS: usize = 1 << 17;

impl Maps {
    /// Reads `/proc/self/maps`, line by line through a fixed buffer: the
    /// listing must not include memory this reader maps and unmaps itself.
    /// `None` if it cannot be read or memory is refused.
    pub(crate) fn read_own() -> Option<Maps> {
        let mut regions = MmapVec::new();
        regions.reserve(MAX_REGIONS)?;
        let mut own = MmapVec::new();
        own.reserve(1024)?;
        // SAFETY: open/read/close on a path we own, into buffers we own.
        unsafe {
            let fd = libc::open(
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return None;
            }
            let mut buf = [0u8; 4096];
            let mut line = [0u8; 8192];
            let mut len = 0;
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                for &b in &buf[..n as usize] {
                    if b == b'\n' {
                        if let Some(region) = parse_line(&line[..len]) {
                            regions.push(region)?;
                        }
                        len = 0;
                    } else if len < line.len() {
                        line[len] = b;
                        len += 1;
                    }
                }
            }
            if let Some(region) = parse_line(&line[..len]) {
                regions.push(region)?;
            }
            libc::close(fd);
        }
        regions.as_mut_slice().sort_unstable_by_key(|r| r.start);
        crate::collect::raw_mem::own_mappings(|start, len| {
            let _ = own.push((start as u64, (start + len) as u64));
        });
        // The sample heap: its blocks come from the live table, and its
        // slabs must not be taken for glibc's mmapped chunks.
        if let Some((start, len)) = crate::collect::sample_heap::range() {
            let _ = own.push((start as u64, (start + len) as u64));
        }
        own.as_mut_slice().sort_unstable();
        Some(Maps { regions, own })
    }

    /// Regions of another address space (a core file, another process),
    /// listed by the caller; sorted here. leakscope owns none of them.
    pub(crate) fn from_regions(list: &[Region]) -> Option<Maps> {
        let mut regions = MmapVec::new();
        regions.reserve(list.len())?;
        for &r in list {
            regions.push(r)?;
        }
        regions.as_mut_slice().sort_unstable_by_key(|r| r.start);
        Some(Maps {
            regions,
            own: MmapVec::new(),
        })
    }

    /// Parses the text of a maps file.
    #[cfg(test)]
    pub(crate) fn parse(text: &[u8]) -> Option<Maps> {
        let mut regions = MmapVec::new();
        for line in text.split(|&b| b == b'\n') {
            if let Some(region) = parse_line(line) {
                regions.push(region)?;
            }
        }
        regions.as_mut_slice().sort_unstable_by_key(|r| r.start);
        Some(Maps {
            regions,
            own: MmapVec::new(),
        })
    }

    /// leakscope's own mappings, sorted.
    pub(crate) fn own(&self) -> &[(u64, u64)] {
        &self.own
    }

    pub(crate) fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region containing `addr`, readable or not.
    pub(crate) fn region(&self, addr: u64) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.start <= addr);
        let r = self.regions.get(i.checked_sub(1)?)?;
        (addr < r.end).then_some(r)
    }

    /// The readable region containing `addr`, as `(start, end)`.
    pub(crate) fn mapping(&self, addr: u64) -> Option<(u64, u64)> {
        self.region(addr)
            .filter(|r| r.readable)
            .map(|r| (r.start, r.end))
    }

    /// Whether `[start, end)` is readable (possibly across adjacent regions).
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.mapping(at) {
                Some((_, e)) => at = e,
                None => return false,
            }
        }
        true
    }

    /// The start of the first readable region above `addr`, if any.
    pub(crate) fn next_readable(&self, addr: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| r.start > addr && r.readable)
            .map(|r| r.start)
    }
}

fn parse_line(line: &[u8]) -> Option<Region> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let perms = fields.next()?;
    let name = fields.nth(3).unwrap_or(b"");
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    let kind = match name {
        b"" => RegionKind::Anonymous,
        b"[heap]" => RegionKind::Brk,
        b"[stack]" => RegionKind::MainStack,
        _ if name.starts_with(b"[") => RegionKind::Special,
        _ => RegionKind::File,
    };
    // Device mappings and the kernel's special areas (`[vvar]`, `[vsyscall]`)
    // may fault or have side effects when read.
    let special_unsafe = name.starts_with(b"[v") || name.starts_with(b"/dev/");
    Some(Region {
        start,
        end,
        readable: perms.first() == Some(&b'r') && !special_unsafe,
        writable: perms.get(1) == Some(&b'w'),
        executable: perms.get(2) == Some(&b'x'),
        kind,
    })
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Guard pages: pages of a mapping that fault when touched although the
/// maps file lists the mapping as readable (`MADV_GUARD_INSTALL`, Linux
/// 6.13 on; glibc 2.43 guards thread stacks this way). The page map
/// (`/proc/self/pagemap`, bit 58 from Linux 6.15) tells them; without it,
/// no page is taken for a guard (kernels without guard regions have none).
/// Reads 512 entries (2 MiB of address space) at a time.
pub(crate) struct GuardPages {
    fd: i32,
    first_page: u64,
    entries: [u64; 512],
    loaded: usize,
}

/// The page map's guard-region bit.
const PM_GUARD_REGION: u64 = 1 << 58;
/// The page map's bits for a page in memory and one swapped out.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;

impl GuardPages {
    pub(crate) fn open_own() -> GuardPages {
        // SAFETY: opening a file by a constant path.
        let fd = unsafe {
            libc::open(
                c"/proc/self/pagemap".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        GuardPages {
            fd,
            first_page: 0,
            entries: [0; 512],
            loaded: 0,
        }
    }

    /// Whether the page holding `addr` is a guard page.
    pub(crate) fn is_guard(&mut self, addr: u64) -> bool {
        if self.fd < 0 {
            return false;
        }
        let e = self.entry(addr);
        e != u64::MAX && e & PM_GUARD_REGION != 0
    }

    /// Whether the page holding `addr` is present or swapped out (true when
    /// the page map cannot be read).
    pub(crate) fn is_populated(&mut self, addr: u64) -> bool {
        if self.fd < 0 {
            return true;
        }
        let e = self.entry(addr);
        e == u64::MAX || e & (PM_PRESENT | PM_SWAPPED) != 0
    }

    /// The page map's entry for the page holding `addr` (`u64::MAX` if it
    /// cannot be read).
    fn entry(&mut self, addr: u64) -> u64 {
        let page = addr / 4096;
        if page < self.first_page || page >= self.first_page + self.loaded as u64 {
            // SAFETY: pread into our own buffer from our own descriptor.
            let n = unsafe {
                libc::pread(
                    self.fd,
                    self.entries.as_mut_ptr().cast(),
                    std::mem::size_of_val(&self.entries),
                    (page * 8) as libc::off_t,
                )
            };
            if n <= 0 {
                return u64::MAX;
            }
            self.first_page = page;
            self.loaded = n as usize / 8;
        }
        self.entries[(page - self.first_page) as usize]
    }
}

impl Drop for GuardPages {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Checked reads of an address space.
pub(crate) trait Memory {
    fn maps(&self) -> &Maps;

    /// Whether the page holding `addr` is a guard page, which faults when
    /// read although its region is listed readable. Reads of whole
    /// regions of anonymous memory (not blocks, not stacks above their
    /// pointer) must ask first.
    fn is_guard_page(&self, addr: u64) -> bool;

    /// Whether the page holding `addr` was ever touched (present or swapped
    /// out): an untouched page reads as zeros, so scans may skip it. True
    /// when unknown.
    fn is_populated(&self, _addr: u64) -> bool {
        true
    }

    /// The aligned words of `[start, end)` if all of it is readable.
    fn words(&self, start: u64, end: u64) -> Option<&[u64]>;

    /// One aligned word, if readable.
    fn word(&self, addr: u64) -> Option<u64> {
        self.words(addr, addr.checked_add(8)?).map(|w| w[0])
    }

    /// Asks for the cache line holding `addr`, which will be read soon (a
    /// hint: nothing where that costs a lookup).
    fn prefetch(&self, _addr: u64) {}
}

/// This process's own address space (in the snapshot child: a frozen copy
/// with no other thread, so what is read cannot change underneath).
pub(crate) struct OwnMemory {
    pub(crate) maps: Maps,
    pub(crate) guards: std::cell::RefCell<GuardPages>,
}

impl OwnMemory {
    pub(crate) fn read_own() -> Option<OwnMemory> {
        Some(OwnMemory {
            maps: Maps::read_own()?,
            guards: std::cell::RefCell::new(GuardPages::open_own()),
        })
    }
}

impl Memory for OwnMemory {
    fn maps(&self) -> &Maps {
        &self.maps
    }

    fn is_guard_page(&self, addr: u64) -> bool {
        self.guards.borrow_mut().is_guard(addr)
    }

    fn is_populated(&self, addr: u64) -> bool {
        self.guards.borrow_mut().is_populated(addr)
    }

    fn prefetch(&self, addr: u64) {
        super::child::prefetch_address(addr as usize);
    }

    fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
        if start % 8 != 0 || end < start || !self.maps.covers(start, end) {
            return None;
        }
        // SAFETY: `[start, end)` lies in readable mappings of this process,
        // and it is 8-aligned. In the snapshot child no other thread runs,
        // so the words cannot change while the slice is alive.
        Some(unsafe {
            std::slice::from_raw_parts(start as *const u64, ((end - start) / 8) as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_regions_and_their_kinds() {
        let text =
            b"55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\n\
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
7f0000021000-7f0004000000 ---p 00000000 00:00 0 \n\
7f1000000000-7f1000002000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6\n\
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n\
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
        let maps = Maps::parse(text).unwrap();
        let kinds: Vec<RegionKind> = maps.regions().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RegionKind::Brk,
                RegionKind::Anonymous,
                RegionKind::Anonymous,
                RegionKind::File,
                RegionKind::MainStack,
                RegionKind::Special
            ]
        );
        assert!(maps.covers(0x7f00_0000_0000, 0x7f00_0002_1000));
        assert!(!maps.covers(0x7f00_0000_0000, 0x7f00_0002_1008));
        assert_eq!(
            maps.mapping(0x55d0_c000_0010),
            Some((0x55d0_c000_0000, 0x55d0_c002_1000))
        );
        assert!(maps.region(0x7f00_0002_2000).is_some_and(|r| !r.readable));
        assert_eq!(maps.next_readable(0x7f00_0002_2000), Some(0x7f10_0000_0000));
    }

    #[test]
    fn own_memory_reads_only_what_is_mapped() {
        let data = [1u64, 2, 3, 4];
        let mem = OwnMemory::read_own().unwrap();
        let at = data.as_ptr() as u64;
        assert_eq!(mem.words(at, at + 32), Some(&data[..]));
        assert_eq!(mem.word(at + 8), Some(2));
        assert_eq!(mem.word(at + 1), None);
        assert_eq!(mem.word(8), None);
    }
}
