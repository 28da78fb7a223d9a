//! Reading profile files given on the command line.

use std::path::Path;

use anyhow::{Context, Result};
use leakscope_profile::StackView;

/// Reads and decodes a pprof file into readable stacks.
pub fn load_profile(path: &Path) -> Result<StackView> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let profile =
        leakscope_profile::decode(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok(StackView::new(&profile))
}

/// Resolves `--sample-index` against a profile.
pub fn sample_index(view: &StackView, name: Option<&str>, path: &Path) -> Result<usize> {
    view.sample_index(name)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
