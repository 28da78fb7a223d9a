//! Keeping a snapshot from taking its host down. While the forked child
//! analyses, every page the parent writes is copied (copy-on-write), and
//! the child's own arrays grow: together they can push the process past its
//! cgroup's memory limit (and the OOM killer would pick the service) or the
//! machine's available memory. The parent checks both before forking and
//! while it waits, and abandons the snapshot (killing the child, which frees
//! its copies) before the limit is near.

use std::path::{Path, PathBuf};

/// A memory limit that applies to this process, and where its usage is.
#[derive(Debug, Clone)]
struct Limit {
    usage: PathBuf,
    limit: u64,
}

/// The limits in force, read once per snapshot (before stopping anything).
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    limits: Vec<Limit>,
}

/// Room kept free under a limit: 10% of it, at least 64 MiB (pages are
/// copied between two checks).
fn headroom(limit: u64) -> u64 {
    (limit / 10).max(64 << 20)
}

/// Room kept free on the machine: 5% of its memory, at least 128 MiB.
fn machine_headroom(total: u64) -> u64 {
    (total / 20).max(128 << 20)
}

impl Guard {
    /// The limits of this process's memory cgroup and its ancestors (cgroup
    /// v1 or v2).
    pub(crate) fn for_this_process() -> Guard {
        let mut limits = Vec::new();
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
            return Guard { limits };
        };
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (root, limit_file, usage_file) = if controllers.split(',').any(|c| c == "memory") {
                (
                    "/sys/fs/cgroup/memory",
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                )
            } else if controllers.is_empty() {
                ("/sys/fs/cgroup", "memory.max", "memory.current")
            } else {
                continue;
            };
            let mut dir = Path::new(root).join(path.trim_start_matches('/'));
            loop {
                if let Some(limit) = read_number(&dir.join(limit_file)) {
                    // v1 reports "no limit" as a huge number, v2 as "max".
                    if limit < (1 << 60) {
                        limits.push(Limit {
                            usage: dir.join(usage_file),
                            limit,
                        });
                    }
                }
                if dir == Path::new(root) || !dir.pop() {
                    break;
                }
            }
        }
        Guard { limits }
    }

    /// Why going on (or forking) would risk the host, if it would: a limit
    /// whose usage is within its headroom, or a machine short of memory.
    /// `extra` is memory about to be needed on top of today's usage.
    pub(crate) fn pressure(&self, extra: u64) -> Option<String> {
        for l in &self.limits {
            let Some(usage) = read_number(&l.usage) else {
                continue;
            };
            if usage.saturating_add(extra) + headroom(l.limit) > l.limit {
                return Some(format!(
                    "the memory cgroup is at {} MiB of its {} MiB limit (copy-on-write pages and the analysis would need more); the snapshot was abandoned to keep the process from being killed",
                    usage >> 20,
                    l.limit >> 20
                ));
            }
        }
        let (available, total) = meminfo()?;
        (available.saturating_sub(extra) < machine_headroom(total)).then(|| {
            format!(
                "the machine has {} MiB of {} MiB available; the snapshot was abandoned to keep it from running out of memory",
                available >> 20,
                total >> 20
            )
        })
    }

    /// Whether any cgroup limit applies (the parent then checks more often).
    pub(crate) fn limited(&self) -> bool {
        !self.limits.is_empty()
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `MemAvailable` and `MemTotal`, in bytes.
fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_grows_with_the_limit() {
        assert_eq!(headroom(256 << 20), 64 << 20);
        assert_eq!(headroom(10 << 30), 1 << 30);
        assert_eq!(machine_headroom(24 << 30), (24u64 << 30) / 20);
    }

    #[test]
    fn reads_this_process_without_failing() {
        let g = Guard::for_this_process();
        // A process with plenty of room is not under pressure.
        assert!(g.pressure(0).is_none(), "{:?}", g.pressure(0));
    }
}
