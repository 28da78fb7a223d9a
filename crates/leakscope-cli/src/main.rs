//! `leakscope`: the command-line front end. This file only parses arguments
//! and maps errors to one line and an exit code; each command lives in
//! `commands/`.

mod advisories;
mod auditable;
mod commands;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The CLI can profile itself (LEAKSCOPE_MODE=full leakscope ...), and the
// demo re-runs this binary with profiling on; by default it is off.
#[global_allocator]
static ALLOC: leakscope::Profiler =
    leakscope::Profiler::new().with_default_mode(leakscope::Mode::Off);

#[derive(Parser)]
#[command(
    name = "leakscope",
    version,
    about = "Memory-leak self-check for Rust services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Functions ranked by memory, like `go tool pprof -top`.
    Top(commands::top::Args),
    /// What grew between two heap profiles, by call stack.
    Diff(commands::diff::Args),
    /// Which stacks and holders grow over a directory of saved profiles and snapshots.
    Trend(commands::trend::Args),
    /// Draw a heap profile as a flame graph (SVG).
    Flame(commands::flame::Args),
    /// Name the frames of profiles written with LEAKSCOPE_SYMBOLIZE=later, in place.
    Symbolize(commands::symbolize::Args),
    /// Who holds the memory: top holders, chains and leaks from a snapshot file.
    Refs(commands::refs::Args),
    /// Who holds the memory of a running process (it forks a frozen copy and runs on).
    Attach(commands::outside::AttachArgs),
    /// Who holds the memory, from an ELF core file (gcore or the kernel's).
    Core(commands::outside::CoreArgs),
    /// Profile a small built-in program that leaks, and show what leakscope finds.
    Demo(commands::demo::Args),
    /// The self-check over a directory of periodic profiles and snapshots.
    Report(commands::report::Args),
    /// Check an unmodified program (Rust, C, C++) through LD_PRELOAD: profiles, leak summary.
    Run(commands::run::Args),
    /// Run the lab (a tonic service and client) in a leak scenario and self-check it.
    #[cfg(feature = "lab")]
    Lab(commands::lab::Args),
    /// (internal) the lab process itself.
    #[cfg(feature = "lab")]
    #[command(hide = true)]
    LabRun(commands::lab::RunArgs),
    /// Run the lab (not built into this leakscope: see --help of the install).
    #[cfg(not(feature = "lab"))]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// (internal) the workload the demo profiles.
    #[command(hide = true)]
    DemoWorkload(commands::demo::WorkloadArgs),
}

fn main() -> ExitCode {
    let _ = input::NAMER.set(|profile| {
        leakscope::symbolize_profile(profile).map(|n| (n.profile, n.unnamed_binaries))
    });
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("leakscope: {first} (see leakscope --help)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Top(args) => commands::top::run(args),
        Command::Diff(args) => commands::diff::run(args),
        Command::Trend(args) => commands::trend::run(args),
        Command::Flame(args) => commands::flame::run(args),
        Command::Symbolize(args) => commands::symbolize::run(args),
        Command::Attach(args) => commands::outside::attach(args),
        Command::Core(args) => commands::outside::core(args),
        Command::Refs(args) => commands::refs::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Run(args) => {
            return match commands::run::run(args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("leakscope: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "lab")]
        Command::Lab(args) => commands::lab::run(args),
        #[cfg(feature = "lab")]
        Command::LabRun(args) => commands::lab::run_child(args),
        #[cfg(not(feature = "lab"))]
        Command::Lab { .. } => Err(anyhow::anyhow!(
            "this leakscope was built without the lab (feature `lab`); build it with the default features: cargo install --path crates/leakscope-cli"
        )),
        Command::DemoWorkload(args) => commands::demo::workload(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("leakscope: {e:#}");
            ExitCode::from(1)
        }
    }
}
