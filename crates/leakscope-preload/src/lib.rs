//! The `LD_PRELOAD` front end: `malloc` and friends for unmodified programs
//! (Rust, C, C++), on top of the same collection core as the
//! `#[global_allocator]` front end (`leakscope::frontend`): one sampler, one
//! stack table, one live table, one pprof export.
//!
//! ```sh
//! LD_PRELOAD=libleakscope_preload.so LEAKSCOPE_MODE=full LEAKSCOPE_OUT=heap.pb.gz ./program
//! ```
//! (`leakscope run -- ./program` sets this up.)
//!
//! Blocks come from glibc's own entry points (`__libc_malloc`,
//! `__libc_memalign`, ...), called directly: no `dlsym` bootstrap. The
//! exception is sampled blocks under 64 KiB, which come from the collection
//! core's sample heap (leakscope's own address range), so that `free` tells
//! them from the rest by address; `malloc_usable_size` answers for them and
//! forwards every other block to glibc's.
//!
//! The library's own Rust allocations (symbolising, building profiles,
//! snapshots) go straight to glibc through [`LibcDirect`], so they never come
//! back through these hooks. A panic cannot unwind into C: unwinding out of
//! an `extern "C"` function aborts.

mod at_exit;
mod countdown;
mod hooks;
mod libc_direct;
mod unload;

pub use libc_direct::LibcDirect;

#[global_allocator]
static OWN_ALLOCATIONS: LibcDirect = LibcDirect;
