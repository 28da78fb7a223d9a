//! The wrapped allocator always gets back exactly the blocks it handed out,
//! with their layouts.
//!
//! Small sampled blocks come from leakscope's sample heap, not the inner
//! allocator, so every free and realloc must send each block back where it
//! came from, with the layout it was allocated with (jemalloc's sized
//! deallocation, for one, depends on it). Here the inner allocator checks
//! every call against what it handed out, under a sampling rate so small
//! that most blocks are samples, through alloc, alloc_zeroed, realloc across
//! the always-checked size and free.
//!
//! Wrapping jemalloc; the tests are in `suites/inner_layouts.rs`.

type Inner = tikv_jemallocator::Jemalloc;
const INNER: Inner = tikv_jemallocator::Jemalloc;

mod common;
include!("suites/inner_layouts.rs");
