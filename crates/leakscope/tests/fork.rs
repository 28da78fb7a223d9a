//! `fork` while other threads allocate: parent and child both keep working.
//! Without the fork handlers, a child forked while another thread held a
//! profiler lock would hang at its first allocation.
//!
//! Wrapping the system allocator (glibc); the tests are in `suites/fork.rs`.

type Inner = std::alloc::System;
const INNER: Inner = std::alloc::System;

mod common;
include!("suites/fork.rs");
