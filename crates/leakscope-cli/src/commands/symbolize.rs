//! `leakscope symbolize FILE...`: names, in place, the frames of heap
//! profiles written with `LEAKSCOPE_SYMBOLIZE=later`, from the binaries on
//! this machine; for readers that cannot (`go tool pprof` without the
//! binaries, a profile shipped elsewhere).

use std::path::PathBuf;

use anyhow::{Context, Result};
use leakscope_profile::codec::Limits;

use crate::input::{read_regular_file, MAX_PROFILE_FILE};

#[derive(clap::Args)]
pub struct Args {
    /// Heap profiles (pprof) written with LEAKSCOPE_SYMBOLIZE=later.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    for path in &args.files {
        let bytes = read_regular_file(path, MAX_PROFILE_FILE)?;
        let profile = leakscope_profile::codec::decode_with(&bytes, &Limits::default())
            .with_context(|| format!("{}", path.display()))?;
        let Some(named) = leakscope::symbolize_profile(&profile) else {
            println!("{}: already named", path.display());
            continue;
        };
        leakscope_profile::atomic_file::write_atomic(
            path,
            &leakscope_profile::encode_gzip(&named.profile),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        if named.unnamed_binaries.is_empty() {
            println!("{}: named", path.display());
        } else {
            println!(
                "{}: named, except the frames of {} (missing here, or a different build)",
                path.display(),
                named.unnamed_binaries.join(", ")
            );
        }
    }
    Ok(())
}
