//! End to end: every lab scenario runs on a real tonic service and client
//! under leakscope, and the self-check names it from the evidence alone (the
//! scenario name never reaches the analysis).

use std::process::Command;

use serde_json::Value;

fn self_check(scenario: &str) -> Value {
    let dir = std::env::temp_dir().join(format!(
        "leakscope-lab-test-{scenario}-{}",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args([
            "lab",
            "--scenario",
            scenario,
            "--duration",
            "4",
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
    std::fs::remove_dir_all(&dir).ok();
    json
}

/// The top finding, checked to name `scenario`, with its chain and stack
/// joined for assertions.
fn top_finding(scenario: &str) -> (Value, String, String) {
    let json = self_check(scenario);
    assert_eq!(json["verdict"], "leak", "{scenario}: {json:#}");
    let top = json["findings"][0].clone();
    assert_eq!(top["scenario"], scenario, "{json:#}");
    let confidence = top["confidence"].as_f64().unwrap();
    assert!((0.6..=1.0).contains(&confidence), "{top:#}");
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

#[test]
fn request_field_held() {
    let (top, chain, stack) = top_finding("request-field-held");
    assert!(
        chain.starts_with("static leakscope_lab::components::request_cache::REQUEST_CACHE"),
        "{top:#}"
    );
    assert!(
        stack.contains("tonic::codec::decode"),
        "buffers come from the decode path: {stack}"
    );
}

#[test]
fn response_field_held() {
    let (top, chain, stack) = top_finding("response-field-held");
    assert!(chain.contains("REPLY_HISTORY"), "{top:#}");
    assert!(
        stack.contains("leakscope_lab::server::handle_echo"),
        "{stack}"
    );
}

#[test]
fn idle_connections() {
    let (top, _, _) = top_finding("idle-connections");
    let evidence = top["evidence"][0].as_str().unwrap();
    let live: u64 = evidence.split_whitespace().next().unwrap().parse().unwrap();
    assert!(live >= 20, "{evidence}");
}

#[test]
fn oversized_request() {
    let (top, chain, _) = top_finding("oversized-request");
    assert!(
        chain.starts_with("static leakscope_lab::components::buffer_pool::POOL"),
        "{top:#}"
    );
}

#[test]
fn cross_connection_retention() {
    let (top, chain, _) = top_finding("cross-connection-retention");
    assert!(chain.contains("connection_scratch::SCRATCH"), "{top:#}");
}

#[test]
fn client_per_call() {
    let (top, chain, stack) = top_finding("client-per-call");
    assert!(chain.contains("CLIENT_REGISTRY"), "{top:#}");
    assert!(stack.contains("LabClient::connect"), "{stack}");
}

#[test]
fn response_field_held_client() {
    let (top, chain, stack) = top_finding("response-field-held-client");
    assert!(
        chain.starts_with("static leakscope_lab::client::REPLY_CACHE"),
        "{top:#}"
    );
    assert!(
        stack.contains("tonic::client"),
        "buffers come from the client's receive path: {stack}"
    );
}

#[test]
fn json_borrowed_strings() {
    let (top, chain, _) = top_finding("json-borrowed-strings");
    assert!(
        chain.starts_with("static leakscope_lab::components::profile_cache::PROFILE_CACHE"),
        "{top:#}"
    );
}

#[test]
fn steady_state_is_not_a_leak() {
    let json = self_check("steady-state");
    assert_eq!(json["verdict"], "no_leak", "{json:#}");
    assert_eq!(
        json["findings"].as_array().map(Vec::len),
        Some(0),
        "{json:#}"
    );
}
