//! Sampled mode: every figure is an unbiased estimate. For planted
//! allocations of known sizes the test computes the estimator's standard
//! deviation from theory (each block of size s is sampled with probability
//! p = 1 - exp(-s/rate) and then stands for 1/p blocks) and checks that the
//! profile's figures fall within three of them. The seed is fixed, so the
//! outcome is reproducible.
//!
//! Wrapping jemalloc; the tests are in `suites/sampled_estimates.rs`.

type Inner = tikv_jemallocator::Jemalloc;
const INNER: Inner = tikv_jemallocator::Jemalloc;

mod common;
include!("suites/sampled_estimates.rs");
