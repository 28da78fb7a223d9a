#![no_main]
//! The directory loader of `report` and `trend` over a directory of
//! fuzzed files (run with `-close_fd_mask=2`: it warns about each file it
//! skips).

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../exercise.rs"]
mod exercise;
#[allow(dead_code)]
#[path = "../../crates/leakscope-cli/src/input.rs"]
mod input;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("leakscope-fuzz-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    for (name, content) in exercise::dir_files(data) {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let _ = input::load_run(dir, None);
    let _ = input::load_run(dir, Some(1));
});
