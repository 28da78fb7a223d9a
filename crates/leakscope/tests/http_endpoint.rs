//! The live endpoint: a service mounts the router on an ephemeral loopback
//! port, `go tool pprof` reads it over HTTP, deltas show only what changed,
//! tokens are enforced, and the default listens on loopback only.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use leakscope::http::{self, Options};
use leakscope::{Mode, Profiler};
use leakscope_profile::StackView;

mod common;
use common::go_pprof;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

static HELD_BY_ENDPOINT_TEST: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn planted_before_the_window() {
    let mut held = HELD_BY_ENDPOINT_TEST.lock().unwrap();
    for _ in 0..20 {
        held.push(black_box(vec![5u8; 40_000]));
    }
}

#[inline(never)]
fn planted_during_the_window() -> Vec<Vec<u8>> {
    (0..10).map(|_| black_box(vec![6u8; 30_000])).collect()
}

/// A service of its own, with leakscope's router merged in, on an ephemeral
/// loopback port. Returns the base URL.
fn start_service(runtime: &tokio::runtime::Runtime) -> String {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .merge(http::router_with(
            Options::default().with_history_interval(None),
        ));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("request");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_vec().unwrap();
    (status, body)
}

fn go_pprof_top(url: &str) -> String {
    go_pprof(&["-top", "-symbolize=none", url])
}

#[test]
fn the_router_in_a_service_serves_profiles_deltas_refs_and_the_report() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = start_service(&runtime);
    planted_before_the_window();
    assert_eq!(get(&format!("{base}/hello")).1, b"hello");

    // go tool pprof reads the heap profile over HTTP.
    let top = go_pprof_top(&format!("{base}/debug/pprof/heap"));
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains("planted_before_the_window"), "{top}");

    // A delta over two seconds shows what was allocated meanwhile, and not
    // what was already there.
    let during = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        planted_during_the_window()
    });
    let delta = go_pprof_top(&format!("{base}/debug/pprof/heap?seconds=2"));
    let kept = during.join().unwrap();
    assert!(delta.contains("planted_during_the_window"), "{delta}");
    assert!(!delta.contains("planted_before_the_window"), "{delta}");

    // Text view, allocs view, bad input.
    let (status, text) = get(&format!("{base}/debug/pprof/heap?debug=1"));
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("planted_before_the_window"), "{text}");
    let (_, allocs) = get(&format!("{base}/debug/pprof/allocs"));
    let view = StackView::new(&leakscope_profile::decode(&allocs).unwrap());
    assert_eq!(view.sample_types[view.default_index].0, "alloc_space");
    assert_eq!(get(&format!("{base}/debug/pprof/heap?seconds=x")).0, 400);

    // Who holds it: the static, in the refs profile and its JSON summary.
    let refs = go_pprof_top(&format!("{base}/debug/leakscope/refs"));
    assert!(refs.contains("HELD_BY_ENDPOINT_TEST"), "{refs}");
    let (status, json) = get(&format!("{base}/debug/leakscope/refs?format=json"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&json).contains("HELD_BY_ENDPOINT_TEST"));

    // The self-check, as JSON and as a page.
    let (status, report) = get(&format!("{base}/debug/leakscope/report"));
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert!(report["verdict"].is_string(), "{report:#}");
    let (status, page) = get(&format!("{base}/debug/leakscope/report?format=html"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).starts_with("<!doctype html>"));
    drop(kept);
}

#[test]
fn a_token_is_enforced_when_set() {
    let handle = http::serve_with(
        "127.0.0.1:0",
        Options::default()
            .with_token("s3cret-token")
            .with_history_interval(None),
    )
    .unwrap();
    let url = format!("http://{}/debug/pprof/heap?debug=1", handle.local_addr());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = |auth: Option<&str>| {
        let mut req = agent.get(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call().unwrap().status().as_u16()
    };
    assert_eq!(status(None), 401);
    assert_eq!(status(Some("Bearer wrong-token")), 401);
    assert_eq!(status(Some("Bearer s3cret-toke")), 401);
    assert_eq!(status(Some("s3cret-token")), 401);
    assert_eq!(status(Some("Bearer s3cret-token")), 200);
    handle.shutdown();
}

/// A local address other than loopback (the one the kernel would use for
/// outside traffic; no packet is sent).
fn non_loopback_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.1:9")
        .expect("this test needs a network interface besides loopback");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

#[test]
fn the_default_listens_on_loopback_only() {
    let handle = http::serve(http::listen_addr(":0").unwrap()).unwrap();
    let port = handle.local_addr().port();
    assert!(handle.local_addr().ip().is_loopback());
    let local = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    assert!(std::net::TcpStream::connect_timeout(&local, Duration::from_secs(2)).is_ok());
    let outside = std::net::SocketAddr::new(non_loopback_address(), port);
    assert!(
        std::net::TcpStream::connect_timeout(&outside, Duration::from_secs(2)).is_err(),
        "reachable on {outside}"
    );
    handle.shutdown();
}
