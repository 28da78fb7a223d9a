//! The built library exports the C allocation functions a preload must
//! replace (and `cargo test` builds the library for `leakscope run`'s tests
//! because this test exists). The test does not link the library: its
//! `malloc` would replace this test's own.

use std::path::PathBuf;
use std::process::Command;

fn library() -> PathBuf {
    // Built next to this test, in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join("libleakscope_preload.so")
}

#[test]
fn exports_the_malloc_family() {
    let lib = library();
    assert!(lib.is_file(), "{} was not built", lib.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) must be installed");
    assert!(out.status.success());
    let symbols = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<&str> = symbols
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (kind, name) = (parts.nth(1)?, parts.next()?);
            (kind == "T").then_some(name)
        })
        .collect();
    for f in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "cfree",
        "malloc_usable_size",
        "dlclose",
    ] {
        assert!(exported.contains(&f), "{f} is not exported: {exported:?}");
    }
}
