//! `leakscope report DIR`: the self-check over a directory of periodic
//! profiles and snapshots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leakscope_profile::diagnose::{self, SelfCheck};
use leakscope_profile::fields::Schema;
use leakscope_profile::{html_report, trend};

use crate::advisories::AdvisoryDb;
use crate::commands::descriptors::{name_fields, DescriptorArgs};

use crate::input::{load_run, Run};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// A directory written with LEAKSCOPE_DIR (heap-*.pb.gz, snapshot-*.json).
    pub dir: PathBuf,
    /// The process to check when the directory holds several processes' files.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
    /// Also write the self-check as a self-contained HTML page (findings,
    /// live-memory chart, what grows, holders, flame graph).
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub descriptors: DescriptorArgs,
    /// Frame classes for your own framework (`CLASS PATTERN` lines, added
    /// to the built-in table; default: the file LEAKSCOPE_FRAMES names).
    #[arg(long, value_name = "FILE")]
    pub frames: Option<PathBuf>,
    /// A local copy of the RustSec advisory database (its repository's
    /// layout, `crates/<name>/RUSTSEC-*.md`): findings cite the advisories
    /// (denial of service, memory) against the dependency versions their
    /// stacks and chains pass through.
    #[arg(long, value_name = "PATH")]
    pub advisory_db: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    super::use_frames(args.frames.as_deref())?;
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let title = format!("leakscope self-check: {}", args.dir.display());
    let schema = args.descriptors.schema()?;
    let advisories = args
        .advisory_db
        .as_deref()
        .map(AdvisoryDb::open)
        .transpose()?;
    self_check_named(
        &args.dir,
        args.pid,
        format,
        args.html.as_deref(),
        &title,
        schema.as_ref(),
        advisories.as_ref(),
    )
}

/// Loads a run and runs the self-check on it, naming pinned buffers'
/// fields with `schema` when given.
pub fn analyse(dir: &Path, pid: Option<u32>, schema: Option<&Schema>) -> Result<(SelfCheck, Run)> {
    let mut run = load_run(dir, pid)?;
    name_fields(&mut run.snapshots, schema);
    let check = diagnose::self_check_of_run(
        &run.snapshots,
        &run.profiles,
        &run.memory,
        leakscope_profile::frames::global(),
    );
    Ok((check, run))
}

/// Prints the self-check of a directory, and writes it as HTML if asked.
pub fn self_check(
    dir: &Path,
    pid: Option<u32>,
    format: Format,
    html: Option<&Path>,
    title: &str,
) -> Result<()> {
    self_check_named(dir, pid, format, html, title, None, None)
}

fn self_check_named(
    dir: &Path,
    pid: Option<u32>,
    format: Format,
    html: Option<&Path>,
    title: &str,
    schema: Option<&Schema>,
    advisories: Option<&AdvisoryDb>,
) -> Result<()> {
    let (mut check, run) = analyse(dir, pid, schema)?;
    let started = run.profiles.first().map_or(0, |p| p.time_nanos);
    if let Some(versions) = run
        .program
        .as_deref()
        .and_then(|program| crate::auditable::versions_of_binary(program, started))
    {
        crate::auditable::add_versions(&mut check, &versions);
    }
    if let Some(db) = advisories {
        crate::advisories::cite(db, &mut check);
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&check)?),
        Format::Text => {
            print!("{}", render_text(&check));
            print!("{}", leakscope_profile::memory::render_series(&run.memory));
        }
    }
    if let Some(path) = html {
        let trend = trend::trends(&run.profiles, &run.snapshots);
        let page = html_report::render(&html_report::ReportInput {
            title,
            check: &check,
            trend: &trend,
            snapshots: &run.snapshots,
            profiles: &run.profiles,
            memory: &run.memory,
        });
        leakscope_profile::atomic_file::write_atomic(path, page.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        if format == Format::Text {
            println!("\nHTML report: {}", path.display());
        }
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
        if !f.dependencies.is_empty() {
            let names: Vec<String> = f.dependencies.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                out,
                "   dependencies on its stack and chain: {}",
                names.join(", ")
            );
        }
        let _ = writeln!(out, "   fix: {}", f.fix);
    }
    if !check.dependencies.is_empty() {
        let _ = writeln!(
            out,
            "\n{} dependency crates with versions from the debug information (--json lists them)",
            check.dependencies.len()
        );
    }
    out
}
