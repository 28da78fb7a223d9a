//! Dependency versions from `cargo auditable` data: a binary built with
//! `cargo auditable` carries its whole dependency list (the `.dep-v0`
//! section, zlib-compressed JSON), read with `auditable-info`. `report`
//! reads it from the profiled program (the profiles' first mapping) when
//! the file is still there and not newer than the run, and uses it for the
//! dependencies whose debug information named no version (remapped or
//! vendored sources).

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use auditable_info::Limits;
use auditable_serde::{DependencyKind, Source};
use leakscope_profile::dependencies::CrateVersion;
use leakscope_profile::diagnose::SelfCheck;

/// Binaries larger than this are not read (the whole file is loaded).
const MAX_BINARY: u64 = 512 << 20;

/// The registry dependencies of a binary built with `cargo auditable`;
/// `None` when it has no such data, cannot be read, is too large, or was
/// modified after `run_started_unix_ns` (it is then not the binary that
/// ran).
pub fn versions_of_binary(path: &Path, run_started_unix_ns: i64) -> Option<Vec<CrateVersion>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_BINARY {
        return None;
    }
    if run_started_unix_ns > 0 {
        let started = UNIX_EPOCH + Duration::from_nanos(run_started_unix_ns as u64);
        if meta.modified().ok()? > started {
            return None;
        }
    }
    let limits = Limits {
        input_file_size: MAX_BINARY as usize,
        ..Limits::default()
    };
    let info = auditable_info::audit_info_from_file(path, limits).ok()?;
    let mut out: Vec<CrateVersion> = info
        .packages
        .into_iter()
        .filter(|p| {
            !p.root
                && p.kind == DependencyKind::Runtime
                && matches!(p.source, Source::CratesIo | Source::Registry)
        })
        .map(|p| CrateVersion {
            name: p.name,
            version: p.version.to_string(),
        })
        .collect();
    out.sort();
    Some(out)
}

/// Gives the findings' dependencies without a version the binary's, and
/// adds the binary's list to the self-check's.
pub fn add_versions(check: &mut SelfCheck, versions: &[CrateVersion]) {
    let ident = |name: &str| name.replace('-', "_");
    for f in &mut check.findings {
        let mut filled = Vec::new();
        for d in &f.dependencies {
            if d.version.is_some() {
                filled.push(d.clone());
                continue;
            }
            let known: Vec<&CrateVersion> = versions
                .iter()
                .filter(|v| ident(&v.name) == ident(&d.name))
                .collect();
            if known.is_empty() {
                filled.push(d.clone());
            }
            for v in known {
                let mut d = d.clone();
                d.name = v.name.clone();
                d.version = Some(v.version.clone());
                filled.push(d);
            }
        }
        f.dependencies = filled;
    }
    for v in versions {
        if !check.dependencies.contains(v) {
            check.dependencies.push(v.clone());
        }
    }
    check.dependencies.sort();
}
