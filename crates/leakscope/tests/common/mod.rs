//! Helpers shared by the allocator test binaries (each binary installs its
//! own `#[global_allocator]`).
#![allow(dead_code)]

use leakscope_profile::StackView;

/// The process's heap profile, encoded and decoded again as any pprof reader
/// would see it.
pub fn current_view() -> StackView {
    let bytes = leakscope::heap_profile().encode_pprof();
    StackView::new(&leakscope_profile::decode(&bytes).expect("our own profile decodes"))
}

/// Figures summed over every sample whose stack has a frame whose name
/// contains `function` (e.g. `"::planted"`, which also matches closures
/// inside it): `[alloc_objects, alloc_space, inuse_objects, inuse_space]`.
pub fn figures_for(view: &StackView, function: &str) -> [i64; 4] {
    let mut out = [0; 4];
    for s in &view.samples {
        if view.function_names(s).any(|f| f.contains(function)) {
            for (o, v) in out.iter_mut().zip(&s.values) {
                *o += v;
            }
        }
    }
    out
}

/// `go tool pprof ARGS...`, which must succeed: its standard output.
pub fn go_pprof<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("`go` must be installed (the README's test command installs golang-go)");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Aborts the process if the test has not finished after `seconds`: a
/// deadlock must fail the test, not hang the suite.
pub fn watchdog(seconds: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        eprintln!("watchdog: test still running after {seconds}s, assuming a deadlock");
        std::process::abort();
    });
}

/// A small deterministic generator for workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
