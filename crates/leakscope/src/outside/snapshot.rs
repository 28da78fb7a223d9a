//! Snapshots of images: who holds what in a core file or an attached
//! process, by the in-process snapshot's analysis (see
//! `snapshot::foreign`), with the image's own threads, objects and libc.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::objects::LoadedObject;
use super::{Attached, CoreImage, ThreadState};
use crate::snapshot::foreign::{self, ForeignCode, ForeignImage, ForeignThread};
use crate::snapshot::image::Memory;
use crate::snapshot::modules::ForeignObject;
use crate::Snapshot;

/// The snapshot of a core file (no pause: the process is gone or was
/// stopped by whoever took the core).
pub fn snapshot_of_core(core: &CoreImage, time_unix_ms: u64) -> Result<Snapshot, String> {
    let names = |t: &ThreadState| {
        if t.tid == core.pid() {
            "main".to_string()
        } else {
            String::new()
        }
    };
    snapshot_of(
        core,
        core.pid() as u32,
        time_unix_ms,
        Duration::ZERO,
        core.threads(),
        core.objects(),
        names,
    )
}

/// The snapshot of an attached process's image; threads are named as the
/// target names them now (`/proc/PID/task/TID/comm`).
pub fn snapshot_of_attached(attached: &Attached) -> Result<Snapshot, String> {
    let pid = attached.pid;
    let names = |t: &ThreadState| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{}/comm", t.tid))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    snapshot_of(
        &attached.image,
        pid as u32,
        now,
        attached.pause,
        attached.threads(),
        attached.image.objects(),
        names,
    )
}

fn snapshot_of<M: Memory>(
    mem: &M,
    pid: u32,
    time_unix_ms: u64,
    pause: Duration,
    threads: &[ThreadState],
    objects: &[LoadedObject],
    name_of: impl Fn(&ThreadState) -> String,
) -> Result<Snapshot, String> {
    let glibc = super::heap::prepare(mem, objects, threads)?;
    let names: Vec<String> = threads.iter().map(&name_of).collect();
    let threads: Vec<ForeignThread> = threads
        .iter()
        .zip(&names)
        .map(|(t, name)| {
            // A name several threads share (often the program's) is told
            // apart by the thread id.
            let name = if name.is_empty() || names.iter().filter(|n| *n == name).count() == 1 {
                name.clone()
            } else {
                format!("{name}/{}", t.tid)
            };
            ForeignThread {
                tid: t.tid,
                // leakscope's own threads in an instrumented target: what
                // they hold is not the program's.
                own: name.starts_with("leakscope-"),
                name,
                regs: t.regs,
                tp: t.tp,
            }
        })
        .collect();
    let readable: Vec<&LoadedObject> = objects.iter().filter(|o| o.file.is_some()).collect();
    let modules: Vec<ForeignObject> = readable
        .iter()
        .map(|o| ForeignObject {
            name: o.name.clone(),
            file: o
                .file
                .as_ref()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            base: o.base,
            writable: o.writable.clone(),
        })
        .collect();
    let code: Vec<ForeignCode> = readable
        .iter()
        .filter_map(|o| {
            Some(ForeignCode {
                file: o.file.clone()?,
                base: o.base,
                mappings: o.mappings.clone(),
            })
        })
        .collect();
    foreign::analyse(&ForeignImage {
        mem,
        pid,
        time_unix_ms,
        pause,
        threads: &threads,
        objects: &modules,
        code: &code,
        glibc,
    })
    .map_err(|e| e.to_string())
}
