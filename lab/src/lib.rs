//! # leakscope-lab
//!
//! A real gRPC service and client (tonic over TCP on loopback, `bytes::Bytes`
//! fields decoded zero-copy) that reproduce, one scenario at a time, the ways
//! a service's memory grows (see `docs/self-check.md`): handlers that keep
//! parts of requests or responses, idle connections, oversized requests kept
//! by a buffer pool, per-connection buffers kept across connections, a client
//! rebuilt per call, zero-copy JSON values cached, tasks that never complete,
//! an unbounded channel outpaced by its producers, a map that only grows,
//! and a steady service that does none of this (its caches are bounded).
//! Beside it, `src/bin` holds three small services that are not the lab
//! (axum, plain hyper, plain tokio) reproducing some of the same leaks in their own terms. The lab is leakscope's ground truth: the self-check
//! must name each scenario from the evidence alone.
//!
//! The scenario name only chooses behaviour here; nothing in leakscope's
//! analysis ever sees it.

pub mod client;
pub mod components;
pub mod http_load;
pub mod load;
pub mod scenario;
pub mod server;

/// The generated protobuf messages and tonic service.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("lab");

    /// The serialized `FileDescriptorSet` of `proto/lab.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lab_descriptor.bin"));
}

pub use scenario::Scenario;

use std::net::SocketAddr;
use std::time::Duration;

/// What a lab run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub requests: u64,
    pub errors: u64,
    pub connections_opened: u64,
}

/// Runs the scenario for `duration`: starts the server on an ephemeral
/// loopback port, drives load from the client, and returns once the load
/// stops (keeping everything the scenario keeps, so that the final heap
/// profile and snapshot see it).
pub fn run(
    scenario: Scenario,
    duration: Duration,
) -> Result<RunSummary, Box<dyn std::error::Error>> {
    // As a service registers its reflection descriptors: snapshots then name
    // the message fields that pin buffers.
    leakscope::register_descriptor_set(proto::FILE_DESCRIPTOR_SET)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lab-worker")
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async move {
        let (addr, server) = server::start(scenario.server_behaviour()).await?;
        let summary = load::drive(scenario, addr, duration).await;
        server.abort();
        Ok::<RunSummary, Box<dyn std::error::Error>>(summary)
    })?;
    // Keep the runtime (and every connection and task the scenario holds)
    // alive until the caller has taken its last profile.
    std::mem::forget(runtime);
    Ok(summary)
}

/// Measures request throughput: the steady-state service under closed-loop
/// load from `workers` concurrent callers for `duration`, on a runtime of
/// `threads` worker threads (for benchmarks).
pub fn throughput(
    duration: Duration,
    workers: usize,
    threads: usize,
) -> Result<RunSummary, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("lab-worker")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (addr, server) = server::start(Scenario::SteadyState.server_behaviour()).await?;
        let deadline = std::time::Instant::now() + duration;
        let summary = load::saturate(addr, deadline, workers).await;
        server.abort();
        Ok(summary)
    })
}

/// The address a server bound to, for callers that drive their own load.
pub type ServerAddr = SocketAddr;
