//! Flame graphs of a profile (inferno), as SVG.

use crate::view::StackView;

/// Why a flame graph could not be drawn.
#[derive(Debug)]
pub enum FlameError {
    /// Every value of the chosen sample type is zero.
    Empty(String),
    /// The graph would be larger than a flame graph may be.
    TooLarge(String),
    Render(String),
}

impl std::fmt::Display for FlameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlameError::Empty(ty) => write!(f, "nothing to draw: every {ty} value is zero"),
            FlameError::TooLarge(e) => write!(f, "flame graph too large to draw: {e}"),
            FlameError::Render(e) => write!(f, "cannot draw the flame graph: {e}"),
        }
    }
}

impl std::error::Error for FlameError {}

/// The largest folded input drawn (stack text over every sample).
pub const MAX_FOLDED_BYTES: usize = 64 << 20;
/// The largest SVG written.
pub const MAX_SVG_BYTES: usize = 64 << 20;

/// The flame graph of one sample type, as SVG, within [`MAX_FOLDED_BYTES`]
/// of stacks and [`MAX_SVG_BYTES`] of output.
pub fn flame_graph_svg(view: &StackView, index: usize, title: &str) -> Result<Vec<u8>, FlameError> {
    flame_graph_svg_within(view, index, title, MAX_FOLDED_BYTES, MAX_SVG_BYTES)
}

/// [`flame_graph_svg`] with other bounds.
pub fn flame_graph_svg_within(
    view: &StackView,
    index: usize,
    title: &str,
    max_folded: usize,
    max_svg: usize,
) -> Result<Vec<u8>, FlameError> {
    let lines = crate::folded::folded_within(view, index, max_folded).map_err(|size| {
        FlameError::TooLarge(format!(
            "its stacks hold more than {} MiB of names (limit {} MiB)",
            size >> 20,
            max_folded >> 20
        ))
    })?;
    if lines.is_empty() {
        return Err(FlameError::Empty(view.sample_types[index].0.clone()));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = view.unit(index).to_string();
    options.name_type = "Function:".to_string();
    let mut svg = Bounded {
        out: Vec::new(),
        limit: max_svg,
    };
    let drawn =
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg);
    if svg.out.len() >= max_svg {
        return Err(FlameError::TooLarge(format!(
            "the SVG would pass {} MiB",
            max_svg >> 20
        )));
    }
    drawn.map_err(|e| FlameError::Render(e.to_string()))?;
    Ok(svg.out)
}

/// A writer that refuses to grow past `limit` bytes.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.out.resize(self.limit, 0);
            return Err(std::io::Error::other("output limit reached"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    fn deep_profile(name_len: usize, depth: usize) -> StackView {
        let mut b = ProfileBuilder::new(&[("inuse_space", "bytes")], ("space", "bytes"), 1);
        let mut locations = Vec::new();
        for i in 0..depth {
            let name = format!("{i}{}", "n".repeat(name_len));
            let f = b.function(&name, &name, "", 0);
            locations.push(b.location(0, i as u64 + 1, &[(f, 0)]));
        }
        b.add_sample(&locations, &[100], &[]);
        StackView::new(&b.build())
    }

    #[test]
    fn draws_within_bounds_and_refuses_beyond_them() {
        let view = deep_profile(100, 50);
        let svg = flame_graph_svg(&view, 0, "t").unwrap();
        assert!(svg.starts_with(b"<?xml"), "{:?}", &svg[..20]);
        let err = flame_graph_svg_within(&view, 0, "t", 1000, MAX_SVG_BYTES).unwrap_err();
        assert!(matches!(err, FlameError::TooLarge(_)), "{err}");
        let err =
            flame_graph_svg_within(&view, 0, "t", MAX_FOLDED_BYTES, svg.len() / 2).unwrap_err();
        assert!(err.to_string().contains("SVG would pass"), "{err}");
    }
}
