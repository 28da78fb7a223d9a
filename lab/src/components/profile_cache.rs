//! A cache of user profiles parsed from ingested JSON documents, with
//! sonic-rs's zero-copy lazy values.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use sonic_rs::OwnedLazyValue;

pub static PROFILE_CACHE: Mutex<Option<HashMap<u64, OwnedLazyValue>>> = Mutex::new(None);

/// Parses the "user" object out of a document and caches it. The lazy value
/// borrows the document's bytes (it has no copy-strings switch), so each
/// cached profile keeps the whole received buffer alive.
pub fn cache_user(id: u64, document: &Bytes) -> bool {
    let Ok(user) = sonic_rs::get_from_bytes(document, &["user"]) else {
        return false;
    };
    let owned = OwnedLazyValue::from(user);
    PROFILE_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(id, owned);
    true
}
