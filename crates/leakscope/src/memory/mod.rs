//! Where this process's RSS goes, now: `/proc/self/smaps` read in the
//! calling process (never in a snapshot's child: reading it allocates),
//! classified by [`leakscope_profile::memory::compute`] with the heap's
//! figures (a heap walk, `mallinfo2()`, or the profiler's live figures).

#[cfg(feature = "jemalloc")]
mod jemalloc;
mod smaps;

use std::io;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use leakscope_profile::memory::Inputs;
pub use leakscope_profile::memory::{
    AllocatorHeap, Breakdown, HeapFigures, HeapSource, JemallocStats, Live, LiveSource, Part,
    PartKind,
};
use leakscope_profile::snapshot::Amount;

use crate::collect::thread::UntrackedScope;
use crate::config::Mode;

/// The process's mappings and RSS, with what leakscope knows of them
/// (its own mappings, the threads' stack pointers); the heap's figures are
/// left for the caller.
pub(crate) fn read_process() -> io::Result<Inputs> {
    let _scope = UntrackedScope::enter();
    let here = 0u8;
    let mut stack_pointers = vec![std::ptr::addr_of!(here) as u64];
    stack_pointers.extend(blocked_threads_stack_pointers());
    let (mappings, rss) = consistent_mappings()?;
    let mut own = Vec::new();
    crate::collect::raw_mem::own_mappings(|start, len| {
        own.push((start as u64, len as u64, resident_bytes(start, len)));
    });
    let objects = loaded_segments();
    let object_bss = objects
        .bss
        .into_iter()
        .map(|(start, len)| (start as u64, len as u64, resident_bytes(start, len)))
        .collect();
    Ok(Inputs {
        pid: std::process::id(),
        time_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        rss,
        mappings,
        stack_pointers,
        own,
        sample_heap: crate::collect::sample_heap::range().map(|(s, l)| (s as u64, l as u64)),
        object_bss,
        object_segments: objects.segments,
        heap: HeapFigures::default(),
    })
}

/// How many times the mappings are read again when RSS moved while they
/// were read.
const MAPPING_READS: usize = 3;

/// This process's mappings (`smaps`) and its RSS (`smaps_rollup`), read
/// again (up to [`MAPPING_READS`] times) while RSS differs before and after
/// the mappings were read: the parts of a breakdown come from the mappings
/// and must sum to the RSS beside them, which a service freeing or touching
/// memory meanwhile (a trim, an unmapped large block) would contradict.
/// The last reading stands if RSS never held still.
fn consistent_mappings() -> io::Result<(Vec<leakscope_profile::memory::Mapping>, u64)> {
    settled_reading(
        || {
            std::fs::read_to_string("/proc/self/smaps_rollup")
                .ok()
                .and_then(|t| smaps::rollup_rss(&t))
        },
        || Ok(smaps::parse(&std::fs::read_to_string("/proc/self/smaps")?)),
    )
}

/// [`consistent_mappings`] over any readers of RSS and of the mappings.
fn settled_reading(
    mut rss: impl FnMut() -> Option<u64>,
    mut mappings: impl FnMut() -> io::Result<Vec<leakscope_profile::memory::Mapping>>,
) -> io::Result<(Vec<leakscope_profile::memory::Mapping>, u64)> {
    let mut before = rss();
    let mut read = 0;
    loop {
        let maps = mappings()?;
        let after = rss();
        read += 1;
        if after == before || read == MAPPING_READS {
            let mapped = maps.iter().map(|m| m.rss).sum();
            return Ok((maps, after.unwrap_or(mapped)));
        }
        before = after;
    }
}

/// The stack pointers of threads blocked in the kernel (most of a
/// service's threads, most of the time), from `/proc/self/task/*/syscall`;
/// a running thread's is not there ("running").
fn blocked_threads_stack_pointers() -> Vec<u64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("syscall")).ok())
        .filter_map(|line| {
            // "nr arg1 .. arg6 sp pc" in a system call, "-1 sp pc" blocked
            // outside one.
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let sp = fields.len().checked_sub(2).map(|i| fields[i])?;
            u64::from_str_radix(sp.strip_prefix("0x")?, 16).ok()
        })
        .collect()
}

/// Where the loader placed every loaded object's segments.
#[derive(Default)]
struct LoadedSegments {
    /// Every loadable segment, page-aligned: (start, end).
    segments: Vec<(u64, u64)>,
    /// The anonymous tails of writable segments (`.bss` past the file's
    /// last page): (start, length).
    bss: Vec<(usize, usize)>,
}

fn loaded_segments() -> LoadedSegments {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        const PAGE: usize = crate::collect::raw_mem::PAGE;
        // SAFETY: the loader passes a valid info record, and `data` is the
        // record passed to dl_iterate_phdr below.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<LoadedSegments>()) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD) {
            let start = info.dlpi_addr as usize + h.p_vaddr as usize;
            let end = (start + h.p_memsz as usize).next_multiple_of(PAGE);
            out.segments
                .push(((start / PAGE * PAGE) as u64, end as u64));
            let file_end = (start + h.p_filesz as usize).next_multiple_of(PAGE);
            if h.p_flags & libc::PF_W != 0 && end > file_end {
                out.bss.push((file_end, end - file_end));
            }
        }
        0
    }
    let mut out = LoadedSegments::default();
    // SAFETY: `each` only reads the loader's records and pushes to `out`,
    // which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut out).cast()) };
    out
}

/// Resident bytes of a page-aligned range that is mapped (`mincore`).
fn resident_bytes(start: usize, len: usize) -> u64 {
    const PAGE: usize = crate::collect::raw_mem::PAGE;
    let pages = len.div_ceil(PAGE);
    let mut vec = vec![0u8; pages];
    // SAFETY: `start..start+len` is page aligned, and `vec` has one byte
    // per page of it; mincore only reports (ENOMEM if part is unmapped).
    let r = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        // Unmapped meanwhile: nothing of it is resident.
        return 0;
    }
    (vec.iter().filter(|&&b| b & 1 != 0).count() * PAGE) as u64
}

#[cfg(feature = "jemalloc")]
pub use jemalloc::stats as jemalloc_stats;

/// Reads a wrapped allocator's own statistics (`None` when it cannot).
pub type AllocatorStatsReader = fn() -> Option<AllocatorHeap>;

/// The reader the front end declared, set once at initialisation.
static ALLOCATOR_STATS: OnceLock<AllocatorStatsReader> = OnceLock::new();

/// Declares the reader of the wrapped allocator's statistics (once; the
/// first declaration stays).
pub(crate) fn register_allocator_stats(read: AllocatorStatsReader) {
    let _ = ALLOCATOR_STATS.set(read);
}

/// What the allocator says of itself without a walk: the wrapped
/// allocator's statistics when a reader was declared, glibc's `mallinfo2()`
/// (totals over every arena), or, for another allocator, its name (its
/// statistics are not read).
pub(crate) fn allocator_figures() -> AllocatorHeap {
    if let Some(figures) = ALLOCATOR_STATS.get().and_then(|read| read()) {
        return figures;
    }
    if let Some(other) = crate::snapshot::other_allocator() {
        return AllocatorHeap {
            allocator: format!("{other}; its statistics are not read"),
            ..AllocatorHeap::default()
        };
    }
    // SAFETY: mallinfo2 takes each arena's lock in turn and only reads;
    // this is ordinary code outside any allocator hook.
    let m = unsafe { libc::mallinfo2() };
    // SAFETY: returns a static NUL-terminated string.
    let release = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    AllocatorHeap {
        from: HeapSource::Mallinfo2,
        allocator: format!("glibc {}", release.to_string_lossy()),
        system_bytes: m.arena as u64,
        in_use_bytes: m.uordblks as u64,
        // mallinfo2 names only the main arena's top chunk (`keepcost`);
        // the other arenas' tops are counted with the bins.
        free_in_bins: (m.fordblks as u64)
            .saturating_sub(m.fsmblks as u64)
            .saturating_sub(m.keepcost as u64),
        fast_bins: m.fsmblks as u64,
        tcache: 0,
        top_bytes: m.keepcost as u64,
        mmapped: Amount {
            blocks: m.hblks as u64,
            bytes: m.hblkhd as u64,
        },
        arenas: Vec::new(),
        jemalloc: None,
    }
}

/// The program's live blocks as a heap profile counts them (exact in full
/// mode, estimated in sampled mode, unknown when off).
pub(crate) fn live_from_profile(profile: &crate::HeapProfile) -> Option<Live> {
    let from = match profile.mode() {
        Mode::Full => LiveSource::LiveTable,
        Mode::Sampled => LiveSource::SampledEstimate,
        Mode::Off => return None,
    };
    let (objects, bytes) = profile.sites().iter().fold((0.0, 0.0), |(o, b), s| {
        (o + s.inuse_objects, b + s.inuse_space)
    });
    Some(Live {
        amount: Amount {
            blocks: objects.round() as u64,
            bytes: bytes.round() as u64,
        },
        from,
    })
}

/// A breakdown without a heap walk, from the profile just read (periodic
/// sets, which have one anyway).
pub(crate) fn breakdown_with_profile(profile: &crate::HeapProfile) -> io::Result<Breakdown> {
    let mut inputs = read_process()?;
    let _scope = UntrackedScope::enter();
    inputs.heap = HeapFigures {
        live: live_from_profile(profile),
        allocator: allocator_figures(),
        leakscope_blocks: Amount::default(),
    };
    Ok(leakscope_profile::memory::compute(&inputs))
}

/// Where this process's RSS goes now, without stopping it: `smaps`, the
/// allocator's own statistics (`mallinfo2()` for glibc) and the profiler's
/// live figures. A snapshot's report carries one with the heap walk's
/// figures per arena ([`crate::snapshot::SnapshotReport::memory`]).
pub fn breakdown() -> io::Result<Breakdown> {
    let _scope = UntrackedScope::enter();
    let profile = crate::heap_profile();
    breakdown_with_profile(&profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_profile::memory::Mapping;

    fn mapping(rss: u64) -> Mapping {
        Mapping {
            rss,
            ..Mapping::default()
        }
    }

    #[test]
    fn mappings_are_read_again_while_rss_moves() {
        // RSS shrank while the first reading ran (a trim), then held still.
        let mut rss = [9000, 8000, 8000].into_iter();
        let mut maps = [9000, 8000].into_iter();
        let (read, at) =
            settled_reading(|| rss.next(), || Ok(vec![mapping(maps.next().unwrap())])).unwrap();
        assert_eq!((read[0].rss, at), (8000, 8000));
        // RSS never holds still: the third reading stands.
        let mut moving = 0..;
        let mut reads = 0;
        let (_, at) = settled_reading(
            || moving.next(),
            || {
                reads += 1;
                Ok(Vec::new())
            },
        )
        .unwrap();
        assert_eq!((reads, at), (MAPPING_READS, MAPPING_READS as u64));
    }
}
