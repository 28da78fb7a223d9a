//! A history of the replies sent, for "debugging".

use std::sync::Mutex;

use bytes::Bytes;

pub static REPLY_HISTORY: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());

/// Keeps a reference to a reply that is also being sent (a cheap clone of a
/// `Bytes`: the whole reply stays alive).
pub fn record_reply(reply: &Bytes) {
    REPLY_HISTORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reply.clone());
}
