//! oversized-request: a few requests far larger than the rest; a pool that
//! caches buffers keeps theirs after the requests end. The evidence is size
//! outliers: live blocks of 1 MiB or more, 64 times the average, held by a
//! static (a pool), and reads that large.

use super::super::evidence::Evidence;
use super::super::thresholds::{
    CONFIDENCE_HOLDER, CONFIDENCE_OUTLIERS_FROM_STACKS, CONFIDENCE_WALKED_STATIC, OUTLIER_FACTOR,
    OUTLIER_MIN_BYTES,
};
use super::super::Finding;
use super::{bytes, chain_labels, finding, Rule, SNAPSHOT_HINT};
use crate::frames::Class;
use crate::snapshot::{LargeBlock, NodeKind, SnapshotReport};
use crate::trend::RunPoints;
use crate::StackView;

pub struct OversizedRequest;

const ID: &str = "oversized-request";

/// Allocations of at least 1 MiB made in a receive path during the run:
/// (count, bytes).
fn large_reads(ev: &Evidence) -> (f64, f64) {
    let Some(view) = ev.last_profile else {
        return (0.0, 0.0);
    };
    let [_, _, Some(objects), Some(space)] = view.heap_indices() else {
        return (0.0, 0.0);
    };
    let mut total = (0.0, 0.0);
    for s in &view.samples {
        let (n, b) = (s.values[objects] as f64, s.values[space] as f64);
        if n <= 0.0 || b / n < OUTLIER_MIN_BYTES as f64 {
            continue;
        }
        let frames: Vec<String> = view.function_names(s).map(str::to_string).collect();
        if ev.facts(&frames).classes.contains(Class::Receive) {
            total.0 += n;
            total.1 += b;
        }
    }
    total
}

fn reads_line(ev: &Evidence) -> Option<String> {
    let (reads, read_bytes) = large_reads(ev);
    (reads > 0.0).then(|| {
        format!(
            "the receive path allocated {reads:.0} buffers of 1 MiB or more during the run ({} in all): size outliers among requests",
            bytes(read_bytes)
        )
    })
}

/// Whether live memory allocated at `site` (a snapshot's stack, cut short)
/// grows by growing its blocks: a table reallocated larger as it fills (a
/// slab of streams) is as large as a pooled buffer and held as long, but
/// it is a growing structure, not a request's buffer a pool kept. A pool
/// that keeps one more buffer of the same size grows by count: that is
/// this scenario (the pool keeps what the next outlier left).
fn site_grows(ev: &Evidence, snapshots: &[SnapshotReport], site: &[String]) -> bool {
    if !ev.growing_stacks().any(|s| s.frames().starts_with(site)) {
        return false;
    }
    let largest_at = |s: &SnapshotReport| {
        s.largest
            .iter()
            .filter(|b| b.site == site)
            .map(|b| b.size)
            .max()
    };
    // The largest block here when first and last seen over the run.
    match (
        snapshots.iter().find_map(largest_at),
        snapshots.iter().rev().find_map(largest_at),
    ) {
        (Some(first), Some(last)) => last > first,
        _ => true,
    }
}

/// Outliers of one snapshot whose allocation stack is known (a heap walk's
/// blocks have one only when sampled; leakscope's own never) and does not
/// grow, and the first of them held from a static or data root.
fn held_outliers<'a>(
    ev: &Evidence,
    snapshots: &[SnapshotReport],
    s: &'a SnapshotReport,
) -> Option<(Vec<&'a LargeBlock>, &'a LargeBlock, f64)> {
    let live = &s.totals.live;
    let typical = live.bytes as f64 / live.blocks.max(1) as f64;
    let outliers: Vec<&LargeBlock> = s
        .largest
        .iter()
        .filter(|b| {
            b.size >= OUTLIER_MIN_BYTES
                && b.size as f64 >= OUTLIER_FACTOR * typical
                && !b.chain.is_empty()
                && !b.site.is_empty()
                && !site_grows(ev, snapshots, &b.site)
        })
        .collect();
    // Held from a static or an object's data, as a pool is. Not from
    // anonymous memory: its words outside blocks include freed memory of
    // other allocators (h2's slab of streams, reallocated to 4.75 MB, was
    // "kept" by a stale word there in one run of the advisory test).
    let big = *outliers.iter().find(|b| {
        b.chain.first().is_some_and(|l| {
            matches!(l.node.kind, NodeKind::Static | NodeKind::Data)
                && !l.node.is_anonymous_memory()
        })
    })?;
    Some((outliers, big, typical))
}

/// How many of `profiles` hold live size outliers at the stack `frames`.
fn profiles_holding_outliers(profiles: &[StackView], frames: &[String]) -> usize {
    profiles
        .iter()
        .filter(|view| {
            let [Some(objects), Some(space), _, _] = view.heap_indices() else {
                return false;
            };
            view.samples.iter().any(|s| {
                let (n, b) = (s.values[objects] as f64, s.values[space] as f64);
                n > 0.0
                    && b / n >= OUTLIER_MIN_BYTES as f64
                    && view.function_names(s).eq(frames.iter().map(String::as_str))
            })
        })
        .count()
}

impl Rule for OversizedRequest {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            return from_snapshots(ev, snaps.all, CONFIDENCE_HOLDER);
        }
        // A heap walk sees every block and who holds it, and a block this
        // large is all but certainly sampled, so its stack is known too. It
        // is asked first because a profile cannot tell one large block from
        // many small ones a pool hands out at the same stack.
        if let Some(walked) = &ev.walked {
            let found = from_snapshots(ev, walked.all, CONFIDENCE_WALKED_STATIC);
            if !found.is_empty() {
                return found;
            }
        }
        from_profiles(ev)
    }
}

/// Outliers held by a pool, from the run's snapshots.
fn from_snapshots(ev: &Evidence, snapshots: &[SnapshotReport], confidence: f64) -> Vec<Finding> {
    // A pooled buffer may be in use (held by a handler's stack) at
    // any one moment: look back through the run for a snapshot
    // where the pool holds it.
    let Some((outliers, big, typical)) = snapshots
        .iter()
        .rev()
        .find_map(|s| held_outliers(ev, snapshots, s))
    else {
        return Vec::new();
    };
    let total: u64 = outliers.iter().map(|b| b.size).sum();
    let facts = ev.facts(&big.site);
    let site = facts
        .first_app
        .or(facts.leaf)
        .and_then(|i| big.site.get(i))
        .or(big.site.first())
        .map_or("?", String::as_str);
    let mut f = finding(ID, confidence);
    f.evidence.extend(reads_line(ev));
    let smallest = outliers.last().map_or(0, |b| b.size);
    let blocks = match outliers.len() {
        1 => format!("1 live block of {}", bytes(total as f64)),
        n if bytes(smallest as f64) == bytes(big.size as f64) => format!(
            "{n} live blocks of {} each ({})",
            bytes(big.size as f64),
            bytes(total as f64)
        ),
        n => format!(
            "{n} live blocks of {} to {} ({})",
            bytes(smallest as f64),
            bytes(big.size as f64),
            bytes(total as f64)
        ),
    };
    f.evidence.push(format!(
        "{blocks} — {:.0}x the average live block of {}",
        big.size as f64 / typical.max(1.0),
        bytes(typical)
    ));
    f.evidence.push(format!(
        "allocated in {site} (request handling{})",
        if facts.side == Some(crate::frames::Side::Server) {
            ", server side"
        } else {
            ""
        }
    ));
    f.evidence.push(format!(
        "kept by {} after the requests ended",
        crate::snapshot::chain_text(&big.chain)
    ));
    f.chain = chain_labels(&big.chain);
    f.stack = big.site.clone();
    f.claims.extend(f.chain.first().cloned());
    vec![f]
}

fn from_profiles(ev: &Evidence) -> Vec<Finding> {
    // From the profiles: live size outliers at one stack of request
    // handling that stays (a pool keeps them; it does not grow), against
    // the run's average allocation (live counts of small blocks are too
    // noisy in sampled profiles to average over). Without a holder, the
    // large requests themselves must show: reads of 1 MiB or more (a
    // table that grows by reallocation is as large, and no request was).
    let Some(reads) = reads_line(ev) else {
        return Vec::new();
    };
    let Some(view) = ev.last_profile else {
        return Vec::new();
    };
    let [Some(objects), Some(space), Some(alloc_objects), Some(alloc_space)] = view.heap_indices()
    else {
        return Vec::new();
    };
    let typical = view.total(alloc_space) as f64 / view.total(alloc_objects).max(1) as f64;
    let growing: Vec<&[String]> = ev.growing_stacks().map(|s| s.frames()).collect();
    let judged = &ev.profiles[RunPoints::of(ev.profiles.len()).judged()];
    let Some((s, frames, facts, kept_in)) = view
        .samples
        .iter()
        .filter(|s| {
            let (n, b) = (s.values[objects] as f64, s.values[space] as f64);
            n > 0.0 && b / n >= OUTLIER_MIN_BYTES as f64 && b / n >= OUTLIER_FACTOR * typical
        })
        .map(|s| {
            let frames: Vec<String> = view.function_names(s).map(str::to_string).collect();
            let facts = ev.facts(&frames);
            (s, frames, facts)
        })
        .filter(|(_, frames, facts)| {
            facts.side == Some(crate::frames::Side::Server) && !growing.contains(&frames.as_slice())
        })
        .map(|(s, frames, facts)| {
            let kept_in = profiles_holding_outliers(judged, &frames);
            (s, frames, facts, kept_in)
        })
        // What a pool keeps stays from profile to profile; a large
        // request still being read when the last profile was written
        // is as big but seen once.
        .max_by_key(|(s, _, _, kept_in)| (*kept_in, s.values[space]))
    else {
        return Vec::new();
    };
    let at = facts
        .first_app
        .or(facts.leaf)
        .and_then(|i| frames.get(i))
        .map_or_else(|| "?".to_string(), String::clone);
    let (n, b) = (s.values[objects] as f64, s.values[space] as f64);
    let mut f = finding(ID, CONFIDENCE_OUTLIERS_FROM_STACKS);
    f.evidence.push(reads);
    f.evidence.push(format!(
            "{} allocated at {at} while handling requests stay after the requests (live in {kept_in} of {} profiles) — {:.0}x the average allocation of {} in this run",
            if n.round() == 1.0 {
                format!("1 live block of about {}", bytes(b))
            } else {
                format!("{n:.0} live blocks of about {} ({})", bytes(b / n), bytes(b))
            },
            judged.len(),
            b / n / typical.max(1.0),
            bytes(typical)
        ));
    f.evidence.push(format!(
            "no snapshot in this run, so what keeps them (a pool, a cache) is not known for sure: {SNAPSHOT_HINT}"
        ));
    f.stack = frames;
    f.claims.push(at);
    vec![f]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    const BIG_READ: &[&str] = &[
        "bytes::bytes_mut::BytesMut::reserve_inner",
        "tonic::codec::decode::StreamingInner::decode_chunk",
        "tonic::server::grpc::Grpc<T>::unary::{{closure}}",
    ];
    const POOL_TAKE: &[&str] = &[
        "app::pool::BufferPool::take",
        "app::handler",
        "tonic::server::grpc::Grpc<T>::unary::{{closure}}",
    ];

    fn oversized(t: i64, b: &mut Point) {
        // Every second a 4 MiB request; the pool keeps the first three.
        b.stack_allocated(BIG_READ, 0, 4 << 20, t as u64);
        for _ in 0..t.min(3) {
            b.large("static app::POOL", POOL_TAKE, 4 << 20);
        }
    }

    #[test]
    fn outliers_kept_by_a_pool_are_named_with_it() {
        let f = only(&Run::new(oversized), &OversizedRequest);
        assert_eq!(f.chain, ["static app::POOL"]);
        assert!(f.evidence[0].contains("buffers of 1 MiB or more"), "{f:#?}");
        assert!(f.evidence[1].starts_with("3 live blocks"), "{f:#?}");
    }

    #[test]
    fn from_stacks_the_outliers_and_the_reads() {
        let f = only(&Run::stacks_only(oversized), &OversizedRequest);
        assert_eq!(f.confidence, CONFIDENCE_OUTLIERS_FROM_STACKS);
        assert!(
            f.evidence[1].contains("app::pool::BufferPool::take"),
            "{f:#?}"
        );
    }

    #[test]
    fn a_large_request_in_flight_at_the_end_is_not_what_the_pool_keeps() {
        // The pool's buffer is live from the second point on; a request as
        // larger is being read when the last running profile is written.
        let run = Run::stacks_only(|t, p| {
            let reading = i64::from(t == POINTS - 2);
            p.stack_allocated(BIG_READ, reading, (4 << 20) + 4096, t as u64);
            p.stack(POOL_TAKE, i64::from(t >= 1), 4 << 20);
        });
        let f = only(&run, &OversizedRequest);
        assert_eq!(f.stack, strings(POOL_TAKE), "{f:#?}");
    }

    #[test]
    fn a_heap_walk_finds_the_pools_buffer_among_small_ones_of_its_stack() {
        // The pool also hands out many small buffers at the same stack, so
        // the stack's average block is small; the walk sees the large one.
        let run = Run::walked(|t, p| {
            p.stack_allocated(BIG_READ, 0, 4 << 20, t as u64);
            p.stack(POOL_TAKE, 200, 8 << 10);
            if t >= 1 {
                p.large("static app::POOL", POOL_TAKE, 4 << 20);
            }
        });
        let f = only(&run, &OversizedRequest);
        assert_eq!(f.confidence, CONFIDENCE_WALKED_STATIC);
        assert_eq!(f.chain, ["static app::POOL"]);
        assert_eq!(f.stack, strings(POOL_TAKE));
    }

    #[test]
    fn from_stacks_a_large_block_without_large_requests_is_not_this() {
        // One table grown by reallocation to 4 MiB while handling requests
        // of a few hundred bytes.
        let run = Run::stacks_only(|t, p| {
            p.stack(POOL_TAKE, i64::from(t >= 1), 4 << 20);
            p.stack_allocated(BIG_READ, 0, 512, 1000 * t as u64);
        });
        assert!(OversizedRequest.check(&run.evidence()).is_empty());
    }

    #[test]
    fn with_snapshots_a_table_reallocated_as_it_grows_is_not_this() {
        // h2's slab of streams, reallocated to 4 MiB and more and reached
        // from a root (a fresh-clone CI run called the h2 advisory's growth
        // a pool of oversized requests).
        const SLAB: &[&str] = &[
            "slab::Slab<T>::insert_at",
            "h2::proto::streams::store::VacantEntry::insert",
            "app::serve_connection",
        ];
        let run = Run::new(|t, p| {
            p.stack_allocated(BIG_READ, 0, 4 << 20, t as u64);
            p.stack(SLAB, 1, (t as u64 + 1) << 21);
            if t >= 1 {
                p.large("static app::STATE", SLAB, (t as u64 + 1) << 21);
            }
        });
        assert!(OversizedRequest.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_pool_that_keeps_one_more_outlier_grows_and_is_this() {
        // axum's scratch pool: every buffer it makes stays, so the pool's
        // stack grows by one more 4 MiB buffer now and then (a run called
        // it cache-without-bound).
        let run = Run::new(|t, p| {
            p.stack_allocated(BIG_READ, 0, 4 << 20, t as u64);
            for _ in 0..(1 + t / 2) {
                p.large("static app::POOL", POOL_TAKE, 4 << 20);
            }
        });
        let f = only(&run, &OversizedRequest);
        assert_eq!(f.chain, ["static app::POOL"]);
    }

    #[test]
    fn outliers_held_only_from_anonymous_memory_are_not_a_pools() {
        // The advisory test's full-mode run in a fresh-clone CI: h2's slab
        // (two blocks of 3.75 and 4.75 MB, its site not judged growing)
        // reached from a word of a 43 MB anonymous mapping outside any
        // block.
        let run = Run::new(|t, p| {
            p.stack_allocated(BIG_READ, 0, 4 << 20, t as u64);
            if t >= 1 {
                p.large(
                    "anonymous memory at 0x7f526bc00000 (43.43MB)",
                    POOL_TAKE,
                    4 << 20,
                );
            }
        });
        assert!(OversizedRequest.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_large_table_that_grows_is_not_an_outlier_kept_by_a_pool() {
        let run = Run::stacks_only(|t, p| p.stack(POOL_TAKE, t, 4 << 20));
        assert!(OversizedRequest.check(&run.evidence()).is_empty());
    }
}
