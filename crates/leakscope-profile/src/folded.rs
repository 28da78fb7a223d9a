//! Folded stacks (`root;caller;leaf value`), the input format of flame graph
//! tools such as inferno.

use std::collections::BTreeMap;

use crate::view::StackView;

/// One line per distinct stack with a non-zero value, root first. Frame names
/// have `;` replaced, since it separates frames.
pub fn folded(view: &StackView, index: usize) -> Vec<String> {
    let mut stacks: BTreeMap<String, i64> = BTreeMap::new();
    for sample in &view.samples {
        let value = sample.values[index];
        if value == 0 {
            continue;
        }
        let mut names: Vec<String> = view
            .function_names(sample)
            .map(|n| n.replace(';', ":"))
            .collect();
        names.reverse();
        *stacks.entry(names.join(";")).or_default() += value;
    }
    stacks
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    #[test]
    fn folds_root_first_and_merges_equal_stacks() {
        let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
        let main = b.function("main", "main", "", 0);
        let alloc = b.function("alloc;x", "alloc", "", 0);
        let lm = b.location(0, 1, &[(main, 0)]);
        let la = b.location(0, 2, &[(alloc, 0)]);
        let la2 = b.location(0, 3, &[(alloc, 0)]);
        b.add_sample(&[la, lm], &[3], &[]);
        b.add_sample(&[la2, lm], &[4], &[]);
        b.add_sample(&[lm], &[0], &[]);
        assert_eq!(folded(&StackView::new(&b.build()), 0), ["main;alloc:x 7"]);
    }
}
