//! [`HeapProfile`] → pprof message.

use std::time::UNIX_EPOCH;

use leakscope_profile::builder::{Id, MappingInfo, SampleLabel};
use leakscope_profile::{pb, ProfileBuilder, HEAP_SAMPLE_TYPES};

use super::maps::{executable_mappings, ModuleMapping};
use super::stacks::{call_site, own_code_range, Symbols};
use super::HeapProfile;
use crate::config::Mode;

/// Whether a profile's frames are named as it is written, or left as code
/// addresses in their mappings (file, build ID, file offset) for a reader
/// to name from the binaries on disk (`symbolize_later`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    Now,
    Later,
}

pub(super) fn build(profile: &HeapProfile, naming: Naming) -> pb::Profile {
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

    if profile.progress > 0 {
        b.add_comment(&format!(
            "{}{}",
            leakscope_profile::PROGRESS_COMMENT,
            profile.progress
        ));
    }
    let mappings = executable_mappings();
    let named = naming == Naming::Now;
    let mapping_ids: Vec<Id> = mappings
        .iter()
        .map(|m| {
            b.mapping(&MappingInfo {
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.file_offset,
                filename: &m.path,
                build_id: &m.build_id,
                has_functions: named,
                has_filenames: named,
                has_line_numbers: named,
                has_inline_frames: named,
            })
        })
        .collect();
    let mapping_of = |addr: u64| -> Id {
        mappings
            .iter()
            .position(|m: &ModuleMapping| m.start <= addr && addr < m.end)
            .map_or(0, |i| mapping_ids[i])
    };

    let symbols = match naming {
        Naming::Now => Some(Symbols::for_stacks(
            profile.sites.iter().map(|s| s.frames.as_slice()),
        )),
        Naming::Later => None,
    };
    let own_code = own_code_range();
    for site in &profile.sites {
        let locations = match &symbols {
            Some(symbols) => add_named_locations(&mut b, symbols, &site.frames, &mapping_of),
            // One location per return address, at its call site; the front
            // end's own frames (known by address) are dropped here, the
            // rest of the trimming needs names and is the reader's.
            None => site
                .frames
                .iter()
                .map(|&ret| call_site(ret))
                .skip_while(|&a| own_code.is_some_and(|(start, end)| (start..end).contains(&a)))
                .map(|a| b.location(mapping_of(a), a, &[]))
                .collect(),
        };
        let values = [
            site.alloc_objects.round() as i64,
            site.alloc_space.round() as i64,
            site.inuse_objects.round() as i64,
            site.inuse_space.round() as i64,
        ];
        let labels: Vec<SampleLabel> = site
            .labels
            .iter()
            .map(|(key, value)| SampleLabel::Str {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        b.add_sample(&locations, &values, &labels);
    }
    b.build()
}

/// The locations of one stack of return addresses, named: inlined frames
/// expanded into one location's lines, the allocator's (and, below other
/// code, the standard library's) frames trimmed from the leaf end. Shared
/// with `symbolize_later`, so that a profile named later is the one named
/// when it was written.
pub(super) fn add_named_locations(
    b: &mut ProfileBuilder,
    symbols: &Symbols,
    frames: &[usize],
    mapping_of: &dyn Fn(u64) -> Id,
) -> Vec<Id> {
    let expanded = symbols.expand(frames);
    let mut locations = Vec::with_capacity(frames.len());
    let mut lines: Vec<(Id, i64)> = Vec::new();
    for (k, f) in expanded.iter().enumerate() {
        if let Some(sym) = f.frame {
            lines.push((b.function(&sym.name, &sym.name, &sym.file, 0), sym.line));
        }
        if expanded.get(k + 1).is_none_or(|next| next.index != f.index) {
            locations.push(b.location(mapping_of(f.addr), f.addr, &lines));
            lines.clear();
        }
    }
    locations
}
