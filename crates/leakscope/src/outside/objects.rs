//! The loaded objects of another process (a core file, an attached one):
//! which files are mapped where, their load bias, their writable segments
//! (the analysis's roots), their static TLS templates and build IDs.
//!
//! In-process snapshots learn this from the loader (`dl_iterate_phdr`);
//! from outside, it comes from the file mappings (`NT_FILE` of a core,
//! `/proc/PID/maps` of a live process) and each object's program headers,
//! read from its file on disk with the `object` crate.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use object::elf::{PF_W, PT_LOAD, PT_TLS};
use object::read::elf::{ElfFile64, ProgramHeader as _};
use object::{Endianness, Object, ObjectSymbol};

/// One file mapping: `[start, end)` maps the file from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The path as the process mapped it (may end in ` (deleted)`).
    pub path: String,
}

/// A static TLS template (`PT_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsTemplate {
    pub memsz: u64,
    pub align: u64,
}

/// An ELF object mapped into the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedObject {
    /// The path as the process mapped it.
    pub name: String,
    /// Where its file was read (on disk, through `/proc/PID/root` for a live
    /// process, or the `--exe` override); `None` if it could not be read.
    pub file: Option<PathBuf>,
    /// Load bias: a `p_vaddr` of the file is at `base + p_vaddr`.
    pub base: u64,
    pub mappings: Vec<(u64, u64)>,
    /// Its writable `PT_LOAD` segments in memory (data and bss), the roots
    /// an in-process snapshot takes from `dl_iterate_phdr`.
    pub writable: Vec<(u64, u64)>,
    pub tls: Option<TlsTemplate>,
    /// The GNU build ID of the file read.
    pub build_id: Option<Vec<u8>>,
    /// The program itself (holds the entry point, `AT_ENTRY`).
    pub is_exe: bool,
}

impl LoadedObject {
    /// Whether this is glibc's `libc.so.6` (or a `libc-2.x.so`).
    pub fn is_libc(&self) -> bool {
        let file = self.name.rsplit('/').next().unwrap_or("");
        file.starts_with("libc.so") || (file.starts_with("libc-") && file.contains(".so"))
    }

    /// The address of a dynamic symbol of this object, from its file.
    pub fn dynamic_symbol(&self, name: &str) -> Option<u64> {
        let file = self.file.as_ref()?;
        let map = map_file(file).ok()?;
        let elf = ElfFile64::<Endianness>::parse(&*map).ok()?;
        let sym = elf
            .dynamic_symbols()
            .find(|s| s.name_bytes().ok() == Some(name.as_bytes()) && s.is_definition())?;
        Some(self.base.wrapping_add(sym.address()))
    }
}

/// Maps a file read-only.
pub(crate) fn map_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: the mapping is read-only and private; a file changed on disk
    // while mapped could change what we read, never memory safety of safe
    // code reading bytes (the `object` crate checks every bound).
    unsafe { memmap2::Mmap::map(&file) }
}

/// Groups file mappings into objects and reads each ELF file's headers.
/// `open` turns a mapped path into the path to read (a live process's
/// root, an override for the executable); `entry` is the program's entry
/// point (`AT_ENTRY`), naming the executable. Files that are not ELF
/// objects (data files, fonts) are left out.
pub(crate) fn discover(
    mappings: &[FileMapping],
    entry: Option<u64>,
    open: impl Fn(&str, bool) -> PathBuf,
) -> Vec<LoadedObject> {
    let mut by_path: BTreeMap<&str, Vec<&FileMapping>> = BTreeMap::new();
    for m in mappings {
        by_path.entry(m.path.as_str()).or_default().push(m);
    }
    let mut objects = Vec::new();
    for (name, maps) in by_path {
        let is_exe = entry.is_some_and(|e| maps.iter().any(|m| m.start <= e && e < m.end));
        let path = open(name, is_exe);
        // The load base: the mapping of the file's start that its other
        // segments are laid out from. A process may also map the same file
        // whole for reading (a symboliser, leakscope itself): that mapping
        // starts at offset 0 too, with nothing laid out from it.
        let zero_offset = || maps.iter().filter(|m| m.offset == 0).map(|m| m.start);
        let laid_out_from = |base: u64| {
            maps.iter()
                .any(|m| m.offset > 0 && m.start.checked_sub(m.offset) == Some(base))
        };
        let Some(first) = zero_offset()
            .filter(|&base| laid_out_from(base))
            .min()
            .or_else(|| zero_offset().min())
        else {
            continue;
        };
        let Ok(map) = map_file(&path) else {
            if is_exe || name.contains("libc") {
                objects.push(LoadedObject {
                    name: name.to_string(),
                    file: None,
                    base: first,
                    mappings: maps.iter().map(|m| (m.start, m.end)).collect(),
                    writable: Vec::new(),
                    tls: None,
                    build_id: None,
                    is_exe,
                });
            }
            continue;
        };
        let Ok(elf) = ElfFile64::<Endianness>::parse(&*map) else {
            continue;
        };
        let endian = elf.endian();
        let headers = elf.elf_program_headers();
        // The segment mapped from file offset 0 gives the load bias.
        let Some(first_load) = headers
            .iter()
            .find(|ph| ph.p_type(endian) == PT_LOAD && ph.p_offset(endian) < 4096)
        else {
            continue;
        };
        let base = first.wrapping_sub(first_load.p_vaddr(endian) & !4095);
        let mut obj = LoadedObject {
            name: name.to_string(),
            file: Some(path.clone()),
            base,
            mappings: maps.iter().map(|m| (m.start, m.end)).collect(),
            writable: Vec::new(),
            tls: None,
            build_id: elf.build_id().ok().flatten().map(<[u8]>::to_vec),
            is_exe,
        };
        for ph in headers {
            let (vaddr, memsz) = (ph.p_vaddr(endian), ph.p_memsz(endian));
            if ph.p_type(endian) == PT_LOAD && ph.p_flags(endian).0 & PF_W.0 != 0 && memsz > 0 {
                let start = base.wrapping_add(vaddr);
                obj.writable.push((start, start + memsz));
            }
            if ph.p_type(endian) == PT_TLS && memsz > 0 {
                obj.tls = Some(TlsTemplate {
                    memsz,
                    align: ph.p_align(endian).max(1),
                });
            }
        }
        objects.push(obj);
    }
    objects.sort_by_key(|o| o.base);
    objects
}

/// glibc's release, from the banner every libc.so carries ("... release
/// version 2.36").
pub(crate) fn glibc_release(libc_file: &Path) -> Option<(u32, u32)> {
    let map = map_file(libc_file).ok()?;
    let needle = b"release version ";
    let at = map.windows(needle.len()).position(|w| w == needle)?;
    let rest = &map[at + needle.len()..];
    let end = rest
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(rest.len());
    crate::snapshot::glibc::layout::parse_version(&rest[..end])
}

/// The `AT_ENTRY` and `AT_SYSINFO_EHDR` values of an auxiliary vector.
pub(crate) fn auxv_entry_and_vdso(auxv: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut entry, mut vdso) = (None, None);
    for pair in auxv.chunks_exact(16) {
        let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or_default());
        let value = u64::from_ne_bytes(pair[8..].try_into().unwrap_or_default());
        match key {
            9 => entry = Some(value),
            33 => vdso = Some(value),
            0 => break,
            _ => {}
        }
    }
    (entry, vdso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_mappings_into_objects_with_writable_segments() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mappings: Vec<FileMapping> = maps
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (s, e) = f[0].split_once('-')?;
                let path = f.get(5)?;
                path.starts_with('/').then(|| FileMapping {
                    start: u64::from_str_radix(s, 16).unwrap(),
                    end: u64::from_str_radix(e, 16).unwrap(),
                    offset: u64::from_str_radix(f[2], 16).unwrap(),
                    path: path.to_string(),
                })
            })
            .collect();
        // The same libc also mapped whole for reading, below everything (as
        // a symboliser maps it): not its load base.
        let mut mappings = mappings;
        let libc_path = mappings
            .iter()
            .find(|m| m.path.contains("/libc.so"))
            .unwrap()
            .path
            .clone();
        mappings.push(FileMapping {
            start: 0x10000,
            end: 0x10000 + (2 << 20),
            offset: 0,
            path: libc_path,
        });
        let entry = {
            let auxv = std::fs::read("/proc/self/auxv").unwrap();
            auxv_entry_and_vdso(&auxv).0
        };
        let objects = discover(&mappings, entry, |p, _| PathBuf::from(p));
        let me = objects.iter().find(|o| o.is_exe).unwrap();
        assert_eq!(Path::new(&me.name), exe);
        // A static of this test binary lies in one of its writable segments.
        static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);
        let at = &MARK as *const _ as u64;
        assert!(me.writable.iter().any(|&(s, e)| s <= at && at < e));
        let libc = objects.iter().find(|o| o.is_libc()).unwrap();
        let version = glibc_release(libc.file.as_ref().unwrap()).unwrap();
        assert!(version.0 == 2 && version.1 >= 17, "{version:?}");
        // __curbrk, read through the address the file's symbol gives, is
        // this process's program break.
        let curbrk = libc.dynamic_symbol("__curbrk").unwrap();
        // SAFETY: the address of a libc variable in this process.
        let value = unsafe { *(curbrk as *const u64) };
        // SAFETY: sbrk(0) only reads the break.
        let brk = unsafe { libc::sbrk(0) } as u64;
        assert_eq!(value, brk);
    }
}
