//! The push exporter against a real HTTP server in the test (a mock
//! Pyroscope ingest endpoint), and against a collector that is down.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use leakscope::push::{self, PushOptions};
use leakscope::{Mode, Profiler};
use leakscope_profile::StackView;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

/// The tests of this binary compare whole-process figures.
static SERIAL: Mutex<()> = Mutex::new(());

struct Received {
    query: String,
    content_type: String,
    body: Vec<u8>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

async fn ingest(
    State(inbox): State<Inbox>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    inbox.lock().unwrap().push(Received {
        query: q.unwrap_or_default(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.to_vec(),
    });
    "ok"
}

/// The `profile` part of a multipart body.
fn profile_part(content_type: &str, body: &[u8]) -> Vec<u8> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary");
    let delimiter = format!("--{boundary}");
    let text = body;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let start = find(text, delimiter.as_bytes(), 0).expect("first delimiter");
    let headers_end = find(text, b"\r\n\r\n", start).expect("part headers") + 4;
    let headers = String::from_utf8_lossy(&text[start..headers_end]);
    assert!(headers.contains("name=\"profile\""), "{headers}");
    let end = find(text, format!("\r\n{delimiter}--").as_bytes(), headers_end)
        .expect("closing delimiter");
    text[headers_end..end].to_vec()
}

#[inline(never)]
fn pushed_planted() -> Vec<Vec<u8>> {
    (0..8).map(|_| black_box(vec![3u8; 64_000])).collect()
}

#[test]
fn profiles_reach_a_pyroscope_style_ingest_endpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(inbox.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });

    let kept = pushed_planted();
    let pusher = push::start(
        PushOptions::new(format!("http://{addr}"), "checkout")
            .label("env", "test")
            .interval(Duration::from_millis(200)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = pusher.stats();
    pusher.stop();
    assert!(stats.sent >= 2, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");

    let received = inbox.lock().unwrap();
    let first = &received[0];
    let query: Vec<(String, String)> = first
        .query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), percent_decode(v))
        })
        .collect();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("name").as_deref(),
        Some("checkout{env=test}"),
        "{query:?}"
    );
    assert_eq!(get("format").as_deref(), Some("pprof"));
    let from: u64 = get("from").unwrap().parse().unwrap();
    let until: u64 = get("until").unwrap().parse().unwrap();
    assert!(from <= until && until > 1_700_000_000, "{from} {until}");

    let profile = profile_part(&first.content_type, &first.body);
    let view = StackView::new(&leakscope_profile::decode(&profile).expect("a pprof profile"));
    let index = view.sample_index(Some("inuse_space")).unwrap();
    let planted: i64 = view
        .samples
        .iter()
        .filter(|s| view.function_names(s).any(|f| f.contains("pushed_planted")))
        .map(|s| s.values[index])
        .sum();
    assert_eq!(planted, 8 * 64_000);
    drop(kept);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A unit of "service" work: allocations that are freed again.
#[inline(never)]
fn serve_requests(n: usize) {
    for i in 0..n {
        let body = black_box(vec![i as u8; 512 + i % 2048]);
        let headers: Vec<String> = (0..4).map(|h| format!("h{h}: {i}")).collect();
        black_box((body, headers));
    }
}

fn requests_per_second(seconds: f64) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed().as_secs_f64() < seconds {
        serve_requests(1000);
        done += 1000;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn live_bytes() -> i64 {
    let p = leakscope::heap_profile();
    p.sites().iter().map(|s| s.inuse_space as i64).sum()
}

#[test]
fn a_collector_that_is_down_costs_the_service_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let baseline = requests_per_second(1.0);
    let live_before = live_bytes();
    let pusher = push::start(
        PushOptions::new(format!("http://{closed}"), "checkout")
            .interval(Duration::from_millis(50))
            .timeout(Duration::from_millis(200))
            .retries(2),
    )
    .unwrap();
    let with_failing_pushes = requests_per_second(3.0);
    let stats = pusher.stats();
    let live_after = live_bytes();
    pusher.stop();
    // It kept trying, gave up on profiles, and queued nothing.
    assert!(stats.failed_attempts >= 10, "{stats:?}");
    assert!(stats.dropped >= 3, "{stats:?}");
    assert_eq!(stats.sent, 0, "{stats:?}");
    let grown = live_after - live_before;
    assert!(
        grown < 256 * 1024,
        "live memory grew by {grown} bytes: {stats:?}"
    );
    // The service's own thread never waits for the exporter.
    assert!(
        with_failing_pushes > 0.5 * baseline,
        "{with_failing_pushes:.0} requests/s with failing pushes vs {baseline:.0} without"
    );
}
