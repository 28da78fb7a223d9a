//! `leakscope trend DIR`: which stacks and holders grow over a series of
//! saved heap profiles and snapshots.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Result;
use leakscope_profile::trend::{self, SeriesTrend, TrendReport, TrendState};
use leakscope_profile::units::format_value;

use crate::input::load_run;

#[derive(clap::Args)]
pub struct Args {
    /// A directory of heap profiles (LEAKSCOPE_DIR, or saved /debug/pprof/heap
    /// files) and, optionally, snapshots.
    pub dir: PathBuf,
    /// The process to follow when the directory holds several processes' files.
    #[arg(long)]
    pub pid: Option<u32>,
    /// How many series to list.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub nodes: usize,
    /// List flat and shrinking series too, not only those that grew.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
    /// Frame classes for your own framework (`CLASS PATTERN` lines, added
    /// to the built-in table; default: the file LEAKSCOPE_FRAMES names).
    #[arg(long, value_name = "FILE")]
    pub frames: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    super::use_frames(args.frames.as_deref())?;
    let run = load_run(&args.dir, args.pid)?;
    let report = trend::trends(&run.profiles, &run.snapshots);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, args.nodes, args.all));
        if let [first, .., last] = run.memory.as_slice() {
            print!("{}", leakscope_profile::memory::render_growth(first, last));
        }
    }
    Ok(())
}

fn bytes(v: f64) -> String {
    format_value(v.round() as i64, "bytes")
}

fn rate(s: &SeriesTrend) -> String {
    let mut out = format!("{}/s", bytes(s.bytes_per_second));
    if let Some(u) = s.bytes_per_unit {
        let _ = write!(out, ", {}/request", bytes(u));
    }
    out
}

pub fn render(r: &TrendReport, n: usize, all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} points over {:.1}s ({} more skipped as warm-up)",
        r.samples, r.seconds, r.warmup
    );
    let t = &r.total;
    let _ = writeln!(
        out,
        "all live memory: {}, {} -> {} ({})",
        t.state.name(),
        bytes(t.first_bytes),
        bytes(t.last_bytes),
        rate(t)
    );
    let shown: Vec<&SeriesTrend> = r
        .series
        .iter()
        .filter(|s| all || matches!(s.state, TrendState::Growing | TrendState::LevelledOff))
        .take(n)
        .collect();
    if shown.is_empty() {
        let _ = writeln!(out, "\nno stack or holder grew");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<13} {:>10} {:>10} {:>11} {:>5}  {:<7} name",
        "state", "first", "last", "per second", "tau", "kind"
    );
    for s in shown {
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>10} {:>11} {:>5.2}  {:<7} {}",
            s.state.name(),
            bytes(s.first_bytes),
            bytes(s.last_bytes),
            bytes(s.bytes_per_second),
            s.consistency,
            s.kind.name(),
            s.name
        );
    }
    out
}
