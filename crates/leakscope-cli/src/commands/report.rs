//! `leakscope report DIR`: the self-check over a directory of periodic
//! profiles and snapshots.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use leakscope_profile::diagnose::{self, SelfCheck};
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::StackView;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// A directory written with LEAKSCOPE_DIR (heap-*.pb.gz, snapshot-*.json).
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    self_check(
        &args.dir,
        if args.json {
            Format::Json
        } else {
            Format::Text
        },
    )
}

/// Files of one process in a periodic-output directory, in order.
pub struct Series {
    pub profiles: Vec<PathBuf>,
    pub snapshots: Vec<PathBuf>,
}

pub fn read_series(dir: &Path) -> Result<Series> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut profiles = Vec::new();
    let mut snapshots = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("heap-") && name.ends_with(".pb.gz") {
            profiles.push(e.path());
        } else if name.starts_with("snapshot-") && name.ends_with(".json") {
            snapshots.push(e.path());
        }
    }
    profiles.sort();
    snapshots.sort();
    if profiles.is_empty() && snapshots.is_empty() {
        bail!(
            "{}: no heap-*.pb.gz profiles or snapshot-*.json files",
            dir.display()
        );
    }
    Ok(Series {
        profiles,
        snapshots,
    })
}

/// Loads a series and runs the self-check on it.
pub fn analyse(dir: &Path) -> Result<(SelfCheck, Vec<SnapshotReport>, Vec<StackView>)> {
    let series = read_series(dir)?;
    let mut snapshots = Vec::new();
    for p in &series.snapshots {
        let text = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let text = String::from_utf8_lossy(&text);
        snapshots
            .push(SnapshotReport::from_json(&text).with_context(|| format!("{}", p.display()))?);
    }
    let mut profiles = Vec::new();
    for p in &series.profiles {
        profiles.push(crate::input::load_profile(p)?);
    }
    let check = diagnose::self_check(&snapshots, &profiles);
    Ok((check, snapshots, profiles))
}

pub fn self_check(dir: &Path, format: Format) -> Result<()> {
    let (check, _, _) = analyse(dir)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&check)?),
        Format::Text => print!("{}", render_text(&check)),
    }
    Ok(())
}

pub fn render_text(check: &SelfCheck) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Self-check: {}", check.summary);
    if check.findings.is_empty() {
        let _ = writeln!(out, "No leak pattern found.");
    }
    for (i, f) in check.findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{}. [{}] {} (confidence {:.0}%)",
            i + 1,
            f.scenario,
            f.title,
            f.confidence * 100.0
        );
        for e in &f.evidence {
            let _ = writeln!(out, "   - {e}");
        }
        let _ = writeln!(out, "   fix: {}", f.fix);
    }
    out
}
