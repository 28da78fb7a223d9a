//! Full mode: the profile's figures per planted function equal the bytes and
//! counts the test allocated, exactly.
//!
//! Wrapping jemalloc; the tests are in `suites/full_exact.rs`.

type Inner = tikv_jemallocator::Jemalloc;
const INNER: Inner = tikv_jemallocator::Jemalloc;

mod common;
include!("suites/full_exact.rs");
