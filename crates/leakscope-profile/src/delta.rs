//! Delta profiles: what changed between two profiles of one process (Go's
//! `/debug/pprof/heap?seconds=N`). Stacks are matched by their frames and
//! labels; values are subtracted, stacks that did not change are left out.

use std::collections::HashMap;

use crate::builder::{Id, ProfileBuilder};
use crate::pb;
use crate::view::{Frame, StackView};

/// A stack as a reader sees it, and its labels (sorted).
type StackKey = (Vec<Frame>, Vec<(String, String)>);

fn frames_of(view: &StackView, frames: &[usize]) -> Vec<Frame> {
    frames.iter().map(|&f| view.frames[f].clone()).collect()
}

/// `new - base` for every sample type `new` has (matched by name; a type
/// `base` lacks counts as zero there).
pub fn delta_profile(base: &StackView, new: &StackView) -> pb::Profile {
    let types: Vec<(&str, &str)> = new
        .sample_types
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let period_type = new
        .period_type
        .as_ref()
        .map_or(("space", "bytes"), |(t, u)| (t.as_str(), u.as_str()));
    let mut b = ProfileBuilder::new(&types, period_type, new.period);
    if let Some((name, _)) = new.sample_types.get(new.default_index) {
        b.set_default_sample_type(name);
    }
    b.set_time_nanos(new.time_nanos);
    if new.time_nanos > base.time_nanos && base.time_nanos > 0 {
        b.set_duration_nanos(new.time_nanos - base.time_nanos);
    }
    for c in &new.comments {
        b.add_comment(c);
    }
    b.add_comment("leakscope delta: changes since the base profile");

    // Index of each of `new`'s sample types in `base`.
    let base_index: Vec<Option<usize>> = new
        .sample_types
        .iter()
        .map(|t| base.sample_types.iter().position(|bt| bt == t))
        .collect();
    let mut totals: HashMap<StackKey, Vec<i64>> = HashMap::new();
    let mut order: Vec<StackKey> = Vec::new();
    let mut add =
        |key: (Vec<Frame>, Vec<(String, String)>), values: Vec<i64>| match totals.get_mut(&key) {
            Some(v) => v
                .iter_mut()
                .zip(values)
                .for_each(|(a, b)| *a = a.saturating_add(b)),
            None => {
                order.push(key.clone());
                totals.insert(key, values);
            }
        };
    for s in &new.samples {
        add(
            (frames_of(new, &s.frames), sorted(&s.labels)),
            s.values.clone(),
        );
    }
    for s in &base.samples {
        let values = base_index
            .iter()
            .map(|i| i.map_or(0, |i| -s.values[i]))
            .collect();
        add((frames_of(base, &s.frames), sorted(&s.labels)), values);
    }
    let mut functions: HashMap<(String, String), Id> = HashMap::new();
    for key in order {
        let values = &totals[&key];
        if values.iter().all(|&v| v == 0) {
            continue;
        }
        let (frames, labels) = key;
        let locations: Vec<Id> = frames
            .iter()
            .map(|f| {
                let id = *functions
                    .entry((f.function.clone(), f.file.clone()))
                    .or_insert_with(|| b.function(&f.function, &f.function, &f.file, 0));
                // One location per distinct frame; the address is synthetic.
                let address = 0x1000 + id * 0x10 + f.line.max(0) as u64;
                b.location(0, address, &[(id, f.line)])
            })
            .collect();
        let labels: Vec<crate::builder::SampleLabel> = labels
            .iter()
            .map(|(k, v)| crate::builder::SampleLabel::Str {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        b.add_sample(&locations, values, &labels);
    }
    b.build()
}

fn sorted(labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut l = labels.to_vec();
    l.sort();
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HEAP_SAMPLE_TYPES;

    fn profile(time: i64, samples: &[(&str, i64)]) -> StackView {
        let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
        b.set_default_sample_type("inuse_space");
        b.set_time_nanos(time);
        for (i, (f, bytes)) in samples.iter().enumerate() {
            let id = b.function(f, f, "x.rs", 1);
            let l = b.location(0, 0x100 + i as u64, &[(id, 3)]);
            b.add_sample(&[l], &[1, *bytes, 1, *bytes], &[]);
        }
        StackView::new(&b.build())
    }

    #[test]
    fn keeps_only_what_changed() {
        let base = profile(1_000, &[("steady", 500), ("grows", 100), ("freed", 70)]);
        let new = profile(3_000, &[("steady", 500), ("grows", 400), ("fresh", 9)]);
        let d = StackView::new(&delta_profile(&base, &new));
        let mut rows: Vec<(String, i64)> = d
            .samples
            .iter()
            .map(|s| (d.function_names(s).next().unwrap().to_string(), s.values[3]))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                ("freed".to_string(), -70),
                ("fresh".to_string(), 9),
                ("grows".to_string(), 300)
            ]
        );
        assert_eq!(d.time_nanos, 3_000);
    }
}
