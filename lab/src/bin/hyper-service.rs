//! A plain hyper service (no framework), not the lab: every request's body
//! is collected with http-body-util. With `--leak body-slice` the service
//! keeps a 4-byte slice of every body in a static map (request-field-held);
//! with `--leak task` it spawns a task per request that waits for a shutdown
//! signal, holding the body (task-leak); with `--leak none` it keeps nothing.
//! It drives its own load for `--duration` seconds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

const LEAKS: [&str; 3] = ["none", "body-slice", "task"];

#[derive(Clone, Copy, PartialEq)]
enum Leak {
    None,
    BodySlice,
    Task,
}

/// First bytes of each body, by request id.
static KEPT: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);

/// Notified at shutdown (never, here).
static SHUTDOWN: LazyLock<Notify> = LazyLock::new(Notify::new);

async fn handle(leak: Leak, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let id: u64 = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let body = match req.into_body().collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    match leak {
        Leak::BodySlice if body.len() >= 4 => {
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(id, body.slice(0..4));
        }
        Leak::Task => {
            let kept = body.clone();
            tokio::spawn(async move {
                SHUTDOWN.notified().await;
                std::hint::black_box(&kept);
            });
        }
        _ => {}
    }
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    Ok(Response::new(Full::new(Bytes::from(sum.to_string()))))
}

fn main() {
    let (leak, duration) = match leakscope_lab::http_load::args(&LEAKS) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hyper-service: {e}");
            std::process::exit(2);
        }
    };
    let leak = match leak.as_str() {
        "body-slice" => Leak::BodySlice,
        "task" => Leak::Task,
        _ => Leak::None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let done = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| handle(leak, req)),
                        )
                        .await;
                });
            }
        });
        leakscope_lab::http_load::drive(addr, "/ingest", duration, 4).await
    });
    println!("{done} requests");
    std::mem::forget(runtime);
}
