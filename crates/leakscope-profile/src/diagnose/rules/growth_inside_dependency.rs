//! growth-inside-dependency: memory grows inside a dependency's own state
//! (a protocol crate's table of streams, a client's pool, a parser's
//! cache), not in a structure of the application's. The application can
//! only configure that crate, or upgrade it.
//!
//! With snapshots: a growing allocation site whose own code is a
//! dependency crate's, held by a block that crate allocated too (the
//! nearest heap link of its chain): the crate's state, whoever reaches it.
//! From stacks alone: a growing stack allocated by a dependency's code that
//! the application called into, with no more specific role (a task, a
//! channel, a connection, a receive buffer: their rules decide those).

use super::super::evidence::{Evidence, SiteEvidence, StackEvidence};
use super::super::thresholds::{
    CONFIDENCE_DEPENDENCY_HOLDER, CONFIDENCE_DEPENDENCY_STACK, MIN_GENERAL_HOLDER_GROWTH,
};
use super::super::Finding;
use super::{
    bytes, bytes_frames_below, chain_labels, finding, receives_into_buffers, stack_finding,
    task_on_chain, Rule,
};
use crate::frames::{crate_of, Class};
use crate::snapshot::{Link, NodeKind};

pub struct GrowthInsideDependency;

const ID: &str = "growth-inside-dependency";

/// Roles whose growth other rules explain with their own evidence.
const OTHER_RULES_ROLES: [Class; 4] = [
    Class::TaskCell,
    Class::ChannelGrow,
    Class::Connection,
    Class::Receive,
];

/// Holders that are not a dependency's state though a dependency
/// allocated them: a task's cell holds the application's future, a
/// channel's blocks the application's messages.
const NOT_STATE_ROLES: [Class; 2] = [Class::TaskCell, Class::ChannelGrow];

/// The dependency crate whose code made an allocation at `site` (its
/// first frame past allocation plumbing), unless its role is one of
/// `excluded`.
fn dependency_of<'s>(ev: &Evidence, site: &'s [String], excluded: &[Class]) -> Option<&'s str> {
    let facts = ev.facts(site);
    if facts.app_leaf() || facts.role.is_some_and(|r| excluded.contains(&r)) {
        return None;
    }
    let krate = crate_of(site.get(facts.leaf?)?);
    (!krate.is_empty() && ev.is_dependency(krate)).then_some(krate)
}

/// The nearest block on a chain (which ends with one of the site's own
/// blocks) that holds them and was allocated by code past allocation
/// plumbing: a container's storage (a slab's, a map's) is skipped for the
/// structure that owns it.
fn nearest_holder<'c>(ev: &Evidence, chain: &'c [Link]) -> Option<&'c Link> {
    let (_block, holders) = chain.split_last()?;
    holders
        .iter()
        .rev()
        .find(|l| l.node.kind == NodeKind::Heap && ev.facts(&l.node.site).leaf.is_some())
}

fn grew(s: &SiteEvidence) -> bool {
    s.last.bytes >= s.first.bytes + MIN_GENERAL_HOLDER_GROWTH
        && s.last.bytes as f64 >= 1.5 * s.first.bytes as f64
}

impl Rule for GrowthInsideDependency {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if !ev.heap_grows() {
            return Vec::new();
        }
        if let Some(snaps) = &ev.snapshots {
            return snaps
                .sites
                .iter()
                .filter(|s| grew(s))
                .find_map(|s| {
                    let krate = dependency_of(ev, &s.site, &OTHER_RULES_ROLES)?;
                    let holder = nearest_holder(ev, &s.chain)?;
                    (dependency_of(ev, &holder.node.site, &NOT_STATE_ROLES)? == krate)
                        .then(|| from_snapshot(ev, s, holder, krate))
                })
                .into_iter()
                .collect();
        }
        ev.growing_stacks()
            // Byte buffers a dependency's I/O code fills (tokio's
            // `read_buf`) hold the application's data, not the crate's
            // state: the slice-pinning rules and the walk judge those.
            // (`bytes` frames below the first frame past plumbing.)
            .filter(|s| !bytes_frames_below(s, s.facts.leaf))
            .find_map(|s| {
                // A receive path that decodes into structures of its own
                // (no byte buffer a slice could pin) is the crate's state:
                // named by the crate that receives, not the container's.
                let krate = if s.facts.role == Some(Class::Receive) && !receives_into_buffers(s) {
                    let krate = crate_of(s.frame(s.facts.role_frame)?);
                    ev.is_dependency(krate).then_some(krate)?
                } else {
                    dependency_of(ev, s.frames(), &OTHER_RULES_ROLES)?
                };
                Some(from_stack(ev, s, krate))
            })
            .into_iter()
            .collect()
    }
}

/// The frame where the application calls into the crate, if any: the
/// first application frame of the stack.
fn called_from(ev: &Evidence, site: &[String]) -> Option<String> {
    let facts = ev.facts(site);
    let app = facts.first_app?;
    let api = site[..app]
        .iter()
        .rev()
        .find(|f| !ev.facts(std::slice::from_ref(f)).classes.is_plumbing());
    Some(match api {
        Some(api) => format!("{} (through {api})", site[app]),
        None => site[app].clone(),
    })
}

fn from_snapshot(ev: &Evidence, s: &SiteEvidence, holder: &Link, krate: &str) -> Finding {
    let version = ev.version_suffix(krate);
    let at = &s.site[ev.facts(&s.site).leaf.unwrap_or(0)];
    let mut f = finding(ID, CONFIDENCE_DEPENDENCY_HOLDER);
    let one_table = s.last.blocks == 1 && s.first.blocks <= 1;
    f.evidence.push(if one_table {
        // One table, grown by reallocation.
        format!(
            "a block allocated in {at} has grown to {}, from {} after warm-up",
            bytes(s.last.bytes as f64),
            bytes(s.first.bytes as f64)
        )
    } else {
        format!(
            "{} blocks ({}) allocated in {at} are live, up from {} ({}) after warm-up",
            s.last.blocks,
            bytes(s.last.bytes as f64),
            s.first.blocks,
            bytes(s.first.bytes as f64)
        )
    });
    f.evidence.push(format!(
        "{} held by {}, which the {krate}{version} crate allocated: its own state, not a structure of the application's",
        if one_table { "it is" } else { "they are" },
        holder.node.label()
    ));
    if let Some(root) = s.chain.first() {
        // A connection's state usually lives in the task that drives it.
        f.evidence.push(match task_on_chain(ev, &s.chain) {
            Some((_, Some(spawned))) => format!(
                "that state is reached from {}, through a task spawned in {spawned}",
                root.node.label()
            ),
            Some((task, None)) => format!(
                "that state is reached from {}, through a task ({})",
                root.node.label(),
                task.node.label()
            ),
            None => format!("that state is reached from {}", root.node.label()),
        });
    }
    if let Some(call) = called_from(ev, &s.site) {
        f.evidence
            .push(format!("the application drives it from {call}"));
    }
    f.chain = chain_labels(&s.chain);
    f.stack = s.site.clone();
    f.claims.extend(f.chain.first().cloned());
    f.claims.push(at.clone());
    f
}

fn from_stack(ev: &Evidence, s: &StackEvidence, krate: &str) -> Finding {
    let version = ev.version_suffix(krate);
    let what = match called_from(ev, s.frames()) {
        Some(call) => format!(
            "the growing memory is allocated inside the {krate}{version} crate, which the application drives from {call}: the crate's own state grows, or the application keeps what the crate returns"
        ),
        None => format!(
            "the growing memory is allocated inside the {krate}{version} crate, with no application frame on the stack: the crate's own state grows"
        ),
    };
    stack_finding(ev, ID, CONFIDENCE_DEPENDENCY_STACK, s, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::request_field_held::RequestFieldHeld;
    use crate::diagnose::rules::test_support::*;

    const REGISTRY: &str = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
    /// h2's table of streams, growing by one entry per stream it queues for
    /// `accept` (RUSTSEC-2023-0034's growth).
    const STREAMS_INSERT: &[&str] = &[
        "slab::Slab<T>::insert_at",
        "h2::proto::streams::store::VacantEntry::insert",
        "h2::proto::streams::streams::Inner::recv_headers",
        "h2::proto::connection::Connection<T,P,B>::poll",
        "h2::server::Connection<T,B>::poll_accept",
        "app::serve_connection::{{closure}}",
    ];
    const STREAMS_NEW: &[&str] = &[
        "h2::proto::streams::streams::Inner::new",
        "h2::proto::streams::streams::Streams<B,P>::new",
        "h2::server::handshake2::{{closure}}",
        "app::serve_connection::{{closure}}",
    ];

    fn h2_files(p: &mut Point) {
        for f in STREAMS_INSERT
            .iter()
            .chain(STREAMS_NEW)
            .filter(|f| f.starts_with("h2::"))
        {
            p.file(
                f,
                &format!("{REGISTRY}/h2-0.3.16/src/proto/streams/streams.rs"),
            );
        }
    }

    #[test]
    fn a_dependencys_table_that_grows_is_blamed_on_the_dependency() {
        let run = Run::new(|t, p| {
            h2_files(p);
            p.held(
                "thread tokio-runtime-worker: tokio::runtime::task::raw::poll",
                &[
                    "tokio::runtime::task::core::Cell<T,S>::new|tokio::task::spawn::spawn|app::accept_loop",
                    STREAMS_NEW[0],
                ],
                STREAMS_INSERT,
                1,
                (300 << 10) * t as u64,
            );
        });
        let f = only(&run, &GrowthInsideDependency);
        assert_eq!(f.confidence, CONFIDENCE_DEPENDENCY_HOLDER);
        assert!(
            f.evidence[2].contains("through a task spawned in app::accept_loop"),
            "{f:#?}"
        );
        assert!(
            f.evidence[1].contains("the h2 0.3.16 crate allocated"),
            "{f:#?}"
        );
        assert!(f.evidence[3].contains("app::serve_connection"), "{f:#?}");
    }

    #[test]
    fn the_applications_own_collection_is_not_a_dependencys_state() {
        let touch: &[&str] = &["app::sessions::touch", "app::handler"];
        let run = Run::new(|t, p| {
            h2_files(p);
            p.held(
                "static app::SESSIONS",
                &[STREAMS_NEW[0]],
                touch,
                300 * t as u64,
                2048,
            );
        });
        assert!(GrowthInsideDependency.check(&run.evidence()).is_empty());
    }

    #[test]
    fn from_stacks_the_crate_that_allocates_is_named() {
        let run = Run::stacks_only(|t, p| {
            h2_files(p);
            p.stack(STREAMS_INSERT, 300 * t, 1024);
        });
        let f = only(&run, &GrowthInsideDependency);
        assert_eq!(f.confidence, CONFIDENCE_DEPENDENCY_STACK);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("inside the h2 0.3.16 crate")),
            "{f:#?}"
        );
    }

    #[test]
    fn from_stacks_decoded_requests_a_crate_keeps_are_its_state_not_pinned_slices() {
        // h2 decodes each queued stream's headers into a map of its own.
        const HEADERS_LOAD: &[&str] = &[
            "http::header::map::HeaderMap<T>::try_reserve_one",
            "h2::frame::headers::HeaderBlock::load::{{closure}}",
            "h2::hpack::decoder::Decoder::decode",
            "h2::frame::headers::HeaderBlock::load",
            "h2::server::Connection<T,B>::poll_accept",
            "app::serve_connection::{{closure}}",
        ];
        let run = Run::stacks_only(|t, p| {
            for f in HEADERS_LOAD.iter().filter(|f| f.starts_with("h2::")) {
                p.file(f, &format!("{REGISTRY}/h2-0.3.16/src/frame/headers.rs"));
            }
            p.file(
                HEADERS_LOAD[0],
                &format!("{REGISTRY}/http-0.2.12/src/header/map.rs"),
            );
            p.stack(HEADERS_LOAD, 300 * t, 1024);
        });
        let f = only(&run, &GrowthInsideDependency);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("inside the h2 0.3.16 crate")),
            "{f:#?}"
        );
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_crate_of_unknown_origin_is_not_called_a_dependency() {
        // Without registry source paths nothing says h2 is a dependency.
        let run = Run::stacks_only(|t, p| p.stack(STREAMS_INSERT, 300 * t, 1024));
        assert!(GrowthInsideDependency.check(&run.evidence()).is_empty());
    }
}
