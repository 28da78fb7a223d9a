//! An ELF core file (`gcore PID`, or a kernel core) as a memory image.
//!
//! The core is mapped read-only; a word is read straight from the mapping
//! (segments whose file offset is not 8-aligned are copied once). What the
//! core holds:
//! - memory: one `PT_LOAD` per mapping of the process. A segment whose
//!   `p_filesz` is short of `p_memsz` was left out (in part) by the dumper:
//!   file-backed memory that was never written (code, read-only data) is
//!   read from the mapped file on disk instead (`CoreOptions::fill_from_files`,
//!   at the offset `NT_FILE` gives; unreadable if the file is gone or
//!   shorter), and anonymous memory reads as zeros (the kernel and gdb leave
//!   out anonymous mappings nothing was ever written to, which are zero,
//!   and mappings marked `MADV_DONTDUMP`, whose owner chose to hide them);
//! - `NT_FILE`: which file each file mapping maps, so regions are told
//!   file-backed or anonymous, and the loaded objects are found;
//! - `NT_PRSTATUS`: each thread's id and registers (`fs_base` on x86-64 is
//!   its thread pointer; aarch64's comes in `NT_ARM_TLS`);
//! - `NT_PRPSINFO`: the process id, naming the main thread;
//! - `NT_AUXV`: the entry point (naming the executable) and the vDSO.
//!
//! A core does not name anonymous mappings, so two are recognised:
//! the program break area (`[heap]`, which the heap walker starts from) is
//! the anonymous region holding the address before glibc's current break
//! (`__curbrk`, a dynamic symbol of libc read from the core), else the first
//! anonymous region within 1 GiB above the executable (where the kernel
//! puts it); the main thread's stack is the region holding its stack
//! pointer.

use std::path::{Path, PathBuf};

use object::elf::{
    FileHeader64, ELF_NOTE_CORE, ELF_NOTE_LINUX, ET_CORE, NT_ARM_TLS, NT_AUXV, NT_FILE,
    NT_PRPSINFO, NT_PRSTATUS, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE,
};
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::Endianness;

use super::objects::{self, FileMapping, LoadedObject};
use super::regs::{self, PRSTATUS_PID_OFFSET, PRSTATUS_REGS_OFFSET};
use super::spans::{span_words, Span};
use super::{MappingInfo, ThreadState};
use crate::snapshot::image::{Maps, Memory, Region, RegionKind};

/// How to open a core.
#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    /// The executable to read, instead of the path the core names (a core
    /// copied from another machine, a binary moved since).
    pub exe: Option<PathBuf>,
    /// Read file-backed memory the core left out from the files on disk.
    pub fill_from_files: bool,
}

/// A core file's memory, threads and loaded objects.
pub struct CoreImage {
    pid: i32,
    maps: Maps,
    /// Sorted by start, one per region of `maps`.
    spans: Vec<Span>,
    threads: Vec<ThreadState>,
    objects: Vec<LoadedObject>,
    /// Regions read from files on disk rather than from the core.
    from_files: Vec<(u64, u64)>,
    // The memory `spans` point into: kept alive, never moved.
    _core: memmap2::Mmap,
    _files: Vec<memmap2::Mmap>,
    _copies: Vec<memmap2::MmapMut>,
}

/// A core's contents before the regions are built.
struct Notes {
    pid: i32,
    threads: Vec<(i32, Vec<u64>)>,
    tls: Vec<u64>,
    auxv: Vec<u8>,
    files: Vec<FileMapping>,
}

impl CoreImage {
    /// Maps and reads `path`. Errors name what is wrong with the file in
    /// one line.
    pub fn open(path: &Path, options: &CoreOptions) -> Result<CoreImage, String> {
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
        // SAFETY: a read-only private mapping; the bytes are only read
        // through bounds-checked slices (a core truncated under us would
        // fault, as any reader of a file being truncated).
        let core =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot map {shown}: {e}"))?;
        let data: &[u8] = &core;
        let header = FileHeader64::<Endianness>::parse(data)
            .map_err(|_| format!("{shown} is not a 64-bit ELF file"))?;
        let endian = header
            .endian()
            .map_err(|_| format!("{shown}: unknown byte order"))?;
        if header.e_type(endian) != ET_CORE {
            return Err(format!("{shown} is an ELF file but not a core file"));
        }
        if header.e_machine(endian).0 != regs::MACHINE {
            return Err(format!(
                "{shown} is a core of another architecture (ELF machine {}); read it with a leakscope built for that one",
                header.e_machine(endian).0
            ));
        }
        let headers = header
            .program_headers(endian, data)
            .map_err(|_| format!("{shown}: program headers out of the file (truncated core?)"))?;
        let mut notes = Notes {
            pid: 0,
            threads: Vec::new(),
            tls: Vec::new(),
            auxv: Vec::new(),
            files: Vec::new(),
        };
        for ph in headers.iter().filter(|ph| ph.p_type(endian) == PT_NOTE) {
            let Ok(Some(mut it)) = ph.notes(endian, data) else {
                return Err(format!("{shown}: a note segment is out of the file"));
            };
            while let Ok(Some(note)) = it.next() {
                read_note(&mut notes, note.name(), note.n_type(endian), note.desc());
            }
        }
        if notes.threads.is_empty() {
            return Err(format!("{shown}: no thread (NT_PRSTATUS) in the core"));
        }
        let (entry, vdso) = objects::auxv_entry_and_vdso(&notes.auxv);
        let exe = options.exe.clone();
        let objects = objects::discover(&notes.files, entry, |p, is_exe| match (&exe, is_exe) {
            (Some(exe), true) => exe.clone(),
            _ => PathBuf::from(p.strip_suffix(" (deleted)").unwrap_or(p)),
        });

        let mut image = CoreImage {
            pid: notes.pid,
            maps: Maps::from_regions(&[]).ok_or("out of memory")?,
            spans: Vec::new(),
            threads: Vec::new(),
            objects,
            from_files: Vec::new(),
            _core: memmap2::MmapOptions::new()
                .len(1)
                .map_anon()
                .and_then(memmap2::MmapMut::make_read_only)
                .map_err(|e| e.to_string())?,
            _files: Vec::new(),
            _copies: Vec::new(),
        };
        let mut regions = Vec::new();
        let mut file_maps: Vec<(String, Option<memmap2::Mmap>)> = Vec::new();
        for ph in headers.iter().filter(|ph| ph.p_type(endian) == PT_LOAD) {
            let (vaddr, memsz) = (ph.p_vaddr(endian), ph.p_memsz(endian));
            let (offset, filesz) = (ph.p_offset(endian), ph.p_filesz(endian).min(memsz));
            let flags = ph.p_flags(endian);
            if memsz == 0 {
                continue;
            }
            let end = vaddr
                .checked_add(memsz)
                .ok_or_else(|| format!("{shown}: a segment wraps around"))?;
            let file_of = notes
                .files
                .iter()
                .find(|f| f.start <= vaddr && vaddr < f.end);
            let special = Some(vaddr) == vdso || vaddr >= 0xffff_ffff_ff60_0000;
            let kind = match (special, file_of) {
                (true, _) => RegionKind::Special,
                (false, Some(_)) => RegionKind::File,
                (false, None) => RegionKind::Anonymous,
            };
            let readable = flags.0 & PF_R.0 != 0;
            let writable = flags.0 & PF_W.0 != 0;
            let executable = flags.0 & PF_X.0 != 0;
            let region = |start, end, readable| Region {
                start,
                end,
                readable,
                writable,
                executable,
                kind,
            };
            // The part the core holds.
            if filesz > 0 {
                let bytes = offset
                    .checked_add(filesz)
                    .and_then(|e| data.get(offset as usize..e as usize))
                    .ok_or_else(|| {
                        format!("{shown}: a segment is out of the file (truncated core?)")
                    })?;
                let at = if bytes.as_ptr() as usize % 8 == 0 {
                    bytes.as_ptr() as usize
                } else {
                    let mut copy = memmap2::MmapMut::map_anon(bytes.len())
                        .map_err(|e| format!("out of memory: {e}"))?;
                    copy.copy_from_slice(bytes);
                    let at = copy.as_ptr() as usize;
                    image._copies.push(copy);
                    at
                };
                regions.push(region(vaddr, vaddr + filesz, readable));
                image.spans.push(Span {
                    start: vaddr,
                    end: vaddr + filesz,
                    at,
                });
            }
            if filesz == memsz {
                continue;
            }
            // The part left out.
            let (start, len) = (vaddr + filesz, memsz - filesz);
            let mut at = 0usize;
            if !readable || kind == RegionKind::Special {
            } else if let Some(f) = file_of {
                if options.fill_from_files {
                    at = file_bytes(&mut file_maps, f, &image.objects, &exe, start, end)
                        .unwrap_or(0);
                    if at != 0 {
                        image.from_files.push((start, end));
                    }
                }
            } else {
                let zero = memmap2::MmapOptions::new()
                    .len(len as usize)
                    .map_anon()
                    .map_err(|e| format!("cannot reserve {len} bytes of zeros: {e}"))?;
                at = zero.as_ptr() as usize;
                image._copies.push(zero);
            }
            regions.push(region(start, end, readable && at != 0));
            image.spans.push(Span { start, end, at });
        }
        image._files = file_maps.into_iter().filter_map(|(_, m)| m).collect();
        image._core = core;
        regions.sort_by_key(|r| r.start);
        image.spans.sort_by_key(|s| s.start);

        // Threads: the process's own id names the main thread.
        for (i, (tid, words)) in notes.threads.iter().enumerate() {
            let (saved, tp) = regs::from_user_regs(words)
                .ok_or_else(|| format!("{shown}: a thread's registers are cut short"))?;
            image.threads.push(ThreadState {
                tid: *tid,
                regs: saved,
                tp: tp.or(notes.tls.get(i).copied()).unwrap_or(0),
            });
        }
        image.maps = Maps::from_regions(&regions).ok_or("out of memory")?;
        // The two anonymous regions a core does not name.
        let brk = image.program_break();
        let main_sp = image
            .threads
            .iter()
            .find(|t| t.tid == notes.pid)
            .or(image.threads.first())
            .map(|t| t.sp());
        for r in regions.iter_mut() {
            if r.kind != RegionKind::Anonymous {
                continue;
            }
            if brk.is_some_and(|b| r.start < b && b <= r.end) {
                r.kind = RegionKind::Brk;
            } else if main_sp.is_some_and(|sp| r.start <= sp && sp < r.end) {
                r.kind = RegionKind::MainStack;
            }
        }
        image.maps = Maps::from_regions(&regions).ok_or("out of memory")?;
        Ok(image)
    }

    /// The end of the program break area: glibc's `__curbrk`, else the end
    /// of the first anonymous region within 1 GiB above the executable.
    fn program_break(&self) -> Option<u64> {
        let libc = self.objects.iter().find(|o| o.is_libc());
        if let Some(curbrk) = libc.and_then(|l| l.dynamic_symbol("__curbrk")) {
            if let Some(b) = self.word(curbrk).filter(|&b| b != 0) {
                let has_heap = self
                    .maps
                    .region(b - 1)
                    .is_some_and(|r| r.kind == RegionKind::Anonymous);
                return has_heap.then_some(b);
            }
        }
        let exe = self.objects.iter().find(|o| o.is_exe)?;
        let exe_end = exe
            .writable
            .iter()
            .chain(exe.mappings.iter())
            .map(|&(_, e)| e.next_multiple_of(4096))
            .max()?;
        self.maps
            .regions()
            .iter()
            .find(|r| {
                r.kind == RegionKind::Anonymous
                    && r.writable
                    && r.start > exe_end
                    && r.start - exe_end < (1 << 30)
            })
            .map(|r| r.end)
    }

    /// The process id the core was taken from.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The threads, in the order of the core (the thread that got the
    /// signal, for a kernel core, first).
    pub fn threads(&self) -> &[ThreadState] {
        &self.threads
    }

    pub fn objects(&self) -> &[LoadedObject] {
        &self.objects
    }

    /// The regions, sorted by address.
    pub fn regions(&self) -> Vec<MappingInfo> {
        self.maps
            .regions()
            .iter()
            .map(super::mapping_info)
            .collect()
    }

    /// Regions whose bytes came from files on disk, not from the core.
    pub fn filled_from_files(&self) -> &[(u64, u64)] {
        &self.from_files
    }

    /// One aligned word of the image.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.word(addr)
    }

    /// Walks glibc's heap in the image.
    pub fn heap_walk(&self) -> Result<super::HeapWalk, String> {
        super::heap::walk(self, &self.objects, &self.threads)
    }
}

/// The bytes of `[start, end)` of file mapping `f`, from the file on disk.
fn file_bytes(
    cache: &mut Vec<(String, Option<memmap2::Mmap>)>,
    f: &FileMapping,
    objects: &[LoadedObject],
    exe: &Option<PathBuf>,
    start: u64,
    end: u64,
) -> Option<usize> {
    if !cache.iter().any(|(p, _)| *p == f.path) {
        let path = match (exe, objects.iter().find(|o| o.name == f.path)) {
            (Some(exe), Some(o)) if o.is_exe => exe.clone(),
            _ => PathBuf::from(&f.path),
        };
        cache.push((f.path.clone(), objects::map_file(&path).ok()));
    }
    let map = cache.iter().find(|(p, _)| *p == f.path)?.1.as_ref()?;
    let from = f.offset.checked_add(start - f.start)?;
    let to = from.checked_add(end - start)?;
    let bytes = map.get(from as usize..to as usize)?;
    (bytes.as_ptr() as usize % 8 == 0).then_some(bytes.as_ptr() as usize)
}

fn read_note(notes: &mut Notes, name: &[u8], kind: object::elf::NoteType, desc: &[u8]) {
    let word = |at: usize| {
        desc.get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    if name == ELF_NOTE_CORE && kind == NT_PRSTATUS {
        let Some(pid) = desc.get(PRSTATUS_PID_OFFSET..PRSTATUS_PID_OFFSET + 4) else {
            return;
        };
        let tid = i32::from_ne_bytes(pid.try_into().unwrap_or_default());
        let words = regs::words_of(desc.get(PRSTATUS_REGS_OFFSET..).unwrap_or_default());
        notes.threads.push((tid, words));
    } else if name == ELF_NOTE_CORE && kind == NT_PRPSINFO {
        // struct elf_prpsinfo: state, sname, zomb, nice, flag (8), uid,
        // gid, pid.
        if let Some(pid) = desc.get(24..28) {
            notes.pid = i32::from_ne_bytes(pid.try_into().unwrap_or_default());
        }
    } else if name == ELF_NOTE_CORE && kind == NT_AUXV {
        notes.auxv = desc.to_vec();
    } else if name == ELF_NOTE_CORE && kind == NT_FILE {
        // count, page size, count × (start, end, offset in pages), names.
        let (Some(count), Some(page)) = (word(0), word(8)) else {
            return;
        };
        let names_at = 16 + 24 * count as usize;
        let Some(names) = desc.get(names_at..) else {
            return;
        };
        for (i, name) in names.split(|&b| b == 0).take(count as usize).enumerate() {
            let at = 16 + 24 * i;
            let (Some(start), Some(end), Some(pages)) = (word(at), word(at + 8), word(at + 16))
            else {
                return;
            };
            notes.files.push(FileMapping {
                start,
                end,
                offset: pages.wrapping_mul(page),
                path: String::from_utf8_lossy(name).into_owned(),
            });
        }
    } else if (name == ELF_NOTE_LINUX || name == ELF_NOTE_CORE) && kind == NT_ARM_TLS {
        if let Some(tp) = word(0) {
            notes.tls.push(tp);
        }
    }
}

impl Memory for CoreImage {
    fn maps(&self) -> &Maps {
        &self.maps
    }

    /// A core has no guard pages: what could not be read was left out.
    fn is_guard_page(&self, _addr: u64) -> bool {
        false
    }

    fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
        span_words(&self.spans, start, end)
    }
}
