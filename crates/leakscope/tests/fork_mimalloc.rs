//! `fork` while other threads allocate: parent and child both keep working.
//! Without the fork handlers, a child forked while another thread held a
//! profiler lock would hang at its first allocation.
//!
//! Wrapping mimalloc; the tests are in `suites/fork.rs`.

type Inner = mimalloc::MiMalloc;
const INNER: Inner = mimalloc::MiMalloc;

mod common;
include!("suites/fork.rs");
