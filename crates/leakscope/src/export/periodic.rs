//! `LEAKSCOPE_INTERVAL=SECS` with `LEAKSCOPE_DIR=DIR`: a heap profile (and,
//! in full mode, a heap snapshot) every interval, for any program using the
//! allocator, so that growth can be followed over time (`leakscope trend`,
//! `leakscope report`). Files: `DIR/heap-<pid>-<seq>.pb.gz`,
//! `DIR/memory-<pid>-<seq>.json` (where RSS goes, without a heap walk) and
//! `DIR/snapshot-<pid>-<seq>.json`; the last set is written at exit. Each
//! file is written atomically (temporary, fsync, rename): a process killed
//! mid-write leaves complete files and at most one hidden temporary.
//!
//! The writer is a plain `pthread` started at initialisation (which happens
//! inside the first allocation, possibly before `main`): it sleeps first, so
//! it only runs Rust code once the program is up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::collect::thread::UntrackedScope;
use crate::config::{PERIODIC_DIR, PERIODIC_INTERVAL_MS};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Sets written to the end (each file complete or reported as failed).
static COMPLETED: AtomicU64 = AtomicU64::new(0);

/// How many periodic sets this process has written so far: a program
/// (or a test) that must be observed over several sets can wait for them
/// instead of guessing how long a set takes on a loaded machine.
pub fn sets_written() -> u64 {
    COMPLETED.load(Ordering::Acquire)
}

/// The interval between periodic sets, if they are written at all.
pub fn interval() -> Option<Duration> {
    let ms = PERIODIC_INTERVAL_MS.load(Ordering::Relaxed);
    (PERIODIC_DIR.get().is_some() && ms > 0).then(|| Duration::from_millis(ms))
}

/// Whether the last attempt to create the directory failed (so that the
/// failure is reported once, not every interval).
static DIR_FAILED: AtomicBool = AtomicBool::new(false);

/// Held while a set of outputs is written: the set written at exit waits
/// for the writer thread's, so its memory breakdown and snapshot are never
/// read while the other set is half written (its writer child running, or
/// a symbolizer loaded where the child could not be made).
static ONE_SET_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Takes [`ONE_SET_AT_A_TIME`] (a writer that panicked left nothing to
/// protect).
pub(super) fn one_set_at_a_time() -> MutexGuard<'static, ()> {
    ONE_SET_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// How a set's files are symbolised and written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// In a forked child (`writer_process`), so that the service never
    /// holds the parsed debug information: the default.
    Child,
    /// In this process, sharing the caller's symbolizer
    /// (`LEAKSCOPE_WRITER=process`).
    ThisProcess,
}

impl Writer {
    fn configured() -> Writer {
        if crate::config::writer_in_child() {
            Writer::Child
        } else {
            Writer::ThisProcess
        }
    }
}

/// Writes the next profile (and snapshot) into the directory.
pub(crate) fn write_next() {
    let _scope = UntrackedScope::enter();
    let _one = one_set_at_a_time();
    write_set(Writer::configured());
}

/// The set at exit, for a caller that holds [`one_set_at_a_time`]: its
/// peak memory would otherwise be the service's largest.
pub(super) fn write_next_holding_the_lock() {
    write_set(Writer::configured());
}

fn write_set(writer: Writer) {
    let Some(dir) = PERIODIC_DIR.get() else {
        return;
    };
    let dir = crate::config::expand_path(dir);
    if !ensure_dir(&dir) {
        return;
    }
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let profile = super::heap_profile();
    // Before the profile is symbolised (whose debug information would
    // count as leakscope's heap): where RSS goes, without a walk.
    match crate::memory::breakdown_with_profile(&profile) {
        Ok(memory) => {
            if let Err(e) = super::write_atomic(
                format!("{dir}/memory-{pid}-{seq:04}.json"),
                memory.to_json().as_bytes(),
            ) {
                eprintln!("leakscope: cannot write a periodic memory breakdown into {dir}: {e}");
            }
        }
        Err(e) => eprintln!("leakscope: cannot read this process's memory map: {e}"),
    }
    // The snapshot too is taken before anything is symbolised, and named
    // by the writer with the profile: at exit this set is written on a
    // program thread, whose thread-locals would hold a symbolizer as the
    // program's. In every mode: outside full mode the snapshot walks
    // glibc's heap (blocks from the walk, stacks from the sampled blocks).
    let snapshot = crate::snapshot::snapshot_unnamed();
    if let Err(e) = &snapshot {
        eprintln!("leakscope: periodic snapshot failed: {e}");
    }
    let write = || {
        let mut errors = Vec::new();
        if let Err(e) = profile.write_pprof(format!("{dir}/heap-{pid}-{seq:04}.pb.gz")) {
            errors.push(format!("cannot write a periodic profile into {dir}: {e}"));
        }
        if let Ok(unnamed) = snapshot {
            let written = unnamed.name().map_err(|e| e.to_string()).and_then(|snap| {
                snap.write(format!("{dir}/snapshot-{pid}-{seq:04}.json"))
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = written {
                errors.push(format!("cannot write a periodic snapshot into {dir}: {e}"));
            }
        }
        errors
    };
    match writer {
        Writer::Child => super::writer_process::write_in_child(write),
        Writer::ThisProcess => {
            for e in super::symbolize::with_shared_symbolizer(write) {
                eprintln!("leakscope: {e}");
            }
        }
    }
    COMPLETED.fetch_add(1, Ordering::Release);
}

/// Creates the directory if needed. A failure is reported once (with the
/// system's reason), until the directory can be created again.
fn ensure_dir(dir: &str) -> bool {
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            DIR_FAILED.store(false, Ordering::Relaxed);
            true
        }
        Err(e) => {
            if !DIR_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "leakscope: cannot create LEAKSCOPE_DIR {dir}: {e}; no periodic profiles \
                     until it can be created"
                );
            }
            false
        }
    }
}

extern "C" fn writer_loop(_: *mut libc::c_void) -> *mut libc::c_void {
    crate::own_threads::register_current();
    let interval = Duration::from_millis(PERIODIC_INTERVAL_MS.load(Ordering::Relaxed));
    if let Some(dir) = PERIODIC_DIR.get() {
        // Says at once, not an interval later, if the directory is unusable.
        let _scope = UntrackedScope::enter();
        ensure_dir(&crate::config::expand_path(dir));
    }
    // Before any writer child is forked, so that every child shares it.
    super::names_memo::create();
    std::thread::sleep(pause_before_next_set(interval, None));
    loop {
        let started = Instant::now();
        write_next();
        let took = started.elapsed();
        std::thread::sleep(pause_before_next_set(interval, Some(took)).saturating_sub(took));
    }
}

/// How long the writer waits from the start of one set to the start of the
/// next: one interval, so that sets keep the cadence the user asked for
/// whatever a set costs (sleeping an interval after each set stretched a
/// 0.5 s interval to a 1 s period where symbolising took 0.5 s, halving
/// the points a trend is judged on). A set that takes longer than the
/// interval is followed by a pause of a quarter of it (at least a quarter
/// of the time the writer is idle), so that the writer never takes a core
/// of the service for good. `took`: the last set's duration (None before
/// the first).
fn pause_before_next_set(interval: Duration, took: Option<Duration>) -> Duration {
    match took {
        None => interval,
        Some(took) => interval.max(took + interval / 4),
    }
}

/// Starts the writer if both settings are present. Called once, right after
/// initialisation.
pub(crate) fn install() {
    if PERIODIC_DIR.get().is_none() || PERIODIC_INTERVAL_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: pthread_create with default attributes and a plain extern "C"
    // entry point; the thread id is not needed afterwards.
    unsafe {
        let mut thread: libc::pthread_t = std::mem::zeroed();
        if libc::pthread_create(
            &mut thread,
            std::ptr::null(),
            writer_loop,
            std::ptr::null_mut(),
        ) == 0
        {
            libc::pthread_detach(thread);
        } else {
            crate::config::warn(&["cannot start the periodic profile writer"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keep_the_cadence_and_leave_the_writer_idle_between_slow_ones() {
        let interval = Duration::from_millis(500);
        assert_eq!(pause_before_next_set(interval, None), interval);
        // A set quicker than the interval: the next starts an interval
        // after this one started.
        assert_eq!(
            pause_before_next_set(interval, Some(Duration::from_millis(300))),
            interval
        );
        // A slow set: a quarter interval of rest after it.
        assert_eq!(
            pause_before_next_set(interval, Some(Duration::from_millis(900))),
            Duration::from_millis(1025)
        );
    }
}
