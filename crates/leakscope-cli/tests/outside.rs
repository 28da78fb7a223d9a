//! `leakscope attach PID` and `leakscope core CORE` from the command line,
//! against a C program with a block held by a global and a lost one: the
//! summary names the global, the snapshot file and its refs profile are
//! written and `leakscope refs` reads them back; bad input gets one line.
//! Needs gcc and gdb's `gcore`.

mod support;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::leakscope;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Waiting(Child);

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_waiting(dir: &Path) -> Waiting {
    let exe = dir.join("waiting");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/programs/waiting.c");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success());
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    Waiting(child)
}

/// The summary and the files of one snapshot.
fn check(out: &Output, json: &Path) {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("g_kept_table"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("definitely lost") && l.ends_with(" in 1 blocks")),
        "{stdout}"
    );
    let mut refs = json.as_os_str().to_owned();
    refs.push(".refs.pb.gz");
    assert!(Path::new(&refs).is_file());
    let again = leakscope(&["refs", json.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("g_kept_table"));
}

#[test]
fn attach_and_core_commands_write_snapshots_that_refs_reads() {
    let dir = tempfile::tempdir().unwrap();
    let target = start_waiting(dir.path());
    let pid = target.0.id().to_string();

    let json = dir.path().join("attached.json");
    let out = leakscope(&["attach", &pid, "-o", json.to_str().unwrap()]);
    check(&out, &json);
    assert!(
        text(&out.stderr).contains("stopped for"),
        "{}",
        text(&out.stderr)
    );

    let gcore = Command::new("gcore")
        .arg("-o")
        .arg(dir.path().join("core"))
        .arg(&pid)
        .output()
        .expect("gcore (gdb) is installed");
    assert!(gcore.status.success(), "{}", text(&gcore.stderr));
    let core = dir.path().join(format!("core.{pid}"));
    let json = dir.path().join("core.json");
    let out = leakscope(&["core", core.to_str().unwrap(), "-o", json.to_str().unwrap()]);
    check(&out, &json);
}

#[test]
fn bad_targets_get_one_line() {
    for args in [
        &["core", "Cargo.toml"][..],
        &["core", "/no/such/core"],
        &["attach", "999999999"],
    ] {
        let out = leakscope(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("leakscope: "), "{args:?}: {err}");
    }
}
