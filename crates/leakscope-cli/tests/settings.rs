//! The `LEAKSCOPE_*` variables as a user sets them: each bad value named in
//! one warning (once, even with two copies of leakscope in the process or
//! `leakscope run` in between), and none that can hurt the program.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_leakscope")
}

fn go_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/go-heap.pb.gz")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("leakscope-settings-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `leakscope top` (a program on leakscope's allocator) with `env`.
fn top_with(env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.arg("top").arg(go_profile());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn warnings(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_bad_value_is_named_in_exactly_one_warning() {
    for (env, expected) in [
        (
            vec![("LEAKSCOPE_SEED", "abc")],
            "leakscope: ignoring LEAKSCOPE_SEED=abc (expected a whole number from 0 to 18446744073709551615)",
        ),
        (
            vec![("LEAKSCOPE_INTERVAL", "5")],
            "leakscope: ignoring LEAKSCOPE_INTERVAL=5 (LEAKSCOPE_DIR is not set: periodic profiles need a directory)",
        ),
        (
            vec![("LEAKSCOPE_INTERVAL", "0.0004"), ("LEAKSCOPE_DIR", "/tmp")],
            "leakscope: ignoring LEAKSCOPE_INTERVAL=0.0004 (under 10 ms, too short to write profiles; expected seconds from 0.01 to 31536000, with LEAKSCOPE_DIR set)",
        ),
        (
            vec![("LEAKSCOPE_RATE", "0")],
            "leakscope: ignoring LEAKSCOPE_RATE=0 (expected a number of bytes >= 1)",
        ),
        (
            vec![("LEAKSCOPE_SNAPSHOT_TIMEOUT", "soon")],
            "leakscope: ignoring LEAKSCOPE_SNAPSHOT_TIMEOUT=soon (expected whole seconds from 1 to 86400)",
        ),
        (
            vec![("LEAKSCOPE_INTERVALL", "5")],
            "leakscope: ignoring unknown variable LEAKSCOPE_INTERVALL (the LEAKSCOPE_* variables are listed in leakscope's README)",
        ),
    ] {
        let o = top_with(&env);
        assert!(o.status.success(), "{env:?}");
        assert_eq!(warnings(&o), [expected], "{env:?}");
    }
    let o = top_with(&[("LEAKSCOPE_SIGNAL", "15")]);
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("leakscope: ignoring LEAKSCOPE_SIGNAL=15 (expected a real-time signal"),
        "{w:?}"
    );
    // Good values say nothing; an empty one means unset, as it always has.
    let o = top_with(&[
        ("LEAKSCOPE_SIGNAL", "SIGRTMIN+7"),
        ("LEAKSCOPE_SEED", "42"),
        ("LEAKSCOPE_MODE", "sampled"),
        ("LEAKSCOPE_RATE", ""),
    ]);
    assert!(warnings(&o).is_empty(), "{:?}", warnings(&o));
    // A path that is not text is not used as a file name.
    use std::os::unix::ffi::OsStrExt;
    let o = Command::new(bin())
        .arg("top")
        .arg(go_profile())
        .env(
            "LEAKSCOPE_OUT",
            std::ffi::OsStr::from_bytes(b"/tmp/\xff\xfe.pb.gz"),
        )
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        warnings(&o),
        ["leakscope: ignoring LEAKSCOPE_OUT=... (not UTF-8 text)"]
    );
}

/// The preload library next to the binary (as `cargo build` leaves it).
fn preload_library() -> PathBuf {
    let exe = Path::new(bin());
    let dir = exe.parent().unwrap();
    [
        dir.join("libleakscope_preload.so"),
        dir.join("deps/libleakscope_preload.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("libleakscope_preload.so is built with the workspace")
}

#[test]
fn two_copies_of_leakscope_or_leakscope_run_warn_once() {
    // The CLI has its own profiler; under the preload the process holds two.
    let o = Command::new(bin())
        .arg("top")
        .arg(go_profile())
        .env("LD_PRELOAD", preload_library())
        .env("LEAKSCOPE_SEED", "abc")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(warnings(&o).len(), 1, "{:?}", warnings(&o));
    assert!(warnings(&o)[0].contains("LEAKSCOPE_SEED=abc"));

    // `leakscope run` reads the variable too, then starts the program.
    let out = fresh_dir("run-once");
    let o = Command::new(bin())
        .args(["run", "--quiet", "--mode", "sampled", "--out"])
        .arg(&out)
        .args(["--", bin(), "top"])
        .arg(go_profile())
        .env("LEAKSCOPE_PRELOAD_LIB", preload_library())
        .env("LEAKSCOPE_SEED", "abc")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", warnings(&o));
    let w = warnings(&o);
    assert_eq!(
        w.iter().filter(|l| l.contains("LEAKSCOPE_SEED")).count(),
        1,
        "{w:?}"
    );
}

#[test]
fn an_uncreatable_directory_is_reported_with_its_reason() {
    let dir = fresh_dir("uncreatable");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("profiles");
    let o = Command::new(bin())
        .args(["demo-workload", "--requests", "2000", "--out"])
        .arg(&dir)
        .env("LEAKSCOPE_MODE", "sampled")
        .env("LEAKSCOPE_INTERVAL", "0.05")
        .env("LEAKSCOPE_DIR", &target)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", warnings(&o));
    let expected = format!(
        "leakscope: cannot create LEAKSCOPE_DIR {}: Not a directory (os error 20); no periodic \
         profiles until it can be created",
        target.display()
    );
    assert_eq!(warnings(&o), [expected]);
}

#[test]
fn a_signal_the_program_relies_on_is_refused_and_still_ends_it() {
    let dir = fresh_dir("sigterm");
    let scratch = fresh_dir("sigterm-scratch");
    let mut child = Command::new(bin())
        .args(["demo-workload", "--requests", "1000000000", "--out"])
        .arg(&scratch)
        .env("LEAKSCOPE_MODE", "full")
        .env("LEAKSCOPE_SIGNAL", "15")
        .env("LEAKSCOPE_INTERVAL", "0.05")
        .env("LEAKSCOPE_DIR", &dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once a snapshot is written, the stop signal's handler is installed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with("snapshot-") && name.ends_with(".json")
    }) {
        assert!(Instant::now() < deadline, "no snapshot written");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: a signal to our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("SIGTERM did not end the program");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("ignoring LEAKSCOPE_SIGNAL=15"), "{err}");
}

#[test]
fn the_endpoint_refuses_an_empty_token_and_an_open_address_without_one() {
    let out = fresh_dir("http-refusals");
    let o = Command::new(bin())
        .args(["run", "--quiet", "--http", "0.0.0.0:0", "--out"])
        .arg(&out)
        .args(["--", "/bin/true"])
        .env("LEAKSCOPE_PRELOAD_LIB", preload_library())
        .env_remove("LEAKSCOPE_HTTP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("--http 0.0.0.0:0 is beyond loopback"),
        "{w:?}"
    );

    let o = Command::new(bin())
        .args([
            "run", "--quiet", "--mode", "sampled", "--http", "0", "--out",
        ])
        .arg(&out)
        .args(["--", bin(), "top"])
        .arg(go_profile())
        .env("LEAKSCOPE_PRELOAD_LIB", preload_library())
        .env("LEAKSCOPE_HTTP_TOKEN", "")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", warnings(&o));
    assert_eq!(
        warnings(&o),
        ["leakscope: cannot start the endpoint: LEAKSCOPE_HTTP_TOKEN is set but empty; refusing to start the endpoint"]
    );
}
