//! Helpers shared by the CLI's test binaries (each uses a subset).
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `command` and returns its output; fails the test, naming the
/// command, if it cannot start or exits unsuccessfully.
pub fn must(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?}: {e} (the README's test command installs it)")
    });
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `leakscope ARGS...`, whatever its exit status.
pub fn leakscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(args)
        .output()
        .expect("run leakscope")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
