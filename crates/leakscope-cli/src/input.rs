//! Reading profile files given on the command line, and directories of them.
//!
//! A single file named on the command line must be readable (or the command
//! fails with one line). In a directory, what cannot be read is skipped with
//! one warning line naming it, and the rest is analysed: a crashing service
//! (the moment it most needs diagnosing) may leave an unfinished write
//! behind, and a directory may hold unrelated files. Nothing here blocks:
//! FIFOs and devices are recognised before they are read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use leakscope_profile::atomic_file::is_temporary_name;
use leakscope_profile::codec::Limits;
use leakscope_profile::memory::Breakdown;
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::{pb, StackView};

/// The largest profile file read (compressed; the codec bounds what it
/// inflates to separately).
pub const MAX_PROFILE_FILE: u64 = 64 << 20;
/// The largest snapshot file read (real ones are around a megabyte).
const MAX_SNAPSHOT_FILE: u64 = 64 << 20;

/// Reads a regular file of at most `limit` bytes. Opens without blocking
/// (a FIFO would otherwise wait for a writer forever) and refuses anything
/// but a regular file.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file ({})", path.display(), kind(&meta));
    }
    if meta.len() > limit {
        bail!(
            "{}: {} bytes, more than the {} a leakscope file may have",
            path.display(),
            meta.len(),
            limit
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{}: grew past {} bytes while read", path.display(), limit);
    }
    Ok(bytes)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Reads and decodes a pprof file into readable stacks.
/// Names a profile written unnamed (`LEAKSCOPE_SYMBOLIZE=later`): the
/// profile named, and the binaries that could not name their frames.
pub type Namer = fn(&pb::Profile) -> Option<(pb::Profile, Vec<String>)>;

/// The namer `load_profile` uses, installed by the binary (`main`: from the
/// binaries on disk, through leakscope's runtime). Without one (the fuzz
/// targets, which read hostile files and must not open the binaries those
/// name) profiles are read as written.
pub static NAMER: OnceLock<Namer> = OnceLock::new();

/// Reads and decodes a pprof file into readable stacks; a profile written
/// unnamed is named here (see [`NAMER`]).
pub fn load_profile(path: &Path) -> Result<StackView> {
    let bytes = read_regular_file(path, MAX_PROFILE_FILE)?;
    let profile = leakscope_profile::codec::decode_with(&bytes, &Limits::default())
        .with_context(|| format!("{}", path.display()))?;
    let Some((named, unnamed_binaries)) = NAMER.get().and_then(|name| name(&profile)) else {
        return Ok(StackView::new(&profile));
    };
    for binary in &unnamed_binaries {
        warn_unnamed_once(binary);
    }
    Ok(StackView::new(&named))
}

/// Says once per binary that its frames stay code addresses.
fn warn_unnamed_once(binary: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|b| b == binary) {
        eprintln!(
            "leakscope: {binary} is not on this machine as the profile recorded it (missing, or its build ID differs): its frames stay code addresses"
        );
        said.push(binary.to_string());
    }
}

/// Resolves `--sample-index` against a profile.
pub fn sample_index(view: &StackView, name: Option<&str>, path: &Path) -> Result<usize> {
    view.sample_index(name)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Reads a snapshot file (`LEAKSCOPE_REFS_OUT`, `snapshot-*.json`).
pub fn load_snapshot(path: &Path) -> Result<SnapshotReport> {
    let bytes = read_regular_file(path, MAX_SNAPSHOT_FILE)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow!(
            "{}: not a leakscope snapshot file (it is not text)",
            path.display()
        )
    })?;
    SnapshotReport::from_json(text).with_context(|| format!("{}", path.display()))
}

/// The profiles, snapshots and memory breakdowns of one process, each in
/// time order.
pub struct Run {
    pub profiles: Vec<StackView>,
    pub snapshots: Vec<SnapshotReport>,
    pub memory: Vec<Breakdown>,
    /// The program the profiles name (their first mapping's file), if any.
    pub program: Option<PathBuf>,
}

/// A memory breakdown written beside a periodic profile
/// (`memory-<pid>-<seq>.json`).
fn is_memory_name(name: &str) -> bool {
    name.starts_with("memory-") && name.ends_with(".json")
}

/// Reads a memory breakdown file.
pub fn load_memory(path: &Path) -> Result<Breakdown> {
    let bytes = read_regular_file(path, MAX_SNAPSHOT_FILE)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow!(
            "{}: not a leakscope memory file (it is not text)",
            path.display()
        )
    })?;
    Breakdown::from_json(text).with_context(|| format!("{}", path.display()))
}

fn is_profile_name(name: &str) -> bool {
    [".pb.gz", ".pb", ".pprof", ".prof"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The process a file of leakscope's belongs to: `heap-<pid>-<seq>.pb.gz`,
/// `snapshot-<pid>-<seq>.json`, or the exit outputs of `leakscope run`,
/// `heap-<pid>.pb.gz` and `snapshot-<pid>.json`.
fn pid_of(name: &str) -> Option<u32> {
    pid_and_kind(name).map(|(pid, _)| pid)
}

/// The pid in a name of leakscope's, and whether the name is a periodic
/// set's (`-<seq>` after the pid) rather than an exit output's.
fn pid_and_kind(name: &str) -> Option<(u32, bool)> {
    let rest = name
        .strip_prefix("heap-")
        .or_else(|| name.strip_prefix("snapshot-"))
        .or_else(|| name.strip_prefix("memory-"))?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let periodic = match rest[digits..].chars().next() {
        Some('-') => true,
        Some('.') => false,
        _ => return None,
    };
    Some((rest[..digits].parse().ok()?, periodic))
}

/// Drops the exit outputs (`heap-<pid>.pb.gz`, `snapshot-<pid>.json`) of a
/// process that also wrote periodic sets: its last set is the state at
/// exit already, and a second point at exit would be judged as the last
/// one of the running service (whose connections may have closed by then).
fn drop_exit_outputs_beside_periodic_sets(files: &mut Vec<Entry>) {
    let periodic: Vec<u32> = files
        .iter()
        .filter_map(|e| pid_and_kind(&e.name))
        .filter_map(|(pid, periodic)| periodic.then_some(pid))
        .collect();
    files.retain(|e| match pid_and_kind(&e.name) {
        Some((pid, false)) => !periodic.contains(&pid),
        _ => true,
    });
}

/// One file of a directory, and the process it belongs to (`None` for
/// files saved by hand).
struct Entry {
    name: String,
    path: PathBuf,
    pid: Option<u32>,
}

/// Loads a directory of periodic output (`LEAKSCOPE_DIR`) or of saved heap
/// profiles (any `*.pb.gz`, `*.pb`, `*.pprof`) and snapshots (`*.json`).
///
/// With files of several processes, `pid` chooses one; without it the
/// command fails and lists the processes (never silently one). Files that
/// cannot be read are skipped with a warning each.
pub fn load_run(dir: &Path, pid: Option<u32>) -> Result<Run> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temporary_name(&name) {
            warn_skipped(
                &entry.path(),
                "an unfinished write (the process stopped while writing it)",
            );
            continue;
        }
        if is_profile_name(&name) || name.ends_with(".json") {
            files.push(Entry {
                pid: pid_of(&name),
                path: entry.path(),
                name,
            });
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no heap profiles (*.pb.gz) or snapshots (*.json)",
            dir.display()
        );
    }
    select_process(dir, &mut files, pid)?;
    drop_exit_outputs_beside_periodic_sets(&mut files);
    files.sort_by_cached_key(|e| natural_key(&e.name));
    let mut profiles = Vec::new();
    let mut snapshots = Vec::new();
    let mut memory = Vec::new();
    let mut a_profile = None;
    for e in &files {
        let loaded = if is_profile_name(&e.name) {
            a_profile.get_or_insert(&e.path);
            load_profile(&e.path).map(|p| profiles.push(p))
        } else if is_memory_name(&e.name) {
            load_memory(&e.path).map(|m| memory.push(m))
        } else {
            load_snapshot(&e.path).map(|s| snapshots.push(s))
        };
        if let Err(err) = loaded {
            warn_skipped(&e.path, &reason(&err, &e.path));
        }
    }
    if profiles.is_empty() && snapshots.is_empty() {
        bail!(
            "{}: none of its {} profile and snapshot files could be read",
            dir.display(),
            files.len()
        );
    }
    // The times inside decide; saved files without one keep their names'
    // order (heap.2 before heap.10).
    profiles.sort_by_key(|p| p.time_nanos);
    snapshots.sort_by_key(|s| s.time_unix_ms);
    memory.sort_by_key(|m| m.time_unix_ms);
    Ok(Run {
        profiles,
        snapshots,
        memory,
        program: a_profile.and_then(|p| program_of(p)).map(PathBuf::from),
    })
}

fn warn_skipped(path: &Path, why: &str) {
    eprintln!("leakscope: skipping {}: {why}", path.display());
}

/// An error's one line without the path it starts with (the warning names
/// the file already).
fn reason(err: &anyhow::Error, path: &Path) -> String {
    let line = format!("{err:#}");
    let shown = path.display().to_string();
    line.strip_prefix(&shown)
        .map(|rest| rest.trim_start_matches(':').trim_start().to_string())
        .unwrap_or(line)
}

/// Keeps the files of one process: the one `pid` names, or the only one.
fn select_process(dir: &Path, files: &mut Vec<Entry>, pid: Option<u32>) -> Result<()> {
    let mut per_pid: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for e in files.iter() {
        if let Some(p) = e.pid {
            let counts = per_pid.entry(p).or_default();
            if is_profile_name(&e.name) {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    match pid {
        Some(p) => {
            if !per_pid.contains_key(&p) {
                bail!(
                    "{}: no files of pid {p}; it holds {}",
                    dir.display(),
                    list_processes(files, &per_pid)
                );
            }
            files.retain(|e| e.pid == Some(p));
        }
        None if per_pid.len() > 1 => bail!(
            "{} holds files of {} processes; choose one with --pid: {}",
            dir.display(),
            per_pid.len(),
            list_processes(files, &per_pid)
        ),
        None => {}
    }
    Ok(())
}

/// "1234 (/usr/bin/sleep: 12 profiles), 1240 (my-service: 3 profiles, 3
/// snapshots)": each process with the program its profiles name.
fn list_processes(files: &[Entry], per_pid: &BTreeMap<u32, (usize, usize)>) -> String {
    if per_pid.is_empty() {
        return "only files saved by hand (no pid in their names)".to_string();
    }
    let mut out = String::new();
    for (i, (&pid, &(profiles, snapshots))) in per_pid.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let program = files
            .iter()
            .filter(|e| e.pid == Some(pid) && is_profile_name(&e.name))
            .find_map(|e| program_of(&e.path));
        let _ = write!(out, "{pid} (");
        if let Some(program) = program {
            let _ = write!(out, "{program}: ");
        }
        let _ = write!(out, "{profiles} profiles");
        if snapshots > 0 {
            let _ = write!(out, ", {snapshots} snapshots");
        }
        out.push(')');
    }
    out
}

/// The main program a profile names (its first mapping's file).
fn program_of(path: &Path) -> Option<String> {
    let bytes = read_regular_file(path, MAX_PROFILE_FILE).ok()?;
    let profile = leakscope_profile::codec::decode_with(&bytes, &Limits::default()).ok()?;
    let mapping = profile.mapping.first()?;
    let name = profile.string_table.get(mapping.filename as usize)?;
    (!name.is_empty()).then(|| name.clone())
}

/// A sort key that orders the numbers inside names by value.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

#[cfg(test)]
mod tests {
    use super::{drop_exit_outputs_beside_periodic_sets, natural_key, pid_of, Entry};

    #[test]
    fn numbers_in_names_sort_by_value() {
        let mut names = ["heap.10.pb.gz", "heap.2.pb.gz", "heap.1.pb.gz"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["heap.1.pb.gz", "heap.2.pb.gz", "heap.10.pb.gz"]);
    }

    #[test]
    fn pids_come_from_periodic_and_exit_names() {
        assert_eq!(pid_of("heap-123-0004.pb.gz"), Some(123));
        assert_eq!(pid_of("snapshot-123-0004.json"), Some(123));
        assert_eq!(pid_of("heap-77.pb.gz"), Some(77));
        assert_eq!(pid_of("snapshot-77.json"), Some(77));
        assert_eq!(pid_of("memory-77-0003.json"), Some(77));
        assert_eq!(pid_of("heap.3.pb.gz"), None);
        assert_eq!(pid_of("heap-abc.pb.gz"), None);
        assert_eq!(pid_of("heap-.pb.gz"), None);
    }

    #[test]
    fn exit_outputs_beside_periodic_sets_are_not_points_of_the_run() {
        let mut files: Vec<Entry> = [
            "heap-5-0000.pb.gz",
            "heap-5.pb.gz",
            "snapshot-5.json",
            "snapshot-5-0000.json",
            "heap-9.pb.gz",
            "saved.pb.gz",
        ]
        .iter()
        .map(|n| Entry {
            name: n.to_string(),
            path: n.into(),
            pid: pid_of(n),
        })
        .collect();
        drop_exit_outputs_beside_periodic_sets(&mut files);
        let names: Vec<&str> = files.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "heap-5-0000.pb.gz",
                "snapshot-5-0000.json",
                "heap-9.pb.gz",
                "saved.pb.gz"
            ]
        );
    }
}
