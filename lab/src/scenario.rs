//! The scenarios, by the names `leakscope lab --scenario` takes.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    RequestFieldHeld,
    ResponseFieldHeld,
    IdleConnections,
    OversizedRequest,
    CrossConnectionRetention,
    ClientPerCall,
    ResponseFieldHeldClient,
    JsonBorrowedStrings,
    TaskLeak,
    UnboundedChannel,
    CacheWithoutBound,
    ArenaFragmentation,
    ThreadLeak,
    SteadyState,
}

impl Scenario {
    pub const ALL: [Scenario; 14] = [
        Scenario::RequestFieldHeld,
        Scenario::ResponseFieldHeld,
        Scenario::IdleConnections,
        Scenario::OversizedRequest,
        Scenario::CrossConnectionRetention,
        Scenario::ClientPerCall,
        Scenario::ResponseFieldHeldClient,
        Scenario::JsonBorrowedStrings,
        Scenario::TaskLeak,
        Scenario::UnboundedChannel,
        Scenario::CacheWithoutBound,
        Scenario::ArenaFragmentation,
        Scenario::ThreadLeak,
        Scenario::SteadyState,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::RequestFieldHeld => "request-field-held",
            Scenario::ResponseFieldHeld => "response-field-held",
            Scenario::IdleConnections => "idle-connections",
            Scenario::OversizedRequest => "oversized-request",
            Scenario::CrossConnectionRetention => "cross-connection-retention",
            Scenario::ClientPerCall => "client-per-call",
            Scenario::ResponseFieldHeldClient => "response-field-held-client",
            Scenario::JsonBorrowedStrings => "json-borrowed-strings",
            Scenario::TaskLeak => "task-leak",
            Scenario::UnboundedChannel => "unbounded-channel",
            Scenario::CacheWithoutBound => "cache-without-bound",
            Scenario::ArenaFragmentation => "arena-fragmentation",
            Scenario::ThreadLeak => "thread-leak",
            Scenario::SteadyState => "steady-state",
        }
    }

    /// One line on what the lab does in this scenario.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::RequestFieldHeld => "the handler keeps a 1-byte slice of each request's payload in a static map",
            Scenario::ResponseFieldHeld => "the handler keeps a reference to every reply it sends",
            Scenario::IdleConnections => "clients open more and more connections and leave them idle",
            Scenario::OversizedRequest => "a few requests carry a multi-megabyte debug blob; a buffer pool keeps their buffers",
            Scenario::CrossConnectionRetention => {
                "a connection scratch component keeps a buffer for every connection it has seen"
            }
            Scenario::ClientPerCall => "the caller builds a new client (with its own caches) for each call and registers it",
            Scenario::ResponseFieldHeldClient => "the caller keeps a 1-byte slice of each reply",
            Scenario::JsonBorrowedStrings => "the handler caches zero-copy JSON values parsed from each request",
            Scenario::TaskLeak => "each request spawns a follow-up task that waits for a shutdown signal (never sent), holding the request",
            Scenario::UnboundedChannel => "each request queues an audit record on an unbounded channel whose writer is slower than the handlers",
            Scenario::CacheWithoutBound => "the handler keeps a session for every user it sees in a map that is never pruned",
            Scenario::ArenaFragmentation => {
                "worker threads build ever larger reports from 64 KiB parts, keep 16 parts spread over each as its index and free the rest (nothing leaks; glibc's arenas keep the freed memory)"
            }
            Scenario::ThreadLeak => "now and then a request starts an export thread that waits forever and is never joined",
            Scenario::SteadyState => "a correctly written service under the same load (its pool and session cache are bounded)",
        }
    }

    pub(crate) fn server_behaviour(self) -> ServerBehaviour {
        ServerBehaviour {
            keep_request_slices: self == Scenario::RequestFieldHeld,
            keep_replies: self == Scenario::ResponseFieldHeld,
            pool_buffers: matches!(self, Scenario::OversizedRequest | Scenario::SteadyState),
            pool_is_capped: self == Scenario::SteadyState,
            scratch_per_connection: self == Scenario::CrossConnectionRetention,
            cache_json_values: self == Scenario::JsonBorrowedStrings,
            defer_to_shutdown: self == Scenario::TaskLeak,
            audit_unbounded: self == Scenario::UnboundedChannel,
            report_workers: self == Scenario::ArenaFragmentation,
            export_threads: self == Scenario::ThreadLeak,
            sessions: match self {
                Scenario::CacheWithoutBound => Sessions::Unbounded,
                Scenario::SteadyState => Sessions::Bounded,
                _ => Sessions::None,
            },
        }
    }
}

/// What the server's handlers do beyond answering.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerBehaviour {
    pub keep_request_slices: bool,
    pub keep_replies: bool,
    pub pool_buffers: bool,
    pub pool_is_capped: bool,
    pub scratch_per_connection: bool,
    pub cache_json_values: bool,
    pub defer_to_shutdown: bool,
    pub audit_unbounded: bool,
    pub report_workers: bool,
    pub export_threads: bool,
    pub sessions: Sessions,
}

/// Which session cache the handler keeps, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sessions {
    #[default]
    None,
    Bounded,
    Unbounded,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?} (known: {})", names.join(", "))
            })
    }
}
