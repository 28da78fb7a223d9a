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
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a pprof profile, gzipped or not, and validates its cross references
/// so that later code can index without checking.
pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let raw;
    let message = if bytes.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| DecodeError::Gzip(e.to_string()))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    let profile = Profile::decode(message).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    validate(&profile)?;
    Ok(profile)
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
