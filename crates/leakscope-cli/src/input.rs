//! Reading profile files given on the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::StackView;

/// Reads and decodes a pprof file into readable stacks.
pub fn load_profile(path: &Path) -> Result<StackView> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let profile =
        leakscope_profile::decode(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok(StackView::new(&profile))
}

/// Resolves `--sample-index` against a profile.
pub fn sample_index(view: &StackView, name: Option<&str>, path: &Path) -> Result<usize> {
    view.sample_index(name)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reads a snapshot file (`LEAKSCOPE_REFS_OUT`, `snapshot-*.json`).
pub fn load_snapshot(path: &Path) -> Result<SnapshotReport> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a leakscope snapshot file (it is not text)",
            path.display()
        )
    })?;
    SnapshotReport::from_json(text).with_context(|| format!("{}", path.display()))
}

/// The profiles and snapshots of one process, each in time order.
pub struct Run {
    pub profiles: Vec<StackView>,
    pub snapshots: Vec<SnapshotReport>,
}

fn is_profile_name(name: &str) -> bool {
    [".pb.gz", ".pb", ".pprof", ".prof"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The process a periodic file belongs to: `heap-<pid>-<seq>.pb.gz`.
fn pid_of(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("heap-")
        .or_else(|| name.strip_prefix("snapshot-"))?;
    rest.split('-').next()?.parse().ok()
}

/// Loads a directory of periodic output (`LEAKSCOPE_DIR`) or of saved heap
/// profiles (any `*.pb.gz`, `*.pb`, `*.pprof`) and snapshots (`*.json`).
/// When it holds several processes' files, the one with the most is read.
pub fn load_run(dir: &Path) -> Result<Run> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| is_profile_name(name) || name.ends_with(".json"))
        .collect();
    if files.is_empty() {
        bail!(
            "{}: no heap profiles (*.pb.gz) or snapshots (*.json)",
            dir.display()
        );
    }
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for (name, _) in &files {
        if let Some(pid) = pid_of(name) {
            *per_pid.entry(pid).or_default() += 1;
        }
    }
    if per_pid.len() > 1 {
        let (&pid, _) = per_pid.iter().max_by_key(|(_, &n)| n).expect("not empty");
        eprintln!(
            "leakscope: {} holds files of {} processes; reading pid {pid}",
            dir.display(),
            per_pid.len()
        );
        files.retain(|(name, _)| pid_of(name).is_none_or(|p| p == pid));
    }
    files.sort_by_cached_key(|(name, _)| natural_key(name));
    let mut profiles = Vec::new();
    let mut snapshots = Vec::new();
    for (name, path) in &files {
        if is_profile_name(name) {
            profiles.push(load_profile(path)?);
        } else {
            snapshots.push(load_snapshot(path)?);
        }
    }
    // The times inside decide; saved files without one keep their names'
    // order (heap.2 before heap.10).
    profiles.sort_by_key(|p| p.time_nanos);
    snapshots.sort_by_key(|s| s.time_unix_ms);
    Ok(Run {
        profiles,
        snapshots,
    })
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
    use super::natural_key;

    #[test]
    fn numbers_in_names_sort_by_value() {
        let mut names = ["heap.10.pb.gz", "heap.2.pb.gz", "heap.1.pb.gz"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["heap.1.pb.gz", "heap.2.pb.gz", "heap.10.pb.gz"]);
    }
}
