//! The realistic components the scenarios need where tonic has none. Each is
//! the kind of thing real services write; some keep more than they should.

pub mod audit_log;
pub mod buffer_pool;
pub mod connection_scratch;
pub mod export_threads;
pub mod pending_tasks;
pub mod profile_cache;
pub mod reply_history;
pub mod report_workers;
pub mod request_cache;
pub mod session_cache;
