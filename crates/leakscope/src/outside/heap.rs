//! The glibc heap walker over an image of another process, and the facts
//! about its libc that the walker needs (`Prepared`), found from the
//! image's files and memory instead of this process's loader.

use super::objects::{self, LoadedObject};
use super::ThreadState;
use crate::snapshot::glibc::{self, HeapStats, Prepared, ThreadRef, WalkedBlock};
use crate::snapshot::image::Memory;
use crate::snapshot::mmap_vec::MmapVec;

/// What a walk of glibc's heap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapWalk {
    pub glibc: (u32, u32),
    /// Blocks in use, `(address, usable bytes)`, sorted by address.
    pub blocks: Vec<(u64, u64)>,
    pub arenas: u32,
    pub threads_with_tcache: u32,
    pub mmapped_chunks: u64,
    /// Bytes of the chunks in use in all arenas (headers included).
    pub in_use_bytes: u64,
    /// Free chunks in bins, fast bins and tcaches (count, bytes).
    pub free_chunks: u64,
    pub free_bytes: u64,
    /// Where libc's thread-local block was taken to be relative to the
    /// thread pointer (`None`: the whole static TLS area was searched).
    pub libc_tls: Option<(i64, u64)>,
}

/// The facts about the image's libc: its release (from the banner in its
/// file), its writable segments (from its program headers), the size of
/// all static TLS blocks, and libc's own TLS block found through a
/// thread's DTV when that can be checked.
pub(crate) fn prepare<M: Memory>(
    mem: &M,
    objects: &[LoadedObject],
    threads: &[ThreadState],
) -> Result<Prepared, String> {
    let libc = objects.iter().find(|o| o.is_libc()).ok_or(
        "no glibc libc.so in the process (a static binary or another C library): the heap walker needs glibc's malloc",
    )?;
    let file = libc
        .file
        .as_ref()
        .ok_or_else(|| format!("cannot read {} (the process's libc)", libc.name))?;
    let version = objects::glibc_release(file)
        .ok_or_else(|| format!("{} carries no glibc release banner", file.display()))?;
    // Static TLS: every initially loaded object's block, each aligned, and
    // the loader's surplus (dlopen'd objects with static TLS use it).
    let static_tls_bytes = objects
        .iter()
        .filter_map(|o| o.tls)
        .map(|t| t.memsz.next_multiple_of(t.align.max(1)))
        .sum::<u64>()
        + 1664;
    let libc_tls = libc
        .tls
        .and_then(|t| libc_tls_from_dtv(mem, objects, libc, threads, t.memsz));
    Ok(Prepared::from_parts(
        version,
        &libc.writable,
        libc_tls,
        static_tls_bytes,
    ))
}

/// libc's TLS block as an offset from the thread pointer, from the first
/// thread's dynamic thread vector (x86-64: `tcbhead_t.dtv` at `tp + 8`,
/// entries of two words, module ids from 1): libc's module id is its rank
/// among the objects with TLS in load order, which for objects loaded at
/// start-up is the executable first, then the libraries as the link map
/// lists them. The map order is not in the image without reading the
/// loader's private structures, so every module id whose block fits
/// libc's template size is tried, and one is taken only if exactly one
/// candidate lies within the static TLS area below the thread pointer and
/// the same offset holds in every thread.
fn libc_tls_from_dtv<M: Memory>(
    mem: &M,
    objects: &[LoadedObject],
    libc: &LoadedObject,
    threads: &[ThreadState],
    libc_size: u64,
) -> Option<(i64, u64)> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let with_tls: Vec<&LoadedObject> = objects.iter().filter(|o| o.tls.is_some()).collect();
    let static_bytes: u64 = with_tls.iter().filter_map(|o| o.tls).map(|t| t.memsz).sum();
    let t0 = threads.first()?;
    let dtv = mem.word(t0.tp + 8)?;
    // dtv[-1] holds the vector's length on glibc 2.25+.
    let len = mem.word(dtv.checked_sub(16)?)?.min(4096);
    let mut found = None;
    for modid in 1..=len {
        let block = mem.word(dtv + 16 * modid)?;
        let offset = block.wrapping_sub(t0.tp) as i64;
        if offset >= 0 || offset.unsigned_abs() > static_bytes + 4096 {
            continue;
        }
        // The block of the next module (or the thread pointer) bounds it.
        let room = (1..=len)
            .filter_map(|m| mem.word(dtv + 16 * m))
            .filter(|&b| b > block && b <= t0.tp)
            .min()
            .unwrap_or(t0.tp)
            - block;
        if room < libc_size || room > libc_size + 64 + libc_size.next_multiple_of(64) {
            continue;
        }
        if found.is_some() {
            // Two blocks of libc's size: the order cannot tell them apart.
            return None;
        }
        found = Some(offset);
    }
    let _ = libc;
    let offset = found?;
    // Static TLS sits at the same distance in every thread.
    threads
        .iter()
        .all(|t| {
            mem.word(t.tp + 8).is_some_and(|d| {
                (1..=len).any(|m| mem.word(d + 16 * m) == Some(t.tp.wrapping_add_signed(offset)))
            })
        })
        .then_some((offset, libc_size))
}

/// Walks glibc's heap of an image.
pub(crate) fn walk<M: Memory>(
    mem: &M,
    objects: &[LoadedObject],
    threads: &[ThreadState],
) -> Result<HeapWalk, String> {
    let prep = prepare(mem, objects, threads)?;
    let refs: Vec<ThreadRef> = threads.iter().map(ThreadState::walker_ref).collect();
    let mut out: MmapVec<WalkedBlock> = MmapVec::new();
    let mut stats = HeapStats::default();
    glibc::walk(&prep, mem, &refs, &mut out, &mut stats).map_err(|e| e.message().to_string())?;
    let arenas = &stats.per_arena[..(stats.arenas as usize).min(glibc::MAX_ARENAS)];
    Ok(HeapWalk {
        glibc: prep.version,
        blocks: out.iter().map(|b| (b.addr, b.usable)).collect(),
        arenas: stats.arenas,
        threads_with_tcache: stats.threads_with_tcache,
        mmapped_chunks: stats.mmapped_chunks,
        in_use_bytes: arenas.iter().map(|a| a.in_use_bytes).sum(),
        free_chunks: arenas
            .iter()
            .map(|a| a.bin_chunks + a.fast_chunks + a.tcache_chunks)
            .sum(),
        free_bytes: arenas
            .iter()
            .map(|a| a.bin_bytes + a.fast_bytes + a.tcache_bytes)
            .sum(),
        libc_tls: prep.libc_tls,
    })
}
