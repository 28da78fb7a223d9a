//! Per-user session state kept between requests. The unbounded cache keeps
//! every user it has seen; the bounded one keeps the most recent users only
//! (evicting the oldest), so it fills to its size and stays there.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

pub struct Session {
    pub user: String,
    pub first_seen: Instant,
    /// Ids of the user's recent requests.
    pub history: Vec<u64>,
}

pub struct SessionCache {
    state: Mutex<Option<Entries>>,
    /// At most this many users (None: no bound).
    capacity: Option<usize>,
}

#[derive(Default)]
struct Entries {
    by_user: HashMap<String, Session>,
    order: VecDeque<String>,
}

pub static SESSIONS: SessionCache = SessionCache::new(None);
pub static RECENT_SESSIONS: SessionCache = SessionCache::new(Some(64));

impl SessionCache {
    pub const fn new(capacity: Option<usize>) -> Self {
        SessionCache {
            state: Mutex::new(None),
            capacity,
        }
    }

    /// Records a request of `user`, creating the user's session if new.
    pub fn touch(&self, user: u64, request: u64) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entries = state.get_or_insert_with(Entries::default);
        let key = format!("user-{user}");
        if !entries.by_user.contains_key(&key) {
            if let Some(cap) = self.capacity {
                while entries.by_user.len() >= cap {
                    let Some(oldest) = entries.order.pop_front() else {
                        break;
                    };
                    entries.by_user.remove(&oldest);
                }
                entries.order.push_back(key.clone());
            }
            entries.by_user.insert(
                key.clone(),
                Session {
                    user: key.clone(),
                    first_seen: Instant::now(),
                    history: Vec::with_capacity(64),
                },
            );
        }
        let session = entries.by_user.get_mut(&key).expect("inserted above");
        if session.history.len() == session.history.capacity() {
            session.history.clear();
        }
        session.history.push(request);
        entries.by_user.len()
    }
}
