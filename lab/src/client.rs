//! The lab's client: a tonic channel plus the caches a real client keeps
//! (a resolver cache of endpoints, a load balancer's state).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use tonic::transport::Channel;

use crate::proto::lab_client::LabClient as Grpc;
use crate::proto::{EchoReply, EchoRequest, IngestReply, IngestRequest};

/// A client with its own caches.
#[derive(Clone)]
pub struct LabClient {
    rpc: Grpc<Channel>,
    /// Name → addresses, filled at construction (as a resolver would).
    resolver_cache: HashMap<String, Vec<SocketAddr>>,
    /// Per-endpoint weights of a load balancer.
    balancer_weights: Vec<u64>,
}

/// Every client ever built, "for metrics".
pub static CLIENT_REGISTRY: Mutex<Vec<LabClient>> = Mutex::new(Vec::new());

/// Replies' first bytes, kept by the caller.
pub static REPLY_CACHE: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);

impl LabClient {
    /// Connects to the lab server and builds the client's caches.
    pub async fn connect(addr: SocketAddr) -> Result<LabClient, tonic::transport::Error> {
        let resolver_cache = (0..64)
            .map(|i| (format!("lab-{i}.service.internal:443"), vec![addr; 4]))
            .collect();
        let balancer_weights = vec![1; 1024];
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .connect()
            .await?;
        Ok(LabClient {
            rpc: Grpc::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            resolver_cache,
            balancer_weights,
        })
    }

    pub async fn echo(&mut self, id: u64, payload: Bytes) -> Result<EchoReply, tonic::Status> {
        std::hint::black_box((&self.resolver_cache, &self.balancer_weights));
        Ok(self
            .rpc
            .echo(EchoRequest { id, payload })
            .await?
            .into_inner())
    }

    pub async fn ingest(&mut self, id: u64, json: Bytes) -> Result<IngestReply, tonic::Status> {
        Ok(self
            .rpc
            .ingest(IngestRequest { id, json })
            .await?
            .into_inner())
    }
}

/// Registers a client in the global registry.
pub fn register(client: &LabClient) {
    CLIENT_REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(client.clone());
}

/// Keeps the first byte of a reply (a zero-copy slice of the client's
/// receive buffer).
pub fn keep_first_byte(id: u64, reply: &EchoReply) {
    if !reply.payload.is_empty() {
        let first = reply.payload.slice(0..1);
        REPLY_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(id, first);
    }
}
