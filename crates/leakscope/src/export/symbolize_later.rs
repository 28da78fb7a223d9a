//! Naming a heap profile written unnamed (`LEAKSCOPE_SYMBOLIZE=later`):
//! each location is a call site in a mapping whose file, build ID and file
//! offset the profile records, as pprof's own model intends. A reader names
//! them from the binaries on disk (or a debug-file directory), checking
//! each binary's build ID, and builds the profile again the way the writer
//! would have: the same inlined frames, the same trimming, the same tables
//! in the same order, so the result is the profile that naming at writing
//! time gives (a test compares them field by field).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use blazesym::symbolize::Symbolizer;
use leakscope_profile::builder::{Id, MappingInfo, SampleLabel};
use leakscope_profile::{pb, ProfileBuilder};

use super::pprof::add_named_locations;
use super::stacks::Symbols;
use super::symbolize::{reader_symbolizer, symbolize_file_offsets, SymFrame};

thread_local! {
    /// The reader's symbolizer, kept for the thread's life: a run's
    /// profiles name the same binaries, whose debug information is parsed
    /// once. Readers (the CLI) only: a profiled service never calls this.
    static READER: RefCell<Option<Symbolizer>> = const { RefCell::new(None) };
}

/// A profile named after it was written, and the binaries that could not
/// name their frames (missing here, or changed since: their build ID
/// differs), whose frames stay code addresses.
pub struct NamedProfile {
    pub profile: pb::Profile,
    pub unnamed_binaries: Vec<String>,
}

/// Names the frames of a profile written with `LEAKSCOPE_SYMBOLIZE=later`;
/// `None` for a profile whose frames are named already (or that has none).
pub fn symbolize_profile(profile: &pb::Profile) -> Option<NamedProfile> {
    let string = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| profile.string_table.get(i))
            .map_or("", String::as_str)
    };
    let unnamed: Vec<&pb::Mapping> = profile
        .mapping
        .iter()
        .filter(|m| !m.has_functions)
        .collect();
    let waiting = profile
        .location
        .iter()
        .any(|l| l.line.is_empty() && unnamed.iter().any(|m| m.id == l.mapping_id && m.id != 0));
    if !waiting {
        return None;
    }

    // Every unnamed location's address, named per binary.
    let mut frames: HashMap<u64, Vec<SymFrame>> = HashMap::new();
    let mut unnamed_binaries = Vec::new();
    READER.with(|reader| {
        let mut reader = reader.borrow_mut();
        let symbolizer = reader.get_or_insert_with(reader_symbolizer);
        for m in &unnamed {
            let path = string(m.filename);
            let mut addrs: Vec<u64> = profile
                .location
                .iter()
                .filter(|l| l.mapping_id == m.id && l.line.is_empty())
                .map(|l| l.address)
                .collect();
            addrs.sort_unstable();
            addrs.dedup();
            if addrs.is_empty() {
                continue;
            }
            if !same_binary(path, string(m.build_id)) {
                unnamed_binaries.push(path.to_string());
                continue;
            }
            let offsets: Vec<u64> = addrs
                .iter()
                .map(|&a| a - m.memory_start + m.file_offset)
                .collect();
            match symbolize_file_offsets(symbolizer, Path::new(path), &offsets) {
                Some(named) => frames.extend(addrs.into_iter().zip(named)),
                None => unnamed_binaries.push(path.to_string()),
            }
        }
    });
    let symbols = Symbols::from_frames(frames);

    // The profile again, built as the writer builds it.
    let sample_types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (string(t.r#type), string(t.unit)))
        .collect();
    let period_type = profile
        .period_type
        .as_ref()
        .map_or(("", ""), |t| (string(t.r#type), string(t.unit)));
    let mut b = ProfileBuilder::new(&sample_types, period_type, profile.period);
    if profile.default_sample_type != 0 {
        b.set_default_sample_type(string(profile.default_sample_type));
    }
    if profile.time_nanos != 0 {
        b.set_time_nanos(profile.time_nanos);
    }
    if profile.duration_nanos != 0 {
        b.set_duration_nanos(profile.duration_nanos);
    }
    for &c in &profile.comment {
        b.add_comment(string(c));
    }
    let named = |m: &pb::Mapping| {
        m.has_functions || !unnamed_binaries.iter().any(|p| p == string(m.filename))
    };
    let mappings: Vec<(u64, u64, Id)> = profile
        .mapping
        .iter()
        .map(|m| {
            let named = named(m);
            let id = b.mapping(&MappingInfo {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: string(m.filename),
                build_id: string(m.build_id),
                has_functions: named,
                has_filenames: named,
                has_line_numbers: named,
                has_inline_frames: named,
            });
            (m.memory_start, m.memory_limit, id)
        })
        .collect();
    let mapping_of = |addr: u64| -> Id {
        mappings
            .iter()
            .find(|&&(start, end, _)| start <= addr && addr < end)
            .map_or(0, |&(_, _, id)| id)
    };
    let address_of: HashMap<u64, u64> =
        profile.location.iter().map(|l| (l.id, l.address)).collect();
    for sample in &profile.sample {
        // Back to return addresses (each location is its call site, one
        // byte before), the stack the writer would have named.
        let stack: Vec<usize> = sample
            .location_id
            .iter()
            .filter_map(|id| address_of.get(id))
            .map(|&a| (a + 1) as usize)
            .collect();
        let locations = add_named_locations(&mut b, &symbols, &stack, &mapping_of);
        let labels: Vec<SampleLabel> = sample
            .label
            .iter()
            .map(|l| {
                if l.str != 0 || (l.num == 0 && l.num_unit == 0) {
                    SampleLabel::Str {
                        key: string(l.key).to_string(),
                        value: string(l.str).to_string(),
                    }
                } else {
                    SampleLabel::Num {
                        key: string(l.key).to_string(),
                        value: l.num,
                        unit: string(l.num_unit).to_string(),
                    }
                }
            })
            .collect();
        b.add_sample(&locations, &sample.value, &labels);
    }
    Some(NamedProfile {
        profile: b.build(),
        unnamed_binaries,
    })
}

/// Whether the file at `path` is the binary the profile recorded: present,
/// and with the same build ID (when the profile has one).
fn same_binary(path: &str, build_id: &str) -> bool {
    // A regular file only: a profile may name anything (a FIFO would block
    // the open).
    if !Path::new(path).is_file() {
        return false;
    }
    let Ok(Some(id)) = blazesym::helper::read_elf_build_id(&path) else {
        return build_id.is_empty();
    };
    build_id.is_empty() || super::maps::hex(&id) == build_id
}
