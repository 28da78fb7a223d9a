//! `diff`: what grew between two profiles, by call stack. Stacks are matched
//! by their function names (addresses differ between runs of a program).

use std::collections::HashMap;
use std::fmt::Write;

use crate::units::format_value;
use crate::view::StackView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRow {
    /// Function names, leaf first.
    pub stack: Vec<String>,
    pub base: i64,
    pub new: i64,
}

impl DiffRow {
    pub fn delta(&self) -> i64 {
        self.new.saturating_sub(self.base)
    }
}

fn by_stack(view: &StackView, index: usize) -> HashMap<Vec<String>, i64> {
    let mut out: HashMap<Vec<String>, i64> = HashMap::new();
    for sample in &view.samples {
        let stack = view.function_names(sample).map(str::to_owned).collect();
        let v = out.entry(stack).or_default();
        *v = v.saturating_add(sample.values[index]);
    }
    out
}

/// Per-stack change of one sample type, largest growth first; unchanged stacks
/// are left out.
pub fn diff(
    base: &StackView,
    base_index: usize,
    new: &StackView,
    new_index: usize,
) -> Vec<DiffRow> {
    let base_values = by_stack(base, base_index);
    let mut new_values = by_stack(new, new_index);
    let mut rows: Vec<DiffRow> = base_values
        .into_iter()
        .map(|(stack, base)| {
            let new = new_values.remove(&stack).unwrap_or(0);
            DiffRow { stack, base, new }
        })
        .collect();
    rows.extend(new_values.into_iter().map(|(stack, new)| DiffRow {
        stack,
        base: 0,
        new,
    }));
    rows.retain(|r| r.delta() != 0);
    rows.sort_by(|a, b| {
        b.delta()
            .cmp(&a.delta())
            .then_with(|| a.stack.cmp(&b.stack))
    });
    rows
}

/// Renders the first `limit` rows: the change, the two values, and the stack
/// (leaf first, at most `depth` frames).
pub fn render_diff(rows: &[DiffRow], unit: &str, limit: usize, depth: usize) -> String {
    let mut out = String::new();
    let growth = rows
        .iter()
        .map(DiffRow::delta)
        .filter(|d| *d > 0)
        .fold(0i64, i64::saturating_add);
    let shrink = rows
        .iter()
        .map(DiffRow::delta)
        .filter(|d| *d < 0)
        .fold(0i64, i64::saturating_add);
    let _ = writeln!(
        out,
        "Grew by {} over {} stacks; shrank by {}",
        format_value(growth, unit),
        rows.iter().filter(|r| r.delta() > 0).count(),
        format_value(shrink.saturating_neg(), unit)
    );
    let _ = writeln!(
        out,
        "{:>11} {:>10} {:>10}  stack (leaf first)",
        "delta", "base", "new"
    );
    for row in rows.iter().take(limit) {
        let mut stack: Vec<&str> = row.stack.iter().take(depth).map(String::as_str).collect();
        if row.stack.len() > depth {
            stack.push("...");
        }
        let _ = writeln!(
            out,
            "{:>11} {:>10} {:>10}  {}",
            format!(
                "{}{}",
                if row.delta() > 0 { "+" } else { "" },
                format_value(row.delta(), unit)
            ),
            format_value(row.base, unit),
            format_value(row.new, unit),
            stack.join(" < ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    fn profile(samples: &[(&str, i64)]) -> StackView {
        let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
        for (i, &(name, value)) in samples.iter().enumerate() {
            let f = b.function(name, name, "", 0);
            // Different addresses per profile must not matter.
            let l = b.location(0, 0x1000 + i as u64 * 8, &[(f, 1)]);
            b.add_sample(&[l], &[value], &[]);
        }
        StackView::new(&b.build())
    }

    #[test]
    fn reports_growth_first_and_skips_unchanged() {
        let base = profile(&[("steady", 10), ("shrinks", 50), ("grows", 5)]);
        let new = profile(&[
            ("fresh", 20),
            ("grows", 105),
            ("steady", 10),
            ("shrinks", 40),
        ]);
        let rows = diff(&base, 0, &new, 0);
        let summary: Vec<(&str, i64)> = rows.iter().map(|r| (&r.stack[0][..], r.delta())).collect();
        assert_eq!(summary, [("grows", 100), ("fresh", 20), ("shrinks", -10)]);
        let text = render_diff(&rows, "bytes", 10, 5);
        assert!(text.contains("+100B"), "{text}");
    }
}
