//! The snapshot analysis over another process's memory (a core file, a
//! frozen copy of an attached process): the same phases as the in-process
//! snapshot's child (`child::analyse`), with the blocks from a walk of its
//! glibc heap, the roots from its objects' writable segments and its
//! threads' registers, stacks and TLS, and names from its files on disk.
//!
//! Out of process nothing is frozen but the image itself, so this may
//! allocate; it runs in the calling process.

use std::time::{Duration, Instant};

use leakscope_profile::snapshot::ThreadReport;

use super::child::{self, ChildInput, RootLayout, TableOf, ThreadRoots};
use super::foreign_table;
use super::glibc::{self, Prepared};
use super::image::Memory;
use super::modules::{self, ForeignObject};
use super::report::{CodeOf, ReportMeta, Resolved};
use super::threads::SAVED_REGS;
use super::wire::Output;
use super::{BlockSource, CallerFrame, Snapshot, SnapshotError};
use crate::export::symbolize::ObjectCode;

/// A thread of the image.
pub(crate) struct ForeignThread {
    pub(crate) tid: i32,
    pub(crate) name: String,
    pub(crate) regs: [u64; SAVED_REGS],
    pub(crate) tp: u64,
    /// One of leakscope's own threads (in an instrumented target).
    pub(crate) own: bool,
}

/// An object of the image with what symbolising its code needs.
pub(crate) struct ForeignCode {
    pub(crate) file: std::path::PathBuf,
    pub(crate) base: u64,
    pub(crate) mappings: Vec<(u64, u64)>,
}

/// What the analysis of another process's image works from.
pub(crate) struct ForeignImage<'a, M: Memory> {
    pub(crate) mem: &'a M,
    pub(crate) pid: u32,
    pub(crate) time_unix_ms: u64,
    /// How long the target was stopped to take the image.
    pub(crate) pause: Duration,
    pub(crate) threads: &'a [ForeignThread],
    pub(crate) objects: &'a [ForeignObject],
    pub(crate) code: &'a [ForeignCode],
    pub(crate) glibc: Prepared,
}

/// Runs the analysis over the image and names its results.
pub(crate) fn analyse<M: Memory>(image: &ForeignImage<'_, M>) -> Result<Snapshot, SnapshotError> {
    if image.glibc.layout.is_none() {
        return Err(SnapshotError::NoHeapWalk(format!(
            "glibc {}.{}: {}",
            image.glibc.version.0,
            image.glibc.version.1,
            glibc::WalkError::UnknownRelease.message()
        )));
    }
    let modules = modules::foreign_modules(image.objects);
    // An instrumented target's own table gives its blocks' exact sizes and
    // allocation stacks; any other target's heap is walked alone. A table
    // that cannot be read (another leakscope's layout) leaves the walk.
    let table =
        foreign_table::find(image.objects).and_then(|at| foreign_table::read(image.mem, at).ok());
    let segments: Vec<(u64, u64)> = modules.segments.iter().map(|s| (s.start, s.end)).collect();
    let variables: Vec<(u64, u64)> = modules.variables.iter().map(|v| (v.start, v.end)).collect();
    let own_variables: Vec<bool> = modules.variables.iter().map(|v| v.own).collect();
    let thread_roots: Vec<ThreadRoots> = image
        .threads
        .iter()
        .map(|t| ThreadRoots {
            stopped: true,
            exited: false,
            is_self: false,
            own: t.own,
            regs: t.regs,
            tp: t.tp,
        })
        .collect();
    let layout = RootLayout {
        variables: variables.len() as u32,
        segments: segments.len() as u32,
        threads: thread_roots.len() as u32,
        anonymous: child::MAX_ANONYMOUS_ROOTS,
    };
    let mut out = Output::new_private(
        layout.roots() as usize + 1,
        heap_block_bound(image.mem) + 16,
    )
    .ok_or_else(|| SnapshotError::Fork(std::io::Error::other("no memory for the results")))?;
    let input = ChildInput {
        caller: CallerFrame::default(),
        rules: super::child::Rules::Holders,
        segments: &segments,
        variables: &variables,
        own_variables: &own_variables,
        own_code: &modules.own_code,
        threads: &thread_roots,
        static_tls_bytes: image.glibc.static_tls_bytes,
        source: BlockSource::HeapWalk,
        glibc: image.glibc,
        table: match &table {
            Some(t) => TableOf::Read {
                blocks: &t.blocks,
                sample_heap: t.sample_heap,
            },
            None => TableOf::Walked,
        },
        heuristics: 0,
        // Its heap is glibc's, walked.
        anonymous_roots: true,
        scan_helpers: super::parallel_scan::helpers_for(None),
    };
    let started = Instant::now();
    child::analyse(image.mem, &input, &mut out)
        .ok_or_else(|| SnapshotError::Analysis("out of memory".into()))?;
    let analysis = started.elapsed();
    let results = out
        .into_results()
        .ok_or_else(|| SnapshotError::Analysis("the analysis wrote no results".into()))?;
    let header = results.header;
    if header.walk_error != 0 {
        let why = glibc::WalkError::from_code(header.walk_error)
            .map_or("unknown error", glibc::WalkError::message);
        return Err(SnapshotError::HeapWalk(format!(
            "{why} (glibc {}.{})",
            image.glibc.version.0, image.glibc.version.1
        )));
    }
    let infos: Vec<super::threads::ThreadInfo> = image
        .threads
        .iter()
        .map(|t| super::threads::ThreadInfo {
            tid: t.tid,
            name: t.name.clone(),
        })
        .collect();
    let code: Vec<ObjectCode<'_>> = image
        .code
        .iter()
        .map(|c| ObjectCode {
            file: &c.file,
            base: c.base,
            mappings: &c.mappings,
        })
        .collect();
    let resolved = Resolved::new(
        results.roots,
        results.blocks,
        results.fields,
        &modules,
        &infos,
        CodeOf::Objects {
            code: &code,
            sites: table.as_ref().map(|t| &t.sites),
        },
    );
    let thread_reports: Vec<ThreadReport> = image
        .threads
        .iter()
        .map(|t| ThreadReport {
            tid: t.tid,
            name: t.name.clone(),
            stopped: true,
        })
        .collect();
    let mut report = resolved.report(
        &header,
        ReportMeta {
            time_unix_ms: image.time_unix_ms,
            pause: image.pause,
            threads: &thread_reports,
            source: BlockSource::HeapWalk,
        },
    );
    report.pid = image.pid;
    let steps = header.graph_steps + resolved.naming_steps;
    Ok(Snapshot {
        report,
        resolved,
        pause: image.pause,
        analysis,
        phases: std::array::from_fn(|i| {
            (
                child::Phase::ALL[i].name(),
                Duration::from_nanos(header.phase_ns[i]),
            )
        }),
        steps,
        scan_processes: header.scan_processes,
        cross_check: None,
    })
}

/// At most how many blocks the image's heap can hold (every chunk is at
/// least 32 bytes, in the program break area or anonymous memory).
fn heap_block_bound<M: Memory>(mem: &M) -> usize {
    let bytes: u64 = mem
        .maps()
        .regions()
        .iter()
        .filter(|r| {
            r.writable
                && matches!(
                    r.kind,
                    super::image::RegionKind::Anonymous | super::image::RegionKind::Brk
                )
        })
        .map(|r| r.end - r.start)
        .sum();
    (bytes / glibc::layout::MIN_CHUNK) as usize
}
