//! `fork` while other threads allocate: parent and child both keep working.
//! Without the fork handlers, a child forked while another thread held a
//! profiler lock would hang at its first allocation.
//!
//! Wrapping jemalloc; the tests are in `suites/fork.rs`.

type Inner = tikv_jemallocator::Jemalloc;
const INNER: Inner = tikv_jemallocator::Jemalloc;

mod common;
include!("suites/fork.rs");
