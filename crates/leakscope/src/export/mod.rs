//! Export: reading the collection tables into a [`HeapProfile`], and writing
//! it as pprof. Runs in ordinary code (never inside the allocator), inside an
//! [`UntrackedScope`] so that its own allocations stay out of the figures.

pub(crate) mod at_exit;
pub(crate) mod maps;
mod names_memo;
pub(crate) mod periodic;
mod pprof;
pub(crate) mod stacks;
pub(crate) mod symbolize;
pub(crate) mod symbolize_later;
mod writer_process;

use std::io;
use std::path::Path;
use std::time::SystemTime;

pub(crate) use leakscope_profile::atomic_file::write_atomic;

use crate::collect::sampler::weight;
use crate::collect::stack_table::load_f64;
use crate::collect::thread::UntrackedScope;
use crate::collect::{self, LIVE, STACKS};
use crate::config::Mode;

/// The figures of one call site (stack + labels). Sampled figures are
/// already unbiased estimates; full-mode figures are exact.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteFigures {
    /// Return addresses, innermost first (allocator frames included).
    pub frames: Vec<usize>,
    /// Labels the allocations carried (see [`crate::label`]).
    pub labels: Vec<(String, String)>,
    pub alloc_objects: f64,
    pub alloc_space: f64,
    pub inuse_objects: f64,
    pub inuse_space: f64,
}

/// A heap profile read from the running process: per call site, what was
/// allocated since start and what is live now.
#[derive(Debug, Clone)]
pub struct HeapProfile {
    mode: Mode,
    rate: u64,
    progress: u64,
    time: SystemTime,
    sites: Vec<SiteFigures>,
}

/// Sites that may appear while the live table is read for a profile.
const NEW_SITES_ROOM: usize = 4096;

/// Reads the current heap profile of this process.
pub fn heap_profile() -> HeapProfile {
    let _scope = UntrackedScope::enter();
    let rate = collect::rate();
    let mut sites: Vec<SiteFigures> = Vec::new();
    let read_site = |id: u32| {
        let r = STACKS.record(id);
        let exact_objects = r
            .counters
            .exact_objects
            .load(std::sync::atomic::Ordering::Relaxed) as f64;
        let exact_bytes = r
            .counters
            .exact_bytes
            .load(std::sync::atomic::Ordering::Relaxed) as f64;
        SiteFigures {
            frames: r.frames_now(),
            labels: crate::labels::labels_of(r.labels()),
            alloc_objects: exact_objects + load_f64(&r.counters.estimated_objects),
            alloc_space: exact_bytes + load_f64(&r.counters.estimated_bytes),
            inuse_objects: 0.0,
            inuse_space: 0.0,
        }
    };
    sites.extend((0..STACKS.len()).map(read_site));
    let mut per_thread = Vec::new();
    crate::collect::thread_counters::sum_into(&mut per_thread);
    for (id, (objects, bytes)) in per_thread.into_iter().enumerate() {
        while sites.len() <= id {
            sites.push(read_site(sites.len() as u32));
        }
        sites[id].alloc_objects += objects;
        sites[id].alloc_space += bytes;
    }
    // The closure below runs under a live-table shard lock: nothing in it may
    // free or move a block (in full mode a free looks the block up in the
    // table, and could need the very shard held: a self-deadlock). Room for
    // sites created meanwhile is made first; a block of a site beyond it is
    // left for the next profile.
    // Sites are read after (reading one allocates and frees).
    let known = sites.len();
    sites.reserve(NEW_SITES_ROOM);
    LIVE.for_each(|_, entry| {
        // A site created after the loop above: a place for it now.
        while sites.len() <= entry.site as usize {
            if sites.len() == sites.capacity() {
                return;
            }
            sites.push(SiteFigures {
                frames: Vec::new(),
                labels: Vec::new(),
                alloc_objects: 0.0,
                alloc_space: 0.0,
                inuse_objects: 0.0,
                inuse_space: 0.0,
            });
        }
        let w = if entry.sampled {
            weight(entry.size, rate)
        } else {
            1.0
        };
        let site = &mut sites[entry.site as usize];
        site.inuse_objects += w;
        site.inuse_space += w * entry.size as f64;
    });
    for (id, site) in sites.iter_mut().enumerate().skip(known) {
        let read = read_site(id as u32);
        *site = SiteFigures {
            inuse_objects: site.inuse_objects,
            inuse_space: site.inuse_space,
            ..read
        };
    }
    // Blocks allocated before a site's counters were read can be live with
    // no allocation counted yet; a profile must never show more in use than
    // allocated.
    for s in &mut sites {
        s.alloc_objects = s.alloc_objects.max(s.inuse_objects);
        s.alloc_space = s.alloc_space.max(s.inuse_space);
    }
    sites.retain(|s| s.alloc_objects > 0.0 || s.inuse_objects > 0.0);
    HeapProfile {
        mode: collect::mode(),
        rate,
        progress: collect::progress(),
        time: SystemTime::now(),
        sites,
    }
}

impl HeapProfile {
    /// The mode the process was in when the profile was read.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The work reported with [`crate::add_progress`] when it was read.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Mean bytes between samples (meaningful in sampled mode).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Per-site figures, unsymbolised.
    pub fn sites(&self) -> &[SiteFigures] {
        &self.sites
    }

    /// Builds the pprof message: symbolises every address (in one batch) and
    /// drops the allocator's own frames.
    pub fn to_pprof(&self) -> leakscope_profile::pb::Profile {
        let _scope = UntrackedScope::enter();
        pprof::build(self, pprof::Naming::Now)
    }

    /// The pprof message with frames left unnamed: one location per return
    /// address (its call site) in its mapping, whose file, build ID and
    /// file offset let a reader name it later from the binary on disk
    /// ([`crate::symbolize_profile`], as `leakscope` does when it reads
    /// one). Nothing is symbolised here: no debug information is read.
    pub fn to_pprof_unsymbolized(&self) -> leakscope_profile::pb::Profile {
        let _scope = UntrackedScope::enter();
        pprof::build(self, pprof::Naming::Later)
    }

    /// The gzipped pprof encoding, as `go tool pprof` reads it.
    pub fn encode_pprof(&self) -> Vec<u8> {
        let _scope = UntrackedScope::enter();
        leakscope_profile::encode_gzip(&self.to_pprof())
    }

    /// Writes the gzipped pprof encoding to `path`, atomically (a crash
    /// leaves the old file or none, never a truncated one); its frames
    /// named, or left for the reader with `LEAKSCOPE_SYMBOLIZE=later`.
    pub fn write_pprof(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let _scope = UntrackedScope::enter();
        let profile = if crate::config::symbolize_later() {
            self.to_pprof_unsymbolized()
        } else {
            self.to_pprof()
        };
        write_atomic(path, &leakscope_profile::encode_gzip(&profile))
    }
}
