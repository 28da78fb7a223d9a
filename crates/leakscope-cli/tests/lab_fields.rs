//! The lab's pinned buffers name the exact message field their slices are:
//! the lab registers its descriptor set (as a service does for gRPC
//! reflection), so snapshots say `lab.EchoRequest.payload (field 2,
//! bytes)`; without descriptors the tag path is named, and `--proto` or
//! `--descriptor-set` name it at report time.

use std::path::{Path, PathBuf};
use std::process::Command;

use leakscope_profile::fields::{Content, Framing, TypeBasis, WireType};
use leakscope_profile::snapshot::{BlocksFrom, Pinning, SnapshotReport};

struct LabDir(PathBuf);

impl Drop for LabDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn leakscope(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(args)
        .output()
        .expect("run leakscope");
    assert!(
        out.status.success(),
        "leakscope {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the lab in full mode; returns its directory and last snapshot.
fn lab(scenario: &str) -> (LabDir, PathBuf, SnapshotReport) {
    lab_in(scenario, "full")
}

/// Runs the lab in `mode` (sampled mode's snapshots walk glibc's heap).
fn lab_in(scenario: &str, mode: &str) -> (LabDir, PathBuf, SnapshotReport) {
    let dir = LabDir(std::env::temp_dir().join(format!(
        "leakscope-lab-fields-{scenario}-{mode}-{}",
        std::process::id()
    )));
    leakscope(&[
        "lab".as_ref(),
        "--scenario".as_ref(),
        scenario.as_ref(),
        "--mode".as_ref(),
        mode.as_ref(),
        "--duration".as_ref(),
        "2".as_ref(),
        "--interval".as_ref(),
        "0.5".as_ref(),
        "--json".as_ref(),
        "--out".as_ref(),
        dir.0.as_os_str(),
    ]);
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
        })
        .collect();
    snapshots.sort_by_key(|p| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| SnapshotReport::from_json(&t).ok())
            .map_or(0, |s| s.time_unix_ms)
    });
    let last = snapshots.pop().expect("the lab writes snapshots");
    let report = SnapshotReport::from_json(&std::fs::read_to_string(&last).unwrap()).unwrap();
    (dir, last, report)
}

/// The pinning groups held under the static `root`; at least one.
fn pinned_under<'a>(report: &'a SnapshotReport, root: &str) -> Vec<&'a Pinning> {
    let groups: Vec<&Pinning> = report
        .pinned
        .iter()
        .filter(|p| p.chain.first().is_some_and(|l| l.node.name.ends_with(root)))
        .collect();
    assert!(
        !groups.is_empty(),
        "nothing pinned under {root}: {}",
        report.render(20)
    );
    groups
}

/// The groups whose holder is the static's own table (the slices the
/// scenario plants), which must be nearly all of the bytes pinned under it.
/// A heap walk scans every word of every chunk, unused hash-table slots
/// included (their bytes are whatever the memory held before), so a stale
/// word now and then leads through blocks of unknown site to some other
/// buffer that a pointer into its middle seems to pin.
fn held_by_the_cache<'a>(groups: &[&'a Pinning], scenario: &str) -> Vec<&'a Pinning> {
    let planted: Vec<&Pinning> = groups
        .iter()
        .copied()
        .filter(|p| p.chain.len() == 2)
        .collect();
    let bytes = |g: &[&Pinning]| g.iter().map(|p| p.buffers.bytes).sum::<u64>();
    assert!(
        bytes(&planted) * 10 >= bytes(groups) * 9,
        "{scenario}: the cache's own slices pin {} of {} bytes: {groups:#?}",
        bytes(&planted),
        bytes(groups)
    );
    planted
}

/// Every pinned buffer of every group is attributed to the one field,
/// named from the buffers' or the holder's allocation stacks.
fn check_named(groups: &[&Pinning], full_name: &str, json_path: Option<&str>) {
    for p in groups {
        check_tag_path(p, json_path);
        let name = p.fields[0]
            .name
            .as_ref()
            .expect("named from the registered descriptors");
        assert_eq!(name.full(), full_name);
        assert_eq!(name.field_type, "bytes");
        assert_eq!(name.basis, TypeBasis::Stacks);
        assert!(name.alternatives.is_empty());
    }
}

/// Every pinned buffer of `p` is attributed to field 2 of a gRPC message.
fn check_tag_path(p: &Pinning, json_path: Option<&str>) {
    assert_eq!(p.fields.len(), 1, "{:#?}", p.fields);
    let f = &p.fields[0];
    assert_eq!(f.buffers, p.buffers.blocks, "{p:#?}");
    assert_eq!(f.field.framing, Framing::Grpc, "{p:#?}");
    assert_eq!(f.field.content, Content::Protobuf, "{p:#?}");
    assert_eq!(f.field.tags, [2]);
    assert_eq!(f.field.wire_type, Some(WireType::Len));
    assert_eq!(f.field.json_path.as_deref(), json_path);
    assert_eq!(f.seen_tags, [vec![1, 2]]);
}

#[test]
fn request_field_held_names_the_request_field() {
    let (dir, snapshot, report) = lab("request-field-held");
    let groups = pinned_under(&report, "REQUEST_CACHE");
    check_named(&groups, "lab.EchoRequest.payload", None);
    let text = leakscope(&["refs".as_ref(), snapshot.as_os_str()]);
    assert!(
        text.contains("field: lab.EchoRequest.payload (field 2, bytes)"),
        "{text}"
    );
    // The HTML report lists the pinned buffers with their field.
    let page = dir.0.join("report.html");
    leakscope(&[
        "report".as_ref(),
        dir.0.as_os_str(),
        "--html".as_ref(),
        page.as_os_str(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    let pinned = html
        .split("<section id=\"pinned\">")
        .nth(1)
        .expect("a pinned-buffers section");
    assert!(
        pinned.contains("lab.EchoRequest.payload (field 2, bytes)"),
        "{pinned}"
    );
    // The refs profile's chains pass through the field.
    let pprof = dir.0.join("refs.pb.gz");
    leakscope(&[
        "refs".as_ref(),
        snapshot.as_os_str(),
        "--pprof".as_ref(),
        pprof.as_os_str(),
    ]);
    let bytes = std::fs::read(&pprof).unwrap();
    let view = leakscope_profile::StackView::new(&leakscope_profile::decode(&bytes).unwrap());
    assert!(
        view.samples.iter().any(|s| view
            .function_names(s)
            .any(|f| f == "[slice: lab.EchoRequest.payload, field 2, bytes]")),
        "no chain through the field"
    );
}

#[test]
fn response_field_held_client_names_the_reply_field() {
    let (_dir, _, report) = lab("response-field-held-client");
    check_named(
        &pinned_under(&report, "REPLY_CACHE"),
        "lab.EchoReply.payload",
        None,
    );
}

#[test]
fn json_borrowed_strings_names_the_field_and_the_json_value() {
    let (_dir, snapshot, report) = lab("json-borrowed-strings");
    check_named(
        &pinned_under(&report, "PROFILE_CACHE"),
        "lab.IngestRequest.json",
        Some("$.user"),
    );
    let text = leakscope(&["refs".as_ref(), snapshot.as_os_str()]);
    assert!(
        text.contains("field: lab.IngestRequest.json (field 2, bytes) at JSON $.user"),
        "{text}"
    );
}

/// Sampled mode has no table of live blocks: its snapshots walk glibc's
/// heap, and find the same pinned buffers and the same field. The message
/// is named from sampled stacks; when neither the holder's nor a buffer's
/// stack names it (the lab's messages share one shape, and tonic's receive
/// path is generic), the name lists every message that fits, the right one
/// among them.
#[test]
fn sampled_mode_names_the_same_fields() {
    for (scenario, root, name, json_path) in [
        (
            "request-field-held",
            "REQUEST_CACHE",
            "lab.EchoRequest.payload",
            None,
        ),
        (
            "response-field-held-client",
            "REPLY_CACHE",
            "lab.EchoReply.payload",
            None,
        ),
        (
            "json-borrowed-strings",
            "PROFILE_CACHE",
            "lab.IngestRequest.json",
            Some("$.user"),
        ),
    ] {
        let (_dir, snapshot, report) = lab_in(scenario, "sampled");
        assert_eq!(report.blocks_from, BlocksFrom::HeapWalk, "{scenario}");
        for p in held_by_the_cache(&pinned_under(&report, root), scenario) {
            check_tag_path(p, json_path);
            let named = p.fields[0].name.as_ref().expect("descriptors registered");
            match named.basis {
                TypeBasis::Stacks => assert_eq!(named.full(), name, "{scenario}"),
                TypeBasis::Ambiguous => assert!(
                    named.full() == name || named.alternatives.iter().any(|a| a == name),
                    "{scenario}: {named:?}"
                ),
                other => panic!("{scenario}: named by {other:?}: {named:?}"),
            }
        }
        let text = leakscope(&["refs".as_ref(), snapshot.as_os_str()]);
        assert!(text.contains("(field 2, bytes)"), "{text}");
    }
}

/// A snapshot without names (a service that registered no descriptors)
/// shows the tag path; `--proto` and `--descriptor-set` name it.
#[test]
fn names_come_from_proto_files_or_descriptor_sets_at_report_time() {
    let (dir, _, mut report) = lab("response-field-held-client");
    for p in &mut report.pinned {
        for f in &mut p.fields {
            f.name = None;
        }
    }
    let unnamed = dir.0.join("unnamed.json");
    std::fs::write(&unnamed, report.to_json()).unwrap();
    let text = leakscope(&["refs".as_ref(), unnamed.as_os_str()]);
    assert!(
        text.contains("field: field 2 (length-delimited, "),
        "{text}"
    );
    assert!(!text.contains("lab.EchoReply"), "{text}");

    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/proto/lab.proto");
    let text = leakscope(&[
        "refs".as_ref(),
        unnamed.as_os_str(),
        "--proto".as_ref(),
        proto.as_os_str(),
    ]);
    assert!(
        text.contains("field: lab.EchoReply.payload (field 2, bytes)"),
        "{text}"
    );

    let set = dir.0.join("lab.desc");
    std::fs::write(&set, leakscope_lab::proto::FILE_DESCRIPTOR_SET).unwrap();
    let json = leakscope(&[
        "refs".as_ref(),
        unnamed.as_os_str(),
        "--json".as_ref(),
        "--descriptor-set".as_ref(),
        set.as_os_str(),
    ]);
    let named = SnapshotReport::from_json(&json).unwrap();
    let groups = pinned_under(&named, "REPLY_CACHE");
    check_named(&groups, "lab.EchoReply.payload", None);
}

/// Unreadable or invalid descriptors: one line, exit status 1, no panic.
#[test]
fn bad_descriptors_are_one_line_errors() {
    let dir =
        LabDir(std::env::temp_dir().join(format!("leakscope-bad-desc-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let snapshot = dir.0.join("s.json");
    let empty = SnapshotReport::from_json(
        r#"{"format": "leakscope-snapshot", "version": 1, "pid": 1, "time_unix_ms": 0,
            "pause_ms": 0, "analysis_ms": 0, "threads": [], "totals": {"live": {"blocks": 0,
            "bytes": 0}, "still_reachable": {"blocks": 0, "bytes": 0}, "possibly_lost":
            {"blocks": 0, "bytes": 0}, "definitely_lost": {"blocks": 0, "bytes": 0},
            "indirectly_lost": {"blocks": 0, "bytes": 0}, "dropped_entries": 0,
            "scanned_bytes": 0, "edges": 0}, "holders": [], "pinned": [], "groups": [],
            "retention": []}"#,
    )
    .unwrap();
    std::fs::write(&snapshot, empty.to_json()).unwrap();
    let broken = dir.0.join("broken.proto");
    std::fs::write(
        &broken,
        "syntax = \"proto3\";\nmessage M { uint64 id = ; }\n",
    )
    .unwrap();
    let garbage = dir.0.join("garbage.desc");
    std::fs::write(&garbage, [0xffu8; 16]).unwrap();
    let missing = dir.0.join("missing.proto");
    for (flag, file, expected) in [
        ("--proto", &missing, "cannot read"),
        ("--proto", &broken, "cannot parse"),
        (
            "--descriptor-set",
            &garbage,
            "not a serialized FileDescriptorSet",
        ),
        ("--descriptor-set", &missing, "cannot read"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
            .args([
                "refs".as_ref(),
                snapshot.as_os_str(),
                flag.as_ref(),
                file.as_os_str(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flag} {}: {err}",
            file.display()
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("leakscope: ") && err.contains(expected),
            "{err}"
        );
    }
}
