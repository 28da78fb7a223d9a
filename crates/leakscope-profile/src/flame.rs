//! Flame graphs of a profile (inferno), as SVG.

use crate::view::StackView;

/// Why a flame graph could not be drawn.
#[derive(Debug)]
pub enum FlameError {
    /// Every value of the chosen sample type is zero.
    Empty(String),
    Render(String),
}

impl std::fmt::Display for FlameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlameError::Empty(ty) => write!(f, "nothing to draw: every {ty} value is zero"),
            FlameError::Render(e) => write!(f, "cannot draw the flame graph: {e}"),
        }
    }
}

impl std::error::Error for FlameError {}

/// The flame graph of one sample type, as SVG.
pub fn flame_graph_svg(view: &StackView, index: usize, title: &str) -> Result<Vec<u8>, FlameError> {
    let lines = crate::folded(view, index);
    if lines.is_empty() {
        return Err(FlameError::Empty(view.sample_types[index].0.clone()));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = view.unit(index).to_string();
    options.name_type = "Function:".to_string();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| FlameError::Render(e.to_string()))?;
    Ok(svg)
}
