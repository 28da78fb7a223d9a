//! Building a pprof profile: interning strings, functions, locations and
//! mappings so that each is written once, as the format intends.

use std::collections::HashMap;

use crate::pb;

/// Identifier of a mapping, function or location inside the profile being
/// built (pprof ids are 1-based; 0 means "none").
pub type Id = u64;

/// A sample label: a string value or a number with an optional unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SampleLabel {
    Str {
        key: String,
        value: String,
    },
    Num {
        key: String,
        value: i64,
        unit: String,
    },
}

/// A mapping (loaded object) to attach locations to.
#[derive(Debug, Clone, Default)]
pub struct MappingInfo<'a> {
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: &'a str,
    pub build_id: &'a str,
    pub has_functions: bool,
    pub has_filenames: bool,
    pub has_line_numbers: bool,
    pub has_inline_frames: bool,
}

/// A location's identity: mapping, address and `(function, line)` lines.
type LocationKey = (Id, u64, Vec<(Id, i64)>);

/// Accumulates a profile; [`ProfileBuilder::build`] returns the message.
pub struct ProfileBuilder {
    profile: pb::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64, i64), Id>,
    locations: HashMap<LocationKey, Id>,
}

impl ProfileBuilder {
    /// Starts a profile with the given sample types (`(type, unit)` pairs, in
    /// value order) and sampling period.
    pub fn new(sample_types: &[(&str, &str)], period_type: (&str, &str), period: i64) -> Self {
        let mut b = ProfileBuilder {
            profile: pb::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        b.string("");
        for &(ty, unit) in sample_types {
            let vt = b.value_type(ty, unit);
            b.profile.sample_type.push(vt);
        }
        b.profile.period_type = Some(b.value_type(period_type.0, period_type.1));
        b.profile.period = period;
        b
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> pb::ValueType {
        pb::ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// Interns a string and returns its index in the string table.
    pub fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Names the sample type viewers show first.
    pub fn set_default_sample_type(&mut self, ty: &str) {
        self.profile.default_sample_type = self.string(ty);
    }

    pub fn add_comment(&mut self, comment: &str) {
        let c = self.string(comment);
        self.profile.comment.push(c);
    }

    pub fn set_time_nanos(&mut self, nanos: i64) {
        self.profile.time_nanos = nanos;
    }

    pub fn set_duration_nanos(&mut self, nanos: i64) {
        self.profile.duration_nanos = nanos;
    }

    /// Adds a mapping (not deduplicated: callers add each loaded object once).
    pub fn mapping(&mut self, m: &MappingInfo<'_>) -> Id {
        let id = self.profile.mapping.len() as Id + 1;
        let filename = self.string(m.filename);
        let build_id = self.string(m.build_id);
        self.profile.mapping.push(pb::Mapping {
            id,
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename,
            build_id,
            has_functions: m.has_functions,
            has_filenames: m.has_filenames,
            has_line_numbers: m.has_line_numbers,
            has_inline_frames: m.has_inline_frames,
        });
        id
    }

    /// Interns a function.
    pub fn function(&mut self, name: &str, system_name: &str, file: &str, start_line: i64) -> Id {
        let key = (
            self.string(name),
            self.string(system_name),
            self.string(file),
            start_line,
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as Id + 1;
        self.profile.function.push(pb::Function {
            id,
            name: key.0,
            system_name: key.1,
            filename: key.2,
            start_line,
        });
        self.functions.insert(key, id);
        id
    }

    /// Interns a location. `lines` are `(function id, line)`, innermost
    /// inlined call first, the containing function last.
    pub fn location(&mut self, mapping_id: Id, address: u64, lines: &[(Id, i64)]) -> Id {
        let key = (mapping_id, address, lines.to_vec());
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.profile.location.len() as Id + 1;
        self.profile.location.push(pb::Location {
            id,
            mapping_id,
            address,
            line: lines
                .iter()
                .map(|&(function_id, line)| pb::Line {
                    function_id,
                    line,
                    column: 0,
                })
                .collect(),
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Adds a sample: `locations` leaf first, one value per sample type.
    pub fn add_sample(&mut self, locations: &[Id], values: &[i64], labels: &[SampleLabel]) {
        assert_eq!(
            values.len(),
            self.profile.sample_type.len(),
            "one value per sample type"
        );
        let label = labels
            .iter()
            .map(|l| match l {
                SampleLabel::Str { key, value } => pb::Label {
                    key: self.string(key),
                    str: self.string(value),
                    num: 0,
                    num_unit: 0,
                },
                SampleLabel::Num { key, value, unit } => pb::Label {
                    key: self.string(key),
                    str: 0,
                    num: *value,
                    num_unit: self.string(unit),
                },
            })
            .collect();
        self.profile.sample.push(pb::Sample {
            location_id: locations.to_vec(),
            value: values.to_vec(),
            label,
        });
    }

    pub fn build(self) -> pb::Profile {
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_strings_functions_and_locations_once() {
        let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
        let f1 = b.function("a", "a", "a.rs", 1);
        let f2 = b.function("a", "a", "a.rs", 1);
        assert_eq!(f1, f2);
        let l1 = b.location(0, 16, &[(f1, 3)]);
        let l2 = b.location(0, 16, &[(f1, 3)]);
        let l3 = b.location(0, 32, &[(f1, 3)]);
        assert_eq!(l1, l2);
        assert_ne!(l1, l3);
        b.add_sample(&[l1, l3], &[5], &[]);
        let p = b.build();
        assert_eq!(p.function.len(), 1);
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.string_table[0], "");
        let unique: std::collections::HashSet<_> = p.string_table.iter().collect();
        assert_eq!(unique.len(), p.string_table.len());
    }
}
