//! The load driver: what the client side does in each scenario.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{self, LabClient};
use crate::{RunSummary, Scenario};

/// A payload of `len` bytes of text (text, so that no word of it looks like
/// a heap address to a conservative scan).
fn payload(id: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let start = b'a' + (id % 26) as u8;
    v.extend((0..len).map(|i| b'a' + (start - b'a' + (i % 26) as u8) % 26));
    Bytes::from(v)
}

fn json_document(id: u64) -> Bytes {
    let blob: String = (0..8000 + (id as usize * 131) % 8000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let doc = format!(
        "{{\"user\": {{\"name\": \"user-{id}\", \"email\": \"user-{id}@example.org\", \"tier\": \"gold\"}}, \"blob\": \"{blob}\"}}"
    );
    Bytes::from(doc)
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
}

impl Counters {
    fn done(&self, ok: bool) {
        if ok {
            self.requests.fetch_add(1, Ordering::Relaxed);
            leakscope::add_progress(1);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn summary(&self) -> RunSummary {
        RunSummary {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            connections_opened: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// When the load stops: after its duration, and not before half the
/// periodic sets that duration would hold at one per interval have been
/// written (the writer sleeps an interval after each set, so an unloaded
/// run writes about that many). On a loaded machine a set can take much
/// longer, and a run with too few sets cannot show growth. Never more than
/// three times the duration.
#[derive(Clone, Copy)]
struct Pace {
    deadline: Instant,
    latest: Instant,
    sets: u64,
}

impl Pace {
    fn new(duration: Duration) -> Pace {
        let start = Instant::now();
        let sets = leakscope::periodic::interval().map_or(0, |interval| {
            let expected = duration.as_secs_f64() / interval.as_secs_f64().max(1e-3);
            (expected * 0.5) as u64
        });
        Pace {
            deadline: start + duration,
            latest: start + 3 * duration,
            sets: leakscope::periodic::sets_written() + sets,
        }
    }

    fn running(&self) -> bool {
        let now = Instant::now();
        now < self.deadline
            || (now < self.latest && leakscope::periodic::sets_written() < self.sets)
    }
}

/// Drives the scenario's load against the server at `addr` for `duration`
/// (longer if the periodic sets fell behind: see [`Pace`]).
pub async fn drive(scenario: Scenario, addr: SocketAddr, duration: Duration) -> RunSummary {
    let deadline = Pace::new(duration);
    let counters = Arc::new(Counters::default());
    match scenario {
        Scenario::IdleConnections => idle_connections(addr, deadline, &counters).await,
        Scenario::CrossConnectionRetention => connection_churn(addr, deadline, &counters).await,
        Scenario::ClientPerCall => client_per_call(addr, deadline, &counters).await,
        _ => steady_load(scenario, addr, deadline, &counters).await,
    }
    counters.summary()
}

/// Four workers on one shared channel, about a thousand requests a second.
async fn steady_load(
    scenario: Scenario,
    addr: SocketAddr,
    deadline: Pace,
    counters: &Arc<Counters>,
) {
    let Ok(shared) = LabClient::connect(addr).await else {
        counters.done(false);
        return;
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let next_id = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = shared.clone();
            let counters = counters.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                while deadline.running() {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let ok = match scenario {
                        Scenario::JsonBorrowedStrings => {
                            client.ingest(id, json_document(id)).await.is_ok()
                        }
                        _ => {
                            let len = if scenario == Scenario::OversizedRequest && id % 50 == 7 {
                                4 << 20 // a debug blob
                            } else {
                                1024 + (id as usize * 997) % 5120
                            };
                            match client.echo(id, payload(id, len)).await {
                                Ok(reply) => {
                                    if scenario == Scenario::ResponseFieldHeldClient {
                                        client::keep_first_byte(id, &reply);
                                    }
                                    true
                                }
                                Err(_) => false,
                            }
                        }
                    };
                    counters.done(ok);
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// Opens ten more connections every quarter second (plain channels, as a
/// connection pool would), uses each once, and leaves them all open and
/// idle.
async fn idle_connections(addr: SocketAddr, deadline: Pace, counters: &Arc<Counters>) {
    let mut idle = Vec::new();
    let mut id = 0;
    while deadline.running() {
        for _ in 0..10 {
            let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("a valid URI")
                .connect()
                .await
            else {
                counters.done(false);
                continue;
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            id += 1;
            let mut rpc = crate::proto::lab_client::LabClient::new(channel);
            let request = crate::proto::EchoRequest {
                id,
                payload: payload(id, 2048),
            };
            counters.done(rpc.echo(request).await.is_ok());
            idle.push(rpc);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The idle connections stay open for the final profile.
    std::mem::forget(idle);
}

/// Waves of short-lived connections sending large payloads.
async fn connection_churn(addr: SocketAddr, deadline: Pace, counters: &Arc<Counters>) {
    let mut id = 0;
    while deadline.running() {
        for _ in 0..5 {
            let Ok(mut client) = LabClient::connect(addr).await else {
                counters.done(false);
                continue;
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            for _ in 0..2 {
                id += 1;
                counters.done(client.echo(id, payload(id, 64 * 1024)).await.is_ok());
            }
            drop(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new client for every call, registered globally.
async fn client_per_call(addr: SocketAddr, deadline: Pace, counters: &Arc<Counters>) {
    let mut id = 0;
    while deadline.running() {
        id += 1;
        let ok = match LabClient::connect(addr).await {
            Ok(mut client) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                client::register(&client);
                client.echo(id, payload(id, 2048)).await.is_ok()
            }
            Err(_) => false,
        };
        counters.done(ok);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closed-loop load for throughput measurements: `workers` tasks on one
/// shared channel send echo requests of 1–6 KiB back to back until
/// `deadline`, against a server without any leak.
pub async fn saturate(addr: SocketAddr, deadline: Instant, workers: usize) -> RunSummary {
    let counters = Arc::new(Counters::default());
    let Ok(shared) = LabClient::connect(addr).await else {
        counters.done(false);
        return counters.summary();
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let next_id = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let mut client = shared.clone();
            let counters = counters.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let len = 1024 + (id as usize * 997) % 5120;
                    counters.done(client.echo(id, payload(id, len)).await.is_ok());
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    counters.summary()
}
