//! Where this process keeps its tables, for a reader of its memory from
//! outside (`leakscope attach`, `leakscope core`): one exported, versioned
//! descriptor (`LEAKSCOPE_TABLES_V1`) giving the addresses of the live
//! table, the stack table and the sample heap, and the offsets of every
//! field the reader needs. The reader finds it in the object's symbol table
//! and checks its magic and version, so it never relies on how this build
//! happened to lay out its private types.

use super::live_table::layout as live;
use super::sample_heap::layout as sample;
use super::stack_table::layout as stacks;
use super::{LIVE, STACKS};

/// The descriptor's first eight bytes.
pub const MAGIC: [u8; 8] = *b"LKSTBL01";
/// The layout version this build writes. A reader refuses any other.
pub const VERSION: u64 = 1;
/// The descriptor's symbol.
pub const SYMBOL: &str = "LEAKSCOPE_TABLES_V1";

/// The descriptor: words only. `P` is a pointer here and a `u64` for the
/// reader (`snapshot::foreign_table`), which reads the same struct from
/// the other process's words.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TablesDescriptor<P = *const u8> {
    pub(crate) magic: [u8; 8],
    pub(crate) version: u64,
    pub(crate) live_table: P,
    pub(crate) live_shards_offset: u64,
    pub(crate) live_shard_count: u64,
    pub(crate) live_shard_stride: u64,
    pub(crate) live_shard_slots_offset: u64,
    pub(crate) live_shard_cap_offset: u64,
    pub(crate) live_slot_bytes: u64,
    pub(crate) live_slot_addr_offset: u64,
    pub(crate) live_slot_meta_offset: u64,
    pub(crate) live_meta_size_bits: u64,
    pub(crate) live_meta_sampled_bit: u64,
    pub(crate) live_meta_site_shift: u64,
    pub(crate) stack_table: P,
    pub(crate) stack_chunks_offset: u64,
    pub(crate) stack_chunk_count: u64,
    pub(crate) stack_chunk_records: u64,
    pub(crate) stack_count_offset: u64,
    pub(crate) stack_record_bytes: u64,
    pub(crate) stack_frames_offset: u64,
    pub(crate) stack_depth_offset: u64,
    pub(crate) sample_region: P,
    pub(crate) sample_base_offset: u64,
    pub(crate) sample_len_offset: u64,
}

/// The descriptor's size in words.
pub const WORDS: usize = std::mem::size_of::<TablesDescriptor>() / 8;
const _: () = assert!(std::mem::size_of::<TablesDescriptor>() == WORDS * 8);
const _: () = assert!(std::mem::size_of::<TablesDescriptor<u64>>() == WORDS * 8);

impl TablesDescriptor<u64> {
    /// The descriptor from another process's words, if they are one this
    /// build reads (its magic and version).
    pub(crate) fn from_words(words: &[u64]) -> Option<Self> {
        if words.len() < WORDS {
            return None;
        }
        // SAFETY: `words` holds at least WORDS initialised u64s; every field
        // of `TablesDescriptor<u64>` is a u64 or bytes, valid for any bits,
        // and the read is unaligned-safe.
        let d: Self = unsafe { std::ptr::read_unaligned(words.as_ptr().cast()) };
        (d.magic == MAGIC && d.version == VERSION).then_some(d)
    }
}

// SAFETY: the descriptor is immutable; its pointers are only addresses for
// a reader in another process, never dereferenced here.
unsafe impl Sync for TablesDescriptor<*const u8> {}

#[no_mangle]
#[used]
pub static LEAKSCOPE_TABLES_V1: TablesDescriptor<*const u8> = TablesDescriptor {
    magic: MAGIC,
    version: VERSION,
    live_table: std::ptr::addr_of!(LIVE).cast(),
    live_shards_offset: live::SHARDS_OFFSET as u64,
    live_shard_count: live::SHARD_COUNT as u64,
    live_shard_stride: live::SHARD_STRIDE as u64,
    live_shard_slots_offset: live::SHARD_SLOTS_OFFSET as u64,
    live_shard_cap_offset: live::SHARD_CAP_OFFSET as u64,
    live_slot_bytes: live::SLOT_BYTES as u64,
    live_slot_addr_offset: live::SLOT_ADDR_OFFSET as u64,
    live_slot_meta_offset: live::SLOT_META_OFFSET as u64,
    live_meta_size_bits: live::META_SIZE_BITS as u64,
    live_meta_sampled_bit: live::META_SAMPLED_BIT as u64,
    live_meta_site_shift: live::META_SITE_SHIFT as u64,
    stack_table: std::ptr::addr_of!(STACKS).cast(),
    stack_chunks_offset: stacks::CHUNKS_OFFSET as u64,
    stack_chunk_count: stacks::CHUNK_COUNT as u64,
    stack_chunk_records: stacks::CHUNK_RECORDS as u64,
    stack_count_offset: stacks::COUNT_OFFSET as u64,
    stack_record_bytes: stacks::RECORD_BYTES as u64,
    stack_frames_offset: stacks::FRAMES_OFFSET as u64,
    stack_depth_offset: stacks::DEPTH_OFFSET as u64,
    sample_region: std::ptr::addr_of!(super::sample_heap::REGION).cast(),
    sample_base_offset: sample::BASE_OFFSET as u64,
    sample_len_offset: sample::LEN_OFFSET as u64,
};

/// Keeps the descriptor in the linked program: nothing else refers to it,
/// and an executable exports nothing, so the linker would drop it.
pub(crate) fn keep_linked() {
    std::hint::black_box(&LEAKSCOPE_TABLES_V1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_reads_the_descriptor_from_its_words() {
        let d = &LEAKSCOPE_TABLES_V1;
        // SAFETY: the descriptor is WORDS initialised words.
        let words: &[u64] =
            unsafe { std::slice::from_raw_parts((d as *const TablesDescriptor).cast(), WORDS) };
        let read = TablesDescriptor::<u64>::from_words(words).expect("magic and version");
        assert_eq!(read.live_table, std::ptr::addr_of!(LIVE) as u64);
        assert_eq!(read.stack_table, std::ptr::addr_of!(STACKS) as u64);
        assert_eq!(read.live_shard_count, 256);
        let mut other = words.to_vec();
        other[1] = VERSION + 1;
        assert!(TablesDescriptor::<u64>::from_words(&other).is_none());
    }
}
