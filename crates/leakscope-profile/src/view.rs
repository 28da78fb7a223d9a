//! A profile resolved into readable stacks: each location expanded into its
//! (possibly inlined) frames, every name looked up once.

use std::collections::HashMap;

use crate::pb;

/// One frame of a call stack, as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name, or the address in hex when the profile has none.
    pub function: String,
    pub file: String,
    pub line: i64,
}

/// A sample with its stack resolved. `frames` index [`StackView::frames`],
/// leaf first.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSample {
    pub frames: Vec<usize>,
    pub values: Vec<i64>,
    pub labels: Vec<(String, String)>,
}

/// A decoded profile in the shape the transforms want.
#[derive(Debug, Clone, PartialEq)]
pub struct StackView {
    /// `(type, unit)` per value, e.g. `("inuse_space", "bytes")`.
    pub sample_types: Vec<(String, String)>,
    /// Index into `sample_types` that viewers show first.
    pub default_index: usize,
    pub period_type: Option<(String, String)>,
    pub period: i64,
    pub frames: Vec<Frame>,
    pub samples: Vec<StackSample>,
    pub comments: Vec<String>,
    /// When the profile was taken (pprof `time_nanos`; 0 if unknown).
    pub time_nanos: i64,
}

impl StackView {
    /// Resolves a validated profile (see [`crate::decode`]).
    pub fn new(p: &pb::Profile) -> Self {
        let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
        let functions: HashMap<u64, &pb::Function> = p.function.iter().map(|f| (f.id, f)).collect();
        let mut frames = Vec::new();
        let mut frame_ids: HashMap<Frame, usize> = HashMap::new();
        let mut intern = |frame: Frame| -> usize {
            *frame_ids.entry(frame.clone()).or_insert_with(|| {
                frames.push(frame);
                frames.len() - 1
            })
        };
        let mut location_frames: HashMap<u64, Vec<usize>> = HashMap::new();
        for loc in &p.location {
            let mut ids = Vec::new();
            for line in &loc.line {
                let Some(f) = functions.get(&line.function_id) else {
                    continue;
                };
                ids.push(intern(Frame {
                    function: s(f.name),
                    file: s(f.filename),
                    line: line.line,
                }));
            }
            if ids.is_empty() {
                ids.push(intern(Frame {
                    function: format!("{:#x}", loc.address),
                    file: String::new(),
                    line: 0,
                }));
            }
            location_frames.insert(loc.id, ids);
        }
        let samples = p
            .sample
            .iter()
            .map(|sample| StackSample {
                frames: sample
                    .location_id
                    .iter()
                    .flat_map(|id| location_frames.get(id).into_iter().flatten().copied())
                    .collect(),
                values: sample.value.clone(),
                labels: sample
                    .label
                    .iter()
                    .map(|l| {
                        let value = if l.str != 0 {
                            s(l.str)
                        } else {
                            format!("{}{}", l.num, s(l.num_unit))
                        };
                        (s(l.key), value)
                    })
                    .collect(),
            })
            .collect();
        let sample_types: Vec<(String, String)> = p
            .sample_type
            .iter()
            .map(|vt| (s(vt.r#type), s(vt.unit)))
            .collect();
        let default_name = s(p.default_sample_type);
        let default_index = sample_types
            .iter()
            .position(|(t, _)| !default_name.is_empty() && *t == default_name)
            .unwrap_or(sample_types.len().saturating_sub(1));
        StackView {
            sample_types,
            default_index,
            period_type: p.period_type.as_ref().map(|vt| (s(vt.r#type), s(vt.unit))),
            period: p.period,
            frames,
            samples,
            comments: p.comment.iter().map(|&c| s(c)).collect(),
            time_nanos: p.time_nanos,
        }
    }

    /// Where a heap profile's values sit, in the order
    /// `[inuse_objects, inuse_space, alloc_objects, alloc_space]`; `None`
    /// for a type the profile lacks.
    pub fn heap_indices(&self) -> [Option<usize>; 4] {
        [
            "inuse_objects",
            "inuse_space",
            "alloc_objects",
            "alloc_space",
        ]
        .map(|n| self.sample_index(Some(n)).ok())
    }

    /// Finds a sample type by name; `None` picks the profile's default.
    pub fn sample_index(&self, name: Option<&str>) -> Result<usize, String> {
        match name {
            None => Ok(self.default_index),
            Some(name) => self
                .sample_types
                .iter()
                .position(|(t, _)| t == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = self.sample_types.iter().map(|(t, _)| &t[..]).collect();
                    format!(
                        "sample index {name:?} is not in this profile (it has: {})",
                        known.join(", ")
                    )
                }),
        }
    }

    /// The unit of a sample type ("bytes", "count", ...).
    pub fn unit(&self, index: usize) -> &str {
        &self.sample_types[index].1
    }

    /// Function names of a sample's stack, leaf first.
    pub fn function_names<'a>(&'a self, sample: &'a StackSample) -> impl Iterator<Item = &'a str> {
        sample.frames.iter().map(|&f| &self.frames[f].function[..])
    }

    /// The application's progress counter (requests served, say) recorded
    /// in the profile's comments, if any.
    pub fn progress(&self) -> Option<u64> {
        self.comments
            .iter()
            .find_map(|c| c.strip_prefix(crate::PROGRESS_COMMENT)?.parse().ok())
    }

    /// Sum of one value over all samples (saturating: a hostile profile's
    /// values near `i64::MAX` must not wrap into negative totals).
    pub fn total(&self, index: usize) -> i64 {
        self.samples
            .iter()
            .map(|s| s.values[index])
            .fold(0, i64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    #[test]
    fn expands_inlined_frames_leaf_first() {
        let mut b = ProfileBuilder::new(&crate::HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
        b.set_default_sample_type("inuse_space");
        let inner = b.function("inner", "inner", "x.rs", 1);
        let outer = b.function("outer", "outer", "x.rs", 5);
        let main = b.function("main", "main", "m.rs", 1);
        let l1 = b.location(0, 0x10, &[(inner, 2), (outer, 7)]);
        let l2 = b.location(0, 0x20, &[(main, 3)]);
        b.add_sample(&[l1, l2], &[1, 100, 1, 100], &[]);
        let v = StackView::new(&b.build());
        let names: Vec<&str> = v.function_names(&v.samples[0]).collect();
        assert_eq!(names, ["inner", "outer", "main"]);
        assert_eq!(v.default_index, 3);
        assert_eq!(v.sample_index(Some("alloc_space")), Ok(1));
        assert!(v.sample_index(Some("cpu")).is_err());
    }
}
