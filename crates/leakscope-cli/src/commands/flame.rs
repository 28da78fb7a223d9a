//! `leakscope flame FILE -o OUT.svg`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leakscope_profile::StackView;

use super::SampleIndex;
use crate::input::{load_profile, sample_index};

#[derive(clap::Args)]
pub struct Args {
    /// A pprof heap profile.
    pub file: PathBuf,
    /// Where to write the SVG.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Which value to draw (default: the profile's default, inuse_space for heap profiles).
    #[arg(long, value_enum)]
    pub sample_index: Option<SampleIndex>,
}

pub fn run(args: Args) -> Result<()> {
    let view = load_profile(&args.file)?;
    let index = sample_index(&view, args.sample_index.map(SampleIndex::name), &args.file)?;
    let title = format!("{} of {}", view.sample_types[index].0, args.file.display());
    write_flame_graph(&view, index, &title, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

/// Renders one sample type of a profile as an inferno flame graph.
pub fn write_flame_graph(view: &StackView, index: usize, title: &str, output: &Path) -> Result<()> {
    let svg = leakscope_profile::flame::flame_graph_svg(view, index, title)?;
    leakscope_profile::atomic_file::write_atomic(output, &svg)
        .with_context(|| format!("cannot write {}", output.display()))
}
