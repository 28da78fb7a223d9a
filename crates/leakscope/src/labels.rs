//! Labels on allocations: while a [`LabelGuard`] lives, every allocation the
//! thread makes carries its labels into profiles (pprof sample labels, so
//! `go tool pprof -tagfocus` can split a profile by them).
//!
//! Label sets are interned: the allocator only sees a small integer in the
//! thread's state, and a site is keyed by (stack, label set).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::collect::thread::{self, UntrackedScope};

/// Interned label sets; id 0 is the empty set.
struct Interned {
    sets: Vec<Vec<(String, String)>>,
    ids: HashMap<Vec<(String, String)>, u32>,
}

static LABELS: Mutex<Option<Interned>> = Mutex::new(None);

fn intern(set: Vec<(String, String)>) -> u32 {
    let mut labels = LABELS.lock().unwrap_or_else(|e| e.into_inner());
    let labels = labels.get_or_insert_with(|| Interned {
        sets: vec![Vec::new()],
        ids: HashMap::from([(Vec::new(), 0)]),
    });
    if let Some(&id) = labels.ids.get(&set) {
        return id;
    }
    let id = labels.sets.len() as u32;
    labels.sets.push(set.clone());
    labels.ids.insert(set, id);
    id
}

/// The labels of an interned set (empty for 0 or unknown ids).
pub(crate) fn labels_of(id: u32) -> Vec<(String, String)> {
    let labels = LABELS.lock().unwrap_or_else(|e| e.into_inner());
    labels
        .as_ref()
        .and_then(|l| l.sets.get(id as usize).cloned())
        .unwrap_or_default()
}

/// Restores the previous labels of the thread when dropped.
#[must_use = "the labels apply only while the guard lives"]
pub struct LabelGuard {
    previous: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for LabelGuard {
    fn drop(&mut self) {
        thread::with(|t| t.labels.set(self.previous));
    }
}

/// Adds `pairs` to this thread's labels (later values win per key) and
/// returns the previous label state, for [`restore_labels`]. For front ends
/// whose scopes are not Rust values (tracing spans).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn push_labels(pairs: &[(String, String)]) -> u32 {
    let _scope = UntrackedScope::enter();
    let previous = thread::with(|t| t.labels.get());
    if pairs.is_empty() {
        return previous;
    }
    let mut set: Vec<(String, String)> = labels_of(previous)
        .into_iter()
        .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
        .collect();
    set.extend(pairs.iter().cloned());
    set.sort();
    let id = intern(set);
    thread::with(|t| t.labels.set(id));
    previous
}

/// Puts back a label state returned by [`push_labels`].
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn restore_labels(previous: u32) {
    thread::with(|t| t.labels.set(previous));
}

/// Adds `key = value` to the labels of this thread's allocations for as long
/// as the returned guard lives (a later value for the same key wins).
///
/// ```no_run
/// let _rpc = leakscope::label("rpc", "Echo");
/// let reply = vec![0u8; 1024]; // labelled rpc=Echo in heap profiles
/// ```
pub fn label(key: &str, value: &str) -> LabelGuard {
    let _scope = UntrackedScope::enter();
    let previous = thread::with(|t| t.labels.get());
    let mut set: Vec<(String, String)> = labels_of(previous)
        .into_iter()
        .filter(|(k, _)| k != key)
        .collect();
    set.push((key.to_string(), value.to_string()));
    set.sort();
    let id = intern(set);
    thread::with(|t| t.labels.set(id));
    LabelGuard {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_labels_combine_and_restore() {
        assert_eq!(thread::with(|t| t.labels.get()), 0);
        {
            let _a = label("rpc", "Echo");
            let outer = thread::with(|t| t.labels.get());
            assert_eq!(labels_of(outer), [("rpc".to_string(), "Echo".to_string())]);
            {
                let _b = label("tenant", "7");
                let inner = thread::with(|t| t.labels.get());
                assert_eq!(labels_of(inner).len(), 2);
            }
            assert_eq!(thread::with(|t| t.labels.get()), outer);
        }
        assert_eq!(thread::with(|t| t.labels.get()), 0);
    }
}
