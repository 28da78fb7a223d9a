//! Eight threads allocate, reallocate and free millions of blocks at once in
//! full mode; at the end the profile's in-use figures equal the truth each
//! thread kept, exactly. Threads also free memory from thread-local
//! destructors while they exit.
//!
//! Wrapping jemalloc; the tests are in `suites/threads_full.rs`.

type Inner = tikv_jemallocator::Jemalloc;
const INNER: Inner = tikv_jemallocator::Jemalloc;

mod common;
include!("suites/threads_full.rs");
