//! unbounded-channel: a producer outpaces its consumer through an unbounded
//! channel, so the channel's queue only grows. The evidence: the blocks a
//! queue allocates as it grows (tokio: one per 32 messages) increase; the
//! sender is the application frame that sent into it, the holder the
//! channel they are reached through.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_COUNTED, CONFIDENCE_STACK_ONLY, MIN_NEW_QUEUE_BLOCKS};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::Class;
use crate::snapshot::Amount;

pub struct UnboundedChannel;

const ID: &str = "unbounded-channel";

impl Rule for UnboundedChannel {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            let Some(queue) = snaps
                .sites
                .iter()
                .filter(|s| s.facts.role == Some(Class::ChannelGrow))
                .max_by_key(|s| s.last.blocks.saturating_sub(s.first.blocks))
            else {
                return Vec::new();
            };
            let new_blocks = queue.last.blocks.saturating_sub(queue.first.blocks);
            if new_blocks < MIN_NEW_QUEUE_BLOCKS || !ev.heap_grows() {
                return Vec::new();
            }
            let sender = queue
                .facts
                .caller
                .and_then(|i| queue.site.get(i))
                .map_or("a call site beyond the recorded frames", String::as_str);
            // The channel: the link created by a channel constructor on the
            // paths that reach the queue's blocks, with its root.
            let leaf = queue.site.first().cloned().unwrap_or_default();
            let mut channel: Option<(String, String, Amount)> = None;
            for p in &snaps.last.retention {
                if p.path.last().map(|l| l.trim_end_matches(" (heap)")) != Some(leaf.as_str()) {
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
                match &mut channel {
                    Some((r, c, a)) if *r == root && c == ch => {
                        a.blocks += p.amount.blocks;
                        a.bytes += p.amount.bytes;
                    }
                    Some((_, _, a)) if a.bytes >= p.amount.bytes => {}
                    _ => channel = Some((root, ch.clone(), p.amount)),
                }
            }
            let mut f = finding(ID, CONFIDENCE_COUNTED);
            f.evidence.push(format!(
                "a channel's queue holds {} blocks ({}), up from {} after warm-up: messages are sent faster than they are received",
                queue.last.blocks,
                bytes(queue.last.bytes as f64),
                queue.first.blocks
            ));
            f.evidence.push(format!("messages are sent from {sender}"));
            if queue.site.iter().any(|s| s.contains("Unbounded")) {
                f.evidence.push("the channel is unbounded (UnboundedSender)".to_string());
            }
            match &channel {
                Some((root, ch, _)) => {
                    f.evidence.push(format!(
                        "the queue is held by the channel ({ch}), reached from {root}"
                    ));
                    f.chain = vec![root.clone(), ch.clone()];
                    f.claims.push(root.clone());
                }
                None => f.chain = crate::diagnose::rules::chain_labels(&queue.chain),
            }
            f.stack = queue.site.clone();
            f.claims.push(sender.to_string());
            return vec![f];
        }
        ev.growing_stacks()
            .find(|s| s.facts.role == Some(Class::ChannelGrow))
            .map(|s| {
                let sender = s.frame(s.facts.caller).unwrap_or("an unknown call site");
                let mut f = stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!("a channel's queue keeps growing: messages sent from {sender} are not received as fast"),
                );
                f.claims.push(sender.to_string());
                f
            })
            .into_iter()
            .collect()
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
        let run = Run::new(|t, b| b.held("static app::AUDIT", &[CHANNEL], QUEUE_GROWS, 3 * t as u64, 32768));
        let f = only(&run, &UnboundedChannel);
        assert!(f.evidence[1].ends_with("sent from app::audit::record"), "{f:#?}");
        assert_eq!(f.chain, ["static app::AUDIT", &format!("{CHANNEL} (heap)")]);
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
        assert_eq!(only(&run, &UnboundedChannel).confidence, CONFIDENCE_STACK_ONLY);
    }
}
