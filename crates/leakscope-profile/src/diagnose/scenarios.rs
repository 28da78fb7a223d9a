//! The registry of scenarios: every way a service's memory grows that the
//! self-check recognises, with its title, its fix, and the evidence its
//! rule reads. Each has exactly one rule (`rules/`), checked in the order of
//! [`super::rules::RULES`].

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// The name findings, the lab and the guide use.
    pub id: &'static str,
    /// What is going on, in one line.
    pub title: &'static str,
    /// What to do about it, in one or two sentences.
    pub fix: &'static str,
    /// What its rule reads when the run has heap snapshots.
    pub with_snapshots: &'static str,
    /// What it reads from allocation stacks alone (sampled mode, saved
    /// profiles), if it can decide without a snapshot.
    pub stacks_only: Option<&'static str>,
    /// How the post-pass treats its findings (see [`Scope`]).
    pub scope: Scope,
    /// Its findings mean memory is being kept (a leak). False for what
    /// explains growth without one: the allocator keeping freed memory.
    pub leak: bool,
    /// Scenarios whose findings a finding of this one explains: dropped
    /// when both are found (each client built per call opens its own
    /// connections, so client-per-call explains idle connections).
    pub explains: &'static [&'static str],
}

/// How a scenario's findings stand against others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A pattern with its own evidence.
    Specific,
    /// The general case behind specific ones (a collection that only
    /// grows): dropped where a specific finding names the same holder or
    /// stack.
    General,
    /// Said only when nothing else is.
    Fallback,
}

/// Every scenario, in the order of the guide.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "allocator-keeps-freed-memory",
        title: "not a leak: the allocator keeps memory the program freed",
        fix: "bound what the allocator keeps: MALLOC_ARENA_MAX=2 (fewer glibc arenas to strand free memory in), malloc_trim(0) after bursts or a lower MALLOC_TRIM_THRESHOLD_, or jemalloc with dirty_decay_ms/muzzy_decay_ms",
        with_snapshots: "RSS grows while the live heap stays flat, and the growth is heap memory the allocator holds after frees (its bins, thread caches, top chunks)",
        stacks_only: Some("the same: it reads the memory breakdowns beside the profiles, not stacks"),
        scope: Scope::Specific,
        leak: false,
        explains: &[],
    },
    Scenario {
        id: "growth-outside-heap",
        title: "memory grows outside the heap",
        fix: "find the mappings that grow: thread stacks mean threads that never exit (join them, or bound the pool), other anonymous memory an allocator or runtime of its own (a C library's pool, mmap'd buffers never unmapped), file mappings files mapped and never unmapped",
        with_snapshots: "RSS grows and one kind of mapping outside the heap (thread stacks, other anonymous memory, mapped files, loaded objects) accounts for most of it",
        stacks_only: Some("the same: it reads the memory breakdowns beside the profiles, not stacks"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "request-field-held",
        title: "a handler keeps small slices of requests, pinning whole receive buffers",
        fix: "copy what you keep from a request (Bytes::copy_from_slice, to_vec) instead of keeping a zero-copy slice of it",
        with_snapshots: "buffers of a server's receive path pinned by small slices held in the application's structures",
        stacks_only: Some("a server's receive path (a framework's read or decode frames) grows"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "response-field-held",
        title: "a handler keeps a reference to what it returns",
        fix: "do not keep the response (or the buffer it was sent from) after sending it; keep a small copy of what you need",
        with_snapshots: "a growing root reaches about one payload-sized block per request, allocated by a handler on the server side (or clones of the buffers it sent)",
        stacks_only: Some("a handler's own allocation on the server side grows by about one payload-sized block per request"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "idle-connections",
        title: "open connections accumulate, each holding its buffers",
        fix: "limit idle connections: close a connection that stays idle past a timeout (a tokio::time::timeout around each read of your own protocol; tonic's Server::http2_keepalive_interval / max_connection_age) and bound how many are open and the client's pool",
        with_snapshots: "live connections (counted from connection set-up allocations) grow while the heap grows",
        stacks_only: Some("the same counts, from the profiles"),
        scope: Scope::Specific,
        leak: true,
        explains: &["task-leak"],
    },
    Scenario {
        id: "oversized-request",
        title: "a few oversized buffers from request handling are kept by a pool",
        fix: "find where the oversized payloads come from and fix them at the source; cap the size of buffers the pool keeps (drop larger ones on return)",
        with_snapshots: "live blocks of 1 MiB or more, 64 times the average block, held from a static (a pool)",
        stacks_only: Some("live blocks of 1 MiB or more at one stack, 64 times the average block, and reads of that size"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "cross-connection-retention",
        title: "a component keeps buffers of connections that are gone",
        fix: "release a connection's buffers when it closes (or bound the shared list and shrink it), instead of keeping one per connection ever seen",
        with_snapshots: "a growing root reaches about one block per connection ever accepted, while few connections are open",
        stacks_only: Some("a handler's allocation grows by about one block per connection accepted, while few are open"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "client-per-call",
        title: "a client (with its own caches) is built again for every call and kept",
        fix: "build the client once and share it (clone the handle); do not register a new client per call",
        with_snapshots: "many live instances of what an application's client constructor builds, more than after warm-up",
        stacks_only: Some("memory allocated by a client's constructor (or a copy of a client) grows"),
        scope: Scope::Specific,
        leak: true,
        explains: &["idle-connections", "task-leak"],
    },
    Scenario {
        id: "response-field-held-client",
        title: "the caller keeps small slices of responses, pinning whole receive buffers",
        fix: "copy what you keep from a response (Bytes::copy_from_slice, to_vec) instead of keeping a zero-copy slice of it",
        with_snapshots: "buffers of a client's receive path pinned by small slices held in the application's structures",
        stacks_only: Some("a client's receive path grows"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "json-borrowed-strings",
        title: "cached values parsed zero-copy from JSON keep whole input documents alive",
        fix: "copy the strings you cache out of the input (owned String / into_owned) before caching, or parse into owned types; a zero-copy value shares the whole received buffer",
        with_snapshots: "pinned receive buffers whose holder reaches values made by a JSON parser",
        stacks_only: Some("a server's receive path grows in a run that makes zero-copy JSON values"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "task-leak",
        title: "tasks spawned for requests never complete, each keeping its state",
        fix: "make the tasks finish: give what they wait for a timeout (tokio::time::timeout) or a cancellation (a CancellationToken, dropping the JoinHandle's work), or bound how many run (a JoinSet, a semaphore)",
        with_snapshots: "live task cells spawned at one call site grow (tasks the framework spawns for connections excepted)",
        stacks_only: Some("task cells spawned at one call site grow"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "unbounded-channel",
        title: "a producer outpaces its consumer through an unbounded channel",
        fix: "use a bounded channel (send().await gives the producer backpressure, or try_send drops), or make the consumer faster",
        with_snapshots: "the blocks of a channel's queue grow, held by the channel; the sender's call site from their allocation stack",
        stacks_only: Some("a channel's queue growth (its block allocations) grows"),
        scope: Scope::Specific,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "growth-inside-dependency",
        title: "memory grows inside a dependency's own state",
        fix: "bound it where the dependency lets you (its limits on queued streams, pooled connections, cached entries), or upgrade it: a known advisory may cover the running version (leakscope report --advisory-db)",
        with_snapshots: "a growing allocation site whose code is a dependency's, held by a structure the same dependency allocated",
        stacks_only: Some("a growing stack allocated by a dependency's code, with no more specific role (task, channel, connection, receive buffer)"),
        scope: Scope::General,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "cache-without-bound",
        title: "a collection only grows: entries are added and never removed",
        fix: "bound the collection (an LRU or a size cap), expire entries (a TTL), or remove them when their owner ends",
        with_snapshots: "a root (static, thread or task) whose reached memory, allocated by the application, grows and has not levelled off",
        stacks_only: Some("memory the application's own code allocates grows and is not freed"),
        scope: Scope::General,
        leak: true,
        explains: &[],
    },
    Scenario {
        id: "unclassified",
        title: "memory grows, and nothing shows who keeps it",
        fix: "find what keeps these blocks (a collection that only grows, a cache without a bound) with a full-mode snapshot",
        with_snapshots: "the heap grows and no other rule explains it",
        stacks_only: Some("the same"),
        scope: Scope::Fallback,
        leak: true,
        explains: &[],
    },
];

/// The scenario with this id.
pub fn scenario(id: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("scenario {id:?} is not in the registry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_explained_scenarios_exist() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.id != s.id), "{}", s.id);
            for e in s.explains {
                assert!(
                    SCENARIOS.iter().any(|o| o.id == *e),
                    "{} explains {e}",
                    s.id
                );
            }
        }
    }
}
