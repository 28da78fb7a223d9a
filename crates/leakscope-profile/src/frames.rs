//! What a frame of an allocation stack is, as data: the allocator's own
//! frames and the standard library (dropped from the leaf end of stacks),
//! container internals (skipped when naming who allocated), and for each
//! framework a service is built on, its receive paths, connection set-up,
//! client constructors, pools, task and channel internals. Symbolising,
//! trend naming and the diagnosis rules all classify frames here, so that
//! knowledge of a framework lives in one table.
//!
//! In the manner of pprof's list of allocator frames, the table is commented
//! data: each entry is a class and a pattern over function names. A user adds
//! frames for their own framework with a file (`LEAKSCOPE_FRAMES`, or
//! `--frames` on `leakscope report` and `trend`), one `CLASS PATTERN` per line:
//!
//! ```text
//! # my RPC framework
//! receive     myrpc::conn::Reader::fill_buf
//! connection  myrpc::server::accept*
//! server      myrpc::server::*
//! library     myrpc::*
//! ```
//!
//! Patterns are globs (`*` is any run of characters, `::` included) matched
//! against the whole function name after generic arguments are removed
//! (`Buffered<T,B>::read` reads `Buffered::read`); a trait method
//! `<A as B>::m` is matched as both `A::m` and `B::m`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// What a frame is. A frame may be several (`h2::server::handshake` is
/// connection set-up on the server side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The profiler and the global allocator's shims: always dropped from
    /// the leaf end of a stack.
    Allocator,
    /// Rust's standard library: how memory gets allocated (`Vec::push`,
    /// `HashMap::insert`), not who asked; dropped from the leaf end.
    Std,
    /// Containers and buffers of common crates (`bytes`, `slab`,
    /// `hashbrown`, header maps): skipped when naming who allocated.
    Container,
    /// A dependency's code, never the application's.
    Library,
    /// Where received bytes are read into buffers or decoded into messages.
    Receive,
    /// Where messages are encoded and written.
    Send,
    /// Accepting or opening a connection, and its per-connection state
    /// (handshakes, codecs, their buffers).
    Connection,
    /// Building a client (each with its own connections, pools, caches).
    ClientConstructor,
    /// Connection and object pools.
    Pool,
    /// Spawning a task: the first application frame after these is the
    /// spawn site.
    TaskSpawn,
    /// A task's own allocation, which holds its future's state.
    TaskCell,
    /// Creating a channel.
    ChannelCreate,
    /// A channel's queue growing to take another message.
    ChannelGrow,
    /// JSON parsing and serialising.
    Json,
    /// Parsed JSON values that borrow the input document instead of copying.
    JsonZeroCopy,
    /// Another reference to a shared buffer (`Bytes::clone`).
    BufferShare,
    /// Request handling on the server side of a framework.
    Server,
    /// The client side of a framework.
    Client,
}

impl Class {
    /// Every class, in the order of [`Class::name`].
    pub const ALL: [Class; 18] = [
        Class::Allocator,
        Class::Std,
        Class::Container,
        Class::Library,
        Class::Receive,
        Class::Send,
        Class::Connection,
        Class::ClientConstructor,
        Class::Pool,
        Class::TaskSpawn,
        Class::TaskCell,
        Class::ChannelCreate,
        Class::ChannelGrow,
        Class::Json,
        Class::JsonZeroCopy,
        Class::BufferShare,
        Class::Server,
        Class::Client,
    ];

    /// The name used in frame files.
    pub fn name(self) -> &'static str {
        match self {
            Class::Allocator => "allocator",
            Class::Std => "std",
            Class::Container => "container",
            Class::Library => "library",
            Class::Receive => "receive",
            Class::Send => "send",
            Class::Connection => "connection",
            Class::ClientConstructor => "client-constructor",
            Class::Pool => "pool",
            Class::TaskSpawn => "task-spawn",
            Class::TaskCell => "task-cell",
            Class::ChannelCreate => "channel-create",
            Class::ChannelGrow => "channel-grow",
            Class::Json => "json",
            Class::JsonZeroCopy => "json-zero-copy",
            Class::BufferShare => "buffer-share",
            Class::Server => "server",
            Class::Client => "client",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Classes that say what a stack does (rather than which side or crate
    /// it is on). The leaf-most frame with one of these is a stack's role.
    pub fn is_role(self) -> bool {
        matches!(
            self,
            Class::Receive
                | Class::Send
                | Class::Connection
                | Class::ClientConstructor
                | Class::Pool
                | Class::TaskCell
                | Class::ChannelCreate
                | Class::ChannelGrow
                | Class::Json
                | Class::BufferShare
        )
    }
}

/// A set of classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Classes(u32);

impl Classes {
    pub fn contains(self, c: Class) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn insert(&mut self, c: Class) {
        self.0 |= c.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Frames skipped when naming who allocated: the allocator, the
    /// standard library, container internals.
    pub fn is_plumbing(self) -> bool {
        self.contains(Class::Allocator)
            || self.contains(Class::Std)
            || self.contains(Class::Container)
    }

    /// The most specific role class in the set (see [`Class::is_role`]),
    /// in the order of [`ROLE_PRECEDENCE`].
    pub fn role(self) -> Option<Class> {
        ROLE_PRECEDENCE.iter().copied().find(|&c| self.contains(c))
    }

    pub fn iter(self) -> impl Iterator<Item = Class> {
        Class::ALL.into_iter().filter(move |&c| self.contains(c))
    }
}

/// When a frame has several roles, the one that says most: a task's cell
/// over the spawn that made it, growth of a queue over its creation.
const ROLE_PRECEDENCE: [Class; 10] = [
    Class::TaskCell,
    Class::ChannelGrow,
    Class::ChannelCreate,
    Class::BufferShare,
    Class::ClientConstructor,
    Class::Pool,
    Class::Connection,
    Class::Json,
    Class::Receive,
    Class::Send,
];

/// Which end of a connection a stack is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Server,
    Client,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

use Class::*;

/// The built-in table: `(class, pattern)`, grouped by crate.
#[rustfmt::skip]
pub const BUILTIN: &[(Class, &str)] = &[
    // ── The allocation machinery ─────────────────────────────────────────
    // leakscope's own collection code and the global allocator it wraps.
    (Allocator, "leakscope::collect::*"),
    (Allocator, "leakscope::profiler::*"),
    (Allocator, "leakscope_preload::*"),
    // Rust's global-allocator shims (`__rust_alloc` → `__rg_alloc`, `__rdl_*`
    // for the default allocator, `__rustc::` in newer toolchains).
    (Allocator, "__rust_alloc*"),
    (Allocator, "__rust_realloc*"),
    (Allocator, "__rust_dealloc*"),
    (Allocator, "__rustc::*"),
    (Allocator, "__rdl_*"),
    (Allocator, "__rg_*"),
    // C allocators and the usual Rust wrappers of other allocators.
    (Allocator, "malloc"),
    (Allocator, "calloc"),
    (Allocator, "realloc"),
    (Allocator, "posix_memalign"),
    (Allocator, "aligned_alloc"),
    (Allocator, "memalign"),
    (Allocator, "tikv_jemallocator::*"),
    (Allocator, "jemallocator::*"),
    (Allocator, "mimalloc::*"),
    // leakscope's output code: a thread of its own, never the application's.
    (Library, "leakscope::export::*"),
    (Library, "leakscope::snapshot::*"),
    (Library, "leakscope::http::*"),
    (Library, "leakscope::labels::*"),

    // ── Containers: how memory is held, not who asked for it ─────────────
    // `std` vendors hashbrown; a registry copy behaves the same.
    (Container, "hashbrown::*"),
    (Container, "indexmap::*"),
    (Container, "slab::*"),
    (Container, "smallvec::*"),
    (Container, "arrayvec::*"),
    (Container, "tinyvec::*"),
    (Container, "dashmap::*"),
    (Container, "faststr::*"),
    // bytes: BytesMut growth, Bytes from a Vec, conversion to a shared buffer.
    (Container, "bytes::*"),
    // http's header maps grow as headers are inserted.
    (Container, "http::header::map::*"),
    (Container, "http::extensions::*"),
    // A tokio channel's block: created with the channel or when its queue
    // grows; the caller says which.
    (Container, "tokio::sync::mpsc::block::Block::new"),

    // ── Another reference to a shared buffer ─────────────────────────────
    // Cloning a `Bytes` that owns a Vec turns it into a shared buffer: the
    // clone is a second owner of the whole allocation.
    (BufferShare, "bytes::bytes::Bytes::clone"),
    (BufferShare, "bytes::bytes::promotable_*_clone"),
    (BufferShare, "bytes::bytes::shallow_clone_vec"),

    // ── tonic (gRPC) ─────────────────────────────────────────────────────
    (Library, "tonic::*"),
    (Library, "tonic_prost::*"),
    // Each request (server) or response (client) stream has a decode
    // buffer; prost decodes `bytes` fields as slices of it.
    (Receive, "tonic::codec::decode::*"),
    (Receive, "tonic_prost::codec::ProstDecoder::decode*"),
    (Receive, "tonic::codec::Decoder::decode*"),
    (Send, "tonic::codec::encode::*"),
    (Send, "tonic_prost::codec::ProstEncoder::encode*"),
    (Server, "tonic::server::*"),
    (Server, "tonic::transport::server::*"),
    (Connection, "tonic::transport::server::serve_connection*"),
    (Connection, "tonic::transport::server::*::serve*"),
    (Client, "tonic::client::*"),
    (Client, "tonic::transport::channel::*"),
    (ClientConstructor, "tonic::transport::channel::Channel::connect*"),
    (ClientConstructor, "tonic::transport::channel::Channel::from_shared*"),
    (ClientConstructor, "tonic::transport::channel::Channel::balance*"),
    (ClientConstructor, "tonic::transport::channel::Channel::new*"),
    (ClientConstructor, "tonic::transport::channel::endpoint::Endpoint::connect*"),
    (Connection, "tonic::transport::channel::service::connection::*"),
    (TaskSpawn, "tonic::transport::channel::service::executor::SharedExec::execute"),

    // ── prost (protobuf) ─────────────────────────────────────────────────
    (Library, "prost::*"),
    // Decoding copies owned fields out; `Bytes` fields are slices.
    (Receive, "prost::message::Message::decode*"),
    (Receive, "prost::message::Message::merge*"),
    (Receive, "prost::encoding::*::merge*"),
    (Send, "prost::message::Message::encode*"),
    (Send, "prost::encoding::*::encode*"),

    // ── hyper (HTTP/1 and HTTP/2) ────────────────────────────────────────
    (Library, "hyper::*"),
    (Library, "hyper_util::*"),
    // HTTP/1: the connection's read buffer, filled from the socket; request
    // and response bodies are split off it without copying.
    (Receive, "hyper::proto::h1::io::Buffered::poll_read_from_io"),
    (Receive, "hyper::proto::h1::io::Buffered::read_mem"),
    (Receive, "hyper::proto::h1::io::Buffered::parse"),
    (Receive, "hyper::proto::h1::role::*::parse*"),
    (Receive, "hyper::proto::h1::decode::*"),
    (Receive, "hyper::proto::h1::conn::Conn::poll_read*"),
    (Receive, "hyper::body::incoming::*"),
    (Send, "hyper::proto::h1::io::Buffered::buffer"),
    (Send, "hyper::proto::h1::io::WriteBuf::*"),
    (Send, "hyper::proto::h1::encode::*"),
    (Send, "hyper::proto::h1::role::*::encode*"),
    (Server, "hyper::server::*"),
    (Server, "hyper::proto::h1::role::Server::*"),
    (Server, "hyper::proto::h1::dispatch::Server::*"),
    (Server, "hyper::proto::h2::server::*"),
    (Server, "hyper_util::server::*"),
    (Client, "hyper::client::*"),
    (Client, "hyper::proto::h1::role::Client::*"),
    (Client, "hyper::proto::h1::dispatch::Client::*"),
    (Client, "hyper::proto::h2::client::*"),
    (Client, "hyper_util::client::*"),
    // Per-connection state: built when a connection is served or opened.
    (Connection, "hyper::server::conn::*::serve_connection*"),
    (Connection, "hyper::proto::h1::conn::Conn::new"),
    (Connection, "hyper::proto::h1::io::Buffered::new"),
    (Connection, "hyper::proto::h1::dispatch::Dispatcher::new"),
    (Connection, "hyper::proto::h2::server::Server::new"),
    (Connection, "hyper::proto::h2::client::handshake*"),
    (Connection, "hyper::client::conn::*::handshake*"),
    (Connection, "hyper::client::dispatch::channel"),
    (Connection, "hyper_util::server::conn::auto::Builder::serve_connection*"),
    (Connection, "hyper_util::client::legacy::connect::*"),
    (ClientConstructor, "hyper_util::client::legacy::Client::new"),
    (ClientConstructor, "hyper_util::client::legacy::Client::builder"),
    (ClientConstructor, "hyper_util::client::legacy::client::Builder::build*"),
    (Pool, "hyper_util::client::legacy::pool::*"),
    // hyper spawns connection tasks through an executor.
    (TaskSpawn, "hyper::rt::*::execute*"),
    (TaskSpawn, "hyper_util::rt::tokio::TokioExecutor::execute"),

    // ── h2 ───────────────────────────────────────────────────────────────
    (Library, "h2::*"),
    // Frames are read into the codec's buffer; DATA payloads are slices.
    (Receive, "h2::codec::framed_read::FramedRead::poll_next"),
    (Receive, "h2::codec::framed_read::decode_frame"),
    (Receive, "h2::proto::streams::recv::Recv::recv_data"),
    (Receive, "h2::frame::*::load"),
    (Send, "h2::codec::framed_write::*::buffer"),
    (Send, "h2::frame::*::encode*"),
    (Server, "h2::server::*"),
    (Client, "h2::client::*"),
    // A connection's codec, HPACK tables, stream store and settings.
    (Connection, "h2::server::handshake*"),
    (Connection, "h2::server::Builder::handshake*"),
    (Connection, "h2::server::Connection::handshake*"),
    (Connection, "h2::server::Handshake::poll"),
    (Connection, "h2::client::handshake*"),
    (Connection, "h2::client::Builder::handshake*"),
    (Connection, "h2::client::Connection::handshake*"),
    (Connection, "h2::codec::*::new"),
    (Connection, "h2::codec::Codec::with_max_recv_frame_size"),
    (Connection, "h2::hpack::*::new"),
    (Connection, "h2::proto::connection::Connection::new"),
    (Connection, "h2::proto::streams::streams::*::new"),

    // ── axum and tower ───────────────────────────────────────────────────
    (Library, "axum::*"),
    (Library, "axum_core::*"),
    (Library, "tower::*"),
    (Library, "tower_service::*"),
    (Library, "tower_layer::*"),
    (Library, "tower_http::*"),
    (Server, "axum::*"),
    (Connection, "axum::serve::*"),
    // Body extractors: one chunk is a slice of the read buffer; several are
    // copied into one buffer.
    (Receive, "axum::body::to_bytes*"),
    (Receive, "axum_core::extract::*::from_request*"),
    (Receive, "axum::extract::*::from_request*"),
    (Receive, "axum::json::*::from_request*"),
    // tower's buffer layer: a channel and a worker task per service.
    (Connection, "tower::buffer::service::Buffer::new"),
    (Connection, "tower::buffer::service::Buffer::pair"),

    // ── http-body-util: collecting a body ────────────────────────────────
    (Library, "http_body_util::*"),
    (Library, "http_body::*"),
    (Library, "http::*"),
    (Receive, "http_body_util::combinators::collect::*"),
    (Receive, "http_body_util::collected::Collected::*"),
    (Receive, "http_body_util::util::BufList::*"),
    (Receive, "http_body_util::BodyExt::collect*"),

    // ── tokio-util codecs ────────────────────────────────────────────────
    (Library, "tokio_util::*"),
    (Receive, "tokio_util::codec::framed_impl::FramedImpl::poll_next"),
    (Receive, "tokio_util::codec::*Decoder::decode*"),
    (Receive, "tokio_util::codec::length_delimited::LengthDelimitedCodec::decode*"),
    (Send, "tokio_util::codec::*Encoder::encode*"),
    (Connection, "tokio_util::codec::framed*::*::new"),
    (Connection, "tokio_util::codec::framed_impl::ReadFrame::default"),
    (Connection, "tokio_util::codec::framed_impl::WriteFrame::default"),
    (Connection, "tokio_util::codec::length_delimited::Builder::new_*"),

    // ── reqwest ──────────────────────────────────────────────────────────
    (Library, "reqwest::*"),
    (Client, "reqwest::*"),
    (Receive, "reqwest::async_impl::response::Response::bytes*"),
    (Receive, "reqwest::async_impl::response::Response::text*"),
    (Receive, "reqwest::async_impl::response::Response::json*"),
    (Receive, "reqwest::async_impl::response::Response::chunk*"),
    (Receive, "reqwest::async_impl::body::*"),
    (Receive, "reqwest::blocking::response::*"),
    (Connection, "reqwest::connect::*"),
    (ClientConstructor, "reqwest::async_impl::client::ClientBuilder::build"),
    (ClientConstructor, "reqwest::async_impl::client::Client::new"),
    (ClientConstructor, "reqwest::blocking::client::ClientBuilder::build"),
    (ClientConstructor, "reqwest::blocking::client::Client::new"),

    // ── actix-web ────────────────────────────────────────────────────────
    (Library, "actix_web::*"),
    (Library, "actix_http::*"),
    (Library, "actix_server::*"),
    (Library, "actix_rt::*"),
    (Library, "actix_service::*"),
    (Library, "awc::*"),
    (Server, "actix_web::*"),
    (Server, "actix_http::*"),
    (Server, "actix_server::*"),
    // The dispatcher's read buffer; payloads are split off it.
    (Receive, "actix_http::h1::dispatcher::*::poll_request*"),
    (Receive, "actix_http::h1::dispatcher::*::read_available*"),
    (Receive, "actix_http::h1::codec::Codec::decode*"),
    (Receive, "actix_http::h1::decoder::*"),
    (Receive, "actix_http::h1::payload::*"),
    (Receive, "actix_web::types::payload::*"),
    (Connection, "actix_http::h1::dispatcher::Dispatcher::new"),
    (Connection, "actix_server::worker::*"),
    (Client, "awc::*"),
    (ClientConstructor, "awc::builder::ClientBuilder::finish"),
    (ClientConstructor, "awc::client::Client::new"),
    (TaskSpawn, "actix_rt::*spawn*"),

    // ── JSON ─────────────────────────────────────────────────────────────
    (Library, "serde_json::*"),
    (Library, "serde::*"),
    (Library, "sonic_rs::*"),
    (Library, "simd_json::*"),
    (Json, "serde_json::*"),
    (Json, "sonic_rs::*"),
    (Json, "simd_json::*"),
    // Values that point into the input document: a sonic-rs lazy value
    // (whose input is a `Bytes` slice of the received buffer), simd-json's
    // borrowed values, serde_json's raw values.
    (JsonZeroCopy, "sonic_rs::lazyvalue::*"),
    (JsonZeroCopy, "sonic_rs::input::*"),
    (JsonZeroCopy, "simd_json::value::borrowed::*"),
    (JsonZeroCopy, "serde_json::raw::*"),

    // ── tokio: tasks and channels ────────────────────────────────────────
    (Library, "tokio::*"),
    (Library, "tokio_stream::*"),
    (Library, "mio::*"),
    (Library, "futures*::*"),
    // Spawning: `tokio::spawn`, a handle's or runtime's spawn, JoinSet, the
    // scheduler binding the new task to its list.
    (TaskSpawn, "tokio::task::spawn::*"),
    (TaskSpawn, "tokio::task::local::*spawn*"),
    (TaskSpawn, "tokio::task::join_set::JoinSet::spawn*"),
    (TaskSpawn, "tokio::task::builder::Builder::spawn*"),
    (TaskSpawn, "tokio::task::blocking::spawn_blocking"),
    (TaskSpawn, "tokio::runtime::handle::Handle::spawn*"),
    (TaskSpawn, "tokio::runtime::runtime::Runtime::spawn*"),
    (TaskSpawn, "tokio::runtime::scheduler::*spawn*"),
    (TaskSpawn, "tokio::runtime::scheduler::*::bind_new_task"),
    (TaskSpawn, "tokio::runtime::task::list::OwnedTasks::bind*"),
    (TaskSpawn, "tokio::runtime::blocking::pool::*spawn*"),
    (TaskSpawn, "tokio::runtime::context::current::with_current*"),
    (TaskSpawn, "futures_util::task::spawn::*"),
    (TaskSpawn, "async_std::task::*spawn*"),
    // The task's cell: header, scheduler and the future itself (its state
    // across awaits: everything it captured).
    (TaskCell, "tokio::runtime::task::core::Cell::new"),
    (TaskCell, "tokio::runtime::task::raw::RawTask::new"),
    (TaskCell, "tokio::runtime::task::new_task"),
    (TaskCell, "async_task::raw::RawTask::allocate"),
    // Channels: creation allocates the shared state and a first block; an
    // unbounded queue allocates a block for every 32 messages it holds.
    (ChannelCreate, "tokio::sync::mpsc::*channel*"),
    (ChannelCreate, "tokio::sync::broadcast::channel"),
    (ChannelCreate, "tokio::sync::oneshot::channel"),
    (ChannelCreate, "tokio::sync::watch::channel"),
    (ChannelGrow, "tokio::sync::mpsc::list::Tx::push"),
    (ChannelGrow, "tokio::sync::mpsc::list::Tx::find_block*"),
    (ChannelGrow, "tokio::sync::mpsc::block::Block::grow"),
    (ChannelGrow, "tokio::sync::mpsc::unbounded::UnboundedSender::send"),
    (Library, "crossbeam*::*"),
    (Library, "flume::*"),
    (Library, "async_channel::*"),
    (Library, "concurrent_queue::*"),
    (ChannelCreate, "crossbeam_channel::channel::*"),
    (ChannelCreate, "flume::bounded"),
    (ChannelCreate, "flume::unbounded"),
    (ChannelCreate, "async_channel::bounded"),
    (ChannelCreate, "async_channel::unbounded"),
    (ChannelCreate, "futures_channel::mpsc::channel"),
    (ChannelCreate, "futures_channel::mpsc::unbounded"),
    (ChannelGrow, "crossbeam_channel::flavors::list::Channel::start_send"),
    (ChannelGrow, "crossbeam_channel::flavors::list::Channel::send"),
    (ChannelGrow, "flume::Chan::push"),
    (ChannelGrow, "flume::Shared::send*"),
    (ChannelGrow, "futures_channel::mpsc::queue::Queue::push"),
    (ChannelGrow, "concurrent_queue::unbounded::Unbounded::push"),
    // Sockets registered with the runtime's I/O driver, one per connection.
    (Connection, "tokio::net::tcp::listener::TcpListener::accept*"),
    (Connection, "tokio::net::tcp::stream::TcpStream::connect*"),
    (Connection, "tokio::runtime::io::registration::Registration::new*"),
    (Connection, "tokio::runtime::io::registration_set::RegistrationSet::allocate"),
    // Which end a socket is: an accepted one is the server's, one opened
    // with connect the client's (a service on plain sockets has no other
    // frame that says so).
    (Server, "tokio::net::tcp::listener::TcpListener::accept*"),
    (Client, "tokio::net::tcp::stream::TcpStream::connect*"),

    // ── Connection pools ─────────────────────────────────────────────────
    (Library, "deadpool*::*"),
    (Library, "bb8::*"),
    (Library, "r2d2::*"),
    (Pool, "deadpool*::*"),
    (Pool, "bb8::*"),
    (Pool, "r2d2::*"),

    // ── TLS ──────────────────────────────────────────────────────────────
    (Library, "rustls::*"),
    (Library, "tokio_rustls::*"),
    (Connection, "rustls::*::new"),
    (Connection, "tokio_rustls::*::accept*"),
    (Connection, "tokio_rustls::*::connect*"),

    // ── Other common libraries ───────────────────────────────────────────
    (Library, "tracing*::*"),
    (Library, "parking_lot*::*"),
    (Library, "once_cell::*"),
    (Library, "pin_project*::*"),
    (Library, "clap*::*"),
    (Library, "blazesym::*"),
    (Library, "inferno::*"),
];

/// The standard library's crates, for frames without a source file.
/// `hashbrown` is the one std vendors (`HashMap`'s table).
const STD_CRATES: [&str; 4] = ["core", "alloc", "std", "hashbrown"];

/// Where the Rust distribution's sources are, in its debug information.
const STD_SOURCES: [&str; 3] = [
    "/rustc/*",
    "/rust/deps/*",
    "*/lib/rustlib/src/rust/library/*",
];

/// Source files of dependencies: registry and git checkouts, vendored
/// code, and the distribution.
const DEPENDENCY_SOURCES: [&str; 7] = [
    "*/.cargo/registry/*",
    "*/cargo/registry/src/*",
    "*/.cargo/git/*",
    "*/vendor/*",
    "/rustc/*",
    "/rust/deps/*",
    "*/lib/rustlib/*",
];

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    class: Class,
    glob: String,
    /// The text before the first `*` (a quick reject).
    literal_prefix: String,
}

/// Why a frame file could not be read.
#[derive(Debug)]
pub struct FramesFileError(pub String);

impl std::fmt::Display for FramesFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FramesFileError {}

/// The frame classes in use: the built-in table plus a user's entries.
#[derive(Debug)]
pub struct FrameTable {
    patterns: Vec<Pattern>,
    cache: Mutex<HashMap<String, Classes>>,
}

impl Clone for FrameTable {
    fn clone(&self) -> Self {
        FrameTable {
            patterns: self.patterns.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for FrameTable {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Names classified and remembered at most (then forgotten all at once).
const CACHE_LIMIT: usize = 50_000;

/// The environment variable naming a user's frame file.
pub const FRAMES_ENV: &str = "LEAKSCOPE_FRAMES";

impl FrameTable {
    /// The built-in table.
    pub fn builtin() -> FrameTable {
        let mut t = FrameTable {
            patterns: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        };
        for &(class, glob) in BUILTIN {
            t.add(class, glob);
        }
        t
    }

    /// Adds one entry.
    pub fn add(&mut self, class: Class, glob: &str) {
        let literal_prefix = glob.split('*').next().unwrap_or("").to_string();
        self.patterns.push(Pattern {
            class,
            glob: glob.to_string(),
            literal_prefix,
        });
        self.cache.get_mut().map(HashMap::clear).ok();
    }

    /// Adds the entries of a frame file's text (`CLASS PATTERN` per line,
    /// `#` comments). `source` names the file in errors.
    pub fn add_text(&mut self, text: &str, source: &str) -> Result<(), FramesFileError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(class), Some(glob), None) = (words.next(), words.next(), words.next()) else {
                return Err(FramesFileError(format!(
                    "{source}:{}: expected `CLASS PATTERN`, found {line:?}",
                    n + 1
                )));
            };
            let Some(class) = Class::ALL.into_iter().find(|c| c.name() == class) else {
                let names: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
                return Err(FramesFileError(format!(
                    "{source}:{}: unknown class {class:?} (known: {})",
                    n + 1,
                    names.join(", ")
                )));
            };
            self.add(class, glob);
        }
        Ok(())
    }

    /// The built-in table plus a user's file.
    pub fn with_file(path: &Path) -> Result<FrameTable, FramesFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FramesFileError(format!("cannot read frame file {}: {e}", path.display()))
        })?;
        let mut t = FrameTable::builtin();
        t.add_text(&text, &path.display().to_string())?;
        Ok(t)
    }

    /// The built-in table plus the file named by `LEAKSCOPE_FRAMES`, if set.
    pub fn from_env() -> Result<FrameTable, FramesFileError> {
        match std::env::var_os(FRAMES_ENV) {
            Some(path) if !path.is_empty() => FrameTable::with_file(Path::new(&path)),
            _ => Ok(FrameTable::builtin()),
        }
    }

    /// The classes of one function name (without its source file).
    pub fn classify(&self, name: &str) -> Classes {
        if let Some(&c) = self.cache.lock().ok().as_ref().and_then(|m| m.get(name)) {
            return c;
        }
        let mut out = Classes::default();
        if is_std_name(name) {
            out.insert(Class::Std);
        }
        for variant in variants(name) {
            for p in &self.patterns {
                if !out.contains(p.class)
                    && variant.starts_with(&p.literal_prefix)
                    && glob(p.glob.as_bytes(), variant.as_bytes())
                {
                    out.insert(p.class);
                }
            }
        }
        if let Ok(mut m) = self.cache.lock() {
            // Bounded: a long-lived process (the report endpoint) must not
            // keep every name it ever classified.
            if m.len() >= CACHE_LIMIT {
                m.clear();
            }
            m.insert(name.to_string(), out);
        }
        out
    }

    /// The classes of a frame, its source file included: a file from the
    /// Rust distribution makes it the standard library's.
    pub fn classify_frame(&self, name: &str, file: &str) -> Classes {
        let mut c = self.classify(name);
        if !file.is_empty() {
            if is_std_file(file) {
                c.insert(Class::Std);
            } else if c.contains(Class::Std) && !is_std_file(file) {
                // A function named like std's in the application's own file
                // (`core::` is also a common module name).
                c = Classes(c.0 & !Class::Std.bit());
            }
        }
        c
    }

    /// Whether a frame is the allocation machinery's (always trimmed).
    /// Uncached: profile export calls it for the leaf frames of every
    /// stack, in the profiled process.
    pub fn is_allocator(&self, name: &str) -> bool {
        let allocator: Vec<&Pattern> = self
            .patterns
            .iter()
            .filter(|p| p.class == Class::Allocator)
            .collect();
        variants(name).iter().any(|v| {
            allocator
                .iter()
                .any(|p| v.starts_with(&p.literal_prefix) && glob(p.glob.as_bytes(), v.as_bytes()))
        })
    }

    /// Whether a frame belongs to the application rather than to a library:
    /// it has a path, and neither the table nor `dependencies` (crates whose
    /// frames came from dependency sources in this run) claim its crate.
    pub fn is_application(&self, name: &str, dependencies: &dyn Fn(&str) -> bool) -> bool {
        let c = self.classify(name);
        if c.contains(Class::Library) || c.is_plumbing() {
            return false;
        }
        let krate = crate_of(name);
        name.contains("::") && !krate.is_empty() && !dependencies(krate)
    }
}

/// The table every caller shares: the built-in table and the
/// `LEAKSCOPE_FRAMES` file, read once (a bad file is reported once, on
/// standard error, and left out). Code that takes a file from elsewhere
/// (`--frames`) installs it with [`install_global`] first.
pub fn global() -> &'static FrameTable {
    GLOBAL.get_or_init(|| {
        FrameTable::from_env().unwrap_or_else(|e| {
            eprintln!("leakscope: {e}; using the built-in frame classes");
            FrameTable::builtin()
        })
    })
}

static GLOBAL: OnceLock<FrameTable> = OnceLock::new();

/// Makes `table` the one [`global`] returns; false if a table was already
/// in use.
pub fn install_global(table: FrameTable) -> bool {
    GLOBAL.set(table).is_ok()
}

/// Whether a source file is the Rust distribution's.
pub fn is_std_file(file: &str) -> bool {
    STD_SOURCES
        .iter()
        .any(|p| glob(p.as_bytes(), file.as_bytes()))
}

/// Whether a source file belongs to a dependency or to the distribution
/// rather than to the application.
pub fn is_dependency_file(file: &str) -> bool {
    DEPENDENCY_SOURCES
        .iter()
        .any(|p| glob(p.as_bytes(), file.as_bytes()))
}

/// The crate and version of a registry source file
/// (`.../registry/src/<index>/hyper-1.12.0/src/...` → `("hyper", "1.12.0")`),
/// under any cargo home (`~/.cargo`, a container's `/usr/local/cargo`), or
/// as cargo's `trim-paths` leaves it (`hyper-1.12.0/src/...`).
pub fn crate_version_of_file(file: &str) -> Option<(&str, &str)> {
    let mut parts = match file
        .split_once("/.cargo/registry/src/")
        .or_else(|| file.split_once("/cargo/registry/src/"))
    {
        Some((_, rest)) => {
            let mut parts = rest.split('/');
            parts.next()?; // the index
            parts
        }
        None if !file.starts_with('/') => file.split('/'),
        None => return None,
    };
    let dir = parts.next()?;
    // A source file inside the crate's directory, not the directory itself.
    parts.next()?;
    // The version starts at the first `-` followed by `MAJOR.MINOR.PATCH`
    // (names may hold dashes and digits: `foo-2d-0.1.0`; versions too:
    // `ring-0.17.8-rc.1`).
    let at = dir
        .char_indices()
        .filter(|&(_, c)| c == '-')
        .map(|(i, _)| i)
        .find(|&i| starts_with_version(&dir[i + 1..]))?;
    Some((&dir[..at], &dir[at + 1..]))
}

/// Whether text starts with three dot-separated numbers.
fn starts_with_version(text: &str) -> bool {
    let mut parts = text.splitn(3, '.');
    let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (Some(major), Some(minor), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let patch = rest.split(['-', '+']).next().unwrap_or("");
    number(major) && number(minor) && number(patch)
}

/// Name-based test for the standard library: a trait method counts as
/// std's when the type it is implemented for is (`<Vec<T> as Clone>::clone`)
/// or is a primitive (`<u8 as SpecFromElem>::from_elem`);
/// `<myapp::Foo as Clone>::clone` is the application's.
pub fn is_std_name(name: &str) -> bool {
    let mut head = name;
    loop {
        let trimmed = head
            .trim_start_matches(['<', '&', '[', '(', '*'])
            .trim_start_matches("mut ")
            .trim_start_matches("const ")
            .trim_start_matches("dyn ");
        if trimmed.len() == head.len() {
            break;
        }
        head = trimmed;
    }
    let first_path_end = head.find("::").unwrap_or(head.len());
    let self_part = &head[..first_path_end];
    // `u8 as alloc`, `T as core`, `str as alloc`: the self type has no path.
    let krate = match self_part.split_once(" as ") {
        Some((self_type, trait_start)) if !self_type.contains("::") => {
            trait_start.trim_start_matches('<')
        }
        _ => self_part,
    };
    let krate = krate.split(['<', ' ', ']', ';', '>']).next().unwrap_or("");
    STD_CRATES.contains(&krate)
}

/// The crate a (demangled) function name belongs to: its first path
/// segment, looking through `<impl ...>` brackets.
pub fn crate_of(name: &str) -> &str {
    let n = name
        .trim_start_matches(['<', '&', '*'])
        .trim_start_matches("mut ")
        .trim_start_matches("dyn ");
    n.split([':', '<', ' ', '>']).next().unwrap_or("")
}

/// The last two path segments of a name without generics: `Type::method`
/// (closures dropped), for constructor-like names.
pub fn type_and_method(name: &str) -> (String, String) {
    let plain = variants(name).into_iter().next().unwrap_or_default();
    let parts: Vec<&str> = plain.split("::").filter(|s| !s.starts_with("{{")).collect();
    let method = parts.last().copied().unwrap_or("").to_string();
    let ty = parts
        .len()
        .checked_sub(2)
        .map_or("", |i| parts[i])
        .to_string();
    (ty, method)
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Removes generic arguments: `<` right after an identifier (or `::`)
/// opens a list of arguments; other `<` (a qualified path) are kept.
fn strip_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if depth > 0 {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            continue;
        }
        if c == '<' && prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':') {
            depth = 1;
            if out.ends_with("::") {
                out.truncate(out.len() - 2);
            }
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// The names a pattern is tried against: generics removed, and for a
/// qualified path `<A as B>::rest`, both `A::rest` and `B::rest`
/// (recursively, for nested qualified paths).
fn variants(name: &str) -> Vec<String> {
    let plain = strip_generics(name);
    let mut out = Vec::with_capacity(2);
    expand(&plain, &mut out, 0);
    if out.is_empty() {
        out.push(plain);
    }
    out
}

fn expand(name: &str, out: &mut Vec<String>, depth: usize) {
    let trimmed = name
        .trim_start_matches(['&', '*'])
        .trim_start_matches("mut ");
    if !trimmed.starts_with('<') || depth > 4 {
        out.push(trimmed.trim_start_matches("dyn ").to_string());
        return;
    }
    // The bracket that closes the first `<`.
    let mut level = 0usize;
    let mut close = None;
    for (i, c) in trimmed.char_indices() {
        match c {
            '<' => level += 1,
            '>' => {
                level -= 1;
                if level == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        out.push(trimmed.to_string());
        return;
    };
    let inner = &trimmed[1..close];
    let rest = &trimmed[close + 1..];
    // " as " at bracket level 0 inside.
    let mut level = 0usize;
    let mut split = None;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => level += 1,
            '>' => level = level.saturating_sub(1),
            ' ' if level == 0 && inner[i..].starts_with(" as ") => {
                split = Some(i);
                break;
            }
            _ => {}
        }
    }
    match split {
        Some(i) => {
            expand(&format!("{}{rest}", &inner[..i]), out, depth + 1);
            expand(&format!("{}{rest}", &inner[i + 4..]), out, depth + 1);
        }
        None => expand(&format!("{inner}{rest}"), out, depth + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(name: &str) -> Vec<&'static str> {
        FrameTable::builtin()
            .classify(name)
            .iter()
            .map(Class::name)
            .collect()
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob(b"tokio::*", b"tokio::task::spawn"));
        assert!(glob(
            b"*::parse*",
            b"hyper::proto::h1::role::Server::parse_headers"
        ));
        assert!(!glob(b"tokio::*", b"tokio_util::codec"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"malloc", b"malloc"));
        assert!(!glob(b"malloc", b"malloc_usable_size"));
    }

    #[test]
    fn generics_and_qualified_paths_are_normalised() {
        assert_eq!(
            variants("<hyper::proto::h1::io::Buffered<T,B>>::poll_read_from_io"),
            ["hyper::proto::h1::io::Buffered::poll_read_from_io"]
        );
        assert_eq!(
            variants("<tonic_prost::codec::ProstDecoder<U> as tonic::codec::Decoder>::decode"),
            [
                "tonic_prost::codec::ProstDecoder::decode",
                "tonic::codec::Decoder::decode"
            ]
        );
        assert_eq!(
            variants("tokio::runtime::task::core::Cell<T,S>::new"),
            ["tokio::runtime::task::core::Cell::new"]
        );
        assert_eq!(
            variants("core::ptr::drop_in_place::<alloc::vec::Vec<u8>>"),
            ["core::ptr::drop_in_place"]
        );
        let nested = variants(
            "<<app::proto::lab_server::LabServer<T> as tower_service::Service<http::request::Request<B>>>::call::EchoSvc<T> as tonic::server::service::UnaryService<app::proto::EchoRequest>>::call::{{closure}}",
        );
        assert!(
            nested.contains(&"tonic::server::service::UnaryService::call::{{closure}}".to_string()),
            "{nested:?}"
        );
        assert!(
            nested.contains(
                &"app::proto::lab_server::LabServer::call::EchoSvc::call::{{closure}}".to_string()
            ),
            "{nested:?}"
        );
    }

    #[test]
    fn framework_frames_have_their_classes() {
        // hyper's HTTP/1 receive path (missed by keyword rules before).
        assert!(
            classes("hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io").contains(&"receive")
        );
        assert!(classes("tonic::codec::decode::StreamingInner::decode_chunk").contains(&"receive"));
        assert!(classes("tonic::server::grpc::Grpc<T>::unary::{{closure}}").contains(&"server"));
        assert!(classes("tonic::client::grpc::Grpc<T>::unary::{{closure}}").contains(&"client"));
        let handshake = classes("h2::server::Connection<T,B>::handshake2");
        assert!(
            handshake.contains(&"connection") && handshake.contains(&"server"),
            "{handshake:?}"
        );
        assert!(classes("h2::hpack::decoder::Decoder::new").contains(&"connection"));
        assert!(classes("tokio::runtime::task::core::Cell<T,S>::new").contains(&"task-cell"));
        assert!(classes("tokio::task::spawn::spawn_inner::{{closure}}").contains(&"task-spawn"));
        assert!(classes("tokio::sync::mpsc::block::Block<T>::grow").contains(&"channel-grow"));
        assert!(classes("tokio::sync::mpsc::list::channel_from_index").contains(&"channel-create"));
        assert!(classes("tokio::sync::mpsc::block::Block<T>::new").contains(&"container"));
        assert!(
            classes("<&bytes::bytes::Bytes as sonic_rs::input::JsonInput>::from_subset")
                .contains(&"json-zero-copy")
        );
        assert!(
            classes("<bytes::bytes::Bytes as core::clone::Clone>::clone").contains(&"buffer-share")
        );
        assert!(classes("bytes::bytes_mut::BytesMut::reserve_inner").contains(&"container"));
        assert!(
            classes("tonic::transport::channel::endpoint::Endpoint::connect::{{closure}}")
                .contains(&"client-constructor")
        );
        assert!(classes("reqwest::async_impl::client::ClientBuilder::build")
            .contains(&"client-constructor"));
        assert!(classes(
            "<leakscope::profiler::Profiler<A> as core::alloc::global::GlobalAlloc>::alloc"
        )
        .contains(&"allocator"));
        let accepted = classes("tokio::net::tcp::listener::TcpListener::accept::{{closure}}");
        assert!(accepted.contains(&"connection") && accepted.contains(&"server"));
        let opened = classes("tokio::net::tcp::stream::TcpStream::connect::{{closure}}");
        assert!(opened.contains(&"connection") && opened.contains(&"client"));
        assert!(classes("myapp::handler::keep").is_empty());
    }

    #[test]
    fn roles_prefer_the_most_specific_class() {
        let t = FrameTable::builtin();
        assert_eq!(
            t.classify("tokio::runtime::task::core::Cell<T,S>::new")
                .role(),
            Some(Class::TaskCell)
        );
        assert_eq!(
            t.classify("h2::codec::Codec<T,B>::new").role(),
            Some(Class::Connection)
        );
        assert_eq!(t.classify("tokio::task::spawn::spawn").role(), None);
    }

    #[test]
    fn application_frames_are_those_no_library_claims() {
        let t = FrameTable::builtin();
        let none = |_: &str| false;
        assert!(t.is_application("myapp::cache::remember", &none));
        assert!(!t.is_application("tokio::spawn", &none));
        assert!(!t.is_application("alloc::vec::Vec<T>::push", &none));
        assert!(!t.is_application("main", &none));
        assert!(!t.is_application("mycorp_rpc::read", &|c| c == "mycorp_rpc"));
    }

    #[test]
    fn a_user_file_adds_classes_and_bad_lines_are_one_line_errors() {
        let mut t = FrameTable::builtin();
        t.add_text(
            "# my framework\nreceive  myrpc::conn::*::fill_buf\nlibrary myrpc::*\n",
            "f",
        )
        .unwrap();
        let c = t.classify("myrpc::conn::Reader<S>::fill_buf");
        assert!(c.contains(Class::Receive) && c.contains(Class::Library));
        let e = t.add_text("recieve x::y\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:1: unknown class \"recieve\""), "{e}");
        let e = t.add_text("\nreceive\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:2: expected `CLASS PATTERN`"), "{e}");
    }

    #[test]
    fn standard_library_by_name_and_by_file() {
        for std_frame in [
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<alloc::vec::Vec<myapp::Foo> as core::clone::Clone>::clone",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
        ] {
            assert!(is_std_name(std_frame), "{std_frame}");
        }
        assert!(!is_std_name("<myapp::Foo as core::clone::Clone>::clone"));
        assert!(!is_std_name("corelib::thing"));
        let t = FrameTable::builtin();
        assert!(t
            .classify_frame("x", "/rustc/abc/library/alloc/src/vec.rs")
            .contains(Class::Std));
        assert!(!t
            .classify_frame("core::fake", "/work/app/src/main.rs")
            .contains(Class::Std));
    }

    #[test]
    fn crate_versions_come_from_registry_paths() {
        assert_eq!(
            crate_version_of_file("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.21/src/client.rs"),
            Some(("hyper-util", "0.1.21"))
        );
        assert_eq!(
            crate_version_of_file(
                "/usr/local/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/h2-0.3.16/src/proto/streams/recv.rs"
            ),
            Some(("h2", "0.3.16"))
        );
        assert_eq!(
            crate_version_of_file(
                "/root/.cargo/registry/src/index.crates.io-1/ring-0.17.8-rc.1/src/lib.rs"
            ),
            Some(("ring", "0.17.8-rc.1"))
        );
        assert_eq!(crate_version_of_file("/work/app/src/main.rs"), None);
        // trim-paths: registry sources relative to the index, the
        // application's relative to its workspace.
        assert_eq!(
            crate_version_of_file("hyper-1.4.1/src/proto/h1/io.rs"),
            Some(("hyper", "1.4.1"))
        );
        assert_eq!(crate_version_of_file("src/main.rs"), None);
        assert_eq!(crate_version_of_file("crates/app-2/src/lib.rs"), None);
        assert_eq!(crate_version_of_file("/work/hyper-1.4.1/src/lib.rs"), None);
        assert_eq!(
            crate_version_of_file("/root/.cargo/registry/src/index/nodash/src/lib.rs"),
            None
        );
        assert_eq!(
            crate_version_of_file("/root/.cargo/registry/src/index/foo-2d-0.1.0+meta/src/lib.rs"),
            Some(("foo-2d", "0.1.0+meta"))
        );
        assert!(is_dependency_file(
            "/root/.cargo/registry/src/x/tokio-1.0.0/src/lib.rs"
        ));
        assert!(!is_dependency_file("/work/app/src/main.rs"));
    }

    #[test]
    fn type_and_method_of_a_frame() {
        assert_eq!(
            type_and_method("<myapp::client::ApiClient as core::clone::Clone>::clone"),
            ("ApiClient".to_string(), "clone".to_string())
        );
        assert_eq!(
            type_and_method("myapp::client::ApiClient::connect::{{closure}}"),
            ("ApiClient".to_string(), "connect".to_string())
        );
    }
}
