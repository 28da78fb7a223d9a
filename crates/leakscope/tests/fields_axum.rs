//! A service that is not the lab names the field too: an axum service keeps
//! a zero-copy slice of each JSON body it receives (a string borrowed from
//! the document), and the snapshot says which JSON value of which HTTP/1
//! request body each pinned read buffer is held for, and nothing of what
//! the bodies contain.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use bytes::Bytes;
use leakscope::snapshot::NodeKind;
use leakscope::{Mode, Profiler};
use leakscope_profile::fields::{Content, Framing};

mod common;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

/// Names kept by the handler: slices of the request bodies.
static KEPT_NAMES: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());

const REQUESTS: usize = 24;

/// Keeps the fourth item's name, borrowed from the body (zero-copy).
async fn keep_a_name(body: Bytes) -> &'static str {
    let doc: HashMap<&str, Vec<HashMap<&str, &str>>> =
        serde_json::from_slice(&body).expect("a JSON body");
    let name = doc["items"][3]["name"];
    KEPT_NAMES
        .lock()
        .unwrap()
        .push(body.slice_ref(name.as_bytes()));
    "kept"
}

fn document(i: usize) -> String {
    let items: Vec<String> = (0..6)
        .map(|k| {
            format!(
                "{{\"name\": \"secret-name-{i}-{k}\", \"owner\": \"owner{k}@example.org\", \
                 \"note\": \"{}\"}}",
                "n".repeat(40)
            )
        })
        .collect();
    format!("{{\"items\": [{}]}}", items.join(", "))
}

/// Runs the service and posts `REQUESTS` documents over keep-alive
/// connections; returns when the service is gone (its threads exited, so
/// no stale stack word holds a buffer).
fn serve_and_post() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/items", axum::routing::post(keep_a_name));
    runtime.spawn(async move { axum::serve(listener, app).await });
    for connection in 0..3 {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        for i in 0..REQUESTS / 3 {
            let body = document(connection * 100 + i);
            let request = format!(
                "POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = [0u8; 512];
            let n = stream.read(&mut reply).unwrap();
            assert!(
                reply[..n].starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&reply[..n])
            );
        }
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}

#[test]
fn an_axum_service_keeping_json_slices_names_the_json_path() {
    common::watchdog(60);
    std::thread::spawn(serve_and_post).join().unwrap();
    assert_eq!(KEPT_NAMES.lock().unwrap().len(), REQUESTS);
    let snap = leakscope::snapshot().expect("snapshot");
    let report = snap.report();
    let pinning = report
        .pinned
        .iter()
        .find(|p| p.holder.kind == NodeKind::Heap && p.chain[0].node.name.ends_with("KEPT_NAMES"))
        .unwrap_or_else(|| panic!("no pinning by KEPT_NAMES: {}", report.render(20)));
    // hyper reads several requests of a connection into one buffer (the
    // walker follows them by their Content-Length): at least one buffer per
    // connection, at most one per request, every one attributed to the same
    // field. The slices are exactly the names kept.
    let buffers = pinning.buffers.blocks;
    assert!(
        (3..=REQUESTS as u64).contains(&buffers),
        "{}",
        report.render(20)
    );
    let names: u64 = KEPT_NAMES
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    assert_eq!(pinning.slice_bytes, names, "{}", report.render(20));
    assert_eq!(pinning.fields.len(), 1, "{:#?}", pinning.fields);
    let field = &pinning.fields[0];
    assert_eq!(field.buffers, buffers);
    assert_eq!(field.field.framing, Framing::HttpRequest);
    assert_eq!(field.field.content, Content::Json);
    assert_eq!(field.field.json_path.as_deref(), Some("$.items[3].name"));
    assert_eq!(
        field.describe(),
        "HTTP/1 request body: JSON $.items[3].name"
    );
    // The slice is the name's text: "secret-name-N-3" inside its quotes.
    assert!((15..=17).contains(&field.example.slice_len), "{field:#?}");
    // Nothing of the bodies leaves: not the names, not the owners' keys.
    let json = report.to_json();
    assert!(json.contains("$.items[3].name"));
    for secret in ["secret-name", "example.org", "nnnnnnnn"] {
        assert!(!json.contains(secret), "{secret} in the snapshot");
    }
    assert!(report
        .render(20)
        .contains("field: HTTP/1 request body: JSON $.items[3].name"));
}
