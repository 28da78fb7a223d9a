//! `leakscope lab --scenario NAME`: runs the lab (a real tonic service and
//! client) in one of its leak scenarios under leakscope (full mode by
//! default), with a profile (and in full mode a snapshot) every interval,
//! then runs the self-check on what was collected and prints the findings.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leakscope_lab::Scenario;

use crate::commands::report::{self_check, Format};

#[derive(clap::Args)]
pub struct Args {
    /// The scenario to run (see --list).
    #[arg(long, default_value = "request-field-held", value_parser = parse_scenario)]
    pub scenario: Scenario,
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 6.0)]
    pub duration: f64,
    /// Profiling mode of the lab process: full (exact, with snapshots: who
    /// holds memory) or sampled (production cost, allocation stacks only).
    #[arg(long, value_enum, default_value_t = LabMode::Full)]
    pub mode: LabMode,
    /// Mean bytes between samples in sampled mode. Lower than the production
    /// default (512 KiB) because a lab run lasts seconds, not hours.
    #[arg(long, default_value_t = 65536)]
    pub rate: u64,
    /// Seconds between profiles and snapshots.
    #[arg(long, default_value_t = 0.5)]
    pub interval: f64,
    /// Where to keep the profiles and snapshots (default: a temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the self-check as a self-contained HTML page.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabMode {
    Full,
    Sampled,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long, value_parser = parse_scenario)]
    pub scenario: Scenario,
    #[arg(long)]
    pub duration: f64,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

pub fn run(args: Args) -> Result<()> {
    super::use_frames(None)?;
    if args.list {
        for s in Scenario::ALL {
            println!("{:<28} {}", s.name(), s.description());
        }
        return Ok(());
    }
    if !(0.5..=3600.0).contains(&args.duration) || !(0.05..=60.0).contains(&args.interval) {
        bail!("--duration must be 0.5..3600 seconds and --interval 0.05..60 seconds");
    }
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "leakscope-lab-{}-{}",
            args.scenario,
            std::process::id()
        )),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the leakscope binary")?;
    let mut child = Command::new(exe)
        .args([
            "lab-run",
            "--scenario",
            args.scenario.name(),
            "--duration",
            &args.duration.to_string(),
        ])
        .env(
            "LEAKSCOPE_MODE",
            match args.mode {
                LabMode::Full => "full",
                LabMode::Sampled => "sampled",
            },
        )
        .env("LEAKSCOPE_RATE", args.rate.to_string())
        .env("LEAKSCOPE_DIR", &dir)
        .env("LEAKSCOPE_INTERVAL", args.interval.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the lab")?;
    let progress = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new((args.duration * 1000.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!(
            "lab: {} ({})",
            args.scenario,
            args.scenario.description()
        ));
        bar
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the lab")? {
            break status;
        }
        if let Some(bar) = &progress {
            bar.set_position(started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut summary = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut summary);
    }
    if !status.success() {
        bail!("the lab failed ({status})");
    }
    if !args.json {
        println!("lab: {}: {}", args.scenario, summary.trim());
        println!("profiles and snapshots in {}\n", dir.display());
    }
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let title = format!("leakscope self-check: lab scenario {}", args.scenario);
    self_check(&dir, None, format, args.html.as_deref(), &title)
}

/// The profiled half: runs the lab in this process.
pub fn run_child(args: RunArgs) -> Result<()> {
    let summary = leakscope_lab::run(args.scenario, Duration::from_secs_f64(args.duration))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{} requests, {} errors, {} connections opened",
        summary.requests, summary.errors, summary.connections_opened
    );
    Ok(())
}
