//! Load for the plain HTTP services (`axum-service`, `hyper-service`): a few
//! keep-alive HTTP/1 connections (hyper's client), each posting bodies of
//! 1–6 KiB in a loop (and optionally a rare multi-megabyte one), counting
//! every request as progress.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A body of `len` bytes of text (no word of it looks like a heap address
/// to a conservative scan).
pub fn body(id: u64, len: usize) -> Bytes {
    let start = (id % 26) as u8;
    Bytes::from(
        (0..len)
            .map(|i| b'a' + (start + (i % 26) as u8) % 26)
            .collect::<Vec<u8>>(),
    )
}

/// Posts to `http://addr{path}` from `workers` connections until `duration`
/// has passed; returns the requests that succeeded.
pub async fn drive(addr: SocketAddr, path: &'static str, duration: Duration, workers: u64) -> u64 {
    drive_with_outliers(addr, path, duration, workers, None).await
}

/// As [`drive`]; with `Some(n)`, one request in `n` carries a 4 MiB body.
pub async fn drive_with_outliers(
    addr: SocketAddr,
    path: &'static str,
    duration: Duration,
    workers: u64,
    large_every: Option<u64>,
) -> u64 {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(addr, path, deadline, w, large_every)))
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap_or(0);
    }
    done
}

async fn worker(
    addr: SocketAddr,
    path: &'static str,
    deadline: Instant,
    w: u64,
    large_every: Option<u64>,
) -> u64 {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(connection);
    let mut done = 0;
    let mut id = w;
    while Instant::now() < deadline {
        let len = match large_every {
            Some(n) if id % n == 7 => 4 << 20,
            _ => 1024 + (id as usize * 997) % 5120,
        };
        let request = hyper::Request::post(format!("http://{addr}{path}"))
            .header("x-request-id", id.to_string())
            .body(Full::new(body(id, len)))
            .expect("a valid request");
        let Ok(response) = sender.send_request(request).await else {
            break;
        };
        if response.into_body().collect().await.is_ok() {
            done += 1;
            leakscope::add_progress(1);
        }
        id += 8;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    done
}

/// Parses `--leak NAME --duration SECS` for the service binaries.
pub fn args(leaks: &[&str]) -> Result<(String, Duration), String> {
    let mut leak = "none".to_string();
    let mut duration = Duration::from_secs(4);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--leak" => leak = value,
            "--duration" => {
                duration = Duration::from_secs_f64(
                    value
                        .parse::<f64>()
                        .map_err(|e| format!("--duration {value}: {e}"))?,
                )
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if !leaks.contains(&leak.as_str()) {
        return Err(format!(
            "unknown leak {leak:?} (known: {})",
            leaks.join(", ")
        ));
    }
    Ok((leak, duration))
}
