//! Per-connection scratch space, shared by all handlers: one buffer per
//! connection, sized to the largest payload that connection has sent. The
//! list only ever grows: buffers of closed connections are never released.

use std::net::SocketAddr;
use std::sync::Mutex;

struct Scratch {
    peer: SocketAddr,
    buffer: Vec<u8>,
}

static SCRATCH: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());

/// Copies `payload` into the scratch buffer of the connection from `peer`.
pub fn stage(peer: SocketAddr, payload: &[u8]) -> usize {
    let mut list = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let i = match list.iter().position(|s| s.peer == peer) {
        Some(i) => i,
        None => {
            list.push(Scratch {
                peer,
                buffer: Vec::with_capacity(payload.len()),
            });
            list.len() - 1
        }
    };
    let buffer = &mut list[i].buffer;
    buffer.clear();
    buffer.extend_from_slice(payload);
    buffer.len()
}
