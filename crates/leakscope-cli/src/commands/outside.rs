//! `leakscope attach PID` and `leakscope core CORE`: who holds the memory of
//! a process nobody started under leakscope, live (the target forks a
//! frozen copy of itself and runs on) or from a core file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use leakscope::outside::{self, AttachOptions, CopyPolicy, CoreOptions, Made};
use leakscope::Snapshot;

#[derive(clap::Args)]
pub struct AttachArgs {
    /// The process to analyse (it keeps running).
    pub pid: i32,
    /// Write the snapshot (JSON) here; `leakscope refs`, `report` and
    /// `report --html` read it. The holder-chain profile (pprof) goes beside
    /// it as FILE.refs.pb.gz.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Copy the memory while the target is stopped instead of making it
    /// fork (a longer pause; for targets that must not fork).
    #[arg(long)]
    pub no_fork: bool,
    /// How many holders and findings to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub nodes: usize,
}

#[derive(clap::Args)]
pub struct CoreArgs {
    /// An ELF core file (`gcore PID`, or one the kernel wrote).
    pub core: PathBuf,
    /// The executable, if not where the core says (a core from another
    /// machine, a binary moved since).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
    /// Write the snapshot (JSON) here (and FILE.refs.pb.gz beside it).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How many holders and findings to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub nodes: usize,
}

pub fn attach(args: AttachArgs) -> Result<()> {
    if !Path::new(&format!("/proc/{}", args.pid)).exists() {
        return Err(anyhow!("no process {}", args.pid));
    }
    let options = AttachOptions {
        method: if args.no_fork {
            outside::AttachMethod::Copy
        } else {
            outside::AttachMethod::Auto
        },
        copy: CopyPolicy::default(),
        die_after: None,
    };
    let attached = outside::attach(args.pid, &options).map_err(|e| anyhow!(e))?;
    let how = match &attached.made {
        Made::Forked { .. } => "it forked a frozen copy".to_string(),
        Made::Copied { reason } => format!("memory copied while stopped ({reason})"),
    };
    eprintln!(
        "leakscope: process {} stopped for {:.1} ms ({how}); {} MiB copied in {:.0} ms",
        args.pid,
        attached.pause.as_secs_f64() * 1e3,
        attached.image.copied_bytes() >> 20,
        attached.copy_time.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let snapshot = outside::snapshot_of_attached(&attached).map_err(|e| anyhow!(e))?;
    eprintln!(
        "leakscope: analysed in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    finish(&snapshot, args.output.as_deref(), args.nodes)
}

pub fn core(args: CoreArgs) -> Result<()> {
    let options = CoreOptions {
        exe: args.exe,
        fill_from_files: true,
    };
    let image = outside::CoreImage::open(&args.core, &options).map_err(|e| anyhow!(e))?;
    let time = std::fs::metadata(&args.core)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let snapshot = outside::snapshot_of_core(&image, time).map_err(|e| anyhow!(e))?;
    finish(&snapshot, args.output.as_deref(), args.nodes)
}

/// Writes the snapshot and its refs profile if asked, and prints the
/// summary.
fn finish(snapshot: &Snapshot, output: Option<&Path>, nodes: usize) -> Result<()> {
    if let Some(path) = output {
        snapshot
            .write(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut refs = path.as_os_str().to_owned();
        refs.push(".refs.pb.gz");
        snapshot
            .write_refs_pprof(&refs)
            .with_context(|| format!("cannot write {}", PathBuf::from(&refs).display()))?;
        eprintln!("leakscope: wrote {}", path.display());
    }
    print!("{}", snapshot.report().render(nodes));
    Ok(())
}
