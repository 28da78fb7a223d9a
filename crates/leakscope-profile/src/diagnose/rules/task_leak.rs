//! task-leak: tasks spawned (per request, say) that never complete, each
//! keeping its future's state. The evidence: live task cells allocated at
//! one spawn site keep growing. Tasks a framework spawns for connections
//! are connection state (idle-connections), not this.

use super::super::evidence::{Evidence, StackFacts};
use super::super::thresholds::{CONFIDENCE_COUNTED, CONFIDENCE_STACK_ONLY, MIN_NEW_TASKS};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::Class;
use crate::snapshot::Amount;

pub struct TaskLeak;

const ID: &str = "task-leak";

/// A task cell spawned by the application, not for a connection.
fn application_task(f: &StackFacts) -> bool {
    f.role == Some(Class::TaskCell)
        && !f.between.contains(Class::Connection)
        && !f.between.contains(Class::ClientConstructor)
}

/// A path with runs of one label (a linked list of task cells) shortened
/// to one mention and a count.
fn compact(path: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let run = path[i..].iter().take_while(|l| **l == path[i]).count();
        out.push(if run > 1 {
            format!("{} (x{run})", path[i])
        } else {
            path[i].clone()
        });
        i += run;
    }
    out.join(" -> ")
}

/// Bytes reached through task cells at the end (what live tasks hold).
fn reached_through_tasks(ev: &Evidence) -> Amount {
    let Some(s) = &ev.snapshots else {
        return Amount::default();
    };
    let mut out = Amount::default();
    for p in &s.last.retention {
        // A task cell as an inner link: blocks its future's state reaches.
        let inner = p.path.len().saturating_sub(2);
        let through = p.path.iter().skip(1).take(inner).any(|l| {
            ev.frames
                .classify(l.trim_end_matches(" (heap)"))
                .contains(Class::TaskCell)
        });
        if through {
            out.blocks += p.amount.blocks;
            out.bytes += p.amount.bytes;
        }
    }
    out
}

impl Rule for TaskLeak {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        // Live task cells per spawn site come from the profiles' stacks
        // (whole stacks: a snapshot's sites stop after 16 frames, often
        // inside the runtime); the snapshot says what the tasks hold.
        let Some(s) = ev.growing_stacks().find(|s| application_task(&s.facts)) else {
            return Vec::new();
        };
        let spawn = s.frame(s.facts.caller).unwrap_or("an unknown call site");
        let new_tasks = s.objects_last - s.objects_first;
        if new_tasks < MIN_NEW_TASKS as f64 {
            return Vec::new();
        }
        let Some(snaps) = &ev.snapshots else {
            let mut f = stack_finding(
                ev,
                ID,
                CONFIDENCE_STACK_ONLY,
                s,
                format!(
                    "live task cells spawned at {spawn} grow (about {:.0} now, {:.0} after warm-up): tasks that do not complete",
                    s.objects_last, s.objects_first
                ),
            );
            f.claims.push(spawn.to_string());
            return vec![f];
        };
        let held = reached_through_tasks(ev);
        let cells: u64 = snaps
            .sites
            .iter()
            .filter(|c| c.facts.role == Some(Class::TaskCell))
            .map(|c| c.last.blocks)
            .sum();
        let mut f = finding(ID, CONFIDENCE_COUNTED);
        f.evidence.push(format!(
            "{:.0} tasks spawned at {spawn} are alive (up from {:.0} after warm-up{}): they do not complete",
            s.objects_last,
            s.objects_first,
            ev.requests
                .map_or(String::new(), |r| format!(", {r} requests since"))
        ));
        f.evidence.push(format!(
            "each task's cell (its future's state) is about {}; what live tasks reach comes to {} in {} blocks, about {} per task",
            bytes(s.average_live()),
            bytes(held.bytes as f64),
            held.blocks,
            bytes(held.bytes as f64 / cells.max(1) as f64)
        ));
        // The root that reaches the most task cells, and a path to them.
        if let Some((root, path)) = snaps
            .roots
            .iter()
            .filter_map(|r| {
                let cells = r
                    .held
                    .iter()
                    .filter(|h| h.facts.role == Some(Class::TaskCell))
                    .max_by_key(|h| h.amount.blocks)?;
                Some((r, cells))
            })
            .max_by_key(|(_, h)| h.amount.blocks)
        {
            f.evidence.push(format!(
                "held through the runtime's task list: {} (from {}, which reaches {} task cells)",
                compact(&path.path),
                root.label,
                path.amount.blocks
            ));
            f.chain = path.path.clone();
        }
        f.stack = s.frames().to_vec();
        f.claims.push(spawn.to_string());
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    const SPAWNED: &[&str] = &[
        "tokio::runtime::task::core::Cell<T,S>::new",
        "tokio::runtime::task::raw::RawTask::new",
        "tokio::task::spawn::spawn_inner",
        "tokio::task::spawn::spawn",
        "app::audit::on_shutdown",
        "app::handler",
    ];
    const CONNECTION_TASK: &[&str] = &[
        "tokio::runtime::task::core::Cell<T,S>::new",
        "tokio::task::spawn::spawn",
        "<hyper_util::rt::tokio::TokioExecutor as hyper::rt::Executor<F>>::execute",
        "hyper::proto::h2::client::handshake::{{closure}}",
        "app::connect",
    ];

    #[test]
    fn tasks_that_accumulate_are_named_by_their_spawn_site() {
        let run = Run::new(|t, b| {
            b.held(
                "thread-locals of thread worker",
                &["tokio::util::sharded_list::ShardedList<L>::new"],
                SPAWNED,
                100 * t as u64,
                1200,
            );
            b.held(
                "thread-locals of thread worker",
                &["tokio::runtime::task::core::Cell<T,S>::new"],
                TONIC_SERVER_READ,
                100 * t as u64,
                8192,
            );
        });
        let f = only(&run, &TaskLeak);
        assert!(
            f.evidence[0]
                .starts_with("700 tasks spawned at app::audit::on_shutdown are alive (up from 200"),
            "{f:#?}"
        );
        assert!(f.evidence[1].contains("about 8.00kB per task"), "{f:#?}");
        assert!(f.evidence[2].contains("ShardedList"), "{f:#?}");
        assert_eq!(
            compact(&["a".into(), "b".into(), "b".into(), "c".into()]),
            "a -> b (x2) -> c"
        );
    }

    #[test]
    fn connection_tasks_are_not_task_leaks() {
        let run = Run::new(|t, b| {
            b.group(
                "thread-locals of thread worker",
                CONNECTION_TASK,
                100 * t as u64,
                1200,
            )
        });
        assert!(TaskLeak.check(&run.evidence()).is_empty());
        let run = Run::stacks_only(|t, p| p.stack(CONNECTION_TASK, 100 * t, 1200));
        assert!(TaskLeak.check(&run.evidence()).is_empty());
    }

    #[test]
    fn from_stacks_growing_task_cells() {
        let run = Run::stacks_only(|t, p| p.stack(SPAWNED, 100 * t, 1200));
        let f = only(&run, &TaskLeak);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("spawned at app::audit::on_shutdown")),
            "{f:#?}"
        );
    }
}
