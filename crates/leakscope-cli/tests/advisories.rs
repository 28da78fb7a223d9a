//! `leakscope report --advisory-db`: a run whose growing stack passes
//! through a dependency at an affected version cites the advisory; at the
//! patched version, or without the flag, it does not.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{leakscope, stderr, stdout};

use leakscope_profile::builder::MappingInfo;
use leakscope_profile::{encode_gzip, ProfileBuilder, HEAP_SAMPLE_TYPES};

const REGISTRY: &str = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";

fn advisory_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/advisory-db")
}

/// Twelve saved profiles (sampled mode, no snapshots) of a service whose
/// memory grows by 300 kB a profile under h2's receive path, h2 being at
/// `h2_version` (its frames' source files say so), beside a level stack.
fn run_with_h2(h2_version: &str) -> tempfile::TempDir {
    let h2 = format!("{REGISTRY}/h2-{h2_version}/src/proto");
    run_with_h2_sources(&h2, None)
}

/// The same with h2's sources under `h2` (a directory that may not name
/// a version) and the profiles naming `program` as their first mapping,
/// written one second apart from now.
fn run_with_h2_sources(h2: &str, program: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let growing: [(&str, String); 4] = [
        (
            "bytes::bytes_mut::BytesMut::reserve_inner",
            format!("{REGISTRY}/bytes-1.10.1/src/bytes_mut.rs"),
        ),
        (
            "h2::proto::streams::recv::Recv::recv_reset",
            format!("{h2}/streams/recv.rs"),
        ),
        (
            "h2::proto::connection::Connection<T,P,B>::poll",
            format!("{h2}/connection.rs"),
        ),
        (
            "app::serve::{{closure}}",
            "/work/app/src/main.rs".to_string(),
        ),
    ];
    for i in 1..=12i64 {
        let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 524288);
        b.set_default_sample_type("inuse_space");
        let mapping = program.map_or(0, |p| {
            b.mapping(&MappingInfo {
                memory_start: 0x1000,
                memory_limit: 0x100000,
                filename: p.to_str().unwrap(),
                has_functions: true,
                ..MappingInfo::default()
            })
        });
        if program.is_some() {
            b.set_time_nanos(now + i * 1_000_000_000);
        }
        let mut stack = Vec::new();
        for (n, (name, file)) in growing.iter().enumerate() {
            let f = b.function(name, name, file, 1);
            stack.push(b.location(mapping, 0x1000 + n as u64, &[(f, 10)]));
        }
        let bytes = 300_000 * i;
        b.add_sample(&stack, &[i * 10, bytes, i * 10, bytes], &[]);
        let steady = b.function("app::steady", "app::steady", "/work/app/src/main.rs", 1);
        let loc = b.location(mapping, 0x2000, &[(steady, 3)]);
        b.add_sample(&[loc], &[4, 2_000_000, 4, 2_000_000], &[]);
        std::fs::write(
            dir.path().join(format!("heap.{i}.pb.gz")),
            encode_gzip(&b.build()),
        )
        .unwrap();
    }
    dir
}

fn report_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["report", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = leakscope(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn an_affected_dependency_on_the_growing_stack_cites_its_advisory() {
    let db = advisory_db();
    let db = db.to_str().unwrap();
    let run = run_with_h2("0.3.16");
    let json = report_json(run.path(), &["--advisory-db", db]);
    assert_eq!(json["verdict"], "leak", "{json:#}");
    let top = &json["findings"][0];
    let deps = top["dependencies"].as_array().unwrap();
    let h2 = deps
        .iter()
        .find(|d| d["name"] == "h2")
        .unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(h2["version"], "0.3.16");
    let cited: Vec<&str> = h2["advisories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    // Not the withdrawn one, nor the other crate's.
    assert_eq!(cited, ["RUSTSEC-2023-0034"], "{json:#}");
    assert_eq!(h2["advisories"][0]["patched"][0], ">=0.3.17");
    let bytes = deps.iter().find(|d| d["name"] == "bytes").unwrap();
    assert_eq!(bytes["version"], "1.10.1");
    assert!(bytes.get("advisories").is_none(), "{json:#}");
    let evidence = top["evidence"].to_string();
    assert!(
        evidence.contains(
            "h2 0.3.16 is affected by RUSTSEC-2023-0034: Peers can make h2 keep state for reset streams without bound (denial-of-service); patched: >=0.3.17"
        ),
        "{json:#}"
    );
    let fix = top["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(
            "upgrade h2 from 0.3.16 to a patched release (>=0.3.17; RUSTSEC-2023-0034)"
        ),
        "{fix}"
    );
    // Every version the run's files name is listed once.
    let all: Vec<String> = json["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["name"].as_str().unwrap(),
                d["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(all, ["bytes 1.10.1", "h2 0.3.16"]);

    // The text report says the same.
    let o = leakscope(&["report", run.path().to_str().unwrap(), "--advisory-db", db]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("dependencies on its stack and chain: bytes 1.10.1, h2 0.3.16"),
        "{text}"
    );
    assert!(text.contains("fix: upgrade h2 from 0.3.16"), "{text}");
    assert!(!text.contains("RUSTSEC-2099"), "{text}");
}

#[test]
fn a_patched_dependency_or_no_database_cites_nothing() {
    let db = advisory_db();
    let patched = run_with_h2("0.3.17");
    let json = report_json(patched.path(), &["--advisory-db", db.to_str().unwrap()]);
    let top = &json["findings"][0];
    assert!(
        top["dependencies"].to_string().contains("0.3.17"),
        "{json:#}"
    );
    assert!(!json.to_string().contains("RUSTSEC"), "{json:#}");
    assert!(
        !top["fix"].as_str().unwrap().contains("upgrade h2"),
        "{json:#}"
    );

    // Without the flag nothing is looked up: versions, no advisories, the
    // same findings otherwise.
    let affected = run_with_h2("0.3.16");
    let without = report_json(affected.path(), &[]);
    assert!(!without.to_string().contains("RUSTSEC"), "{without:#}");
    assert!(
        without["findings"][0]["dependencies"]
            .to_string()
            .contains("\"0.3.16\""),
        "{without:#}"
    );
    let mut with = report_json(affected.path(), &["--advisory-db", db.to_str().unwrap()]);
    for f in with["findings"].as_array_mut().unwrap() {
        for d in f["dependencies"].as_array_mut().unwrap() {
            d.as_object_mut().unwrap().remove("advisories");
        }
        f.as_object_mut().unwrap().remove("fix");
        let evidence = f["evidence"].as_array_mut().unwrap();
        evidence.retain(|e| !e.as_str().unwrap().contains("RUSTSEC"));
    }
    let mut without = without;
    for f in without["findings"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("fix");
    }
    assert_eq!(with, without);
}

#[test]
fn a_bad_advisory_database_fails_with_one_line() {
    let run = run_with_h2("0.3.16");
    let dir = run.path().to_str().unwrap();
    for db in ["/nonexistent/advisory-db", dir] {
        // A missing directory, and a directory that is no database (no
        // `crates/`).
        let o = leakscope(&["report", dir, "--advisory-db", db]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("leakscope: advisory database {db}: ")),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
    let broken = tempfile::tempdir().unwrap();
    let h2 = broken.path().join("crates/h2");
    std::fs::create_dir_all(&h2).unwrap();
    std::fs::write(h2.join("RUSTSEC-2023-0034.md"), "# no front matter\n").unwrap();
    let o = leakscope(&[
        "report",
        dir,
        "--advisory-db",
        broken.path().to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("RUSTSEC-2023-0034.md"), "{err}");
}

/// A copy of a small system binary with `cargo auditable` data (the
/// `.dep-v0` section, zlib-compressed JSON) listing `h2` at `h2_version`.
fn auditable_binary(dir: &Path, h2_version: &str) -> PathBuf {
    use std::io::Write;
    let json = format!(
        r#"{{"packages":[{{"name":"app","version":"0.1.0","source":"local","dependencies":[1,2],"root":true}},{{"name":"h2","version":"{h2_version}","source":"crates.io"}},{{"name":"cc","version":"1.2.0","source":"crates.io","kind":"build"}}]}}"#
    );
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.as_bytes()).unwrap();
    let section = dir.join("dep-v0.zlib");
    std::fs::write(&section, z.finish().unwrap()).unwrap();
    let binary = dir.join("service");
    let out = Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".dep-v0={}", section.display()))
        .arg("/bin/true")
        .arg(&binary)
        .output()
        .expect("objcopy (binutils; the README's test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Built long before the run.
    set_modified(
        &binary,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
    );
    binary
}

fn set_modified(path: &Path, time: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[test]
fn versions_come_from_cargo_auditable_data_when_the_sources_name_none() {
    let db = advisory_db();
    let bin_dir = tempfile::tempdir().unwrap();
    // Vendored h2: a dependency, but its path names no version.
    let vendored = "/build/app/vendor/h2/src/proto";
    for (version, cited) in [("0.3.16", true), ("0.3.17", false)] {
        let binary = auditable_binary(bin_dir.path(), version);
        let run = run_with_h2_sources(vendored, Some(&binary));
        let json = report_json(run.path(), &["--advisory-db", db.to_str().unwrap()]);
        let deps = &json["findings"][0]["dependencies"];
        let h2 = deps
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "h2")
            .unwrap_or_else(|| panic!("{json:#}"));
        assert_eq!(h2["version"], version, "{json:#}");
        assert_eq!(
            json.to_string().contains("RUSTSEC-2023-0034"),
            cited,
            "{json:#}"
        );
        // The binary's runtime dependencies are listed; its build
        // dependencies and the program itself are not.
        let all = json["dependencies"].to_string();
        assert!(
            all.contains(&format!(r#"{{"name":"h2","version":"{version}"}}"#)),
            "{all}"
        );
        assert!(!all.contains("\"cc\"") && !all.contains("\"app\""), "{all}");
    }
    // A binary modified after the run started (rebuilt since) is not the
    // one that ran: not read.
    let binary = auditable_binary(bin_dir.path(), "0.3.16");
    set_modified(
        &binary,
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let run = run_with_h2_sources(vendored, Some(&binary));
    let json = report_json(run.path(), &[]);
    assert!(
        json["findings"][0]["dependencies"]
            .to_string()
            .contains("\"h2\""),
        "{json:#}"
    );
    assert!(
        !json["findings"][0]["dependencies"]
            .to_string()
            .contains("0.3.16"),
        "{json:#}"
    );
}
