//! Reading and writing pprof files: gzip (or raw) protobuf, with the checks a
//! reader needs before trusting indexes inside the message.

use std::fmt;
use std::io::{Read, Write};

use prost::Message;

use crate::pb::Profile;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why bytes could not be read as a pprof profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input was empty.
    Empty,
    /// The gzip stream was corrupt or cut short.
    Gzip(String),
    /// The bytes are not a protobuf message (or were cut short).
    Protobuf(String),
    /// The message decoded but is not a usable pprof profile.
    Invalid(String),
    /// The profile is larger than a reader accepts (see [`Limits`]).
    TooLarge(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty file, not a pprof profile"),
            DecodeError::Gzip(e) => write!(f, "corrupt or truncated gzip data: {e}"),
            DecodeError::Protobuf(e) => {
                write!(f, "not a pprof profile (protobuf decoding failed: {e})")
            }
            DecodeError::Invalid(e) => write!(f, "not a valid pprof profile: {e}"),
            DecodeError::TooLarge(e) => write!(f, "profile too large to read: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// What a reader accepts, so that a small hostile file cannot make it use
/// gigabytes: every later step (stacks, folded text, flame graphs) is
/// bounded by these. The defaults are far above real heap profiles (Go's
/// and ours are a few megabytes inflated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The inflated protobuf message (a gzip bomb stops here).
    pub max_message_bytes: usize,
    /// Samples in the profile.
    pub max_samples: usize,
    /// Locations plus functions plus mappings.
    pub max_records: usize,
    /// Frames of one sample's stack, inlined frames included.
    pub max_stack_depth: usize,
    /// One string of the string table (a function or file name).
    pub max_string_bytes: usize,
    /// Frames of every sample together, inlined frames included.
    pub max_total_frames: usize,
    /// The names and files of every location's frames plus every sample's
    /// label text: what a resolved view of the profile holds.
    pub max_text_bytes: usize,
    /// Function names over every sample's frames, counted per sample: what
    /// folded stacks, flame graphs and per-stack series would spell out (a
    /// few kilobytes of long names in deep stacks can reach gigabytes).
    pub max_stack_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 20,
            max_samples: 1 << 20,
            max_records: 4 << 20,
            max_stack_depth: 4096,
            max_string_bytes: 256 << 10,
            max_total_frames: 16 << 20,
            max_text_bytes: 128 << 20,
            max_stack_text_bytes: 64 << 20,
        }
    }
}

/// Decodes a pprof profile, gzipped or not, within the default [`Limits`],
/// and validates its cross references so that later code can index without
/// checking.
pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// [`decode`] within the given limits.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Profile, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let raw;
    let message = if bytes.starts_with(&GZIP_MAGIC) {
        raw = inflate(bytes, limits.max_message_bytes)?;
        &raw[..]
    } else if bytes.len() > limits.max_message_bytes {
        return Err(too_large(limits.max_message_bytes));
    } else {
        bytes
    };
    let profile = Profile::decode(message).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    validate(&profile)?;
    check_limits(&profile, limits)?;
    Ok(profile)
}

fn too_large(limit: usize) -> DecodeError {
    DecodeError::TooLarge(format!("it inflates to more than {} MiB", limit >> 20))
}

/// Inflates gzip data, stopping as soon as the output would pass `limit`.
/// The buffer never grows past `limit` either (no doubling beyond it).
fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = flate2::read::GzDecoder::new(bytes);
    let mut out: Vec<u8> = Vec::with_capacity((bytes.len() * 4).min(limit));
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Gzip(e.to_string())),
        };
        if out.len() + n > limit {
            return Err(too_large(limit));
        }
        if out.capacity() < out.len() + n {
            let grown = (out.capacity() * 2).clamp(out.len() + n, limit);
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Checks the sizes every later step depends on (after [`validate`], so
/// every index is known to be in range).
fn check_limits(p: &Profile, limits: &Limits) -> Result<(), DecodeError> {
    let over = |what: &str, n: usize, limit: usize| {
        DecodeError::TooLarge(format!("{n} {what}, more than the {limit} accepted"))
    };
    if p.sample.len() > limits.max_samples {
        return Err(over("samples", p.sample.len(), limits.max_samples));
    }
    let records = p.location.len() + p.function.len() + p.mapping.len();
    if records > limits.max_records {
        return Err(over(
            "locations, functions and mappings",
            records,
            limits.max_records,
        ));
    }
    if let Some(s) = p
        .string_table
        .iter()
        .find(|s| s.len() > limits.max_string_bytes)
    {
        return Err(DecodeError::TooLarge(format!(
            "a name of {} bytes, more than the {} accepted",
            s.len(),
            limits.max_string_bytes
        )));
    }
    let len = |i: i64| p.string_table[i as usize].len();
    let functions: std::collections::HashMap<u64, &crate::pb::Function> =
        p.function.iter().map(|f| (f.id, f)).collect();
    let mut text = 0usize;
    // Per location: its frames, and the length of their names (an address
    // stands in for a location without lines).
    let mut shape_of = std::collections::HashMap::with_capacity(p.location.len());
    for l in &p.location {
        let mut names = 0usize;
        for line in &l.line {
            if let Some(f) = functions.get(&line.function_id) {
                text = text.saturating_add(len(f.name) + len(f.filename));
                names = names.saturating_add(len(f.name) + 1);
            }
        }
        shape_of.insert(l.id, (l.line.len().max(1), names.max(19)));
    }
    let mut total_frames = 0usize;
    let mut stack_text = 0usize;
    for s in &p.sample {
        let (depth, names) = s
            .location_id
            .iter()
            .map(|id| shape_of.get(id).copied().unwrap_or((1, 19)))
            .fold((0usize, 0usize), |(d, n), (ld, ln)| {
                (d.saturating_add(ld), n.saturating_add(ln))
            });
        if depth > limits.max_stack_depth {
            return Err(over("frames in one stack", depth, limits.max_stack_depth));
        }
        total_frames = total_frames.saturating_add(depth);
        stack_text = stack_text.saturating_add(names);
        for label in &s.label {
            text = text.saturating_add(len(label.key) + len(label.str) + len(label.num_unit) + 24);
        }
    }
    if total_frames > limits.max_total_frames {
        return Err(over(
            "frames over all stacks",
            total_frames,
            limits.max_total_frames,
        ));
    }
    if stack_text > limits.max_stack_text_bytes {
        return Err(over(
            "bytes of function names over all stacks",
            stack_text,
            limits.max_stack_text_bytes,
        ));
    }
    if text > limits.max_text_bytes {
        return Err(over(
            "bytes of names and labels",
            text,
            limits.max_text_bytes,
        ));
    }
    Ok(())
}

/// Encodes a profile as gzipped protobuf, the form pprof tools expect.
pub fn encode_gzip(profile: &Profile) -> Vec<u8> {
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

/// Checks every index a reader will follow.
fn validate(p: &Profile) -> Result<(), DecodeError> {
    let strings = p.string_table.len() as i64;
    if strings == 0 || !p.string_table[0].is_empty() {
        return Err(invalid("string table must start with an empty string"));
    }
    if p.sample_type.is_empty() {
        return Err(invalid("no sample types"));
    }
    let string_ok = |i: i64| (0..strings).contains(&i);
    for vt in p.sample_type.iter().chain(p.period_type.iter()) {
        if !string_ok(vt.r#type) || !string_ok(vt.unit) {
            return Err(invalid("sample type names a string out of range"));
        }
    }
    for &c in &p.comment {
        if !string_ok(c) {
            return Err(invalid("comment names a string out of range"));
        }
    }
    if !string_ok(p.default_sample_type) || !string_ok(p.drop_frames) || !string_ok(p.keep_frames) {
        return Err(invalid("header names a string out of range"));
    }
    let mapping_ids: std::collections::HashSet<u64> = p.mapping.iter().map(|m| m.id).collect();
    for m in &p.mapping {
        if m.id == 0 || !string_ok(m.filename) || !string_ok(m.build_id) {
            return Err(invalid(format!("mapping {} is malformed", m.id)));
        }
    }
    let function_ids: std::collections::HashSet<u64> = p.function.iter().map(|f| f.id).collect();
    for f in &p.function {
        if f.id == 0 || !string_ok(f.name) || !string_ok(f.system_name) || !string_ok(f.filename) {
            return Err(invalid(format!("function {} is malformed", f.id)));
        }
    }
    let mut location_ids = std::collections::HashSet::new();
    for l in &p.location {
        if l.id == 0 || !location_ids.insert(l.id) {
            return Err(invalid(format!("location id {} is zero or repeated", l.id)));
        }
        if l.mapping_id != 0 && !mapping_ids.contains(&l.mapping_id) {
            return Err(invalid(format!(
                "location {} names missing mapping {}",
                l.id, l.mapping_id
            )));
        }
        if let Some(line) = l
            .line
            .iter()
            .find(|ln| !function_ids.contains(&ln.function_id))
        {
            return Err(invalid(format!(
                "location {} names missing function {}",
                l.id, line.function_id
            )));
        }
    }
    let n_types = p.sample_type.len();
    for (i, s) in p.sample.iter().enumerate() {
        if s.value.len() != n_types {
            return Err(invalid(format!(
                "sample {i} has {} values for {n_types} sample types",
                s.value.len()
            )));
        }
        if let Some(id) = s.location_id.iter().find(|id| !location_ids.contains(id)) {
            return Err(invalid(format!("sample {i} names missing location {id}")));
        }
        for label in &s.label {
            if !string_ok(label.key) || !string_ok(label.str) || !string_ok(label.num_unit) {
                return Err(invalid(format!("sample {i} has a label out of range")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ProfileBuilder;

    fn small_profile() -> Profile {
        let mut b = ProfileBuilder::new(&crate::HEAP_SAMPLE_TYPES, ("space", "bytes"), 4096);
        let f = b.function("main", "main", "src/main.rs", 1);
        let loc = b.location(0, 0x1000, &[(f, 10)]);
        b.add_sample(&[loc], &[1, 2, 3, 4], &[]);
        b.build()
    }

    #[test]
    fn round_trips_through_gzip() {
        let p = small_profile();
        let bytes = encode_gzip(&p);
        assert_eq!(&bytes[..2], &GZIP_MAGIC);
        assert_eq!(decode(&bytes).unwrap(), p);
    }

    #[test]
    fn accepts_uncompressed_protobuf() {
        let p = small_profile();
        assert_eq!(decode(&p.encode_to_vec()).unwrap(), p);
    }

    #[test]
    fn rejects_empty_truncated_and_foreign_input() {
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        let bytes = encode_gzip(&small_profile());
        assert!(matches!(
            decode(&bytes[..bytes.len() / 2]),
            Err(DecodeError::Gzip(_))
        ));
        let raw = small_profile().encode_to_vec();
        // Raw protobuf has no end marker; a cut through a field is still caught.
        assert!(decode(&raw[..raw.len() / 2]).is_err());
        assert!(decode(b"hello, this is a text file\n").is_err());
    }

    #[test]
    fn every_limit_is_enforced_with_its_reason() {
        let bytes = encode_gzip(&small_profile());
        let ok = Limits::default();
        assert!(decode_with(&bytes, &ok).is_ok());
        let reason = |limits: Limits| match decode_with(&bytes, &limits) {
            Err(DecodeError::TooLarge(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(Limits {
                max_message_bytes: 10,
                ..ok
            }),
            "it inflates to more than 0 MiB"
        );
        assert_eq!(
            reason(Limits {
                max_samples: 0,
                ..ok
            }),
            "1 samples, more than the 0 accepted"
        );
        assert!(reason(Limits {
            max_records: 1,
            ..ok
        })
        .starts_with("2 locations"));
        assert!(reason(Limits {
            max_stack_depth: 0,
            ..ok
        })
        .starts_with("1 frames in one stack"));
        assert!(reason(Limits {
            max_string_bytes: 3,
            ..ok
        })
        .starts_with("a name of 13 bytes, more than the 3"));
        assert!(reason(Limits {
            max_total_frames: 0,
            ..ok
        })
        .starts_with("1 frames over all stacks"));
        assert!(reason(Limits {
            max_stack_text_bytes: 4,
            ..ok
        })
        .starts_with("19 bytes of function names"));
        assert!(reason(Limits {
            max_text_bytes: 4,
            ..ok
        })
        .starts_with("15 bytes of names and labels"));
        // Uncompressed input is held to the same message limit.
        let raw = small_profile().encode_to_vec();
        assert!(matches!(
            decode_with(
                &raw,
                &Limits {
                    max_message_bytes: 10,
                    ..ok
                }
            ),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn rejects_dangling_references() {
        let mut p = small_profile();
        p.sample[0].location_id.push(999);
        assert!(matches!(
            decode(&encode_gzip(&p)),
            Err(DecodeError::Invalid(_))
        ));
        let mut p = small_profile();
        p.sample[0].value.pop();
        assert!(matches!(
            decode(&encode_gzip(&p)),
            Err(DecodeError::Invalid(_))
        ));
        let mut p = small_profile();
        p.function[0].name = 10_000;
        assert!(matches!(
            decode(&encode_gzip(&p)),
            Err(DecodeError::Invalid(_))
        ));
    }
}
