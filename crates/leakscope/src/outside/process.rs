//! A live process's memory as an image: `/proc/PID/maps` for the regions,
//! and a copy of the regions the analysis reads, made up front so that
//! `words()` can hand out slices.
//!
//! The process must not run while it is copied: it is either the frozen
//! child [`super::attach`] made the target fork (nothing runs in it), or
//! the target itself with every thread stopped (the fallback).
//!
//! What is copied ([`CopyPolicy::Roots`], the default): every readable
//! region that is writable, anonymous (heaps, stacks, mmapped chunks), or
//! part of a loaded object's writable segments (their RELRO part is
//! read-only after relocation). Code and read-only file data are left out
//! (listed unreadable) unless [`CopyPolicy::All`]. Private anonymous
//! regions are copied page run by page run, only where the page map says a
//! page is present or swapped: untouched reservations (8 MiB thread stacks,
//! allocator reserves) cost nothing and read as the zeros they are; guard
//! pages (`MADV_GUARD_INSTALL`) are skipped and reported as such. The copy
//! lives in anonymous mappings of this process: leakscope's resident memory
//! grows by the target's resident writable memory for as long as the image
//! lives.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::objects::{self, FileMapping, LoadedObject};
use super::spans::{span_words, Span};
use super::{MappingInfo, ThreadState};
use crate::snapshot::image::{Maps, Memory, Region, RegionKind};

/// Which regions a [`ProcessImage`] copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CopyPolicy {
    /// What the analysis scans: writable and anonymous regions and the
    /// objects' writable segments.
    #[default]
    Roots,
    /// Every readable region (code and read-only data too).
    All,
}

/// A region as `/proc/PID/maps` lists it.
#[derive(Debug, Clone)]
struct Listed {
    region: Region,
    private: bool,
    offset: u64,
    name: String,
}

/// A copy of a stopped or frozen process's memory.
pub struct ProcessImage {
    pid: i32,
    maps: Maps,
    spans: Vec<Span>,
    /// Guard pages, sorted page addresses.
    guards: Vec<u64>,
    threads: Vec<ThreadState>,
    objects: Vec<LoadedObject>,
    copied_bytes: u64,
    _copies: Vec<memmap2::MmapMut>,
}

const PAGE: u64 = 4096;
/// Page map bits: present, swapped, guard region (Linux 6.15 on).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_GUARD: u64 = 1 << 58;

impl ProcessImage {
    /// Copies the memory of `pid`, which must be stopped or frozen, with
    /// the `threads` captured from it. Files are opened through
    /// `/proc/PID/root`, so a process in a container reads its own.
    pub fn copy(
        pid: i32,
        threads: Vec<ThreadState>,
        policy: CopyPolicy,
    ) -> Result<ProcessImage, String> {
        Self::copy_with_files_of(pid, pid, threads, policy)
    }

    /// As [`ProcessImage::copy`], with files read through
    /// `/proc/FILES_OF/root` (the target's, for its short-lived child).
    pub(crate) fn copy_with_files_of(
        pid: i32,
        files_of: i32,
        threads: Vec<ThreadState>,
        policy: CopyPolicy,
    ) -> Result<ProcessImage, String> {
        let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| format!("cannot read /proc/{pid}/maps: {e}"))?;
        let listed: Vec<Listed> = maps_text.lines().filter_map(parse_line).collect();
        let files: Vec<FileMapping> = listed
            .iter()
            .filter(|l| l.region.kind == RegionKind::File)
            .map(|l| FileMapping {
                start: l.region.start,
                end: l.region.end,
                offset: l.offset,
                path: l.name.clone(),
            })
            .collect();
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
        let (entry, _) = objects::auxv_entry_and_vdso(&auxv);
        let root = format!("/proc/{files_of}/root");
        let objects = objects::discover(&files, entry, |p, _| {
            let p = p.strip_suffix(" (deleted)").unwrap_or(p);
            PathBuf::from(format!("{root}{p}"))
        });
        let roots: Vec<(u64, u64)> = objects
            .iter()
            .flat_map(|o| o.writable.iter().copied())
            .collect();
        let wanted = |l: &Listed| {
            let r = &l.region;
            r.readable
                && r.kind != RegionKind::Special
                && (policy == CopyPolicy::All
                    || r.writable
                    || r.kind != RegionKind::File
                    || roots.iter().any(|&(s, e)| s < r.end && r.start < e))
        };
        let mem = File::open(format!("/proc/{pid}/mem"))
            .map_err(|e| format!("cannot open /proc/{pid}/mem: {e}"))?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap")).ok();
        let mut image = ProcessImage {
            pid,
            maps: Maps::from_regions(&[]).ok_or("out of memory")?,
            spans: Vec::new(),
            guards: Vec::new(),
            threads,
            objects,
            copied_bytes: 0,
            _copies: Vec::new(),
        };
        let mut regions = Vec::with_capacity(listed.len());
        // Runs of adjacent wanted regions share one buffer, so reads may
        // cross from one mapping into the next as in the process.
        let mut i = 0;
        while i < listed.len() {
            if !wanted(&listed[i]) {
                let mut r = listed[i].region;
                r.readable = false;
                regions.push(r);
                image.spans.push(Span {
                    start: r.start,
                    end: r.end,
                    at: 0,
                });
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < listed.len()
                && wanted(&listed[j])
                && listed[j].region.start == listed[j - 1].region.end
            {
                j += 1;
            }
            let (start, end) = (listed[i].region.start, listed[j - 1].region.end);
            let mut buffer = memmap2::MmapOptions::new()
                .len((end - start) as usize)
                .map_anon()
                .map_err(|e| format!("cannot reserve memory for the copy: {e}"))?;
            for l in &listed[i..j] {
                let r = l.region;
                let into = &mut buffer[(r.start - start) as usize..(r.end - start) as usize];
                let sparse = l.private
                    && matches!(
                        r.kind,
                        RegionKind::Anonymous | RegionKind::Brk | RegionKind::MainStack
                    );
                image.copied_bytes += copy_region(
                    &mem,
                    pagemap.as_ref().filter(|_| sparse),
                    r.start,
                    into,
                    &mut image.guards,
                );
                regions.push(r);
                image.spans.push(Span {
                    start: r.start,
                    end: r.end,
                    at: buffer.as_ptr() as usize + (r.start - start) as usize,
                });
            }
            image._copies.push(buffer);
            i = j;
        }
        image.guards.sort_unstable();
        image.maps = Maps::from_regions(&regions).ok_or("out of memory")?;
        Ok(image)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn threads(&self) -> &[ThreadState] {
        &self.threads
    }

    pub fn objects(&self) -> &[LoadedObject] {
        &self.objects
    }

    /// Bytes copied from the process (present pages only).
    pub fn copied_bytes(&self) -> u64 {
        self.copied_bytes
    }

    pub fn regions(&self) -> Vec<MappingInfo> {
        self.maps
            .regions()
            .iter()
            .map(super::mapping_info)
            .collect()
    }

    /// One aligned word of the copy.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.word(addr)
    }

    /// Walks glibc's heap in the copy.
    pub fn heap_walk(&self) -> Result<super::HeapWalk, String> {
        super::heap::walk(self, &self.objects, &self.threads)
    }
}

/// Copies one region into `into`; with a page map, only present or swapped
/// pages (the rest is zero in a private anonymous mapping). Pages that
/// cannot be read stay zero; guard pages are recorded. Returns the bytes
/// read.
fn copy_region(
    mem: &File,
    pagemap: Option<&File>,
    start: u64,
    into: &mut [u8],
    guards: &mut Vec<u64>,
) -> u64 {
    let pages = into.len() as u64 / PAGE;
    let Some(pagemap) = pagemap else {
        return read_run(mem, start, into);
    };
    let mut copied = 0;
    // Page map entries in batches of 2 MiB of address space... up to 512 Ki
    // entries (2 GiB) at a time.
    const BATCH: u64 = 1 << 19;
    let mut entries = vec![0u64; BATCH.min(pages) as usize];
    let mut first = 0;
    while first < pages {
        let n = BATCH.min(pages - first) as usize;
        let bytes: &mut [u8] = bytemuck_u64s(&mut entries[..n]);
        let ok = pagemap
            .read_exact_at(bytes, (start / PAGE + first) * 8)
            .is_ok();
        if !ok {
            // No page map (hidden by a security module): copy all of it.
            let from = (first * PAGE) as usize;
            return copied + read_run(mem, start + first * PAGE, &mut into[from..]);
        }
        let mut k = 0;
        while k < n {
            let e = entries[k];
            if e & PM_GUARD != 0 {
                guards.push(start + (first + k as u64) * PAGE);
            }
            if e & (PM_PRESENT | PM_SWAPPED) == 0 || e & PM_GUARD != 0 {
                k += 1;
                continue;
            }
            let run_start = k;
            while k < n && entries[k] & (PM_PRESENT | PM_SWAPPED) != 0 && entries[k] & PM_GUARD == 0
            {
                k += 1;
            }
            let from = ((first + run_start as u64) * PAGE) as usize;
            let to = ((first + k as u64) * PAGE) as usize;
            copied += read_run(mem, start + from as u64, &mut into[from..to]);
        }
        first += n as u64;
    }
    copied
}

/// Reads `into.len()` bytes at `addr`; where a large read fails, page by
/// page (unreadable pages stay zero).
fn read_run(mem: &File, addr: u64, into: &mut [u8]) -> u64 {
    if read_all(mem, addr, into).is_ok() {
        return into.len() as u64;
    }
    let mut copied = 0;
    for (i, page) in into.chunks_mut(PAGE as usize).enumerate() {
        if read_all(mem, addr + i as u64 * PAGE, page).is_ok() {
            copied += page.len() as u64;
        } else {
            page.fill(0);
        }
    }
    copied
}

fn read_all(mem: &File, addr: u64, into: &mut [u8]) -> io::Result<()> {
    // The kernel reads /proc/PID/mem in pieces; read_exact_at loops.
    for (i, piece) in into.chunks_mut(64 << 20).enumerate() {
        mem.read_exact_at(piece, addr + (i as u64) * (64 << 20))?;
    }
    Ok(())
}

fn bytemuck_u64s(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64 and u8 has no alignment
    // requirement; the byte slice covers exactly the words' memory and
    // borrows them mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

fn parse_line(line: &str) -> Option<Listed> {
    let mut f = line.split_ascii_whitespace();
    let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
    let _dev = f.next()?;
    let _inode = f.next()?;
    let name = f.collect::<Vec<_>>().join(" ");
    let (s, e) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
    );
    let kind = match name.as_str() {
        "" => RegionKind::Anonymous,
        "[heap]" => RegionKind::Brk,
        "[stack]" => RegionKind::MainStack,
        n if n.starts_with('[') => RegionKind::Special,
        // Shared memory and deleted files are still files.
        _ => RegionKind::File,
    };
    let p = perms.as_bytes();
    // Device mappings may have side effects when read.
    let device = name.starts_with("/dev/") && !name.starts_with("/dev/shm/");
    Some(Listed {
        region: Region {
            start,
            end,
            readable: p.first() == Some(&b'r') && !device,
            writable: p.get(1) == Some(&b'w'),
            executable: p.get(2) == Some(&b'x'),
            kind,
        },
        private: p.get(3) == Some(&b'p'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        name,
    })
}

impl Memory for ProcessImage {
    fn maps(&self) -> &Maps {
        &self.maps
    }

    fn is_guard_page(&self, addr: u64) -> bool {
        self.guards.binary_search(&(addr & !(PAGE - 1))).is_ok()
    }

    fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
        span_words(&self.spans, start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = parse_line(
            "7f1000000000-7f1000002000 rw-p 00001000 08:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(l.region.kind, RegionKind::File);
        assert!(l.private && l.region.writable && l.region.readable);
        assert_eq!(l.offset, 0x1000);
        let l = parse_line("55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0  [heap]").unwrap();
        assert_eq!(l.region.kind, RegionKind::Brk);
        let l = parse_line("7f0000000000-7f0000021000 rw-s 00000000 00:01 7 /memfd:x (deleted)")
            .unwrap();
        assert!(!l.private);
        assert_eq!(l.name, "/memfd:x (deleted)");
    }
}
