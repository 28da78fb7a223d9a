//! idle-connections: connections are opened and left open, each holding its
//! buffers and protocol state. Live connections are counted from the
//! allocations each makes once when it is set up.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_HOLDER, CONFIDENCE_STACK_ONLY, MIN_NEW_CONNECTIONS};
use super::super::Finding;
use super::{bytes, finding, Rule, SNAPSHOT_HINT};
use crate::frames::Side;

pub struct IdleConnections;

const ID: &str = "idle-connections";

impl Rule for IdleConnections {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if !ev.heap_grows() {
            return Vec::new();
        }
        let Some((side, c)) = [Side::Server, Side::Client]
            .into_iter()
            .map(|s| (s, ev.connections(s)))
            .filter(|(_, c)| c.live_growth() >= MIN_NEW_CONNECTIONS)
            .max_by(|a, b| a.1.live_now.total_cmp(&b.1.live_now))
        else {
            return Vec::new();
        };
        let total = &ev.trend.total;
        let grown = (total.last_bytes - total.first_bytes).max(0.0);
        let confidence = if ev.snapshots.is_some() {
            CONFIDENCE_HOLDER
        } else {
            CONFIDENCE_STACK_ONLY
        };
        let mut f = finding(ID, confidence);
        f.evidence.push(format!(
            "{:.0} live {} connections (up from {:.0} after warm-up; {:.0} opened in all)",
            c.live_now,
            side.name(),
            c.live_before,
            c.opened_now
        ));
        f.evidence.push(format!(
            "live memory grew {} — about {} per connection",
            bytes(grown),
            bytes(grown / c.live_growth().max(1.0))
        ));
        f.evidence.push(
            "the growth is in connection state: handshake, codec and I/O buffers, connection tasks"
                .to_string(),
        );
        if ev.snapshots.is_none() {
            f.evidence.push(format!(
                "counted from the profiles' connection set-up stacks; {SNAPSHOT_HINT}"
            ));
        }
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    #[test]
    fn live_connections_that_keep_growing() {
        let run = Run::stacks_only(|t, p| {
            p.connections(Side::Client, 10 * t as u64, 10 * t as u64);
            p.connections(Side::Server, 10 * t as u64, 10 * t as u64);
            p.stack(
                &[
                    "h2::proto::streams::streams::Inner::new",
                    "h2::server::Connection<T,B>::handshake2",
                ],
                10 * t,
                60000,
            );
        });
        let f = only(&run, &IdleConnections);
        assert!(f.evidence[0].starts_with("70 live"), "{f:#?}");
    }

    #[test]
    fn sockets_accepted_by_a_service_on_plain_tokio_are_server_connections() {
        // No framework frame: only tokio's accept and the socket's
        // registration with the I/O driver say a connection was set up.
        let accepted: &[&str] = &[
            "tokio::runtime::io::registration_set::RegistrationSet::allocate",
            "tokio::runtime::io::driver::Handle::add_source",
            "tokio::io::poll_evented::PollEvented<E>::new",
            "tokio::net::tcp::stream::TcpStream::new_accepted",
            "tokio::net::tcp::listener::TcpListener::accept::{{closure}}",
            "app::main::{{closure}}",
        ];
        let run = Run::new(|t, p| {
            p.stack_allocated(accepted, 10 * t, 256, 10 * t as u64);
            p.stack(
                &["bytes::bytes_mut::BytesMut::with_capacity", "app::serve"],
                10 * t,
                65536,
            );
        });
        let f = only(&run, &IdleConnections);
        assert!(
            f.evidence[0].starts_with("70 live server connections (up from 20"),
            "{f:#?}"
        );
    }

    #[test]
    fn connections_that_close_are_no_finding() {
        let run = Run::stacks_only(|t, p| {
            p.connections(Side::Server, 10 * t as u64, 2);
            p.stack(&["app::leak"], 10 * t, 60000);
        });
        assert!(IdleConnections.check(&run.evidence()).is_empty());
    }
}
