//! A cache of the first byte of each request's payload, by request id.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

pub static REQUEST_CACHE: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);

/// Keeps a zero-copy slice of the payload: one byte, but it shares (and so
/// keeps alive) the whole buffer the request was decoded from.
pub fn remember_first_byte(id: u64, payload: &Bytes) {
    if payload.is_empty() {
        return;
    }
    let first = payload.slice(0..1);
    REQUEST_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(id, first);
}
