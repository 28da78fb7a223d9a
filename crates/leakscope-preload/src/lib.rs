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
//! Every block comes from glibc's own entry points (`__libc_malloc`,
//! `__libc_memalign`, ...), called directly: no `dlsym` bootstrap, and every
//! block handed out is a genuine glibc chunk, so `malloc_usable_size` simply
//! forwards to glibc's. Small sampled blocks are allocated 256-byte aligned,
//! so `free` of most other small blocks returns after one test of the
//! address's low bits.
//!
//! The library's own Rust allocations (symbolising, building profiles,
//! snapshots) go straight to glibc through [`LibcDirect`], so they never come
//! back through these hooks. A panic cannot unwind into C: unwinding out of
//! an `extern "C"` function aborts.

mod at_exit;
mod hooks;
mod libc_direct;

pub use libc_direct::LibcDirect;

#[global_allocator]
static OWN_ALLOCATIONS: LibcDirect = LibcDirect;
