//! Golden tests: recorded runs (`tests/recorded/NAME/`: heap profiles,
//! gzipped snapshots, and `run.json` saying which scenario the run
//! reproduces) from the lab and from two services that are not the lab
//! (an axum service and a plain hyper one, `lab/src/bin`), each in full and
//! sampled mode. For every run:
//!
//! - the top finding names the scenario the run reproduces (no finding and
//!   "no leak" for a correct service): ground truth, independent of the
//!   rules' wording;
//! - the whole self-check equals `expected.json`, so that any change of a
//!   rule shows as a diff (`LEAKSCOPE_BLESS=1` rewrites them; review it);
//! - the self-check and the trend agree on whether live memory grows.
//!
//! `scripts/record-runs.sh` records the runs again.

use std::io::Read;
use std::path::{Path, PathBuf};

use leakscope_profile::diagnose::{self_check_with, SelfCheck, Verdict};
use leakscope_profile::frames::FrameTable;
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::StackView;

struct Recorded {
    name: String,
    dir: PathBuf,
    scenario: Option<String>,
    profiles: Vec<StackView>,
    snapshots: Vec<SnapshotReport>,
}

fn load(dir: &Path) -> Recorded {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let mut profiles = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).unwrap();
        if name.starts_with("heap-") && name.ends_with(".pb.gz") {
            profiles.push(StackView::new(&leakscope_profile::decode(&bytes).unwrap()));
        } else if name.starts_with("snapshot-") && name.ends_with(".json.gz") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .unwrap();
            snapshots.push(SnapshotReport::from_json(&text).unwrap());
        }
    }
    profiles.sort_by_key(|p| p.time_nanos);
    snapshots.sort_by_key(|s| s.time_unix_ms);
    Recorded {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        dir: dir.to_path_buf(),
        scenario: meta["scenario"].as_str().map(str::to_string),
        profiles,
        snapshots,
    }
}

fn runs() -> Vec<Recorded> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recorded");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("run.json").exists())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load(d)).collect()
}

fn check(run: &Recorded) -> SelfCheck {
    self_check_with(&run.snapshots, &run.profiles, &FrameTable::builtin())
}

#[test]
fn recorded_runs_cover_the_lab_and_two_other_services_in_both_modes() {
    let names: Vec<String> = runs().into_iter().map(|r| r.name).collect();
    for service in ["lab-", "axum-", "hyper-"] {
        for mode in ["-full", "-sampled"] {
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(service) && n.ends_with(mode)),
                "{service}*{mode} missing: {names:?}"
            );
        }
    }
}

/// Scenarios whose evidence is buffers pinned by slices: never chosen from
/// stacks alone.
const SLICE_PINNING: [&str; 3] = [
    "request-field-held",
    "response-field-held-client",
    "json-borrowed-strings",
];

#[test]
fn every_recorded_run_names_what_it_reproduces() {
    let mut wrong = Vec::new();
    for run in runs() {
        let c = check(&run);
        let top = c.findings.first().map(|f| f.scenario.clone());
        // Stacks alone cannot see slices pinning buffers: a run that keeps
        // parts of requests, read from its profiles only, is unclassified,
        // and says which crate's receive path the growing buffers are in.
        let stacks_alone = run.snapshots.is_empty()
            && run
                .scenario
                .as_deref()
                .is_some_and(|s| SLICE_PINNING.contains(&s));
        let expected = if stacks_alone {
            Some("unclassified".to_string())
        } else {
            run.scenario.clone()
        };
        if stacks_alone {
            let evidence = c.findings.first().map(|f| f.evidence.join("\n"));
            assert!(
                evidence
                    .as_deref()
                    .is_some_and(|e| e.contains("crate's receive path")),
                "{}: {evidence:?}",
                run.name
            );
        }
        let right = match &expected {
            Some(s) => c.verdict == Verdict::Leak && top.as_ref() == Some(s),
            None => c.verdict == Verdict::NoLeak && c.findings.is_empty(),
        };
        if !right {
            wrong.push(format!(
                "{}: expected {:?}, got {:?} {top:?}",
                run.name, run.scenario, c.verdict
            ));
        }
        // Full mode has snapshots; sampled mode has none, or heap walks'.
        assert_eq!(
            !run.snapshots.is_empty(),
            run.name.ends_with("-full") || run.name.ends_with("-walk"),
            "{}",
            run.name
        );
        if run.name.ends_with("-walk") {
            assert!(run.snapshots.iter().all(|s| s.blocks_from.is_heap_walk()));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn report_and_trend_agree_on_every_recorded_run() {
    for run in runs() {
        let c = check(&run);
        let t = leakscope_profile::trend::trends(&run.profiles, &run.snapshots);
        assert_eq!(c.growth.state, t.total.state, "{}", run.name);
        assert_eq!(c.growth.samples, t.samples, "{}", run.name);
        assert_eq!(
            c.growth.last_bytes,
            t.total.last_bytes.max(0.0) as u64,
            "{}",
            run.name
        );
    }
}

#[test]
fn findings_match_the_golden_files() {
    let bless = std::env::var_os("LEAKSCOPE_BLESS").is_some();
    let mut changed = Vec::new();
    for run in runs() {
        let got = serde_json::to_string_pretty(&check(&run)).unwrap() + "\n";
        let path = run.dir.join("expected.json");
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            changed.push(format!("{}:\n{got}", run.name));
        }
    }
    assert!(
        changed.is_empty(),
        "findings differ from expected.json (LEAKSCOPE_BLESS=1 rewrites them):\n{}",
        changed.join("\n")
    );
}
