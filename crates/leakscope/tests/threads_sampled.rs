//! Sampled mode under concurrency, with the mode switched back and forth
//! while eight threads allocate and free: no crash, no deadlock, and once
//! everything is freed no tracked block is left behind (a stale entry would
//! mean a free was missed across a mode switch).
//!
//! Wrapping the system allocator (glibc); the tests are in `suites/threads_sampled.rs`.

type Inner = std::alloc::System;
const INNER: Inner = std::alloc::System;

mod common;
include!("suites/threads_sampled.rs");
