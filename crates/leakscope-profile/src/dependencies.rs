//! Which dependency crates (and which versions of them) a run's code comes
//! from, and which of them a finding's stack or chain passes through.
//!
//! Versions are read from the source paths of the debug information: a
//! registry crate's files live in `<cargo home>/registry/src/<index>/
//! <name>-<version>/`, so every symbolised frame of one names its package and
//! version (see [`crate::frames::crate_version_of_file`]). Snapshots carry
//! the versions of the crates on their allocation stacks; heap profiles carry
//! each function's file, so runs without snapshots have them too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frames::crate_version_of_file;
use crate::snapshot::SnapshotReport;
use crate::view::StackView;

/// A package and the version of it the binary was built with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CrateVersion {
    /// The package name as published (`hyper-util`).
    pub name: String,
    pub version: String,
}

impl CrateVersion {
    /// The package and version a registry source file belongs to.
    pub fn of_file(file: &str) -> Option<CrateVersion> {
        crate_version_of_file(file).map(|(name, version)| CrateVersion {
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// The name code uses for the crate (`hyper_util`): what function names
    /// start with.
    pub fn ident(&self) -> String {
        ident(&self.name)
    }
}

impl fmt::Display for CrateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// A package name as code spells it.
fn ident(name: &str) -> String {
    name.replace('-', "_")
}

/// A published advisory against a dependency, as cited in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvisoryCitation {
    /// `RUSTSEC-2023-0034`.
    pub id: String,
    pub title: String,
    /// Version requirements that are not affected because they carry the fix
    /// (`>= 0.3.17`); empty when there is no fixed release.
    pub patched: Vec<String>,
    /// The advisory's categories (`denial-of-service`, `memory-exposure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A dependency a finding's stack or chain passes through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingDependency {
    /// The package name when the debug information says it (`hyper-util`),
    /// else the crate name of the code (`hyper_util`).
    pub name: String,
    /// The version the binary was built with, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Known advisories for this version that can explain memory growth
    /// (filled by `leakscope report --advisory-db`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<AdvisoryCitation>,
}

impl fmt::Display for FindingDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {v}", self.name),
            None => write!(f, "{} (version unknown)", self.name),
        }
    }
}

/// Crates that are the Rust distribution's, never a dependency of the
/// program.
const DISTRIBUTION_CRATES: [&str; 5] = ["core", "alloc", "std", "proc_macro", "test"];

/// The versions known for a run's dependencies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DependencyVersions {
    /// Versions by crate name as code spells it (two versions of one crate
    /// can be linked into one binary).
    by_crate: BTreeMap<String, BTreeSet<CrateVersion>>,
    /// Versions by function name, from the profiles' frames: tells which of
    /// two linked versions a frame is.
    by_function: HashMap<String, BTreeSet<CrateVersion>>,
}

impl DependencyVersions {
    /// From the snapshots' lists and the source files of every profile's
    /// frames.
    pub fn of_run(snapshots: &[SnapshotReport], profiles: &[StackView]) -> DependencyVersions {
        let mut out = DependencyVersions::default();
        for v in snapshots.iter().flat_map(|s| &s.dependency_versions) {
            out.add(v.clone());
        }
        for p in profiles {
            for f in &p.frames {
                if let Some(v) = CrateVersion::of_file(&f.file) {
                    out.by_function
                        .entry(f.function.clone())
                        .or_default()
                        .insert(v.clone());
                    out.add(v);
                }
            }
        }
        out
    }

    /// Adds one crate's version.
    pub fn add(&mut self, v: CrateVersion) {
        self.by_crate.entry(v.ident()).or_default().insert(v);
    }

    /// Every version known, by package name.
    pub fn all(&self) -> Vec<CrateVersion> {
        let mut all: Vec<CrateVersion> = self.by_crate.values().flatten().cloned().collect();
        all.sort();
        all
    }

    /// Versions of a crate, by the name code spells it with.
    pub fn of_crate(&self, krate: &str) -> impl Iterator<Item = &CrateVersion> {
        self.by_crate.get(&ident(krate)).into_iter().flatten()
    }

    /// The dependencies a finding's stack (leaf first, function names) and
    /// chain (root first, labels) pass through, stack first, each crate
    /// once per version. `is_dependency` says whether a crate's code comes
    /// from dependency sources (the run's frames); a crate with a known
    /// version always does.
    pub fn named_by(
        &self,
        stack: &[String],
        chain: &[String],
        is_dependency: &dyn Fn(&str) -> bool,
    ) -> Vec<FindingDependency> {
        let mut seen: BTreeSet<(String, Option<String>)> = BTreeSet::new();
        let mut out = Vec::new();
        let mut add = |krate: &str, versions: Vec<&CrateVersion>| {
            if krate.is_empty() || DISTRIBUTION_CRATES.contains(&krate) {
                return;
            }
            let entries: Vec<(String, Option<String>)> = if versions.is_empty() {
                if !is_dependency(krate) || crate::frames::is_std_name(krate) {
                    return;
                }
                vec![(krate.to_string(), None)]
            } else {
                versions
                    .into_iter()
                    .map(|v| (v.name.clone(), Some(v.version.clone())))
                    .collect()
            };
            for e in entries {
                if seen.insert(e.clone()) {
                    out.push(FindingDependency {
                        name: e.0,
                        version: e.1,
                        advisories: Vec::new(),
                    });
                }
            }
        };
        for frame in stack {
            let krate = owning_crate(frame);
            let versions: Vec<&CrateVersion> = match self.by_function.get(frame) {
                Some(vs) => vs.iter().collect(),
                None => self.of_crate(krate).collect(),
            };
            add(krate, versions);
        }
        for label in chain {
            for krate in crates_in_label(label) {
                add(krate, self.of_crate(krate).collect());
            }
        }
        out
    }
}

/// The crate whose code a frame is: the crate of its path, or, for a
/// dependency's trait implemented for a type parameter (`<F as
/// axum::handler::Handler<T>>::call`), the trait's crate.
pub fn owning_crate(name: &str) -> &str {
    let krate = crate::frames::crate_of(name);
    let bare = name.trim_start_matches(['<', '&', '*']);
    match bare.split_once(" as ") {
        Some((self_type, trait_part)) if !self_type.contains("::") => {
            crate::frames::crate_of(trait_part)
        }
        _ => krate,
    }
}

/// Crate names inside a chain label: every path's first segment
/// (`static app::CACHE`, `h2::proto::streams::Recv::new (heap)`).
fn crates_in_label(label: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let bytes = label.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let after_path_sep = start >= 2 && &label[start - 2..start] == "::";
        if !after_path_sep && label[i..].starts_with("::") {
            let word = &label[start..i];
            if !out.contains(&word) {
                out.push(word);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Frame;

    fn v(name: &str, version: &str) -> CrateVersion {
        CrateVersion {
            name: name.into(),
            version: version.into(),
        }
    }

    const H2_RECV: &str =
        "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/h2-0.3.16/src/proto/streams/recv.rs";

    #[test]
    fn versions_come_from_profile_frames_and_snapshots() {
        let mut snapshot = crate::snapshot::tests::sample();
        snapshot.dependency_versions = vec![v("hyper-util", "0.1.21")];
        let profile = StackView {
            frames: vec![
                Frame {
                    function: "h2::proto::streams::recv::Recv::recv_data".into(),
                    file: H2_RECV.into(),
                    line: 1,
                },
                Frame {
                    function: "app::main".into(),
                    file: "/work/app/src/main.rs".into(),
                    line: 1,
                },
            ],
            sample_types: vec![],
            default_index: 0,
            period_type: None,
            period: 1,
            samples: vec![],
            comments: vec![],
            time_nanos: 0,
        };
        let d = DependencyVersions::of_run(&[snapshot], &[profile]);
        assert_eq!(d.all(), vec![v("h2", "0.3.16"), v("hyper-util", "0.1.21")]);
        assert_eq!(
            d.of_crate("hyper_util").cloned().collect::<Vec<_>>(),
            vec![v("hyper-util", "0.1.21")]
        );
    }

    #[test]
    fn a_finding_names_the_dependencies_on_its_stack_and_chain() {
        let mut d = DependencyVersions::default();
        d.add(v("h2", "0.3.16"));
        d.add(v("h2", "0.4.6"));
        d.add(v("tokio", "1.47.1"));
        d.add(v("hyper-util", "0.1.21"));
        // This frame is known to be 0.3.16's (from the profile's files).
        d.by_function.insert(
            "h2::proto::streams::recv::Recv::recv_data".into(),
            [v("h2", "0.3.16")].into(),
        );
        let stack: Vec<String> = [
            "alloc::vec::Vec<T>::push",
            "h2::proto::streams::recv::Recv::recv_data",
            "<F as axum::handler::Handler<T>>::call",
            "<hyper_util::server::Conn as core::future::Future>::poll",
            "app::serve",
        ]
        .map(String::from)
        .to_vec();
        let chain: Vec<String> = [
            "thread worker: tokio::runtime::task::raw::poll",
            "h2::proto::connection::Connection<T>::new (heap)",
        ]
        .map(String::from)
        .to_vec();
        let deps = d.named_by(&stack, &chain, &|c| c == "axum");
        let shown: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "h2 0.3.16",
                "axum (version unknown)",
                "hyper-util 0.1.21",
                "tokio 1.47.1",
                // The chain's h2 frame is not told apart: both versions.
                "h2 0.4.6",
            ]
        );
        // The application's crate and the distribution's are not listed.
        assert!(!shown
            .iter()
            .any(|s| s.starts_with("app") || s.starts_with("alloc")));
    }

    #[test]
    fn crate_names_in_chain_labels() {
        assert_eq!(
            crates_in_label(
                "(allocation stack not sampled), refers to tokio::runtime::task::raw::poll"
            ),
            vec!["tokio"]
        );
        assert_eq!(
            crates_in_label("<h2::Conn<T> as core::Drop>::drop (heap)"),
            vec!["h2", "core"]
        );
    }
}
