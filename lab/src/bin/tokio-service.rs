//! A plain tokio TCP service (no hyper, tonic or axum), not the lab. Its
//! protocol: a frame is a 4-byte big-endian length and that many bytes; the
//! reply is the 8-byte sum of the frame's bytes. Each connection reads into
//! one `BytesMut` with `read_buf` and cuts frames off it with
//! `split_to(n).freeze()`, so a frame is a zero-copy slice of the read
//! buffer, as in most hand-written tokio protocols.
//!
//! Leaks (`--leak`): `frame-slice` keeps 4 bytes of every frame in a static
//! map (request-field-held); `channel` sends every frame into an unbounded
//! channel whose consumer is far too slow (unbounded-channel); `task` spawns
//! a task per frame that waits forever, holding it (task-leak); `idle` makes
//! the load open ever more connections and leave them idle (idle-connections);
//! `none` keeps nothing. It drives its own load for `--duration` seconds:
//!
//! ```sh
//! LEAKSCOPE_MODE=full LEAKSCOPE_INTERVAL=0.5 LEAKSCOPE_DIR=out \
//!     target/release/tokio-service --leak frame-slice --duration 4
//! leakscope report out
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

const LEAKS: [&str; 5] = ["none", "frame-slice", "channel", "task", "idle"];

/// A connection's first read buffer; frames of up to 6 KiB fit in it.
const READ_BUFFER: usize = 8 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Leak {
    None,
    FrameSlice,
    Channel,
    Task,
    Idle,
}

/// First bytes of each frame, by frame number.
static KEPT: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);
static FRAMES: AtomicU64 = AtomicU64::new(0);

/// Notified at shutdown (never, here).
static SHUTDOWN: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Frames for the audit consumer, which takes one every 20 ms while the
/// load sends about a thousand a second.
static AUDIT: OnceLock<mpsc::UnboundedSender<Bytes>> = OnceLock::new();

fn audit() -> &'static mpsc::UnboundedSender<Bytes> {
    AUDIT.get_or_init(|| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                std::hint::black_box(&frame);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        tx
    })
}

/// Cuts the next whole frame off the front of `buf`, without copying.
fn next_frame(buf: &mut BytesMut) -> Option<Bytes> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(len).freeze())
}

fn handle(leak: Leak, frame: &Bytes) -> u64 {
    match leak {
        Leak::FrameSlice if frame.len() >= 4 => {
            let n = FRAMES.fetch_add(1, Ordering::Relaxed);
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(n, frame.slice(0..4));
        }
        Leak::Channel => {
            let _ = audit().send(frame.clone());
        }
        Leak::Task => {
            let kept = frame.clone();
            tokio::spawn(async move {
                SHUTDOWN.notified().await;
                std::hint::black_box(&kept);
            });
        }
        _ => {}
    }
    frame.iter().map(|&b| u64::from(b)).sum()
}

/// Serves one connection until its peer closes it.
async fn serve(leak: Leak, mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        while let Some(frame) = next_frame(&mut buf) {
            let sum = handle(leak, &frame);
            if stream.write_all(&sum.to_be_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// One client connection sending frames of 1–6 KiB until `deadline`.
async fn worker(addr: SocketAddr, deadline: Instant, w: u64) -> u64 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let mut done = 0;
    let mut id = w;
    let mut reply = [0u8; 8];
    while Instant::now() < deadline {
        let len = 1024 + (id as usize * 997) % 5120;
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.extend_from_slice(&leakscope_lab::http_load::body(id, len));
        if stream.write_all(&frame).await.is_err() || stream.read_exact(&mut reply).await.is_err() {
            break;
        }
        done += 1;
        leakscope::add_progress(1);
        id += 8;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    done
}

/// Opens a connection every 25 ms and keeps it, sending nothing: each holds
/// a server task, its socket and its first read buffer.
async fn open_idle(addr: SocketAddr, deadline: Instant) {
    let mut idle = Vec::new();
    while Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect(addr).await {
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Left open to the end: the last profile is written at exit.
    std::mem::forget(idle);
}

async fn drive(leak: Leak, addr: SocketAddr, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let idle = (leak == Leak::Idle).then(|| tokio::spawn(open_idle(addr, deadline)));
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(worker(addr, deadline, w)))
        .collect();
    let mut done = 0;
    for w in workers {
        done += w.await.unwrap_or(0);
    }
    if let Some(idle) = idle {
        let _ = idle.await;
    }
    done
}

fn main() {
    let (leak, duration) = match leakscope_lab::http_load::args(&LEAKS) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokio-service: {e}");
            std::process::exit(2);
        }
    };
    let leak = match leak.as_str() {
        "frame-slice" => Leak::FrameSlice,
        "channel" => Leak::Channel,
        "task" => Leak::Task,
        "idle" => Leak::Idle,
        _ => Leak::None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let done = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(leak, stream));
            }
        });
        drive(leak, addr, duration).await
    });
    println!("{done} requests");
    // What the service keeps stays alive for the last profile, written at
    // exit.
    std::mem::forget(runtime);
}
