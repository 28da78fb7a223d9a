//! Points recorded over the life of the process (a heap profile, and in full
//! mode a snapshot), so that the report endpoint can tell growth from a
//! steady state. Bounded: the oldest points go first.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use leakscope_profile::diagnose::{self, SelfCheck};
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::{html_report, trend, StackView};

/// Points kept for the report.
const KEEP: usize = 32;

struct Point {
    profile: StackView,
    snapshot: Option<SnapshotReport>,
}

static HISTORY: Mutex<VecDeque<Point>> = Mutex::new(VecDeque::new());

/// Records one point now.
fn record() {
    let profile = StackView::new(&crate::heap_profile().to_pprof());
    // In every mode: outside full mode the snapshot walks glibc's heap.
    let snapshot = crate::snapshot().ok().map(|s| s.report().clone());
    let mut history = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
    history.push_back(Point { profile, snapshot });
    while history.len() > KEEP {
        history.pop_front();
    }
}

/// Starts (once per process) a thread that records a point every
/// `interval`.
pub(super) fn start_recorder(interval: Duration) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("leakscope-history".into())
            .spawn(move || {
                crate::own_threads::register_current();
                loop {
                    std::thread::sleep(interval);
                    record();
                }
            });
    });
}

/// The self-check over the recorded points and one taken now.
pub(super) struct Checked {
    check: SelfCheck,
    profiles: Vec<StackView>,
    snapshots: Vec<SnapshotReport>,
}

impl Checked {
    pub(super) fn json(&self) -> String {
        serde_json::to_string_pretty(&self.check).unwrap_or_default()
    }

    pub(super) fn html(&self) -> String {
        let trend = trend::trends(&self.profiles, &self.snapshots);
        html_report::render(&html_report::ReportInput {
            title: "leakscope self-check (live)",
            check: &self.check,
            trend: &trend,
            snapshots: &self.snapshots,
            profiles: &self.profiles,
            memory: &[],
        })
    }
}

pub(super) fn self_check() -> Checked {
    record();
    let history = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
    let profiles: Vec<StackView> = history.iter().map(|p| p.profile.clone()).collect();
    let snapshots: Vec<SnapshotReport> =
        history.iter().filter_map(|p| p.snapshot.clone()).collect();
    drop(history);
    let check = diagnose::self_check(&snapshots, &profiles);
    Checked {
        check,
        profiles,
        snapshots,
    }
}
