//! client-per-call: a client (with its own connections, resolver and
//! balancer caches) is built for every call and kept. Many live instances
//! of what one application constructor builds, more than after warm-up.
//!
//! A constructor is an application frame named like one (`new`, `connect`,
//! `build`, ...) of a client: a type named like a client, or one whose
//! construction opens connections. Copies of a client (`clone` of a client
//! type that holds its caches by value) count too.

use std::collections::HashMap;

use super::super::evidence::Evidence;
use super::super::thresholds::{
    CONFIDENCE_INSTANCES, CONFIDENCE_STACK_ONLY, MIN_INSTANCES, MIN_INSTANCE_BYTES,
};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::{type_and_method, Class};
use crate::snapshot::SnapshotReport;

pub struct ClientPerCall;

const ID: &str = "client-per-call";

fn constructor_name(method: &str) -> bool {
    matches!(
        method,
        "new" | "connect" | "build" | "create" | "open" | "init" | "clone"
    ) || ["new_", "connect_", "with_", "build_"]
        .iter()
        .any(|p| method.starts_with(p))
}

fn client_type(ty: &str) -> bool {
    ["Client", "Channel", "Connection", "Pool"]
        .iter()
        .any(|w| ty.contains(w))
}

/// An application frame constructing (or copying) a client.
fn client_constructor(ev: &Evidence, frame: &str, opens_connections: bool) -> bool {
    if !ev.is_application(frame) {
        return false;
    }
    let (ty, method) = type_and_method(frame);
    constructor_name(&method) && (client_type(&ty) || (opens_connections && method != "clone"))
}

/// Live instances of what one application constructor builds at the end
/// of `r`: (constructor frame, instances, bytes, its stack).
fn constructed(ev: &Evidence, r: &SnapshotReport) -> Option<(String, u64, u64, Vec<String>)> {
    // Constructors whose stacks open connections somewhere.
    let connecting: Vec<&str> = r
        .groups
        .iter()
        .filter(|g| {
            let f = ev.facts(&g.site);
            f.classes.contains(Class::Connection) || f.classes.contains(Class::ClientConstructor)
        })
        .flat_map(|g| g.site.iter().map(String::as_str))
        .collect();
    let mut by_ctor: HashMap<&str, (u64, u64, Vec<String>)> = HashMap::new();
    for g in r.groups.iter().filter(|g| {
        matches!(
            g.kind,
            crate::snapshot::LeakKind::StillReachable | crate::snapshot::LeakKind::PossiblyLost
        )
    }) {
        let ctor =
            g.site.iter().map(String::as_str).find(|f| {
                ev.is_application(f) && client_constructor(ev, f, connecting.contains(f))
            });
        if let Some(ctor) = ctor {
            let e = by_ctor.entry(ctor).or_insert((u64::MAX, 0, g.site.clone()));
            // Every instance allocates each of the constructor's blocks
            // once: the rarest of them counts the instances.
            e.0 = e.0.min(g.amount.blocks);
            e.1 += g.amount.bytes;
        }
    }
    // The constructor that builds the most (a client's caches), not a thin
    // wrapper that only allocates a handle.
    by_ctor
        .into_iter()
        .map(|(c, (n, b, site))| (c.to_string(), n, b, site))
        .max_by(|a, b| a.2.cmp(&b.2).then_with(|| b.0.cmp(&a.0)))
}

impl Rule for ClientPerCall {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            let Some((ctor, instances, built, site)) = constructed(ev, snaps.last) else {
                return Vec::new();
            };
            let before = constructed(ev, snaps.first)
                .filter(|c| c.0 == ctor)
                .map_or(0, |c| c.1);
            // Many instances, more than after warm-up, each of substance.
            if instances < MIN_INSTANCES
                || instances <= before
                || built < instances * MIN_INSTANCE_BYTES
            {
                return Vec::new();
            }
            // Who keeps them: the root most of their blocks are reached from.
            let leaf = site.first().cloned().unwrap_or_default();
            let holder = snaps
                .roots
                .iter()
                .filter_map(|r| {
                    let n: u64 = r
                        .held
                        .iter()
                        .filter(|h| h.site.first() == Some(&leaf))
                        .map(|h| h.amount.blocks)
                        .sum();
                    (n > 0).then_some((r, n))
                })
                .max_by_key(|(_, n)| *n)
                .map(|(r, _)| r.label.clone());
            let mut f = finding(ID, CONFIDENCE_INSTANCES);
            f.evidence.push(format!(
                "{instances} live instances built by the constructor {ctor} (up from {before} after warm-up, {} calls since)",
                ev.requests.unwrap_or(0)
            ));
            f.evidence.push(format!(
                "{} in the blocks the constructor allocates",
                bytes(built as f64)
            ));
            f.evidence
                .push(format!("kept by {}", holder.as_deref().unwrap_or("?")));
            f.chain = holder.iter().cloned().collect();
            f.claims = holder.into_iter().collect();
            f.claims.push(ctor);
            f.stack = site;
            return vec![f];
        }
        ev.growing_stacks()
            .find(|s| {
                let opens = s.facts.classes.contains(Class::Connection)
                    || s.facts.classes.contains(Class::ClientConstructor);
                s.facts.app_leaf()
                    && s.frame(s.facts.leaf)
                        .is_some_and(|f| client_constructor(ev, f, opens))
            })
            .map(|s| {
                let ctor = s.frame(s.facts.leaf).unwrap_or("?");
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!("memory allocated when a client is built or copied ({ctor}) keeps growing: clients are made per call and kept"),
                )
            })
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    const CONNECT: &[&str] = &[
        "app::client::ApiClient::connect::{{closure}}",
        "app::calls::call_once",
    ];
    const CLONE: &[&str] = &[
        "<app::client::ApiClient as core::clone::Clone>::clone",
        "app::registry::register",
    ];

    #[test]
    fn many_live_clients_built_per_call() {
        let run = Run::new(|t, b| {
            b.group("static app::REGISTRY", CONNECT, 30 * t as u64, 8192);
            b.group("static app::REGISTRY", CONNECT, 30 * t as u64, 8192);
        });
        let f = only(&run, &ClientPerCall);
        assert!(
            f.evidence[0].starts_with(
                "240 live instances built by the constructor app::client::ApiClient::connect"
            ),
            "{f:#?}"
        );
        assert_eq!(f.chain, ["static app::REGISTRY"]);
    }

    #[test]
    fn a_cache_entry_built_with_new_is_not_a_client() {
        let run = Run::new(|t, b| {
            b.group(
                "static app::CACHE",
                &["app::cache::Entry::new", "app::handler"],
                30 * t as u64,
                8192,
            );
        });
        assert!(ClientPerCall.check(&run.evidence()).is_empty());
    }

    #[test]
    fn from_stacks_copies_of_a_client_that_keep_growing() {
        let run = Run::stacks_only(|t, p| p.stack(CLONE, 30 * t, 8192));
        assert_eq!(only(&run, &ClientPerCall).confidence, CONFIDENCE_STACK_ONLY);
    }
}
