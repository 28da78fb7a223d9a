//! unclassified: the heap grows and no pattern explains it. Names the
//! steepest growing stacks so that a reader knows where to look; the
//! post-pass drops it when any other finding exists.

use super::super::evidence::Evidence;
use super::super::evidence::StackEvidence;
use super::super::thresholds::{CONFIDENCE_UNCLASSIFIED, UNCLASSIFIED_STACKS};
use super::super::Finding;
use super::{bytes, finding, receives_into_buffers, Rule, SNAPSHOT_HINT};
use crate::frames::{crate_of, Class, Side};

pub struct Unclassified;

const ID: &str = "unclassified";

impl Rule for Unclassified {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if !ev.heap_grows() {
            return Vec::new();
        }
        let stacks: Vec<_> = ev.growing_stacks().take(UNCLASSIFIED_STACKS).collect();
        let Some(top) = stacks.first() else {
            return Vec::new();
        };
        let mut f = finding(ID, CONFIDENCE_UNCLASSIFIED);
        for s in &stacks {
            let place = s
                .frame(s.facts.first_app.or(s.facts.leaf))
                .unwrap_or(&s.trend.name);
            f.evidence.push(format!(
                "memory allocated in {place} grows {}/s ({} -> {}){}",
                bytes(s.trend.bytes_per_second),
                bytes(s.trend.first_bytes),
                bytes(s.trend.last_bytes),
                received_into(ev, s)
            ));
        }
        if ev.snapshots.is_none() {
            f.evidence.push(SNAPSHOT_HINT.to_string());
        }
        f.stack = top.trend.detail.clone();
        vec![f]
    }
}

/// What a stack that receives into byte buffers shows, said instead of
/// guessing a slice-pinning scenario from its name: the buffers are
/// received data, in which crate's receive path; who keeps them (a slice of
/// a request pins its whole buffer) only a snapshot or a heap walk can say.
fn received_into(ev: &Evidence, s: &StackEvidence) -> String {
    if s.facts.role != Some(Class::Receive) || !receives_into_buffers(s) {
        return String::new();
    }
    let Some(frame) = s.frame(s.facts.role_frame) else {
        return String::new();
    };
    let krate = crate_of(frame);
    let what = match s.facts.side {
        Some(Side::Client) => "responses are",
        Some(Side::Server) => "requests are",
        None => "data is",
    };
    format!(
        ": buffers {what} received into, in the {krate}{} crate's receive path ({frame}); \
         whether the application keeps them, or slices of them that pin whole buffers, \
         needs a snapshot",
        ev.version_suffix(krate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    #[test]
    fn growth_is_named_by_its_stacks() {
        let run =
            Run::stacks_only(|t, p| p.stack(&["tokio::io::something", "app::run"], 300 * t, 1000));
        let f = only(&run, &Unclassified);
        assert!(
            f.evidence[0].starts_with("memory allocated in app::run grows"),
            "{f:#?}"
        );
    }

    #[test]
    fn no_growth_no_finding() {
        let run = Run::stacks_only(|_, p| p.stack(&["app::run"], 300, 1000));
        assert!(Unclassified.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_receive_path_is_named_with_its_crate_not_as_a_scenario() {
        let run = Run::stacks_only(|t, p| p.stack(HYPER_READ, 100 * t, 8192));
        let f = only(&run, &Unclassified);
        assert!(
            f.evidence[0].contains(
                "buffers requests are received into, in the hyper crate's receive path \
                 (hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io)"
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn a_users_frame_file_teaches_the_receive_path_of_their_framework() {
        let own: &[&str] = &[
            "bytes::bytes_mut::BytesMut::reserve_inner",
            "mynet::conn::Reader<S>::fill",
            "mynet::server::Server::serve_one",
            "app::main",
        ];
        let run = || Run::stacks_only(|t, p| p.stack(own, 100 * t, 8192));
        let f = only(&run(), &Unclassified);
        assert!(!f.evidence[0].contains("receive path"), "{f:#?}");
        let mut frames = crate::frames::FrameTable::builtin();
        frames
            .add_text(
                "receive mynet::conn::Reader::fill\nserver mynet::server::*\nlibrary mynet::*\n",
                "mine",
            )
            .unwrap();
        let f = only(&run().with_frames(frames), &Unclassified);
        assert!(
            f.evidence[0]
                .contains("in the mynet crate's receive path (mynet::conn::Reader<S>::fill)"),
            "{f:#?}"
        );
    }
}
