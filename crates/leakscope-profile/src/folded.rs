//! Folded stacks (`root;caller;leaf value`), the input format of flame graph
//! tools such as inferno.

use std::collections::BTreeMap;

use crate::view::StackView;

/// One line per distinct stack with a non-zero value, root first. Frame names
/// have `;` replaced, since it separates frames.
pub fn folded(view: &StackView, index: usize) -> Vec<String> {
    folded_within(view, index, usize::MAX).unwrap_or_default()
}

/// [`folded`], giving up (with the size it would reach) as soon as the lines
/// would hold more than `max_bytes`: a profile of a few kilobytes can name
/// long functions in deep stacks, and its folded text grows with depth
/// times name length.
pub fn folded_within(
    view: &StackView,
    index: usize,
    max_bytes: usize,
) -> Result<Vec<String>, usize> {
    let mut stacks: BTreeMap<String, i64> = BTreeMap::new();
    let mut size = 0usize;
    for sample in &view.samples {
        let value = sample.values[index];
        if value == 0 {
            continue;
        }
        let line: usize = view
            .function_names(sample)
            .map(|n| n.len() + 1)
            .fold(24, usize::saturating_add);
        size = size.saturating_add(line);
        if size > max_bytes {
            return Err(size);
        }
        let mut names: Vec<String> = view
            .function_names(sample)
            .map(|n| n.replace(';', ":"))
            .collect();
        names.reverse();
        let total = stacks.entry(names.join(";")).or_default();
        *total = total.saturating_add(value);
    }
    Ok(stacks
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect())
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
        let view = StackView::new(&b.build());
        assert_eq!(folded(&view, 0), ["main;alloc:x 7"]);
        // Two samples of two frames: 2 * (24 + 5 + 8) bytes counted.
        assert_eq!(folded_within(&view, 0, 73), Err(74));
        assert!(folded_within(&view, 0, 74).is_ok());
    }
}
