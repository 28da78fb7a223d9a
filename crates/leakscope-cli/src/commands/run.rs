//! `leakscope run -- CMD ARGS...`: checks an unmodified program through the
//! `LD_PRELOAD` library. The program's stdin, stdout and stderr are its own
//! and its exit code is passed through; every process it starts (and that
//! keeps the environment) is profiled too, one profile per pid. In full mode
//! the program's memory is analysed at exit and a leak summary printed (on
//! stderr, after the program's own output) in Valgrind's vocabulary.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use leakscope_profile::leaks::LeakSummary;
use leakscope_profile::suppressions::{self, Suppression};

use crate::input::load_snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunMode {
    Sampled,
    Full,
}

#[derive(clap::Args)]
pub struct Args {
    /// sampled (production cost, estimates) or full (exact, and the leak
    /// summary at exit).
    #[arg(long, value_enum, default_value_t = RunMode::Full)]
    pub mode: RunMode,
    /// Mean bytes between samples in sampled mode.
    #[arg(long, value_name = "BYTES")]
    pub rate: Option<u64>,
    /// Also write a profile (and in full mode a snapshot) every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Where profiles go (heap-<pid>.pb.gz at exit, heap-<pid>-<n>.pb.gz
    /// every interval).
    #[arg(long, value_name = "DIR", default_value = "leakscope-out")]
    pub out: PathBuf,
    /// Write the leak summary of the program (full mode) as JSON here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Serve /debug/pprof/heap and friends from the program while it runs
    /// (a bare port means loopback).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Do not print the leak summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print where the program's RSS went at exit: heap blocks in use,
    /// freed memory the allocator keeps (per arena), thread stacks, code
    /// and data, other mappings, leakscope's own.
    #[arg(long)]
    pub memory: bool,
    /// More suppression rules for the leak summary (`NAME: FRAME` per
    /// line; see the built-in list in leakscope-profile's suppressions.txt).
    /// Repeatable.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Vec<PathBuf>,
    /// Do not apply the built-in suppressions (glibc's own blocks).
    #[arg(long)]
    pub no_default_suppressions: bool,
    /// Interior pointers the leak summary takes as references, as
    /// Valgrind's option of the same name: `all` (the default), `none`, or
    /// a comma list of stdstring, length64, newarray, multipleinheritance.
    #[arg(long, value_name = "SET", value_parser = parse_heuristics)]
    pub leak_check_heuristics: Option<String>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The preload library: `LEAKSCOPE_PRELOAD_LIB`, or next to this binary (as
/// `cargo build` leaves them; `cargo test` leaves it in `deps/`), or in
/// `../lib`.
fn preload_library() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LEAKSCOPE_PRELOAD_LIB") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("LEAKSCOPE_PRELOAD_LIB={}: no such file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the leakscope binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for candidate in [
        dir.join("libleakscope_preload.so"),
        dir.join("deps/libleakscope_preload.so"),
        dir.join("../libleakscope_preload.so"),
        dir.join("../lib/libleakscope_preload.so"),
    ] {
        if candidate.is_file() {
            return candidate
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", candidate.display()));
        }
    }
    bail!(
        "cannot find libleakscope_preload.so next to {} (build it with \
         `cargo build --release -p leakscope-preload`, or set LEAKSCOPE_PRELOAD_LIB)",
        exe.display()
    )
}

/// The suppression rules: the built-in ones unless turned off, then each
/// file's.
fn suppression_rules(args: &Args) -> Result<Vec<Suppression>> {
    let mut rules = if args.no_default_suppressions {
        Vec::new()
    } else {
        suppressions::built_in()
    };
    for path in &args.suppressions {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read suppressions from {}", path.display()))?;
        rules.extend(
            suppressions::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?,
        );
    }
    Ok(rules)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let library = preload_library()?;
    let rules = suppression_rules(&args)?;
    if let Some(i) = args.interval {
        if !(0.01..=86_400.0).contains(&i) {
            bail!("--interval must be from 0.01 to 86400 seconds");
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(existing) if !existing.is_empty() => format!("{} {existing}", library.display()),
        _ => library.display().to_string(),
    };
    let program = &args.command[0];
    let mut command = Command::new(program);
    // This process warned about them already (its own allocator read the
    // same environment); the program would warn again.
    for rejected in leakscope::settings::rejected_variables() {
        command.env_remove(rejected);
    }
    command
        .args(&args.command[1..])
        .env("LD_PRELOAD", preload)
        .env(
            "LEAKSCOPE_MODE",
            match args.mode {
                RunMode::Sampled => "sampled",
                RunMode::Full => "full",
            },
        )
        .env("LEAKSCOPE_OUT", out.join("heap-%p.pb.gz"));
    if let Some(rate) = args.rate {
        command.env("LEAKSCOPE_RATE", rate.to_string());
    }
    if let Some(set) = &args.leak_check_heuristics {
        command.env("LEAKSCOPE_LEAK_HEURISTICS", set);
    }
    if let Some(interval) = args.interval {
        command
            .env("LEAKSCOPE_INTERVAL", interval.to_string())
            .env("LEAKSCOPE_DIR", &out);
    }
    // A snapshot at exit in both modes: in sampled mode from a walk of
    // glibc's heap (every block; stacks for the sampled ones).
    command.env("LEAKSCOPE_REFS_OUT", out.join("snapshot-%p.json"));
    if let Some(addr) = &args.http {
        let addr = leakscope::http::listen_addr(addr)
            .with_context(|| format!("--http {addr}: not an address to listen on"))?;
        let token = std::env::var_os("LEAKSCOPE_HTTP_TOKEN").is_some_and(|t| !t.is_empty());
        let allowed =
            std::env::var_os("LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN").is_some_and(|v| v == "1");
        if !addr.ip().is_loopback() && !token && !allowed {
            bail!(
                "--http {addr} is beyond loopback: set LEAKSCOPE_HTTP_TOKEN (requests then need \
                 it) or LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN=1"
            );
        }
        command.env("LEAKSCOPE_HTTP", addr.to_string());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let pid = child.id();
    let status = child.wait().context("cannot wait for the program")?;

    if !args.quiet && !wrote_anything(&out, pid) {
        eprintln!("leakscope: {}", why_nothing_was_profiled(program));
        return Ok(exit_code(status));
    }
    {
        let snapshot = out.join(format!("snapshot-{pid}.json"));
        if snapshot.is_file() {
            let snapshot = load_snapshot(&snapshot)?;
            if args.memory {
                match &snapshot.memory {
                    Some(memory) => {
                        for line in memory.render().lines() {
                            eprintln!("leakscope: {line}");
                        }
                    }
                    None => eprintln!(
                        "leakscope: no memory breakdown: the snapshot at exit could not read \
                         /proc/self/smaps"
                    ),
                }
            }
            let summary = LeakSummary::from_snapshot(&snapshot, &rules);
            if !args.quiet {
                eprint!("{}", summary.render("leakscope: ", 3));
                eprintln!("leakscope: profiles and snapshots in {}", out.display());
            }
            if let Some(path) = &args.report {
                leakscope_profile::atomic_file::write_atomic(
                    path,
                    serde_json::to_string_pretty(&summary)?.as_bytes(),
                )
                .with_context(|| format!("cannot write {}", path.display()))?;
            }
        } else if !args.quiet {
            eprintln!(
                "leakscope: no leak summary: {program} did not exit normally (or replaced itself \
                 without the preload); profiles in {}",
                out.display()
            );
        }
    }
    Ok(exit_code(status))
}

/// Whether the program's own process left a profile or snapshot (at exit
/// or at an interval).
fn wrote_anything(out: &Path, pid: u32) -> bool {
    let prefixes = [
        format!("heap-{pid}."),
        format!("heap-{pid}-"),
        format!("snapshot-{pid}"),
    ];
    std::fs::read_dir(out).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            prefixes.iter().any(|p| name.starts_with(p.as_str()))
        })
    })
}

/// Why a program left nothing: the usual reasons, the certain one first.
fn why_nothing_was_profiled(program: &str) -> String {
    let path = resolve_program(program);
    match path.as_deref().map(elf_kind) {
        Some(Some(ElfKind::Static)) => format!(
            "nothing profiled: {program} is statically linked, so LD_PRELOAD cannot replace its malloc"
        ),
        Some(Some(ElfKind::SetId)) => format!(
            "nothing profiled: {program} is set-user/group-ID, and the loader ignores LD_PRELOAD for it"
        ),
        _ => format!(
            "nothing profiled: {program} did not exit normally, cleared its environment, or is not \
             a dynamically linked program (LD_PRELOAD never reached its malloc)"
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ElfKind {
    Dynamic,
    Static,
    SetId,
}

/// The program file a command name runs (a path, or the first match in
/// `PATH`).
fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Reads just enough of an ELF file to tell how LD_PRELOAD treats it: a
/// 64-bit little-endian executable without a `PT_INTERP` program header has
/// no dynamic loader to preload anything. `None` if it is not such a file.
fn elf_kind(path: &Path) -> Option<ElfKind> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path).ok()?;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (u64_at(32)? as usize, u16_at(54)? as usize, u16_at(56)?);
    const PT_INTERP: u32 = 3;
    let has_interp = (0..phnum as usize).any(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap_or_default()) == PT_INTERP)
    });
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    Some(if !has_interp {
        ElfKind::Static
    } else if mode & 0o6000 != 0 {
        ElfKind::SetId
    } else {
        ElfKind::Dynamic
    })
}

/// The program's exit code, or 128 + the signal that ended it (as shells
/// report it).
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Valgrind's syntax for `--leak-check-heuristics`.
fn parse_heuristics(v: &str) -> Result<String, String> {
    const NAMES: [&str; 4] = ["stdstring", "length64", "newarray", "multipleinheritance"];
    let valid = matches!(v, "all" | "none") || v.split(',').all(|n| NAMES.contains(&n.trim()));
    if valid {
        Ok(v.to_string())
    } else {
        Err(format!(
            "expected all, none, or a comma list of {}",
            NAMES.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_programs_from_others() {
        let sh = resolve_program("sh").expect("sh is on PATH");
        assert_eq!(elf_kind(&sh), Some(ElfKind::Dynamic));
        assert_eq!(elf_kind(Path::new("/nonexistent")), None);
        let script = std::env::temp_dir().join(format!("leakscope-elf-{}", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(elf_kind(&script), None);
        std::fs::remove_file(&script).ok();
    }
}
