//! Helpers shared by the tests that build and run programs.

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
