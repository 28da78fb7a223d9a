//! End to end: every lab scenario runs on a real tonic service and client
//! under leakscope, and the self-check names it from the evidence alone (the
//! scenario name never reaches the analysis).

#![cfg(feature = "lab")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs the lab in `scenario` and returns the self-check's JSON and the
/// directory of profiles and snapshots (removed when the value drops).
fn run_lab(scenario: &str, mode: &str) -> (Value, LabDir) {
    // One lab at a time: each judges growth over time, and two sharing the
    // machine's two cores starve each other's snapshots and load.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!(
        "leakscope-lab-test-{scenario}-{mode}-{}",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args([
            "lab",
            "--scenario",
            scenario,
            "--mode",
            mode,
            // The lab's own default: 10 or so judged points. With 6, one
            // reading taken while requests were in flight, at the middle
            // point both halves share, can read as levelling off (a Theil-Sen
            // slope of three points has no majority to outvote it).
            "--duration",
            "6",
            "--interval",
            "0.5",
            "--json",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run leakscope lab");
    assert!(
        out.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{scenario}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (json, LabDir(dir))
}

struct LabDir(PathBuf);

impl Drop for LabDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `leakscope ARGS...`, which must succeed; its stdout.
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

fn trend_of(dir: &Path) -> Value {
    let text = leakscope(&["trend".as_ref(), dir.as_os_str(), "--json".as_ref()]);
    serde_json::from_str(&text).unwrap()
}

/// Opens a page in headless Chromium and returns the DOM after its
/// scripts ran (the flame graph's frame count is filled in by script once
/// its frame has loaded).
fn chromium_dom(page: &Path) -> String {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is needed for the HTML report test (scripts/test.sh installs it)");
    let profile = page.with_extension("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    std::fs::remove_dir_all(&profile).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn top_finding_of(scenario: &str, json: &Value) -> (Value, String, String) {
    assert_eq!(json["verdict"], "leak", "{scenario}: {json:#}");
    let top = json["findings"][0].clone();
    assert_eq!(top["scenario"], scenario, "{json:#}");
    let confidence = top["confidence"].as_f64().unwrap();
    assert!((0.3..=1.0).contains(&confidence), "{top:#}");
    assert!(!top["fix"].as_str().unwrap().is_empty());
    let join = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    };
    let chain = join(&top["chain"]);
    let stack = join(&top["stack"]);
    (top, chain, stack)
}

fn check_request_field_held(top: &Value, chain: &str, stack: &str) {
    assert!(
        chain.starts_with("static leakscope_lab::components::request_cache::REQUEST_CACHE"),
        "{top:#}"
    );
    assert!(
        stack.contains("tonic::codec::decode"),
        "buffers come from the decode path: {stack}"
    );
}

/// Runs `scenario` in full and in sampled mode; both must name it first
/// (sampled mode from growing stacks, so with less confidence; its heap
/// walk then names the holder of the sampled blocks), and `report`
/// and `trend` must agree on whether live memory grows. Returns the top
/// findings (full, sampled) with their chains and stacks joined.
fn both_modes(scenario: &str) -> [(Value, String, String); 2] {
    ["full", "sampled"].map(|mode| {
        let (json, dir) = run_lab(scenario, mode);
        let trend = trend_of(&dir.0);
        assert_eq!(
            json["growth"]["state"], trend["total"]["state"],
            "{scenario} ({mode}): report and trend disagree: {json:#} {trend:#}"
        );
        let top = top_finding_of(scenario, &json);
        if mode == "sampled" {
            assert!(top.0["confidence"].as_f64().unwrap() <= 0.6, "{:#}", top.0);
        }
        top
    })
}

#[test]
fn response_field_held() {
    let [(top, chain, stack), (_, sampled_chain, sampled)] = both_modes("response-field-held");
    // Sampled mode: the holder from a walk of glibc's heap.
    for c in [&chain, &sampled_chain] {
        assert!(c.contains("REPLY_HISTORY"), "{top:#} {c}");
    }
    assert!(
        stack.contains("leakscope_lab::server::handle_echo"),
        "{stack}"
    );
    assert!(
        sampled.contains("leakscope_lab::server::handle_echo"),
        "{sampled}"
    );
}

#[test]
fn idle_connections() {
    let [(top, _, _), (sampled, _, _)] = both_modes("idle-connections");
    for t in [&top, &sampled] {
        let evidence = t["evidence"][0].as_str().unwrap();
        let live: u64 = evidence.split_whitespace().next().unwrap().parse().unwrap();
        assert!(live >= 20, "{evidence}");
    }
}

#[test]
fn oversized_request() {
    let [(top, chain, _), (sampled, _, stack)] = both_modes("oversized-request");
    assert!(
        chain.starts_with("static leakscope_lab::components::buffer_pool::POOL"),
        "{top:#}"
    );
    assert!(stack.contains("BufferPool::take"), "{sampled:#}");
}

#[test]
fn cross_connection_retention() {
    let [(top, chain, _), (_, _, stack)] = both_modes("cross-connection-retention");
    assert!(chain.contains("connection_scratch::SCRATCH"), "{top:#}");
    assert!(stack.contains("connection_scratch::stage"), "{stack}");
}

#[test]
fn client_per_call() {
    let [(top, chain, stack), (_, _, sampled)] = both_modes("client-per-call");
    assert!(chain.contains("CLIENT_REGISTRY"), "{top:#}");
    assert!(stack.contains("LabClient"), "{stack}");
    assert!(sampled.contains("LabClient"), "{sampled}");
}

#[test]
fn response_field_held_client() {
    let [(top, chain, stack), (_, _, sampled)] = both_modes("response-field-held-client");
    assert!(
        chain.starts_with("static leakscope_lab::client::REPLY_CACHE"),
        "{top:#}"
    );
    for s in [&stack, &sampled] {
        assert!(
            s.contains("tonic::client"),
            "buffers come from the client's receive path: {s}"
        );
    }
}

#[test]
fn json_borrowed_strings() {
    let [(top, chain, _), (_, _, sampled)] = both_modes("json-borrowed-strings");
    assert!(
        chain.starts_with("static leakscope_lab::components::profile_cache::PROFILE_CACHE"),
        "{top:#}"
    );
    assert!(sampled.contains("tonic::codec::decode"), "{sampled}");
}

#[test]
fn task_leak() {
    let [(top, chain, _), (sampled, _, _)] = both_modes("task-leak");
    for t in [&top, &sampled] {
        assert!(
            t["evidence"]
                .to_string()
                .contains("spawned at leakscope_lab::components::pending_tasks::audit_on_shutdown"),
            "the spawn site is named: {t:#}"
        );
    }
    assert!(
        chain.contains("Cell<T,S>::new"),
        "held through task cells: {top:#}"
    );
}

#[test]
fn unbounded_channel() {
    let [(top, chain, _), (sampled, _, _)] = both_modes("unbounded-channel");
    for t in [&top, &sampled] {
        assert!(
            t["evidence"]
                .to_string()
                .contains("sent from leakscope_lab::components::audit_log::record"),
            "the sender is named: {t:#}"
        );
    }
    assert!(
        chain.starts_with("static leakscope_lab::components::audit_log::SENDER"),
        "the channel's holder: {top:#}"
    );
}

#[test]
fn cache_without_bound() {
    let [(top, chain, stack), (_, sampled_chain, sampled)] = both_modes("cache-without-bound");
    for c in [&chain, &sampled_chain] {
        assert!(
            c.starts_with("static leakscope_lab::components::session_cache::SESSIONS"),
            "the collection's owner: {top:#} {c}"
        );
    }
    for s in [&stack, &sampled] {
        assert!(s.contains("SessionCache::touch"), "{s}");
    }
}

/// A correct service, whose bounded session cache fills and levels off: no
/// finding in either mode, and nothing grows.
#[test]
fn steady_state_is_not_a_leak() {
    for mode in ["full", "sampled"] {
        let (json, dir) = run_lab("steady-state", mode);
        assert_breakdowns_sum_to_rss(&dir.0, mode);
        assert_eq!(json["verdict"], "no_leak", "{mode}: {json:#}");
        assert_eq!(
            json["findings"].as_array().map(Vec::len),
            Some(0),
            "{mode}: {json:#}"
        );
        let trend = trend_of(&dir.0);
        assert_eq!(json["growth"]["state"], trend["total"]["state"]);
        assert_ne!(trend["total"]["state"], "growing", "{mode}: {trend:#}");
        let growing: Vec<&Value> = trend["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "growing")
            .collect();
        assert!(growing.is_empty(), "{mode}: {growing:#?}");
    }
}

/// The self-check names the scenario; the trend names the static that
/// grows; the HTML report renders in a real browser with its findings and
/// flame graph.
#[test]
fn request_field_held() {
    let (json, dir) = run_lab("request-field-held", "full");
    let (top, chain, stack) = top_finding_of("request-field-held", &json);
    check_request_field_held(&top, &chain, &stack);

    let trend = trend_of(&dir.0);
    assert_eq!(trend["total"]["state"], "growing", "{trend:#}");
    assert_eq!(json["growth"]["state"], trend["total"]["state"]);
    let first = &trend["series"][0];
    assert_eq!(first["state"], "growing", "{trend:#}");
    assert_eq!(first["kind"], "holder", "{trend:#}");
    assert!(
        first["name"].as_str().unwrap().ends_with("REQUEST_CACHE"),
        "{first:#}"
    );
    assert!(
        first["bytes_per_unit"].as_f64().unwrap() > 1000.0,
        "{first:#}"
    );
    assert!(
        trend["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "stack"
                && s["state"] == "growing"
                && s["detail"].to_string().contains("tonic::codec::decode")),
        "the decode path's stack grows too: {trend:#}"
    );

    let page = dir.0.join("report.html");
    leakscope(&[
        "report".as_ref(),
        dir.0.as_os_str(),
        "--html".as_ref(),
        page.as_os_str(),
    ]);
    let dom = chromium_dom(&page);
    assert!(dom.contains("class=\"verdict leak\""), "{dom}");
    assert!(
        dom.contains("<article class=\"finding\" data-scenario=\"request-field-held\">"),
        "{dom}"
    );
    let frames: usize = dom
        .split("data-frames=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the flame graph did not load: {dom}"));
    assert!(frames >= 10, "{frames} frames");
    assert!(dom.contains("REQUEST_CACHE"), "{dom}");
}

/// Sampled mode tracks only samples, so its snapshots walk glibc's heap
/// instead of the live table: the self-check still names the static that
/// holds the slices.
#[test]
fn request_field_held_in_sampled_mode() {
    let (json, dir) = run_lab("request-field-held", "sampled");
    let (top, _, stack) = top_finding_of("request-field-held", &json);
    assert!(stack.contains("tonic::codec::decode"), "{stack}");
    assert_eq!(json["growth"]["state"], trend_of(&dir.0)["total"]["state"]);
    assert!(
        top["chain"][0]
            .as_str()
            .is_some_and(|c| c.contains("REQUEST_CACHE")),
        "{top:#}"
    );
    assert!(
        std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("snapshot-")),
        "sampled mode takes snapshots by walking the heap"
    );
}

/// Worker threads whose freed reports glibc's arenas keep: RSS climbs while
/// the live heap stays flat. Not a leak, in either mode, and the finding
/// says what the allocator keeps and what to set.
#[test]
fn arena_fragmentation_is_not_a_leak() {
    for mode in ["full", "sampled"] {
        let (json, _dir) = run_lab("arena-fragmentation", mode);
        assert_eq!(json["verdict"], "no_leak", "{mode}: {json:#}");
        let top = &json["findings"][0];
        assert_eq!(
            top["scenario"], "allocator-keeps-freed-memory",
            "{mode}: {json:#}"
        );
        assert!(
            json["summary"]
                .as_str()
                .unwrap()
                .starts_with("not a leak: RSS grew"),
            "{mode}: {json:#}"
        );
        assert!(
            top["fix"].as_str().unwrap().contains("MALLOC_ARENA_MAX"),
            "{top:#}"
        );
    }
}

/// Threads started and never joined: their stacks grow outside the heap.
#[test]
fn thread_leak_grows_outside_the_heap() {
    for mode in ["full", "sampled"] {
        let (json, _dir) = run_lab("thread-leak", mode);
        assert_eq!(json["verdict"], "leak", "{mode}: {json:#}");
        let top = &json["findings"][0];
        assert_eq!(top["scenario"], "growth-outside-heap", "{mode}: {json:#}");
        assert_eq!(
            top["title"], "memory grows outside the heap: thread stacks",
            "{top:#}"
        );
    }
}

/// Every memory breakdown the lab wrote beside its profiles sums to RSS
/// (what no part explains is named "unexplained"), and in the median one
/// that is at most 2% of RSS (a breakdown read while memory changes fast,
/// the profiler symbolising on another thread, say, explains less).
fn assert_breakdowns_sum_to_rss(dir: &Path, mode: &str) {
    use leakscope_profile::memory::{Breakdown, PartKind};
    let mut shares = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("memory-") && name.ends_with(".json")) {
            continue;
        }
        let b = Breakdown::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(b.sum_of_parts(), b.rss, "{mode} {name}: {b:?}");
        shares.push(b.part(PartKind::Unexplained) as f64 / b.rss as f64);
    }
    assert!(
        shares.len() >= 3,
        "{mode}: {} breakdowns in {}",
        shares.len(),
        dir.display()
    );
    shares.sort_by(f64::total_cmp);
    let median = shares[shares.len() / 2];
    assert!(
        median <= 0.02,
        "{mode}: median unexplained {:.1}% ({shares:?})",
        median * 100.0
    );
}
