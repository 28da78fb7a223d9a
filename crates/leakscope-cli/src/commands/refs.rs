//! `leakscope refs SNAPSHOT`: who holds the memory, from a snapshot file
//! (written by `leakscope::snapshot()` or `LEAKSCOPE_REFS_OUT`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::commands::descriptors::{name_fields, DescriptorArgs};
use crate::input::load_snapshot;

#[derive(clap::Args)]
pub struct Args {
    /// A snapshot file (JSON).
    pub file: PathBuf,
    /// How many holders and findings to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub nodes: usize,
    /// Print the snapshot as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the holder-chain profile (pprof) here.
    #[arg(long, value_name = "OUT.pb.gz")]
    pub pprof: Option<PathBuf>,
    #[command(flatten)]
    pub descriptors: DescriptorArgs,
}

pub fn run(args: Args) -> Result<()> {
    let schema = args.descriptors.schema()?;
    let mut report = load_snapshot(&args.file)?;
    name_fields(std::slice::from_mut(&mut report), schema.as_ref());
    if let Some(out) = &args.pprof {
        leakscope_profile::atomic_file::write_atomic(
            out,
            &leakscope_profile::encode_gzip(&report.refs_profile()),
        )
        .with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render(args.nodes));
    }
    Ok(())
}
