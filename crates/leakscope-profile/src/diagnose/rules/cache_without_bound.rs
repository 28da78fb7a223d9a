//! cache-without-bound: a collection that only grows, the general case
//! behind request-field-held, response-field-held, client-per-call and
//! json-borrowed-strings. With snapshots: a root (a static, a thread's
//! stack or thread-locals) whose reached memory, allocated by the
//! application's own code, grows and, by the growth model, has not
//! levelled off: a bounded cache that filled to its size has. From stacks
//! alone: memory the application allocates grows.

use super::super::evidence::Evidence;
use super::super::thresholds::{
    CONFIDENCE_GENERAL_HOLDER, CONFIDENCE_GENERAL_STACK, MIN_GENERAL_HOLDER_GROWTH,
};
use super::super::Finding;
use super::{bytes, finding, stack_finding, task_on_chain, Rule};
use crate::snapshot::NodeKind;

pub struct CacheWithoutBound;

const ID: &str = "cache-without-bound";

fn owner(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Static | NodeKind::Data => "a static",
        NodeKind::ThreadLocal => "a thread-local",
        NodeKind::Stack | NodeKind::Registers => "a thread (a variable in one of its frames)",
        _ => "a root",
    }
}

impl Rule for CacheWithoutBound {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            let mut out = Vec::new();
            for root in snaps.roots.iter().filter(|r| r.growing()) {
                let Some(main) = root.main().filter(|m| m.facts.app_leaf()) else {
                    continue;
                };
                // A few kilobytes more (a pool filling to its concurrency,
                // requests in flight in a frame) is not a collection that
                // only grows.
                if main.amount.blocks <= main.first.blocks
                    || main.amount.bytes < main.first.bytes + MIN_GENERAL_HOLDER_GROWTH
                {
                    continue;
                }
                let at = main
                    .facts
                    .first_app
                    .and_then(|i| main.site.get(i))
                    .map_or("?", String::as_str);
                // The collection: the first heap link under the root.
                let collection = main.path.get(1).filter(|_| main.path.len() > 2);
                let mut f = finding(ID, CONFIDENCE_GENERAL_HOLDER);
                f.evidence.push(format!(
                    "{} ({}) reaches {} blocks ({}) allocated in {at}, up from {} after warm-up",
                    root.label,
                    owner(root.kind),
                    main.amount.blocks,
                    bytes(main.amount.bytes as f64),
                    main.first.blocks
                ));
                f.evidence.push(format!(
                    "what it reaches grows {}/s{}, and has not levelled off (consistency {:.2})",
                    bytes(root.trend.bytes_per_second),
                    root.trend
                        .bytes_per_unit
                        .map_or(String::new(), |u| format!(", {} per request", bytes(u))),
                    root.trend.consistency
                ));
                if let Some(c) = collection {
                    f.evidence
                        .push(format!("the collection: {c}, held by {}", root.label));
                }
                // A task's own state (a buffer or map in its async
                // function) is named by where the task was spawned.
                let task = snaps
                    .sites
                    .iter()
                    .find(|s| s.site == main.site)
                    .and_then(|s| task_on_chain(ev, &s.chain));
                if let Some((_, Some(spawned))) = task {
                    f.evidence.push(format!(
                        "it lives in the state of a task spawned in {spawned}: the task keeps adding to it and never drains it"
                    ));
                }
                f.chain = main
                    .path
                    .iter()
                    .take(main.path.len().saturating_sub(1))
                    .cloned()
                    .collect();
                f.stack = main.site.clone();
                f.claims.push(root.label.clone());
                f.claims.extend(main.site.first().cloned());
                out.push(f);
            }
            return out;
        }
        ev.growing_stacks()
            .filter(|s| s.facts.app_leaf())
            .take(1)
            .map(|s| {
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_GENERAL_STACK,
                    s,
                    "memory the application's own code allocated keeps growing and is not \
                     freed: a collection that only grows (a map, a list, a cache without a \
                     bound) is the usual reason"
                        .to_string(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    const TOUCH: &[&str] = &["app::sessions::touch", "app::handler"];

    #[test]
    fn a_task_that_accumulates_state_is_named_by_its_spawn_site() {
        let record: &[&str] = &["app::audit::record", "app::audit::run::{{closure}}"];
        let run = Run::new(|t, b| {
            b.held(
                "thread-locals of thread tokio-runtime-worker",
                &["tokio::runtime::task::core::Cell<T,S>::new|tokio::runtime::task::raw::RawTask::new|tokio::task::spawn::spawn|app::audit::start|app::main"],
                record,
                300 * t as u64,
                512,
            );
        });
        let f = only(&run, &CacheWithoutBound);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("a task spawned in app::audit::start")),
            "{f:#?}"
        );
    }

    #[test]
    fn a_map_that_only_grows_is_named_with_its_owner() {
        let run = Run::new(|t, b| {
            b.held(
                "static app::SESSIONS",
                &["app::sessions::touch"],
                TOUCH,
                300 * t as u64,
                200,
            );
        });
        let f = only(&run, &CacheWithoutBound);
        assert!(
            f.evidence[0].starts_with("static app::SESSIONS (a static) reaches 2400 blocks"),
            "{f:#?}"
        );
        assert!(
            f.evidence[2].contains("the collection: app::sessions::touch (heap)"),
            "{f:#?}"
        );
    }

    #[test]
    fn a_bounded_cache_that_levelled_off_is_not_reported() {
        let run = Run::new(|t, b| {
            b.held(
                "static app::SESSIONS",
                &["app::sessions::touch"],
                TOUCH,
                300 * t.min(3) as u64,
                200,
            );
        });
        assert!(CacheWithoutBound.check(&run.evidence()).is_empty());
        let run = Run::stacks_only(|t, p| p.stack(TOUCH, 300 * t.min(3), 200));
        assert!(CacheWithoutBound.check(&run.evidence()).is_empty());
    }

    #[test]
    fn from_stacks_application_allocations_that_grow() {
        let run = Run::stacks_only(|t, p| p.stack(TOUCH, 300 * t, 200));
        assert_eq!(
            only(&run, &CacheWithoutBound).confidence,
            CONFIDENCE_GENERAL_STACK
        );
    }
}
