//! unbounded-channel: a producer outpaces its consumer through an unbounded
//! channel, so the channel's queue only grows. The evidence: the blocks a
//! queue allocates as it grows (tokio: one per 32 messages) increase; the
//! sender is the application frame that sent into it, the holder the
//! channel they are reached through. Small messages (a `Bytes` each) grow
//! the queue too little for the profiles; the snapshots then count its
//! blocks and what is reached through them.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_COUNTED, CONFIDENCE_STACK_ONLY, MIN_NEW_QUEUE_BLOCKS};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::Class;
use crate::snapshot::{Amount, SnapshotReport};

pub struct UnboundedChannel;

const ID: &str = "unbounded-channel";

/// The channel whose queue blocks (allocated at `leaf`) the most bytes are
/// reached through at the end: (root, channel link, bytes).
fn channel_of(ev: &Evidence, leaf: &str) -> Option<(String, String, Amount)> {
    let snaps = ev.snapshots.as_ref()?;
    let mut by_channel: Vec<(String, String, Amount)> = Vec::new();
    for p in &snaps.last.retention {
        if p.path.last().map(|l| l.trim_end_matches(" (heap)")) != Some(leaf) {
            continue;
        }
        let Some(ch) = p.path.iter().skip(1).find(|l| {
            ev.frames
                .classify(l.trim_end_matches(" (heap)"))
                .contains(Class::ChannelCreate)
        }) else {
            continue;
        };
        let root = p.path.first().cloned().unwrap_or_default();
        match by_channel
            .iter_mut()
            .find(|(r, c, _)| *r == root && c == ch)
        {
            Some((_, _, a)) => {
                a.blocks += p.amount.blocks;
                a.bytes += p.amount.bytes;
            }
            None => by_channel.push((root, ch.clone(), p.amount)),
        }
    }
    by_channel.into_iter().max_by_key(|(_, _, a)| a.bytes)
}

/// Bytes reached through the blocks allocated at `leaf` (a queue's blocks)
/// in one snapshot: what their messages hold.
fn reached_through(r: &SnapshotReport, leaf: &str) -> Amount {
    let mut out = Amount::default();
    for p in &r.retention {
        let inner = p.path.len().saturating_sub(2);
        if p.path
            .iter()
            .skip(1)
            .take(inner)
            .any(|l| l.trim_end_matches(" (heap)") == leaf)
        {
            out.blocks += p.amount.blocks;
            out.bytes += p.amount.bytes;
        }
    }
    out
}

/// With snapshots, a queue of small messages (a `Bytes`, an `Arc`): its own
/// blocks grow too little for the profiles to call growing, while what the
/// messages hold (received buffers, say) grows. The snapshots count the
/// queue's blocks and what is reached through them.
fn queue_of_small_messages(ev: &Evidence) -> Option<Finding> {
    let snaps = ev.snapshots.as_ref()?;
    if !ev.heap_grows() {
        return None;
    }
    let queue = snaps
        .sites
        .iter()
        .filter(|g| g.facts.role == Some(Class::ChannelGrow))
        .max_by_key(|g| g.last.blocks.saturating_sub(g.first.blocks))?;
    if queue.last.blocks.saturating_sub(queue.first.blocks) < MIN_NEW_QUEUE_BLOCKS {
        return None;
    }
    let leaf = queue.site.first()?;
    let (before, now) = (
        reached_through(snaps.first, leaf),
        reached_through(snaps.last, leaf),
    );
    if (now.bytes.saturating_sub(before.bytes) as f64) < crate::trend::MIN_SERIES_GROWTH {
        return None;
    }
    let sender = queue
        .facts
        .caller
        .and_then(|i| queue.site.get(i))
        .map_or("an unknown call site", String::as_str);
    let mut f = finding(ID, CONFIDENCE_COUNTED);
    f.evidence.push(format!(
        "a channel's queue holds {} blocks ({}), up from {} after warm-up: messages are sent faster than they are received",
        queue.last.blocks,
        bytes(queue.last.bytes as f64),
        queue.first.blocks
    ));
    f.evidence.push(format!(
        "what the queued messages hold grows: {} in {} blocks reached through the queue, up from {}",
        bytes(now.bytes as f64),
        now.blocks,
        bytes(before.bytes as f64)
    ));
    f.evidence.push(format!("messages are sent from {sender}"));
    if queue.site.iter().any(|f| f.contains("Unbounded")) {
        f.evidence
            .push("the channel is unbounded (UnboundedSender)".to_string());
    }
    if let Some((root, ch, _)) = channel_of(ev, leaf) {
        f.evidence.push(format!(
            "the queue is held by the channel ({ch}), reached from {root}"
        ));
        f.chain = vec![root.clone(), ch];
        f.claims.push(root);
    }
    f.stack = queue.site.clone();
    f.claims.push(sender.to_string());
    Some(f)
}

impl Rule for UnboundedChannel {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        // The queue's blocks per sender come from the profiles' stacks
        // (whole stacks); the snapshot names the channel that holds them.
        let Some(s) = ev
            .growing_stacks()
            .find(|s| s.facts.role == Some(Class::ChannelGrow))
        else {
            return queue_of_small_messages(ev).into_iter().collect();
        };
        let sender = s.frame(s.facts.caller).unwrap_or("an unknown call site");
        if s.objects_last - s.objects_first < MIN_NEW_QUEUE_BLOCKS as f64 {
            return Vec::new();
        }
        let unbounded = s.frames().iter().any(|f| f.contains("Unbounded"));
        if ev.snapshots.is_none() {
            let mut f = stack_finding(
                ev,
                ID,
                CONFIDENCE_STACK_ONLY,
                s,
                format!(
                    "a channel's queue keeps growing ({:.0} blocks now, {:.0} after warm-up): messages sent from {sender} are not received as fast{}",
                    s.objects_last,
                    s.objects_first,
                    if unbounded { "; the channel is unbounded" } else { "" }
                ),
            );
            f.claims.push(sender.to_string());
            return vec![f];
        }
        let mut f = finding(ID, CONFIDENCE_COUNTED);
        f.evidence.push(format!(
            "a channel's queue holds {:.0} blocks ({}), up from {:.0} after warm-up: messages are sent faster than they are received",
            s.objects_last,
            bytes(s.trend.last_bytes),
            s.objects_first
        ));
        f.evidence.push(format!("messages are sent from {sender}"));
        if unbounded {
            f.evidence
                .push("the channel is unbounded (UnboundedSender)".to_string());
        }
        let leaf = s.frames().first().cloned().unwrap_or_default();
        if let Some((root, ch, held)) = channel_of(ev, &leaf) {
            f.evidence.push(format!(
                "the queue is held by the channel ({ch}), reached from {root}: {} of queue blocks",
                bytes(held.bytes as f64)
            ));
            f.chain = vec![root.clone(), ch];
            f.claims.push(root);
        }
        f.stack = s.frames().to_vec();
        f.claims.push(sender.to_string());
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    const QUEUE_GROWS: &[&str] = &[
        "tokio::sync::mpsc::block::Block<T>::new",
        "tokio::sync::mpsc::block::Block<T>::grow",
        "tokio::sync::mpsc::list::Tx<T>::push",
        "tokio::sync::mpsc::unbounded::UnboundedSender<T>::send",
        "app::audit::record",
        "app::handler",
    ];
    const CHANNEL: &str = "tokio::sync::mpsc::chan::channel_from_list";

    #[test]
    fn a_queue_that_grows_is_named_with_its_sender_and_channel() {
        let run = Run::new(|t, b| {
            b.held(
                "static app::AUDIT",
                &[CHANNEL],
                QUEUE_GROWS,
                3 * t as u64,
                32768,
            )
        });
        let f = only(&run, &UnboundedChannel);
        assert!(
            f.evidence[1].ends_with("sent from app::audit::record"),
            "{f:#?}"
        );
        assert_eq!(f.chain, ["static app::AUDIT", &format!("{CHANNEL} (heap)")]);
    }

    #[test]
    fn a_queue_of_small_messages_is_named_from_what_they_hold() {
        // `Bytes` messages: the queue's blocks grow by 25kB, too little for
        // the profiles; the received buffers the messages hold grow.
        let queue = |t: i64, b: &mut Point, what: bool| {
            b.held(
                "static app::AUDIT",
                &[CHANNEL],
                QUEUE_GROWS,
                3 * t as u64,
                1056,
            );
            let block = "tokio::sync::mpsc::block::Block<T>::new";
            if what {
                b.held(
                    "static app::AUDIT",
                    &[CHANNEL, block],
                    TOKIO_READ_BUF,
                    90 * t as u64,
                    8192,
                );
            } else {
                b.group(
                    "static app::CACHE",
                    &["app::cache::put"],
                    90 * t as u64,
                    8192,
                );
            }
        };
        let run = Run::new(|t, b| queue(t, b, true));
        assert!(!run
            .evidence()
            .growing_stacks()
            .any(|s| s.facts.role == Some(Class::ChannelGrow)));
        let f = only(&run, &UnboundedChannel);
        assert_eq!(f.confidence, CONFIDENCE_COUNTED);
        assert!(
            f.evidence[0].starts_with(
                "a channel's queue holds 24 blocks (24.75kB), up from 6 after warm-up"
            ),
            "{f:#?}"
        );
        assert!(
            f.evidence[1]
                .contains("5.62MB in 720 blocks reached through the queue, up from 1.41MB"),
            "{f:#?}"
        );
        assert!(
            f.evidence[2].ends_with("sent from app::audit::record"),
            "{f:#?}"
        );
        assert_eq!(f.chain, ["static app::AUDIT", &format!("{CHANNEL} (heap)")]);
        // A queue that grows a little beside growth held elsewhere is not
        // the leak; nor, without snapshots, can its small blocks be seen.
        let run = Run::new(|t, b| queue(t, b, false));
        assert!(UnboundedChannel.check(&run.evidence()).is_empty());
        let run = Run::stacks_only(|t, b| queue(t, b, true));
        assert!(UnboundedChannel.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_channel_created_per_connection_is_not_a_growing_queue() {
        let created: &[&str] = &[
            "tokio::sync::mpsc::block::Block<T>::new",
            "tokio::sync::mpsc::list::channel_from_index",
            "tokio::sync::mpsc::bounded::channel",
            "app::connect",
        ];
        let run = Run::stacks_only(|t, p| p.stack(created, 10 * t, 32768));
        assert!(UnboundedChannel.check(&run.evidence()).is_empty());
        let run = Run::stacks_only(|t, p| p.stack(QUEUE_GROWS, 3 * t, 32768));
        assert_eq!(
            only(&run, &UnboundedChannel).confidence,
            CONFIDENCE_STACK_ONLY
        );
    }
}
