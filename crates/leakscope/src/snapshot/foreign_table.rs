//! An instrumented target's own tables (the library or the preload runs in
//! it), read from its image: every block its live table tracks (exact sizes
//! and allocation stacks in full mode, the sampled ones otherwise) and the
//! return addresses of those stacks. Found through the descriptor the
//! runtime exports (`collect::tables`), whose magic and version are checked
//! before anything else is read.
//!
//! The image is a frozen copy, but the target's threads may have been
//! inside the table when it was taken (a shard's insert half done): every
//! read is bounded and checked, and a slot that reads wrong is skipped.

use std::collections::HashMap;

use super::blocks::Block;
use super::image::Memory;
use super::modules::{self, ForeignObject};
use crate::collect::stack_table::SiteId;
use crate::collect::tables::{self, TablesDescriptor};

/// What the target's tables say.
pub(crate) struct ForeignTable {
    /// Tracked blocks, sorted by address.
    pub(crate) blocks: Vec<Block>,
    /// The return addresses (innermost first) of each site the blocks use.
    pub(crate) sites: HashMap<SiteId, Vec<usize>>,
    /// The sample heap's range (base, length), once it was reserved.
    pub(crate) sample_heap: Option<(u64, u64)>,
}

/// A shard holds at most this many slots (each shard maps its own; 2³²
/// slots would be 64 GiB for one shard).
const MAX_SHARD_SLOTS: u64 = 1 << 32;
/// Stacks are captured at most this deep.
const MAX_DEPTH: u64 = 1024;

/// Where the descriptor is in the image, from its objects' symbol tables.
pub(crate) fn find(objects: &[ForeignObject]) -> Option<u64> {
    modules::find_foreign_variable(objects, tables::SYMBOL)
}

/// Reads the tables through the descriptor at `at`. An error says why they
/// cannot be read (another layout version, memory that is not there).
pub(crate) fn read<M: Memory>(mem: &M, at: u64) -> Result<ForeignTable, String> {
    let words = words_at(mem, at, tables::WORDS as u64)
        .ok_or("its tables' descriptor is not in the image")?;
    let d = TablesDescriptor::<u64>::from_words(words).ok_or_else(|| {
        format!(
            "its leakscope lays its tables out differently (this leakscope reads version {})",
            tables::VERSION
        )
    })?;
    if d.live_slot_bytes < 16 || d.live_slot_bytes % 8 != 0 {
        return Err("its live table's slots are not a known shape".into());
    }
    let mut blocks = live_blocks(mem, &d);
    blocks.sort_unstable_by_key(|b| b.addr);
    blocks.dedup_by_key(|b| b.addr);
    let mut ids: Vec<SiteId> = blocks.iter().map(|b| b.site).collect();
    ids.sort_unstable();
    ids.dedup();
    let sites = site_frames(mem, &d, &ids);
    let region = d.sample_region;
    let sample_heap = match (
        word_at(mem, &[region, d.sample_base_offset]),
        word_at(mem, &[region, d.sample_len_offset]),
    ) {
        (Some(base), Some(len)) if base != 0 && len != 0 => Some((base, len)),
        _ => None,
    };
    Ok(ForeignTable {
        blocks,
        sites,
        sample_heap,
    })
}

fn live_blocks<M: Memory>(mem: &M, d: &TablesDescriptor<u64>) -> Vec<Block> {
    let size_mask = (1u64 << d.live_meta_size_bits.min(63)) - 1;
    let sampled_bit = 1u64 << d.live_meta_sampled_bit.min(63);
    let site_shift = d.live_meta_site_shift.min(63);
    let per_slot = (d.live_slot_bytes / 8) as usize;
    let (addr_word, meta_word) = (
        (d.live_slot_addr_offset / 8) as usize,
        (d.live_slot_meta_offset / 8) as usize,
    );
    if addr_word >= per_slot || meta_word >= per_slot {
        return Vec::new();
    }
    let mut blocks = Vec::new();
    for i in 0..d.live_shard_count.min(1 << 16) {
        let Some(shard) = i
            .checked_mul(d.live_shard_stride)
            .and_then(|o| add(&[d.live_table, d.live_shards_offset, o]))
        else {
            continue;
        };
        let (Some(slots), Some(cap)) = (
            word_at(mem, &[shard, d.live_shard_slots_offset]),
            word_at(mem, &[shard, d.live_shard_cap_offset]),
        ) else {
            continue;
        };
        if slots == 0 || cap == 0 || cap > MAX_SHARD_SLOTS {
            continue;
        }
        let Some(words) = cap
            .checked_mul(d.live_slot_bytes / 8)
            .and_then(|n| words_at(mem, slots, n))
        else {
            continue;
        };
        for slot in words.chunks_exact(per_slot) {
            let (addr, meta) = (slot[addr_word], slot[meta_word]);
            if addr == 0 {
                continue;
            }
            blocks.push(Block {
                addr,
                size: meta & size_mask,
                site: (meta >> site_shift) as SiteId,
                sampled: meta & sampled_bit != 0,
            });
        }
    }
    blocks
}

/// The frames of each of `ids` the image's stack table has.
fn site_frames<M: Memory>(
    mem: &M,
    d: &TablesDescriptor<u64>,
    ids: &[SiteId],
) -> HashMap<SiteId, Vec<usize>> {
    let count = add(&[d.stack_table, d.stack_count_offset])
        .and_then(|at| read_u32(mem, at))
        .unwrap_or(0);
    let records = d.stack_chunk_records.max(1);
    ids.iter()
        .filter(|&&id| id < count && u64::from(id) / records < d.stack_chunk_count)
        .filter_map(|&id| {
            let id64 = u64::from(id);
            let chunk = word_at(
                mem,
                &[d.stack_table, d.stack_chunks_offset, id64 / records * 8],
            )?;
            if chunk == 0 {
                return None;
            }
            let record = add(&[chunk, (id64 % records).checked_mul(d.stack_record_bytes)?])?;
            let frames = word_at(mem, &[record, d.stack_frames_offset])?;
            let depth = u64::from(read_u32(mem, add(&[record, d.stack_depth_offset])?)?);
            if frames == 0 || depth == 0 {
                return Some((id, Vec::new()));
            }
            if depth > MAX_DEPTH {
                return None;
            }
            let words = words_at(mem, frames, depth)?;
            Some((id, words.iter().map(|&w| w as usize).collect()))
        })
        .collect()
}

/// The sum of an address and offsets, if it does not overflow: every
/// number comes from the image, which may be corrupt.
fn add(terms: &[u64]) -> Option<u64> {
    terms.iter().try_fold(0u64, |sum, &t| sum.checked_add(t))
}

/// The word at the sum of `terms`.
fn word_at<M: Memory>(mem: &M, terms: &[u64]) -> Option<u64> {
    mem.word(add(terms)?)
}

/// `count` words from `start`.
fn words_at<M: Memory>(mem: &M, start: u64, count: u64) -> Option<&[u64]> {
    mem.words(start, start.checked_add(count.checked_mul(8)?)?)
}

/// A `u32` at `addr` (4-aligned), read from the word that holds it.
fn read_u32<M: Memory>(mem: &M, addr: u64) -> Option<u32> {
    if addr % 4 != 0 {
        return None;
    }
    let word = mem.word(addr & !7)?;
    Some((word >> ((addr & 7) * 8)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::image::OwnMemory;

    #[test]
    fn reads_this_process_s_own_tables_through_its_descriptor() {
        // This test binary's allocator is not leakscope's, so plant blocks
        // in the table directly and read them back through our own memory.
        let frames = [0x1111usize, 0x2222, 0x3333];
        let site = crate::collect::STACKS.intern(&frames, 0);
        // Any address will do: the reader never reads the block itself.
        let addr = 0x7ead_0000_1230usize;
        crate::collect::LIVE
            .insert(addr, || crate::collect::live_table::LiveEntry {
                size: 48,
                site,
                sampled: false,
                in_filter: false,
            })
            .expect("room in the table");
        let mem = OwnMemory::read_own().expect("our own maps");
        let at = std::ptr::addr_of!(tables::LEAKSCOPE_TABLES_V1) as u64;
        let table = read(&mem, at).expect("our own tables");
        crate::collect::LIVE.remove(addr);
        let block = table
            .blocks
            .iter()
            .find(|b| b.addr == addr as u64)
            .expect("the planted block");
        assert_eq!((block.size, block.site, block.sampled), (48, site, false));
        assert_eq!(table.sites[&site], frames);
        assert!(table.blocks.windows(2).all(|w| w[0].addr < w[1].addr));
    }
}
