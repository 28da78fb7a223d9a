//! Growth over time, per series: the whole heap, each allocation stack (from
//! periodic heap profiles) and each holder (from periodic snapshots). This
//! is the one growth model of leakscope: `leakscope trend` prints it, and the
//! self-check (`diagnose`) reads its verdict on the whole heap and on each
//! series instead of judging growth again.
//!
//! The points of a run are chosen once, by [`RunPoints`]: the first quarter
//! is warm-up (caches and pools fill), and the last point is left out when
//! there are more than three (a periodic run writes its last set at exit,
//! after the load stopped). Each series is judged on the rest with robust
//! statistics, so that one odd interval or the noise of sampling does not
//! decide: the Theil–Sen slope (median of pairwise slopes) against time and
//! against the application's progress counter, Kendall's tau for how
//! consistently it rises, and the slopes of the two halves to tell growth
//! that persists from memory that levels off.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotReport;
use crate::view::StackView;

/// How a series moved after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendState {
    /// Rises steadily and still rises in the second half: a leak suspect.
    Growing,
    /// Rose, then flattened: a cache or pool filling to its size.
    LevelledOff,
    Flat,
    Shrinking,
    /// Fewer than three points after warm-up; or a holder that gained more
    /// than the whole heap did (memory it took over, not new memory).
    Inconclusive,
}

impl TrendState {
    /// How reports print it.
    pub fn name(self) -> &'static str {
        match self {
            TrendState::Growing => "growing",
            TrendState::LevelledOff => "levelled off",
            TrendState::Flat => "flat",
            TrendState::Shrinking => "shrinking",
            TrendState::Inconclusive => "inconclusive",
        }
    }
}

impl SeriesKind {
    pub fn name(self) -> &'static str {
        match self {
            SeriesKind::Total => "total",
            SeriesKind::Stack => "stack",
            SeriesKind::Holder => "holder",
        }
    }
}

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Everything live.
    Total,
    /// Live bytes allocated at one call stack.
    Stack,
    /// Bytes retained by one holder (a snapshot's dominator).
    Holder,
}

/// The trend of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesTrend {
    pub kind: SeriesKind,
    /// One line: the stack's leaf-most frames, or the holder's name.
    pub name: String,
    /// The whole stack (leaf first) or the holder's chain (root first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
    pub state: TrendState,
    /// Live bytes at the first point after warm-up, and at the last.
    pub first_bytes: f64,
    pub last_bytes: f64,
    pub bytes_per_second: f64,
    /// Bytes per unit of the progress counter (per request), if counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_unit: Option<f64>,
    /// Kendall's tau of bytes against time: 1 = rose at every step.
    pub consistency: f64,
}

/// Trends of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendReport {
    /// Points used (after warm-up) and points skipped as warm-up.
    pub samples: usize,
    pub warmup: usize,
    pub seconds: f64,
    /// Where the whole heap's series came from.
    #[serde(default)]
    pub source: TotalSource,
    pub total: SeriesTrend,
    /// Stacks and holders, growing ones first (steepest first).
    pub series: Vec<SeriesTrend>,
}

/// Which files the whole heap's series was read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TotalSource {
    /// Live bytes of the heap snapshots.
    Snapshots,
    /// `inuse_space` of the heap profiles.
    #[default]
    Profiles,
}

/// Which points of a run describe the running service. The one place that
/// says how long warm-up is and that the exit point is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPoints {
    /// Points written while the service ran.
    pub running: usize,
    /// The first of them that is past warm-up.
    pub warmup: usize,
}

impl RunPoints {
    /// For a run of `points` points in time order.
    pub fn of(points: usize) -> RunPoints {
        // The last set of a periodic run is written at exit, after the load
        // stopped: it is not the running service.
        let running = if points > 3 { points - 1 } else { points };
        RunPoints {
            running,
            warmup: running / 4,
        }
    }

    /// The running points past warm-up.
    pub fn judged(self) -> std::ops::Range<usize> {
        self.warmup..self.running
    }
}

impl TrendReport {
    pub fn growing(&self) -> impl Iterator<Item = &SeriesTrend> {
        self.series
            .iter()
            .filter(|s| s.state == TrendState::Growing)
    }
}

/// Points in time shared by the series of one run (the running points
/// only: see [`RunPoints`]).
struct Timeline {
    seconds: Vec<f64>,
    progress: Vec<Option<f64>>,
    run: RunPoints,
}

impl Timeline {
    /// The running points of `seconds` and `progress` (all points of the run).
    fn new(mut seconds: Vec<f64>, mut progress: Vec<Option<f64>>) -> Timeline {
        let run = RunPoints::of(seconds.len());
        seconds.truncate(run.running);
        progress.truncate(run.running);
        Timeline {
            seconds,
            progress,
            run,
        }
    }

    fn warmup(&self) -> usize {
        self.run.warmup
    }

    fn len(&self) -> usize {
        self.seconds.len()
    }

    /// The judged points at which a series was observed (`Some`), as a
    /// timeline of their own (no further warm-up) with their values.
    fn observed(&self, values: &[Option<f64>]) -> (Timeline, Vec<f64>) {
        let mut line = Timeline {
            seconds: Vec::new(),
            progress: Vec::new(),
            run: RunPoints {
                running: 0,
                warmup: 0,
            },
        };
        let mut kept = Vec::new();
        for i in self.warmup()..self.len() {
            if let Some(v) = values.get(i).copied().flatten() {
                line.seconds.push(self.seconds[i]);
                line.progress.push(self.progress[i]);
                kept.push(v);
            }
        }
        line.run.running = kept.len();
        (line, kept)
    }
}

/// Median of pairwise slopes.
pub fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if (b.0 - a.0).abs() > f64::EPSILON {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(|x, y| x.total_cmp(y));
    slopes[slopes.len() / 2]
}

/// Kendall's tau of values against their order.
fn kendall_tau(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mut score = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            score += match values[j].total_cmp(&values[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    score as f64 / (n * (n - 1) / 2) as f64
}

/// Judges one series (`values` aligned with the timeline). `min_growth`:
/// the fewest bytes of growth over the run that count.
fn judge(
    line: &Timeline,
    values: &[f64],
    min_growth: f64,
) -> (TrendState, f64, f64, f64, Option<f64>, f64) {
    let w = line.warmup();
    let t = &line.seconds[w..];
    let v = &values[w..line.len()];
    let first = v.first().copied().unwrap_or(0.0);
    let last = v.last().copied().unwrap_or(0.0);
    if v.len() < 3 {
        return (TrendState::Inconclusive, first, last, 0.0, None, 0.0);
    }
    let points: Vec<(f64, f64)> = t.iter().copied().zip(v.iter().copied()).collect();
    let slope = theil_sen(&points);
    let per_unit = {
        let p: Vec<(f64, f64)> = line.progress[w..]
            .iter()
            .zip(v)
            .filter_map(|(p, &b)| Some(((*p)?, b)))
            .collect();
        let moved = p.len() == v.len() && p.last().map(|l| l.0) > p.first().map(|f| f.0);
        moved.then(|| theil_sen(&p))
    };
    let tau = kendall_tau(v);
    let span = t.last().unwrap_or(&0.0) - t.first().unwrap_or(&0.0);
    let fitted = slope * span;
    let threshold = min_growth.max(first * 0.1);
    let mid = points.len() / 2;
    let early = theil_sen(&points[..=mid]);
    let late = theil_sen(&points[mid..]);
    // Growth that slows only because the load slowed (a starved machine
    // serving fewer requests) has not levelled off: with a progress count,
    // growth per request must slow too.
    let slowed_per_request = {
        let p: Vec<(f64, f64)> = line.progress[w..]
            .iter()
            .zip(v)
            .filter_map(|(p, &b)| Some(((*p)?, b)))
            .collect();
        if p.len() == v.len() && p.len() >= 3 && p[mid].0 > p[0].0 && p[p.len() - 1].0 > p[mid].0 {
            let early = theil_sen(&p[..=mid]);
            let late = theil_sen(&p[mid..]);
            late <= 0.25 * early
        } else {
            true
        }
    };
    // A late slope from two points is one difference of two readings (of
    // sampled estimates, noisy ones), and one from three is two: a leak
    // that paused for a second (its load starved on a busy machine, a
    // burst still to come) reads as levelled. Levelling off needs a
    // plateau over three intervals, four late points; a shorter run that
    // grew is growing.
    let levelled = late <= 0.25 * early && slowed_per_request && points.len() - mid >= 4;
    // Growth must show before the last point too: one high reading at the
    // end (work in flight when it was taken: a batch being built) may be a
    // spike or the start of growth, which the next points would tell.
    let before_last = &points[..points.len() - 1];
    let shown_before_last = points.len() < 4
        || theil_sen(before_last) * (before_last[before_last.len() - 1].0 - before_last[0].0)
            >= threshold / 2.0;
    let state = if fitted >= threshold && tau >= 0.5 && shown_before_last {
        if levelled && early * span / 2.0 >= threshold / 2.0 {
            TrendState::LevelledOff
        } else {
            TrendState::Growing
        }
    } else if early > 0.0 && early * span / 2.0 >= threshold && levelled {
        TrendState::LevelledOff
    } else if -fitted >= threshold && tau <= -0.5 {
        TrendState::Shrinking
    } else {
        TrendState::Flat
    };
    (state, first, last, slope, per_unit, tau)
}

fn series(
    kind: SeriesKind,
    name: String,
    detail: Vec<String>,
    line: &Timeline,
    values: &[f64],
    min_growth: f64,
) -> SeriesTrend {
    let (state, first_bytes, last_bytes, bytes_per_second, bytes_per_unit, consistency) =
        judge(line, values, min_growth);
    SeriesTrend {
        kind,
        name,
        detail,
        state,
        first_bytes,
        last_bytes,
        bytes_per_second,
        bytes_per_unit,
        consistency,
    }
}

/// Judges any series of a run with the same model: `seconds` and
/// `progress` are the times and progress counts of every point of the run
/// (exit point included; [`RunPoints`] decides which are judged) and
/// `values` the series' bytes at each.
pub fn judge_series(
    kind: SeriesKind,
    name: String,
    detail: Vec<String>,
    seconds: &[f64],
    progress: &[Option<f64>],
    values: &[f64],
    min_growth: f64,
) -> SeriesTrend {
    let line = Timeline::new(seconds.to_vec(), progress.to_vec());
    series(kind, name, detail, &line, values, min_growth)
}

/// Growth of a sampled stack smaller than this many sampling periods is
/// noise. Each sample of a block well under the period counts as about one
/// period plus half the block, so two more samples (common in a bounded
/// cache whose few hundred live blocks are sampled now and then) just pass
/// two periods: three are needed.
pub const SAMPLING_NOISE_PERIODS: f64 = 3.0;

/// Growth of a sampled stack within this many standard deviations of the
/// difference of two of its readings is noise ...
pub const STACK_NOISE_SIGMAS: f64 = 2.0;
/// ... unless it rose this consistently (six points with one fall, or
/// more: under one chance in a hundred without a trend; four points in a
/// row, one chance in 24, are not enough).
pub const SIGNIFICANT_STACK_CONSISTENCY_Z: f64 = 2.5;

/// The variance of a sampled estimate of `bytes` in `objects` blocks (both
/// already scaled up from the samples), sampled every `period` bytes: each
/// block of mean size s was kept with probability q = 1 - exp(-s/period)
/// and counted as s/q, so n blocks read with variance n s² (1-q)/q. Blocks
/// well under the period give about bytes × period (a few samples, each
/// counting as a period); blocks well over it are nearly always sampled,
/// and read almost exactly.
fn sampled_variance(bytes: f64, objects: f64, period: f64) -> f64 {
    if period <= 0.0 || objects <= 0.0 || bytes <= 0.0 {
        return 0.0;
    }
    let size = bytes / objects;
    let kept = -(-size / period).exp_m1();
    if kept <= 0.0 {
        return 0.0;
    }
    bytes * size * (1.0 - kept) / kept
}

/// Growth of a sampled heap's total within this many standard deviations
/// of its estimate is noise ...
pub const TOTAL_NOISE_SIGMAS: f64 = 2.0;
/// ... and growth of fewer samples than this, whatever the heap's size ...
pub const TOTAL_NOISE_PERIODS: f64 = 8.0;
/// ... unless it rose so consistently that no noise would (see
/// `consistency_z`: about one chance in a thousand).
pub const SIGNIFICANT_CONSISTENCY_Z: f64 = 3.0;

/// The smallest growth worth reporting for one stack or holder.
pub const MIN_SERIES_GROWTH: f64 = 64.0 * 1024.0;
/// ... and for the whole heap.
pub const MIN_TOTAL_GROWTH: f64 = 256.0 * 1024.0;

/// A one-line name for a stack: its first frames that are not allocation
/// plumbing (the allocator, the standard library, container internals:
/// see [`crate::frames`]).
pub fn stack_name(frames: &[String]) -> String {
    let table = crate::frames::global();
    let mut shown: Vec<&str> = frames
        .iter()
        .map(String::as_str)
        .filter(|f| !table.classify(f).is_plumbing())
        .take(3)
        .collect();
    if shown.is_empty() {
        shown = frames.iter().map(String::as_str).take(3).collect();
    }
    shown.join(" < ")
}

/// Trends of the allocation stacks of periodic heap profiles (in time
/// order), by `inuse_space`.
pub fn profile_trends(profiles: &[StackView]) -> TrendReport {
    let line = Timeline::new(
        seconds_of(profiles.iter().map(|p| p.time_nanos as f64 / 1e9)),
        profiles
            .iter()
            .map(|p| p.progress().map(|v| v as f64))
            .collect(),
    );
    let profiles = &profiles[..line.len()];
    let n = profiles.len();
    // Each stack's estimated bytes at each point, and the estimate's variance.
    let mut stacks: HashMap<Vec<String>, (Vec<f64>, Vec<f64>)> = HashMap::new();
    let mut totals = vec![0.0; n];
    let mut period = 0.0f64;
    for (i, p) in profiles.iter().enumerate() {
        let Ok(index) = p.sample_index(Some("inuse_space")) else {
            continue;
        };
        let objects = p.sample_index(Some("inuse_objects")).ok();
        period = period.max(p.period as f64);
        for s in &p.samples {
            let v = s.values[index] as f64;
            totals[i] += v;
            let variance = objects.map_or(0.0, |o| {
                sampled_variance(v, s.values[o] as f64, p.period as f64)
            });
            let key: Vec<String> = p.function_names(s).map(str::to_string).collect();
            let (values, variances) = stacks
                .entry(key)
                .or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
            values[i] += v;
            variances[i] += variance;
        }
    }
    // Sampling noise: a stack's estimate moves in steps of about one
    // sampling period, so one more sample is not growth; nor, as for the
    // total, is a change within twice the spread of the difference of two
    // readings, unless it rose too consistently for noise.
    let min_growth = MIN_SERIES_GROWTH.max(SAMPLING_NOISE_PERIODS * period);
    let judged_points = line.len() - line.warmup();
    let list = stacks
        .into_iter()
        .map(|(frames, (values, variances))| {
            let largest = variances.iter().copied().fold(0.0, f64::max);
            let noise = STACK_NOISE_SIGMAS * (2.0 * largest).sqrt();
            let name = stack_name(&frames);
            past_noise(
                |floor| {
                    series(
                        SeriesKind::Stack,
                        name.clone(),
                        frames.clone(),
                        &line,
                        &values,
                        floor,
                    )
                },
                min_growth,
                noise,
                judged_points,
                SIGNIFICANT_STACK_CONSISTENCY_Z,
            )
        })
        .collect();
    // The total's estimate moves in the same steps, and counts about
    // total / period samples, which vary by their square root between
    // points: growth within twice that, or by a handful of samples, is
    // noise (a steady 600 kB heap sampled every 64 KiB reads anywhere from
    // 350 to 610 kB, now and then rising over four points), unless it
    // rose at nearly every point of a longer run.
    let largest = totals.iter().copied().fold(0.0, f64::max);
    let noise = (TOTAL_NOISE_PERIODS * period).max(TOTAL_NOISE_SIGMAS * (largest * period).sqrt());
    report(&line, &totals, list, TotalSource::Profiles, noise)
}

/// How unlikely a trend's consistency (Kendall's tau over `points` points)
/// is without one: its z-score, from tau's variance under no trend,
/// 2(2n+5) / 9n(n-1). Four points rising in a row score 2.0 (one chance in
/// 24); seven score 3.2.
fn consistency_z(tau: f64, points: usize) -> f64 {
    if points < 2 {
        return 0.0;
    }
    let n = points as f64;
    3.0 * tau * (n * (n - 1.0)).sqrt() / (2.0 * (2.0 * n + 5.0)).sqrt()
}

/// A root that holds work in flight: a thread's registers or one of its
/// stack frames (`thread NAME: function`), not its locals or a static.
pub fn is_in_flight_root(root: &str) -> bool {
    root.starts_with("registers of thread ")
        || root
            .strip_prefix("thread ")
            .is_some_and(|r| r.contains(": "))
}

/// What identifies one holder from snapshot to snapshot: its name and the
/// kind of root its chain starts at. A static is itself. A thread's frames,
/// registers and locals are only where the chain happened to start that
/// time (a word in the main thread's frame now, in a worker's locals next),
/// so each kind of them is one root, whatever the thread or frame.
fn holder_key(h: &crate::snapshot::Holder) -> (String, String) {
    let root = h
        .chain
        .first()
        .map(|l| root_identity(&l.node))
        .unwrap_or_default();
    (h.node.label(), root)
}

/// Whether work in flight (a holder reached from a thread's frames or
/// registers) was held at enough of the judged points (`present`, one per
/// point) to be judged as a trend rather than a burst: at every point, or,
/// from five points on, at all but one. A structure a task owns is reached
/// from the frame of whichever thread polls the task, and at a snapshot
/// taken while no thread held it (the task parked in the runtime's lists)
/// it is missing once; a burst is missing more often than that.
pub fn held_throughout(present: impl Iterator<Item = bool>) -> bool {
    let (mut points, mut held) = (0, 0);
    for p in present {
        points += 1;
        held += usize::from(p);
    }
    held == points || (points >= 5 && held + 1 == points)
}

/// The root of a holder series whose chains start in a thread's frames or
/// registers (work in flight, see [`is_in_flight_root`]).
const IN_FLIGHT_ROOT: &str = "a thread's frame or registers";

fn root_identity(root: &crate::snapshot::Node) -> String {
    use crate::snapshot::NodeKind;
    let label = root.label();
    match root.kind {
        NodeKind::Stack | NodeKind::Registers if is_in_flight_root(&label) => {
            IN_FLIGHT_ROOT.to_string()
        }
        NodeKind::Stack | NodeKind::Registers => "a thread's stack".to_string(),
        NodeKind::ThreadLocal => "a thread's locals".to_string(),
        _ => label,
    }
}

/// Trends of the holders of periodic snapshots (in time order), by retained
/// bytes; holders of the same name and root are one series. A snapshot
/// lists its largest holders only, and which node dominates a structure can
/// change from one snapshot to the next (a stale word on a stack), so a
/// holder missing from a snapshot is not known to be empty: each holder is
/// judged on the snapshots that list it.
pub fn holder_trends(snapshots: &[SnapshotReport]) -> TrendReport {
    let line = Timeline::new(
        seconds_of(snapshots.iter().map(|s| s.time_unix_ms as f64 / 1e3)),
        snapshots
            .iter()
            .map(|s| (s.progress > 0).then_some(s.progress as f64))
            .collect(),
    );
    let snapshots = &snapshots[..line.len()];
    let n = snapshots.len();
    // Per holder: its chain's labels, and its bytes in each snapshot that
    // lists it.
    type Series = (Vec<String>, Vec<Option<f64>>);
    let mut holders: HashMap<(String, String), Series> = HashMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        for h in &s.holders {
            let e = holders
                .entry(holder_key(h))
                .or_insert_with(|| (Vec::new(), vec![None; n]));
            e.0 = h.chain.iter().map(|l| l.node.label()).collect();
            *e.1[i].get_or_insert(0.0) += h.retained.bytes as f64;
        }
    }
    let totals: Vec<f64> = snapshots
        .iter()
        .map(|s| s.totals.live.bytes as f64)
        .collect();
    // Work in flight is held by a thread's frames and registers, and from a
    // heap walk by anything that reaches it (a thread's locals reach its
    // runtime's buffers): such a holder listed now and then is a burst, not
    // a trend. Those are judged only when present throughout (see
    // `held_throughout`).
    let walked = snapshots.iter().any(|s| s.blocks_from.is_heap_walk());
    let judged = line.run.judged();
    let in_flight = |root: &str| walked || root == IN_FLIGHT_ROOT;
    let list = holders
        .into_iter()
        .filter(|((_, root), (_, values))| {
            !in_flight(root)
                || held_throughout(
                    values[judged.start..judged.end.min(n)]
                        .iter()
                        .map(Option::is_some),
                )
        })
        .map(|((name, root), (chain, values))| {
            let name = if root.is_empty() || root == name {
                name
            } else {
                format!("{name} <- {root}")
            };
            let (observed, values) = line.observed(&values);
            // A walk sees every block, and work in flight moves between
            // holders: only growth the size of the whole heap's counts.
            let min_growth = if walked {
                MIN_TOTAL_GROWTH
            } else {
                MIN_SERIES_GROWTH
            };
            let mut trend = series(
                SeriesKind::Holder,
                name,
                chain,
                &observed,
                &values,
                min_growth,
            );
            if trend.state == TrendState::Growing && !heap_grew_with(&totals, &line, &trend) {
                trend.state = TrendState::Inconclusive;
            }
            trend
        })
        .collect();
    // A walk's totals are exact: no sampling noise.
    report(&line, &totals, list, TotalSource::Snapshots, 0.0)
}

/// Whether the heap as a whole grew over the judged points by at least half
/// of what `holder` gained. A holder that gains more than the heap does took
/// over memory that was there already: which node dominates a structure
/// changes with one stale word (a static's table reaching a runtime's
/// state), and that is no growth.
fn heap_grew_with(totals: &[f64], line: &Timeline, holder: &SeriesTrend) -> bool {
    let judged = line.run.judged();
    let (Some(first), Some(last)) = (
        totals.get(judged.start),
        totals.get(judged.end.min(totals.len()).saturating_sub(1)),
    ) else {
        return true;
    };
    last - first >= (holder.last_bytes - holder.first_bytes) / 2.0
}

/// Both: stacks from the profiles, holders from the snapshots. The whole
/// heap's series comes from the snapshots when there are at least three
/// (their totals are exact), else from the profiles.
pub fn trends(profiles: &[StackView], snapshots: &[SnapshotReport]) -> TrendReport {
    let by_stack = profile_trends(profiles);
    let by_holder = holder_trends(snapshots);
    // A heap walk's totals count every block, leakscope's own included
    // where a stale word of the program points at them: the profiles'
    // estimates judge the whole heap then, and the walks name holders.
    let walked = snapshots.iter().any(|s| s.blocks_from.is_heap_walk());
    let (mut out, other) = if (snapshots.len() >= 3 && !walked) || profiles.len() < 3 {
        (by_holder, by_stack)
    } else {
        (by_stack, by_holder)
    };
    if walked && out.source == TotalSource::Profiles && walks_refute_growth(&out, &other) {
        out.total = other.total.clone();
        out.source = TotalSource::Snapshots;
        out.samples = other.samples;
        out.warmup = other.warmup;
        out.seconds = other.seconds;
    }
    out.series.extend(other.series);
    sort(&mut out.series);
    out
}

/// Whether heap walks over the same run show that a sampled estimate's
/// growth of the whole heap is noise. A walk counts every block the
/// program holds (and some of leakscope's own), so it can overstate the
/// program's growth but never hide it: when walks spanning most of the run
/// found the heap flat or shrinking, the profiles' rise is the spread of
/// their sampling (a heap of transient blocks read at 64 KiB wanders by a
/// few MB).
fn walks_refute_growth(sampled: &TrendReport, walks: &TrendReport) -> bool {
    sampled.total.state == TrendState::Growing
        && walks.samples >= 3
        && walks.seconds >= sampled.seconds / 2.0
        && matches!(walks.total.state, TrendState::Flat | TrendState::Shrinking)
}

/// Seconds since the first point; one unit per point when the points carry
/// no timestamps (profiles saved without one).
pub fn seconds_of(times: impl Iterator<Item = f64>) -> Vec<f64> {
    let times: Vec<f64> = times.collect();
    let t0 = times.first().copied().unwrap_or(0.0);
    if times.iter().all(|&t| t == t0) {
        return (0..times.len()).map(|i| i as f64).collect();
    }
    times.iter().map(|t| t - t0).collect()
}

fn sort(list: &mut [SeriesTrend]) {
    let rank = |s: &SeriesTrend| match s.state {
        TrendState::Growing => 0,
        TrendState::LevelledOff => 1,
        TrendState::Shrinking => 2,
        TrendState::Flat => 3,
        TrendState::Inconclusive => 4,
    };
    list.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(b.bytes_per_second.total_cmp(&a.bytes_per_second))
            .then(b.last_bytes.total_cmp(&a.last_bytes))
            .then(a.name.cmp(&b.name))
    });
}

/// A series judged with `judge(floor)`: growth past `floor` but within an
/// estimate's `noise` counts only if it rose too consistently for noise
/// (a consistency z-score over `points` of at least `z_needed`).
fn past_noise(
    judge: impl Fn(f64) -> SeriesTrend,
    floor: f64,
    noise: f64,
    points: usize,
    z_needed: f64,
) -> SeriesTrend {
    let judged = judge(floor);
    if judged.state == TrendState::Growing
        && noise > floor
        && consistency_z(judged.consistency, points) < z_needed
    {
        judge(noise)
    } else {
        judged
    }
}

fn report(
    line: &Timeline,
    totals: &[f64],
    mut list: Vec<SeriesTrend>,
    source: TotalSource,
    noise_floor: f64,
) -> TrendReport {
    sort(&mut list);
    let warmup = line.warmup();
    let samples = line.seconds.len() - warmup;
    let total = |floor: f64| {
        series(
            SeriesKind::Total,
            "all live memory".to_string(),
            Vec::new(),
            line,
            totals,
            floor,
        )
    };
    let judged = past_noise(
        total,
        MIN_TOTAL_GROWTH,
        noise_floor,
        samples,
        SIGNIFICANT_CONSISTENCY_Z,
    );
    TrendReport {
        source,
        samples,
        warmup,
        seconds: line.seconds.last().copied().unwrap_or(0.0)
            - line.seconds.get(warmup).copied().unwrap_or(0.0),
        total: judged,
        series: list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileBuilder;

    /// A profile at `second` with live bytes per function.
    fn profile(second: i64, progress: u64, live: &[(&str, i64)]) -> StackView {
        sampled_profile(second, progress, 4096, live)
    }

    /// The same, sampled every `period` bytes.
    fn sampled_profile(second: i64, progress: u64, period: i64, live: &[(&str, i64)]) -> StackView {
        let mut b = ProfileBuilder::new(&crate::HEAP_SAMPLE_TYPES, ("space", "bytes"), period);
        b.set_default_sample_type("inuse_space");
        b.set_time_nanos(second * 1_000_000_000);
        b.add_comment(&format!("{}{progress}", crate::PROGRESS_COMMENT));
        for (i, (name, bytes)) in live.iter().enumerate() {
            let f = b.function(name, name, "x.rs", 1);
            let l = b.location(0, 0x100 + i as u64, &[(f, 1)]);
            b.add_sample(&[l], &[1, *bytes, 1, *bytes], &[]);
        }
        StackView::new(&b.build())
    }

    fn run(f: impl Fn(i64) -> Vec<(&'static str, i64)>) -> TrendReport {
        let profiles: Vec<StackView> = (0..12).map(|t| profile(t, 100 * t as u64, &f(t))).collect();
        profile_trends(&profiles)
    }

    fn state_of(r: &TrendReport, name: &str) -> TrendState {
        r.series.iter().find(|s| s.name == name).unwrap().state
    }

    #[test]
    fn work_in_flight_missing_once_from_five_points_is_still_judged() {
        let held = |p: &[bool]| held_throughout(p.iter().copied());
        assert!(held(&[true; 4]));
        assert!(!held(&[true, false, true, true]), "four points: a burst");
        assert!(held(&[true, true, false, true, true]));
        assert!(held(&[true, true, true, true, true, true, false]));
        assert!(!held(&[true, false, true, true, false, true]), "twice");
    }

    #[test]
    fn growth_that_slows_with_the_load_has_not_levelled_off() {
        // Ten points a second apart; requests served slow to a tenth in
        // the second half (a starved machine), and the series grows by the
        // same bytes per request throughout.
        let seconds: Vec<f64> = (0..10).map(f64::from).collect();
        let mut served = 0.0;
        let progress: Vec<Option<f64>> = (0..10)
            .map(|t| {
                served += if t < 5 { 1000.0 } else { 100.0 };
                Some(served)
            })
            .collect();
        let values: Vec<f64> = progress.iter().map(|p| p.unwrap() * 1000.0).collect();
        let judged = |progress: &[Option<f64>]| {
            judge_series(
                SeriesKind::Stack,
                "s".into(),
                Vec::new(),
                &seconds,
                progress,
                &values,
                1.0,
            )
            .state
        };
        assert_eq!(judged(&progress), TrendState::Growing);
        // Without a progress count the same bytes look levelled off.
        assert_eq!(judged(&[None; 10]), TrendState::LevelledOff);
    }

    #[test]
    fn a_leak_that_pauses_at_the_end_of_a_short_run_is_growing() {
        // A four-second run, a point every half second: the running points
        // past warm-up grow by 1 MB each, then stay for two intervals (the
        // load starved for a second). A plateau of three points is a pause;
        // of four, a level.
        let judged = |values: &[f64]| {
            let seconds: Vec<f64> = (0..values.len()).map(|i| i as f64 * 0.5).collect();
            judge_series(
                SeriesKind::Stack,
                "s".into(),
                Vec::new(),
                &seconds,
                &vec![None; values.len()],
                values,
                1.0,
            )
            .state
        };
        let mb = |v: &[f64]| v.iter().map(|m| m * 1e6).collect::<Vec<f64>>();
        // 9 points: 8 running (the last is the exit's), 2 of them warm-up.
        let paused = mb(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]);
        assert_eq!(judged(&paused), TrendState::Growing);
        let levelled = mb(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]);
        assert_eq!(judged(&levelled), TrendState::LevelledOff);
    }

    #[test]
    fn steady_growth_is_growing_with_its_slope_per_second_and_per_request() {
        let r = run(|t| {
            vec![
                ("app::leak", 1_000_000 + 200_000 * t),
                ("app::steady", 5_000_000),
            ]
        });
        let leak = r.series.first().unwrap();
        assert_eq!(leak.name, "app::leak");
        assert_eq!(leak.state, TrendState::Growing);
        assert!((leak.bytes_per_second - 200_000.0).abs() < 1.0);
        assert!((leak.bytes_per_unit.unwrap() - 2_000.0).abs() < 0.01);
        assert_eq!(state_of(&r, "app::steady"), TrendState::Flat);
        assert_eq!(r.total.state, TrendState::Growing);
        // 12 points: the last (written at exit) is left out, then a quarter
        // of the 11 is warm-up.
        assert_eq!(r.warmup, 2);
        assert_eq!(r.samples, 9);
    }

    #[test]
    fn a_cache_that_fills_then_stops_levels_off() {
        let r = run(|t| vec![("app::cache", 400_000 * t.min(6))]);
        assert_eq!(state_of(&r, "app::cache"), TrendState::LevelledOff);
        assert_eq!(r.total.state, TrendState::LevelledOff);
        assert_eq!(r.growing().count(), 0);
    }

    /// The lab's steady state in sampled mode (every 64 KiB): a bounded
    /// cache of 10 kB read as 2 to 9 samples, by chance rising over the
    /// judged points. Three times as much growth is growth, and so is a
    /// small rise at every point of a longer run.
    #[test]
    fn a_sampled_totals_wander_is_not_growth() {
        let run = |samples: &[i64]| {
            let profiles: Vec<StackView> = samples
                .iter()
                .enumerate()
                .map(|(t, n)| {
                    let t = t as i64;
                    sampled_profile(t, 100 * t as u64, 65536, &[("touch", n * 65_600)])
                })
                .collect();
            profile_trends(&profiles).total.state
        };
        assert_ne!(run(&[4, 4, 5, 7, 9, 2]), TrendState::Growing);
        assert_eq!(run(&[4, 4, 10, 16, 22, 2]), TrendState::Growing);
        // Small growth at every one of nine points is no noise.
        assert_eq!(
            run(&[4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2]),
            TrendState::Growing
        );
    }

    /// A stack of blocks of `size` bytes read at each point (MB), sampled
    /// every 64 KiB like the lab.
    fn sampled_blocks_state(megabytes: &[f64], size: i64) -> TrendState {
        let profiles: Vec<StackView> = megabytes
            .iter()
            .enumerate()
            .map(|(t, mb)| {
                let t = t as i64;
                let bytes = (mb * 1e6) as i64;
                let mut b =
                    ProfileBuilder::new(&crate::HEAP_SAMPLE_TYPES, ("space", "bytes"), 65_536);
                b.set_default_sample_type("inuse_space");
                b.set_time_nanos(t * 1_000_000_000);
                b.add_comment(&format!("{}{}", crate::PROGRESS_COMMENT, 100 * t));
                let f = b.function("work", "work", "x.rs", 1);
                let l = b.location(0, 0x100, &[(f, 1)]);
                b.add_sample(&[l], &[1, bytes, bytes / size, bytes], &[]);
                StackView::new(&b.build())
            })
            .collect();
        state_of(&profile_trends(&profiles), "work")
    }

    /// The lab's arena-fragmentation workers in sampled mode: 8.5 MB of
    /// 64 KiB blocks, each read with a spread of about 0.55 MB, by chance
    /// rising over the judged points (then the exit point).
    #[test]
    fn a_sampled_stacks_wander_is_not_growth() {
        let wander = [8.5, 7.8, 8.4, 8.3, 9.0, 8.5];
        assert_ne!(sampled_blocks_state(&wander, 65_536), TrendState::Growing);
        // Three times the rise is growth.
        let rise = [8.5, 7.8, 9.3, 10.6, 11.3, 8.5];
        assert_eq!(sampled_blocks_state(&rise, 65_536), TrendState::Growing);
        // Blocks of 4 MiB are nearly always sampled, and read nearly
        // exactly: the same wander is growth.
        assert_eq!(sampled_blocks_state(&wander, 4 << 20), TrendState::Growing);
    }

    #[test]
    fn noise_and_one_spike_are_not_growth() {
        let r = run(|t| {
            let noise = [0, 90_000, -60_000, 40_000, -90_000, 70_000][t as usize % 6];
            let spike = if t == 9 { 3_000_000 } else { 0 };
            vec![("app::noisy", 2_000_000 + noise + spike)]
        });
        assert_eq!(state_of(&r, "app::noisy"), TrendState::Flat);
    }

    #[test]
    fn one_high_reading_at_the_end_is_not_growth_yet() {
        // A short run: six points, the first warm-up, the last at exit. A
        // batch in flight at the last running point (second 4), after
        // readings that rose a little.
        let short = |f: &dyn Fn(i64) -> i64| {
            let profiles: Vec<StackView> = (0..6)
                .map(|t| profile(t, 100 * t as u64, &[("app::work", f(t))]))
                .collect();
            state_of(&profile_trends(&profiles), "app::work")
        };
        let batch = |t: i64| {
            [
                8_000_000, 8_000_000, 8_100_000, 8_300_000, 14_000_000, 8_000_000,
            ][t as usize]
        };
        assert_ne!(short(&batch), TrendState::Growing);
        // Growth that goes on grows before the end too.
        assert_eq!(short(&|t| 8_000_000 + 1_000_000 * t), TrendState::Growing);
    }

    #[test]
    fn warm_up_growth_is_ignored() {
        // Everything is allocated in the first quarter of the run.
        let r = run(|t| vec![("app::warm", if t < 3 { 1_000_000 * t } else { 3_000_000 })]);
        assert_eq!(state_of(&r, "app::warm"), TrendState::Flat);
    }

    #[test]
    fn freed_memory_is_shrinking() {
        let r = run(|t| vec![("app::drain", 5_000_000 - 300_000 * t)]);
        assert_eq!(state_of(&r, "app::drain"), TrendState::Shrinking);
    }

    /// A snapshot at `second` listing one holder retaining `bytes` (or none).
    fn snapshot_with(second: u64, bytes: Option<u64>) -> SnapshotReport {
        use crate::snapshot::{Amount, Holder, Link, Node, NodeKind, Totals};
        let node = Node {
            kind: NodeKind::Static,
            name: "app::CACHE".into(),
            site: Vec::new(),
            size: None,
        };
        SnapshotReport {
            format: crate::snapshot::FORMAT.into(),
            version: crate::snapshot::VERSION,
            pid: 1,
            time_unix_ms: second * 1000,
            progress: 0,
            pause_ms: 0.0,
            analysis_ms: 0.0,
            threads: Vec::new(),
            totals: Totals {
                live: Amount {
                    blocks: 10,
                    bytes: (1 << 20) + bytes.unwrap_or(0),
                },
                ..Totals::default()
            },
            holders: bytes
                .map(|b| Holder {
                    node: node.clone(),
                    retained: Amount {
                        blocks: 1,
                        bytes: b,
                    },
                    chain: vec![Link { node, offset: 0 }],
                })
                .into_iter()
                .collect(),
            pinned: Vec::new(),
            groups: Vec::new(),
            largest: Vec::new(),
            dependency_crates: Vec::new(),
            dependency_versions: Vec::new(),
            retention: Vec::new(),
            blocks_from: Default::default(),
            with_stacks: Amount {
                blocks: 10,
                bytes: 1 << 20,
            },
            glibc_heap: None,
            memory: None,
        }
    }

    #[test]
    fn a_holder_missing_from_some_snapshots_is_judged_where_it_is_listed() {
        // A bounded cache, full from the start, that some snapshots do not
        // list (another node dominated it then).
        let present = [
            true, false, true, false, true, true, false, true, true, true,
        ];
        let snaps: Vec<SnapshotReport> = present
            .iter()
            .enumerate()
            .map(|(t, &p)| snapshot_with(t as u64, p.then_some(370_000)))
            .collect();
        let r = holder_trends(&snaps);
        assert_eq!(r.series[0].state, TrendState::Flat, "{r:#?}");
        // One that really grows still does.
        let snaps: Vec<SnapshotReport> = present
            .iter()
            .enumerate()
            .map(|(t, &p)| snapshot_with(t as u64, p.then_some(300_000 * t as u64)))
            .collect();
        assert_eq!(holder_trends(&snaps).series[0].state, TrendState::Growing);
    }

    #[test]
    fn a_holder_that_takes_over_memory_the_heap_already_had_is_not_growing() {
        // One stale word makes a static's table dominate a runtime's state:
        // the static "retains" more and more of a heap that stays at 80 MB
        // (a steady-state lab run's trend said a bounded session cache grew
        // from 57 kB to 78 MB).
        let snaps: Vec<SnapshotReport> = (0..10u64)
            .map(|t| {
                let mut s = snapshot_with(t, Some(60_000 + 8_000_000 * t));
                s.totals.live.bytes = 80_000_000;
                s
            })
            .collect();
        let r = holder_trends(&snaps);
        assert_eq!(r.series[0].state, TrendState::Inconclusive, "{r:#?}");
    }

    #[test]
    fn a_holder_is_one_series_whichever_thread_its_chain_starts_in() {
        use crate::snapshot::{Link, Node, NodeKind};
        // A task's state, reached from the main thread's locals in some
        // snapshots and from a worker's in others.
        let snaps: Vec<SnapshotReport> = (0..10u64)
            .map(|t| {
                let mut s = snapshot_with(t, Some(300_000 * t));
                let h = &mut s.holders[0];
                h.node = Node {
                    kind: NodeKind::Heap,
                    name: "h2::proto::streams::streams::Inner::new".into(),
                    site: vec!["h2::proto::streams::streams::Inner::new".into()],
                    size: Some(512),
                };
                let thread = if t % 3 == 0 {
                    "main"
                } else {
                    "tokio-rt-worker"
                };
                h.chain = vec![
                    Link {
                        node: Node {
                            kind: NodeKind::ThreadLocal,
                            name: format!("thread-locals of thread {thread}"),
                            site: Vec::new(),
                            size: None,
                        },
                        offset: 0,
                    },
                    Link {
                        node: h.node.clone(),
                        offset: 0,
                    },
                ];
                s
            })
            .collect();
        let r = holder_trends(&snaps);
        assert_eq!(r.series.len(), 1, "{r:#?}");
        assert_eq!(r.series[0].state, TrendState::Growing, "{r:#?}");
        assert_eq!(
            r.series[0].name,
            "h2::proto::streams::streams::Inner::new (heap) <- a thread's locals"
        );
    }

    /// The lab's arena-fragmentation run in sampled mode: the profiles'
    /// estimate of a heap of transient blocks rose by chance over four
    /// points, while the heap walks, which see every block, found it flat.
    /// The walks decide; growth they saw too stands.
    #[test]
    fn flat_heap_walks_overrule_a_sampled_totals_rise() {
        let judge = |walked_growth: u64| {
            let profiles: Vec<StackView> = [118, 120, 130, 140, 150, 140]
                .iter()
                .enumerate()
                .map(|(t, n)| {
                    let t = t as i64;
                    sampled_profile(t, 100 * t as u64, 65536, &[("work", n * 65_536)])
                })
                .collect();
            let walks: Vec<SnapshotReport> = (0..6u64)
                .map(|t| {
                    let mut s = snapshot_with(t, None);
                    s.totals.live.bytes = 8_000_000 + t * walked_growth;
                    s.blocks_from = crate::snapshot::BlocksFrom::HeapWalk;
                    s
                })
                .collect();
            (profile_trends(&profiles), trends(&profiles, &walks))
        };
        let (sampled, flat) = judge(1_000);
        assert_eq!(sampled.total.state, TrendState::Growing, "{sampled:#?}");
        assert_eq!(flat.total.state, TrendState::Flat, "{flat:#?}");
        assert_eq!(flat.source, TotalSource::Snapshots);
        let (_, grown) = judge(400_000);
        assert_eq!(grown.total.state, TrendState::Growing, "{grown:#?}");
        assert_eq!(grown.source, TotalSource::Profiles);
    }

    #[test]
    fn too_few_points_are_inconclusive() {
        let profiles: Vec<StackView> = (0..3)
            .map(|t| profile(t, 0, &[("app::x", 1_000_000 * t)]))
            .collect();
        let r = profile_trends(&profiles);
        assert_eq!(r.total.state, TrendState::Growing);
        let profiles = &profiles[..2];
        assert_eq!(
            profile_trends(profiles).total.state,
            TrendState::Inconclusive
        );
    }
}
