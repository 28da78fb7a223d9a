//! `leakscope top FILE`

use std::path::PathBuf;

use anyhow::Result;

use super::SampleIndex;
use crate::input::{load_profile, sample_index};

#[derive(clap::Args)]
pub struct Args {
    /// A pprof heap profile (gzipped or not), ours or Go's.
    pub file: PathBuf,
    /// Which value to rank by (default: the profile's default, inuse_space for heap profiles).
    #[arg(long, value_enum)]
    pub sample_index: Option<SampleIndex>,
    /// How many functions to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub nodes: usize,
}

pub fn run(args: Args) -> Result<()> {
    let view = load_profile(&args.file)?;
    let index = sample_index(&view, args.sample_index.map(SampleIndex::name), &args.file)?;
    print!(
        "{}",
        leakscope_profile::top(&view, index, args.nodes).render()
    );
    Ok(())
}
