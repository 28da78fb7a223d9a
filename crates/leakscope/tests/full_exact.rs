//! Full mode: the profile's figures per planted function equal the bytes and
//! counts the test allocated, exactly.
//!
//! Wrapping the system allocator (glibc); the tests are in `suites/full_exact.rs`.

type Inner = std::alloc::System;
const INNER: Inner = std::alloc::System;

mod common;
include!("suites/full_exact.rs");
