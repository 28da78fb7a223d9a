//! `top`: functions ranked by the value attributed to them, like
//! `go tool pprof -top`. *Flat* counts samples whose leaf frame is the
//! function; *cum* counts samples with the function anywhere on the stack
//! (once per sample, even under recursion).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use crate::units::{format_value, percent};
use crate::view::StackView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    pub function: String,
    pub flat: i64,
    pub cum: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTable {
    pub sample_type: String,
    pub unit: String,
    pub total: i64,
    /// Sorted by flat, then cum, then name, all descending except name.
    pub rows: Vec<TopRow>,
}

/// Ranks functions by one sample type; keeps the first `limit` rows.
pub fn top(view: &StackView, index: usize, limit: usize) -> TopTable {
    let mut flat: HashMap<&str, i64> = HashMap::new();
    let mut cum: HashMap<&str, i64> = HashMap::new();
    for sample in &view.samples {
        let value = sample.values[index];
        if value == 0 {
            continue;
        }
        let mut names = view.function_names(sample);
        let Some(leaf) = names.next() else { continue };
        let f = flat.entry(leaf).or_default();
        *f = f.saturating_add(value);
        let mut seen = HashSet::new();
        for name in std::iter::once(leaf).chain(names) {
            if seen.insert(name) {
                let c = cum.entry(name).or_default();
                *c = c.saturating_add(value);
            }
        }
    }
    let mut rows: Vec<TopRow> = cum
        .iter()
        .map(|(&function, &cum)| TopRow {
            function: function.to_string(),
            flat: flat.get(function).copied().unwrap_or(0),
            cum,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.flat, b.cum)
            .cmp(&(a.flat, a.cum))
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.truncate(limit);
    TopTable {
        sample_type: view.sample_types[index].0.clone(),
        unit: view.unit(index).to_string(),
        total: view.total(index),
        rows,
    }
}

impl TopTable {
    /// Renders the table as `go tool pprof -top` does.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let shown = self
            .rows
            .iter()
            .map(|r| r.flat)
            .fold(0i64, i64::saturating_add);
        let _ = writeln!(
            out,
            "Type: {}\nShowing nodes accounting for {}, {} of {} total",
            self.sample_type,
            format_value(shown, &self.unit),
            percent(shown, self.total),
            format_value(self.total, &self.unit)
        );
        let _ = writeln!(
            out,
            "{:>10} {:>7} {:>7} {:>10} {:>7}  function",
            "flat", "flat%", "sum%", "cum", "cum%"
        );
        let mut sum = 0i64;
        for row in &self.rows {
            sum = sum.saturating_add(row.flat);
            let _ = writeln!(
                out,
                "{:>10} {:>7} {:>7} {:>10} {:>7}  {}",
                format_value(row.flat, &self.unit),
                percent(row.flat, self.total),
                percent(sum, self.total),
                format_value(row.cum, &self.unit),
                percent(row.cum, self.total),
                row.function
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    #[test]
    fn flat_and_cum_count_recursion_once() {
        let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
        let leaf = b.function("leaf", "leaf", "", 0);
        let rec = b.function("rec", "rec", "", 0);
        let l_leaf = b.location(0, 1, &[(leaf, 0)]);
        let l_rec1 = b.location(0, 2, &[(rec, 0)]);
        let l_rec2 = b.location(0, 3, &[(rec, 0)]);
        b.add_sample(&[l_leaf, l_rec1, l_rec2], &[100], &[]);
        b.add_sample(&[l_rec1], &[7], &[]);
        let view = StackView::new(&b.build());
        let t = top(&view, 0, 10);
        assert_eq!(t.total, 107);
        assert_eq!(
            t.rows,
            vec![
                TopRow {
                    function: "leaf".into(),
                    flat: 100,
                    cum: 100
                },
                TopRow {
                    function: "rec".into(),
                    flat: 7,
                    cum: 107
                },
            ]
        );
        assert!(t.render().contains("leaf"));
    }
}
