//! [`HeapProfile`] → pprof message.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use leakscope_profile::builder::{Id, MappingInfo};
use leakscope_profile::{pb, ProfileBuilder, HEAP_SAMPLE_TYPES};

use super::maps::{executable_mappings, ModuleMapping};
use super::symbolize::{
    is_allocator_plumbing, is_standard_library, symbolize_in_process, SymFrame,
};
use super::HeapProfile;
use crate::config::Mode;

/// The address of the call instruction a return address follows: what
/// symbolises to the calling line.
fn call_site(return_address: usize) -> u64 {
    (return_address as u64).saturating_sub(1)
}

pub(super) fn build(profile: &HeapProfile) -> pb::Profile {
    let period = if profile.mode == Mode::Sampled {
        profile.rate as i64
    } else {
        1
    };
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), period);
    b.set_default_sample_type("inuse_space");
    if let Ok(since) = profile.time.duration_since(UNIX_EPOCH) {
        b.set_time_nanos(since.as_nanos() as i64);
    }
    b.add_comment(&match profile.mode {
        Mode::Sampled => format!(
            "leakscope sampled: one sample per {} bytes on average; figures are unbiased estimates",
            profile.rate
        ),
        Mode::Full => "leakscope full: every allocation tracked; figures are exact".to_string(),
        Mode::Off => "leakscope off: figures cover only the time profiling was on".to_string(),
    });

    let mappings = executable_mappings();
    let mapping_ids: Vec<Id> = mappings
        .iter()
        .map(|m| {
            b.mapping(&MappingInfo {
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.file_offset,
                filename: &m.path,
                build_id: &m.build_id,
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            })
        })
        .collect();
    let mapping_of = |addr: u64| -> Id {
        mappings
            .iter()
            .position(|m: &ModuleMapping| m.start <= addr && addr < m.end)
            .map_or(0, |i| mapping_ids[i])
    };

    let mut addrs: Vec<u64> = profile
        .sites
        .iter()
        .flat_map(|s| s.frames.iter().map(|&f| call_site(f)))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    let symbols: HashMap<u64, Vec<SymFrame>> = addrs
        .iter()
        .copied()
        .zip(symbolize_in_process(&addrs))
        .collect();

    for site in &profile.sites {
        // Every (possibly inlined) frame of the stack, leaf first, tagged with
        // the index of the return address it came from; `None` where the
        // address could not be symbolised.
        let expanded: Vec<(usize, u64, Option<&SymFrame>)> = site
            .frames
            .iter()
            .enumerate()
            .flat_map(|(i, &ret)| {
                let addr = call_site(ret);
                match symbols.get(&addr) {
                    Some(frames) if !frames.is_empty() => {
                        frames.iter().map(|f| (i, addr, Some(f))).collect()
                    }
                    _ => vec![(i, addr, None)],
                }
            })
            .collect();
        let skip = leaf_frames_to_trim(&expanded);
        let mut locations = Vec::with_capacity(site.frames.len());
        let mut lines: Vec<(Id, i64)> = Vec::new();
        for (k, &(i, addr, frame)) in expanded.iter().enumerate().skip(skip) {
            if let Some(f) = frame {
                lines.push((b.function(&f.name, &f.name, &f.file, 0), f.line));
            }
            if expanded.get(k + 1).is_none_or(|next| next.0 != i) {
                locations.push(b.location(mapping_of(addr), addr, &lines));
                lines.clear();
            }
        }
        let values = [
            site.alloc_objects.round() as i64,
            site.alloc_space.round() as i64,
            site.inuse_objects.round() as i64,
            site.inuse_space.round() as i64,
        ];
        b.add_sample(&locations, &values, &[]);
    }
    b.build()
}

/// How many frames at the leaf end belong to the allocator or, below the
/// first frame of other code, to the standard library.
fn leaf_frames_to_trim(frames: &[(usize, u64, Option<&SymFrame>)]) -> usize {
    let name = |k: usize| frames[k].2.map(|f| f.name.as_str());
    let plumbing = (0..frames.len())
        .take_while(|&k| name(k).is_some_and(is_allocator_plumbing))
        .count();
    let std = (plumbing..frames.len())
        .take_while(|&k| frames[k].2.is_some_and(is_standard_library))
        .count();
    if plumbing + std < frames.len() {
        plumbing + std
    } else {
        // Nothing but the standard library (its own start-up allocations):
        // keep those frames rather than an empty stack.
        plumbing
    }
}
