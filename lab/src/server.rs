//! The lab's gRPC server: a tonic service whose handlers do what the
//! scenario's [`ServerBehaviour`] says, beside answering.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::components::{
    audit_log, buffer_pool, connection_scratch, export_threads, pending_tasks, profile_cache,
    reply_history, report_workers, request_cache, session_cache,
};
use crate::proto::lab_server::{Lab, LabServer};
use crate::proto::{EchoReply, EchoRequest, IngestReply, IngestRequest};
use crate::scenario::{ServerBehaviour, Sessions};

pub struct LabService {
    behaviour: ServerBehaviour,
}

#[tonic::async_trait]
impl Lab for LabService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let peer = request.remote_addr();
        Ok(Response::new(handle_echo(
            &self.behaviour,
            peer,
            request.into_inner(),
        )))
    }

    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestReply>, Status> {
        Ok(Response::new(handle_ingest(
            &self.behaviour,
            request.into_inner(),
        )))
    }
}

/// Answers an echo: the reply carries a copy of the payload.
#[inline(never)]
fn handle_echo(b: &ServerBehaviour, peer: Option<SocketAddr>, req: EchoRequest) -> EchoReply {
    let _rpc = leakscope::label("rpc", "Echo");
    if b.keep_request_slices {
        request_cache::remember_first_byte(req.id, &req.payload);
    }
    if b.pool_buffers {
        let pool = if b.pool_is_capped {
            &buffer_pool::CAPPED_POOL
        } else {
            &buffer_pool::POOL
        };
        let mut work = pool.take(req.payload.len());
        work.extend_from_slice(&req.payload);
        std::hint::black_box(&work);
        pool.give(work);
    }
    if b.scratch_per_connection {
        if let Some(peer) = peer {
            connection_scratch::stage(peer, &req.payload);
        }
    }
    match b.sessions {
        Sessions::None => {}
        Sessions::Bounded => {
            session_cache::RECENT_SESSIONS.touch(req.id, req.id);
        }
        Sessions::Unbounded => {
            session_cache::SESSIONS.touch(req.id, req.id);
        }
    }
    if b.audit_unbounded {
        audit_log::record(req.id, peer, &req.payload);
    }
    if b.report_workers {
        report_workers::start();
    }
    if b.export_threads {
        export_threads::maybe_export(req.id);
    }
    let reply = Bytes::from(req.payload.to_vec());
    if b.keep_replies {
        reply_history::record_reply(&reply);
    }
    let id = req.id;
    if b.defer_to_shutdown {
        pending_tasks::audit_on_shutdown(req);
    }
    EchoReply { id, payload: reply }
}

#[inline(never)]
fn handle_ingest(b: &ServerBehaviour, req: IngestRequest) -> IngestReply {
    let _rpc = leakscope::label("rpc", "Ingest");
    let accepted = if b.cache_json_values {
        profile_cache::cache_user(req.id, &req.json)
    } else {
        // Parse, use, and copy out what is kept (nothing here).
        sonic_rs::get_from_bytes(&req.json, &["user"]).is_ok()
    };
    IngestReply {
        id: req.id,
        accepted_bytes: if accepted { req.json.len() as u64 } else { 0 },
    }
}

/// Starts the server on an ephemeral loopback port.
pub async fn start(behaviour: ServerBehaviour) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // As a production server would: no Nagle delay on small replies.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            if let Ok(s) = &stream {
                let _ = s.set_nodelay(true);
            }
            stream
        },
    );
    let service = LabServer::new(LabService { behaviour })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let handle = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    Ok((addr, handle))
}
