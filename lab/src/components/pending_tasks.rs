//! Follow-up work deferred to shutdown: each request spawns a task that
//! waits for the service's shutdown signal and then writes an audit line.
//! The signal only comes at shutdown, so every task (its future's state: the
//! captured request and a formatted line) stays alive: tasks that never
//! complete.

use std::io::Write;
use std::sync::LazyLock;

use tokio::sync::Notify;

use crate::proto::EchoRequest;

/// Notified once, when the service shuts down (never, in the lab).
static SHUTDOWN: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Spawns the request's follow-up task; it owns the request until it runs.
pub fn audit_on_shutdown(request: EchoRequest) {
    tokio::spawn(async move {
        let mut line = [0u8; 1024];
        let len = {
            let mut cursor = std::io::Cursor::new(&mut line[..]);
            let _ = write!(
                cursor,
                "echo id={} bytes={}",
                request.id,
                request.payload.len()
            );
            cursor.position() as usize
        };
        SHUTDOWN.notified().await;
        std::hint::black_box((&line[..len], &request));
    });
}
