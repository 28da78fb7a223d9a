//! # leakscope
//!
//! A memory-leak self-check for Rust services. This crate is the runtime: a
//! global allocator that records where memory is allocated, cheaply enough to
//! leave on in production, and writes heap profiles that `go tool pprof` and
//! the `leakscope` CLI read.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: leakscope::Profiler = leakscope::Profiler::new();
//!
//! fn main() {
//!     // ... run the service ...
//!     leakscope::heap_profile().write_pprof("heap.pb.gz").unwrap();
//! }
//! ```
//!
//! ## Modes
//! - `sampled` (default): about one allocation per `LEAKSCOPE_RATE` bytes
//!   (512 KiB) is tracked, chosen by a Poisson process over allocated bytes;
//!   every figure is an unbiased estimate.
//! - `full`: every allocation is tracked; figures are exact.
//! - `off`: calls go straight to the wrapped allocator.
//!
//! Set the mode with `LEAKSCOPE_MODE`, or in code with
//! [`Profiler::with_mode`] and [`set_mode`].
//!
//! ## Call stacks
//! Stacks are captured by walking frame pointers. Build with
//! `-C force-frame-pointers=yes` (in `.cargo/config.toml`:
//! `[build] rustflags = ["-C", "force-frame-pointers=yes"]`) and keep line
//! tables in release builds (`[profile.release] debug = "line-tables-only"`)
//! so that profiles name functions, files and lines. Where frame pointers are
//! missing, libunwind (if installed) finishes the stack.
//!
//! ## The four views
//! A heap profile has four values per call stack: `alloc_objects` and
//! `alloc_space` (allocations and bytes since start), `inuse_objects` and
//! `inuse_space` (what is still live: allocated minus freed). Growth of
//! `inuse_space` over time is what a leak looks like.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod collect;
#[cfg(test)]
mod collect_model_tests;
mod config;
pub mod descriptors;
mod export;
#[cfg(feature = "http")]
pub mod http;
mod labels;
pub mod memory;
pub mod outside;
mod own_threads;
mod profiler;
#[cfg(feature = "push")]
pub mod push;
pub mod snapshot;
#[cfg(feature = "tracing")]
pub mod span_labels;
pub mod testing;

pub use collect::{add_progress, mode, progress, rate, reattribute, set_mode, stats, Stats};
pub use config::{Mode, DEFAULT_RATE};

/// The `LEAKSCOPE_*` variables: one table, read and validated once.
pub mod settings {
    pub use crate::config::{rejected_variables, Variable, VARIABLES};
}
/// The periodic sets written with `LEAKSCOPE_INTERVAL` and `LEAKSCOPE_DIR`.
pub mod periodic {
    pub use crate::export::periodic::{interval, sets_written};
}
pub use descriptors::register_descriptor_set;
pub use export::symbolize_later::{symbolize_profile, NamedProfile};
pub use export::{heap_profile, HeapProfile, SiteFigures};
pub use labels::{label, LabelGuard};
pub use profiler::Profiler;
pub use snapshot::{
    snapshot, snapshot_with, BlockSource, CrossCheckReport, Mallinfo2, Snapshot, SnapshotError,
    SnapshotOptions,
};

/// The event interface for front ends other than [`Profiler`] (the
/// `LD_PRELOAD` library). Application code does not need it.
pub mod frontend {
    pub use crate::collect::thread::{AllocSlowPath, UntrackedScope};
    pub use crate::collect::unloaded::code_unloaded;
    pub use crate::collect::{
        alloc_sampled, count_down, free_sampled, in_checked_range, in_sample_heap, initialize,
        may_be_tracked, needs_free_check, plan_alloc, plan_slow, plan_slow_on, record_alloc,
        restore_after_failed_realloc, sample_heap_usable_size, sampled_from_heap,
        set_external_countdown, untrack, Plan, TrackedBlock, ALWAYS_CHECKED_SIZE,
    };
    pub use crate::config::{HeapKind, Settings};
    pub use crate::export::at_exit::install as install_standard_outputs;
    pub use crate::export::stacks::mark_own_code;
}
