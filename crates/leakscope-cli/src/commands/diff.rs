//! `leakscope diff BASE NEW`

use std::path::PathBuf;

use anyhow::Result;
use leakscope_profile::diff::render_diff;

use super::SampleIndex;
use crate::input::{load_profile, sample_index};

#[derive(clap::Args)]
pub struct Args {
    /// The earlier profile.
    pub base: PathBuf,
    /// The later profile.
    pub new: PathBuf,
    /// Which value to compare (default: the profiles' default, inuse_space for heap profiles).
    #[arg(long, value_enum)]
    pub sample_index: Option<SampleIndex>,
    /// How many stacks to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub nodes: usize,
    /// How many frames of each stack to show.
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
}

pub fn run(args: Args) -> Result<()> {
    let base = load_profile(&args.base)?;
    let new = load_profile(&args.new)?;
    let name = args.sample_index.map(SampleIndex::name);
    let base_index = sample_index(&base, name, &args.base)?;
    let new_index = match name {
        Some(name) => sample_index(&new, Some(name), &args.new)?,
        // Compare like with like: the base's default type, by name.
        None => sample_index(&new, Some(&base.sample_types[base_index].0), &args.new)?,
    };
    let rows = leakscope_profile::diff(&base, base_index, &new, new_index);
    println!("Type: {}", new.sample_types[new_index].0);
    print!(
        "{}",
        render_diff(&rows, new.unit(new_index), args.nodes, args.depth)
    );
    Ok(())
}
