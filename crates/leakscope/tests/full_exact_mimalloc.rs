//! Full mode: the profile's figures per planted function equal the bytes and
//! counts the test allocated, exactly.
//!
//! Wrapping mimalloc; the tests are in `suites/full_exact.rs`.

type Inner = mimalloc::MiMalloc;
const INNER: Inner = mimalloc::MiMalloc;

mod common;
include!("suites/full_exact.rs");
