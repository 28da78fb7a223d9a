//! A published memory-exhaustion advisory in a dependency, reproduced with
//! the registry's releases: `lab/advisory-h2` (RUSTSEC-2023-0034: h2 before
//! 0.3.17 queues every stream a client opens and resets, without bound),
//! built against h2 0.3.16 and against 0.3.18, each run unmodified under
//! `leakscope run` in full and sampled mode. The affected build is blamed
//! on h2's own state, with the advisory cited from the test database; the
//! fixed one gets no finding.
//!
//! Builds the two programs (their own lock files, one target directory
//! beside the workspace's) on first use.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::{must, stderr};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reproduction built against `which` (`affected` or `fixed`).
fn program(which: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = workspace().join("target/advisory-h2");
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        for w in ["affected", "fixed"] {
            must(
                Command::new(&cargo)
                    .args([
                        "build",
                        "--release",
                        "--locked",
                        "--quiet",
                        "--manifest-path",
                    ])
                    .arg(workspace().join(format!("lab/advisory-h2/{w}/Cargo.toml")))
                    .env("CARGO_TARGET_DIR", &target),
            );
        }
    });
    target.join(format!("release/h2-advisory-{which}"))
}

/// Runs the build under `leakscope run` in `mode` with periodic output, and
/// returns `leakscope report --json` on it with the fixture database.
fn self_check(which: &str, mode: &str) -> Value {
    // One run at a time: growth is judged over time, and two runs sharing
    // two cores starve each other's load.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let bin = program(which);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    must(
        Command::new(env!("CARGO_BIN_EXE_leakscope"))
            .args(["run", "-q", "--mode", mode, "--interval", "0.5"])
            // Sampled: one sample per 64 KiB (as the recorded runs), so a
            // four-second run's stacks are judged on enough samples.
            .args(["--rate", "65536", "--out"])
            .arg(&out)
            .arg("--")
            .arg(&bin)
            .args(["--duration", "4"]),
    );
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/advisory-db");
    let report = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["report", "--json", "--advisory-db"])
        .arg(&db)
        .arg(&out)
        .output()
        .expect("run leakscope report");
    assert!(report.status.success(), "{}", stderr(&report));
    serde_json::from_slice(&report.stdout).expect("JSON")
}

fn h2_of(finding: &Value) -> &Value {
    finding["dependencies"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "h2"))
        .unwrap_or_else(|| panic!("no h2 among the finding's dependencies: {finding:#}"))
}

#[test]
fn the_affected_h2_is_blamed_with_its_advisory_in_both_modes() {
    for mode in ["full", "sampled"] {
        let json = self_check("affected", mode);
        assert_eq!(json["verdict"], "leak", "{mode}: {json:#}");
        let top = &json["findings"][0];
        assert_eq!(
            top["scenario"], "growth-inside-dependency",
            "{mode}: {json:#}"
        );
        let h2 = h2_of(top);
        assert_eq!(h2["version"], "0.3.16", "{mode}: {top:#}");
        assert_eq!(
            h2["advisories"][0]["id"], "RUSTSEC-2023-0034",
            "{mode}: {top:#}"
        );
        let fix = top["fix"].as_str().unwrap();
        assert!(fix.starts_with("upgrade h2 from 0.3.16"), "{mode}: {fix}");
        let evidence = top["evidence"].to_string();
        let said = if mode == "full" {
            // The holder: h2's state for the connection.
            "which the h2 0.3.16 crate allocated"
        } else {
            // The growing stack: decoded requests h2 keeps.
            "allocated inside the h2 0.3.16 crate"
        };
        assert!(evidence.contains(said), "{mode}: {top:#}");
    }
}

#[test]
fn the_fixed_h2_gets_no_finding() {
    for mode in ["full", "sampled"] {
        let json = self_check("fixed", mode);
        assert_eq!(json["verdict"], "no_leak", "{mode}: {json:#}");
        assert_eq!(json["findings"], serde_json::json!([]), "{mode}: {json:#}");
    }
}
