//! Small synthetic runs for the rules' unit tests: nine points a second
//! apart (the last one written at exit), each a profile and optionally a
//! snapshot built from what a closure of the time adds.

use std::collections::HashMap;

use super::super::evidence::Evidence;
use super::super::Finding;
use super::Rule;
use crate::frames::{FrameTable, Side};
use crate::snapshot::{
    Amount, GroupHolder, LargeBlock, LeakGroup, LeakKind, Link, Node, NodeKind, Pinning,
    RetentionPath, SnapshotReport, Totals, FORMAT, VERSION,
};
use crate::{ProfileBuilder, StackView};

/// Frames of real stacks, leaf first.
pub(crate) const HYPER_READ: &[&str] = &[
    "bytes::bytes_mut::BytesMut::reserve_inner",
    "hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io",
    "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_read",
    "<hyper::server::conn::http1::Connection<I,S> as core::future::future::Future>::poll",
    "app::serve::{{closure}}",
];
/// A hand-written protocol over plain tokio sockets: a `BytesMut` filled
/// with `read_buf`; no frame names a receive path.
pub(crate) const TOKIO_READ_BUF: &[&str] = &[
    "bytes::bytes_mut::BytesMut::reserve_inner",
    "bytes::bytes_mut::BytesMut::reserve",
    "<bytes::bytes_mut::BytesMut as bytes::buf::buf_mut::BufMut>::chunk_mut",
    "<tokio::io::util::read_buf::ReadBuf<R,B> as core::future::future::Future>::poll",
    "app::conn::serve::{{closure}}",
    "tokio::runtime::task::core::Core<T,S>::poll",
];
pub(crate) const TONIC_SERVER_READ: &[&str] = &[
    "bytes::bytes_mut::BytesMut::reserve_inner",
    "tonic::codec::decode::StreamingInner::decode_chunk",
    "tonic::server::grpc::Grpc<T>::unary::{{closure}}",
    "<app::proto::svc_server::SvcServer<T> as tower_service::Service<R>>::call::{{closure}}",
];
pub(crate) const TONIC_CLIENT_READ: &[&str] = &[
    "bytes::bytes_mut::BytesMut::reserve_inner",
    "tonic::codec::decode::StreamingInner::decode_chunk",
    "tonic::client::grpc::Grpc<T>::unary::{{closure}}",
    "app::client::call::{{closure}}",
];
pub(crate) const SONIC_LAZY: &[&str] = &[
    "<&bytes::bytes::Bytes as sonic_rs::input::JsonInput>::from_subset",
    "sonic_rs::lazyvalue::get::get_from_bytes",
    "app::profiles::cache_user",
    "app::handler",
];
pub(crate) const HANDLER_ALLOC: &[&str] = &[
    "app::handler::reply",
    "app::handler",
    "tonic::server::grpc::Grpc<T>::unary::{{closure}}",
];
pub(crate) const SERVER_CONNECTION: &[&str] = &[
    "bytes::bytes_mut::BytesMut::with_capacity",
    "h2::codec::framed_write::FramedWrite<T,B>::new",
    "h2::codec::Codec<T,B>::new",
    "h2::server::Connection<T,B>::handshake2",
    "hyper::server::conn::http2::Builder<E>::serve_connection",
];
pub(crate) const CLIENT_CONNECTION: &[&str] = &[
    "bytes::bytes_mut::BytesMut::with_capacity",
    "h2::codec::framed_write::FramedWrite<T,B>::new",
    "h2::codec::Codec<T,B>::new",
    "h2::client::Connection<T,B>::handshake2::{{closure}}",
    "hyper::client::conn::http2::Builder<Ex>::handshake::{{closure}}",
];

/// One point's content.
#[derive(Default)]
pub(crate) struct Point {
    progress: u64,
    /// (frames, live blocks, bytes each, allocations so far).
    stacks: Vec<(Vec<String>, u64, u64, u64)>,
    groups: Vec<LeakGroup>,
    retention: Vec<RetentionPath>,
    pub(crate) pinned: Vec<Pinning>,
    largest: Vec<LargeBlock>,
    /// Source files of functions (default: `src/app.rs` for `app::`, none
    /// for others).
    files: HashMap<String, String>,
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A root named as snapshots name them: `static NAME`, `anonymous memory
/// at ADDR (SIZE)`, else a thread's frame.
fn root_node(label: &str) -> Node {
    let (kind, name) = match label.strip_prefix("static ") {
        Some(name) => (NodeKind::Static, name.to_string()),
        None if label.starts_with(crate::snapshot::ANONYMOUS_MEMORY) => {
            (NodeKind::Data, label.to_string())
        }
        None => (NodeKind::Stack, label.to_string()),
    };
    Node {
        kind,
        name,
        site: Vec::new(),
        size: None,
    }
}

impl Point {
    /// The source file the profiles give `function` (a registry path names
    /// its crate's version).
    pub(crate) fn file(&mut self, function: &str, file: &str) {
        self.files.insert(function.to_string(), file.to_string());
    }

    /// `blocks` live blocks of `each` bytes at `site` (allocated once each).
    pub(crate) fn stack(&mut self, site: &[&str], blocks: i64, each: u64) {
        let b = blocks.max(0) as u64;
        self.stacks.push((strings(site), b, each, b));
    }

    /// As [`Point::stack`], with `allocated` allocations made so far.
    pub(crate) fn stack_allocated(
        &mut self,
        site: &[&str],
        blocks: i64,
        each: u64,
        allocated: u64,
    ) {
        self.stacks
            .push((strings(site), blocks.max(0) as u64, each, allocated));
    }

    /// Connections of one side: `opened` so far, `live` still open.
    pub(crate) fn connections(&mut self, side: Side, opened: u64, live: u64) {
        let site = match side {
            Side::Server => SERVER_CONNECTION,
            Side::Client => CLIENT_CONNECTION,
        };
        self.stack_allocated(site, live as i64, 16384, opened);
    }

    /// `blocks` blocks of `each` bytes at `site`, reachable from `root`
    /// (a label: `static X`, `thread T: f`), through `via` (labels of heap
    /// links between them).
    pub(crate) fn held(&mut self, root: &str, via: &[&str], site: &[&str], blocks: u64, each: u64) {
        self.held_variously(site, &[(root, via, blocks, each)]);
    }

    /// Blocks allocated at `site`, held in several ways: per holder, the
    /// root (a label), the heap links between it and the blocks, how many
    /// blocks and of how many bytes each. As a heap walk reports them: the
    /// group's chain is the largest block's, its holders most bytes first.
    pub(crate) fn held_variously(&mut self, site: &[&str], holders: &[(&str, &[&str], u64, u64)]) {
        let leaf = |each: u64| Node {
            kind: NodeKind::Heap,
            name: site.first().map_or("?", |s| s).to_string(),
            site: strings(site),
            size: Some(each),
        };
        let mut total = Amount::default();
        let mut group_holders = Vec::new();
        for &(root, via, blocks, each) in holders.iter().filter(|h| h.2 > 0) {
            let amount = Amount {
                blocks,
                bytes: blocks * each,
            };
            total.blocks += blocks;
            total.bytes += amount.bytes;
            let mut chain = vec![Link {
                node: root_node(root),
                offset: 0,
            }];
            // A link's allocation stack: its frames separated by `|`.
            let frames = |v: &str| -> Vec<String> { v.split('|').map(str::to_string).collect() };
            chain.extend(via.iter().map(|v| Link {
                node: Node {
                    kind: NodeKind::Heap,
                    name: frames(v)[0].clone(),
                    site: frames(v),
                    size: Some(64),
                },
                offset: 0,
            }));
            chain.push(Link {
                node: leaf(each),
                offset: 0,
            });
            let mut path = vec![root.to_string()];
            path.extend(via.iter().map(|v| format!("{} (heap)", frames(v)[0])));
            path.push(leaf(each).label());
            self.retention.push(RetentionPath { path, amount });
            group_holders.push(GroupHolder { amount, chain });
        }
        if total.blocks > 0 {
            let largest = group_holders
                .iter()
                .max_by_key(|h| h.amount.bytes / h.amount.blocks)
                .map(|h| h.chain.clone())
                .unwrap_or_default();
            group_holders.sort_by_key(|h| std::cmp::Reverse(h.amount.bytes));
            self.groups.push(LeakGroup {
                kind: LeakKind::StillReachable,
                site: strings(site),
                amount: total,
                chain: largest,
                holders: group_holders,
            });
        }
        self.stack(site, total.blocks as i64, total.bytes / total.blocks.max(1));
    }

    /// As [`Point::held`], directly from the root.
    pub(crate) fn group(&mut self, root: &str, site: &[&str], blocks: u64, each: u64) {
        self.held(root, &[], site, blocks, each);
    }

    /// `blocks` buffers of `each` bytes read at `site`, held by `root`
    /// through slices of `slice` bytes each.
    pub(crate) fn pin(&mut self, root: &str, site: &[&str], blocks: u64, each: u64, slice: u64) {
        self.group(root, site, blocks, each);
        if blocks > 0 {
            self.pinned.push(Pinning {
                holder: root_node(root),
                buffer_site: strings(site),
                buffers: Amount {
                    blocks,
                    bytes: blocks * each,
                },
                slice_bytes: blocks * slice,
                with_stacks: None,
                fields: Vec::new(),
                chain: vec![Link {
                    node: root_node(root),
                    offset: 0,
                }],
            });
        }
    }

    /// As [`Point::pin`], as a heap walk finds it: the slices are in a
    /// block whose stack was not sampled, reached from `root`.
    pub(crate) fn pin_walked(
        &mut self,
        root: &str,
        site: &[&str],
        blocks: u64,
        each: u64,
        slice: u64,
    ) {
        self.group(root, site, blocks, each);
        if blocks > 0 {
            let holder = Node {
                kind: NodeKind::Heap,
                name: "(allocation stack not sampled)".to_string(),
                site: Vec::new(),
                size: Some(4096),
            };
            self.pinned.push(Pinning {
                holder: holder.clone(),
                buffer_site: strings(site),
                buffers: Amount {
                    blocks,
                    bytes: blocks * each,
                },
                slice_bytes: blocks * slice,
                with_stacks: None,
                fields: Vec::new(),
                chain: vec![
                    Link {
                        node: root_node(root),
                        offset: 0,
                    },
                    Link {
                        node: holder,
                        offset: 0,
                    },
                ],
            });
        }
    }

    /// One of the largest live blocks, held from `root`.
    pub(crate) fn large(&mut self, root: &str, site: &[&str], size: u64) {
        self.group(root, site, 1, size);
        self.largest.push(LargeBlock {
            size,
            kind: LeakKind::StillReachable,
            site: strings(site),
            chain: vec![Link {
                node: root_node(root),
                offset: 0,
            }],
        });
    }
}

/// A synthetic run.
pub(crate) struct Run {
    pub(crate) profiles: Vec<StackView>,
    pub(crate) snapshots: Vec<SnapshotReport>,
    frames: FrameTable,
}

/// Points in a run (the last is written at exit).
pub(crate) const POINTS: i64 = 9;
/// Live bytes of a service that does not leak, in every point.
const BASELINE: u64 = 4 << 20;

impl Run {
    /// Profiles and snapshots; `f(t, point)` fills the point at second `t`.
    /// Progress is 100 requests a second unless set.
    pub(crate) fn new(f: impl Fn(i64, &mut Point)) -> Run {
        Self::build(true, f)
    }

    /// Profiles only (sampled mode, saved profiles).
    pub(crate) fn stacks_only(f: impl Fn(i64, &mut Point)) -> Run {
        Self::build(false, f)
    }

    /// Profiles and heap walks (sampled mode with snapshots): rules judge
    /// the stacks; the walks only say who holds what.
    pub(crate) fn walked(f: impl Fn(i64, &mut Point)) -> Run {
        let mut run = Self::build(true, f);
        for s in &mut run.snapshots {
            s.blocks_from = crate::snapshot::BlocksFrom::HeapWalk;
        }
        run
    }

    fn build(with_snapshots: bool, f: impl Fn(i64, &mut Point)) -> Run {
        let mut profiles = Vec::new();
        let mut snapshots = Vec::new();
        for t in 0..POINTS {
            let mut p = Point {
                progress: 100 * t as u64,
                ..Point::default()
            };
            p.stack(&["app::config::load", "app::main"], 4096, BASELINE / 4096);
            f(t, &mut p);
            profiles.push(profile(t, &p));
            if with_snapshots {
                snapshots.push(snapshot(t, p));
            }
        }
        Run {
            profiles,
            snapshots,
            frames: FrameTable::builtin(),
        }
    }

    pub(crate) fn evidence(&self) -> Evidence<'_> {
        Evidence::build(&self.snapshots, &self.profiles, &self.frames)
    }

    /// The same run read with `frames` (a user's additions).
    pub(crate) fn with_frames(mut self, frames: FrameTable) -> Run {
        self.frames = frames;
        self
    }
}

fn profile(t: i64, p: &Point) -> StackView {
    let mut b = ProfileBuilder::new(&crate::HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
    b.set_default_sample_type("inuse_space");
    b.set_time_nanos((1_700_000_000 + t) * 1_000_000_000);
    b.add_comment(&format!("{}{}", crate::PROGRESS_COMMENT, p.progress));
    let mut locations: HashMap<String, crate::builder::Id> = HashMap::new();
    for (frames, live, each, allocated) in &p.stacks {
        let ids: Vec<_> = frames
            .iter()
            .map(|name| {
                let next = locations.len() as u64 + 1;
                *locations.entry(name.clone()).or_insert_with(|| {
                    let file = match p.files.get(name) {
                        Some(file) => file.as_str(),
                        None if name.starts_with("app::") => "src/app.rs",
                        None => "",
                    };
                    let f = b.function(name, name, file, 1);
                    b.location(0, 0x1000 * next, &[(f, 1)])
                })
            })
            .collect();
        b.add_sample(
            &ids,
            &[
                *allocated as i64,
                (*allocated * *each) as i64,
                *live as i64,
                (*live * *each) as i64,
            ],
            &[],
        );
    }
    StackView::new(&b.build())
}

fn snapshot(t: i64, p: Point) -> SnapshotReport {
    let live: u64 = p.stacks.iter().map(|s| s.1 * s.2).sum();
    let blocks: u64 = p.stacks.iter().map(|s| s.1).sum();
    let mut largest = p.largest;
    largest.sort_by_key(|b| std::cmp::Reverse(b.size));
    SnapshotReport {
        format: FORMAT.into(),
        version: VERSION,
        pid: 1,
        time_unix_ms: (1_700_000_000 + t as u64) * 1000,
        progress: p.progress,
        pause_ms: 1.0,
        analysis_ms: 1.0,
        threads: Vec::new(),
        totals: Totals {
            live: Amount {
                blocks,
                bytes: live,
            },
            ..Totals::default()
        },
        holders: Vec::new(),
        pinned: p.pinned,
        groups: p.groups,
        largest,
        dependency_crates: Vec::new(),
        dependency_versions: Vec::new(),
        retention: p.retention,
        blocks_from: Default::default(),
        with_stacks: Amount {
            blocks,
            bytes: live,
        },
        glibc_heap: None,
        memory: None,
    }
}

/// The one finding `rule` makes on `run`.
pub(crate) fn only(run: &Run, rule: &dyn Rule) -> Finding {
    let found = rule.check(&run.evidence());
    assert_eq!(found.len(), 1, "{found:#?}");
    found.into_iter().next().expect("one finding")
}

/// A memory breakdown at second `t` of the run (nine points, as the
/// profiles): the given parts (resident bytes, mappings), RSS their sum,
/// glibc's figures with `top` of the free memory at the arenas' tops and
/// the rest in bins.
pub(crate) fn memory_point(
    t: u64,
    parts: &[(crate::memory::PartKind, u64, u32)],
    top: u64,
) -> crate::memory::Breakdown {
    use crate::memory::{AllocatorHeap, Breakdown, HeapFigures, HeapSource, Part, PartKind};
    let resident = |k: PartKind| parts.iter().find(|p| p.0 == k).map_or(0, |p| p.1);
    let free = resident(PartKind::HeapFree);
    Breakdown {
        format: crate::memory::FORMAT.into(),
        version: crate::memory::VERSION,
        pid: 1,
        time_unix_ms: (1_700_000_000 + t) * 1000,
        rss: parts.iter().map(|p| p.1).sum(),
        mapped_rss: parts.iter().map(|p| p.1).sum(),
        parts: PartKind::ALL
            .iter()
            .map(|&kind| Part {
                kind,
                resident: resident(kind),
                mappings: parts.iter().find(|p| p.0 == kind).map_or(0, |p| p.2),
            })
            .collect(),
        heap: HeapFigures {
            live: None,
            allocator: AllocatorHeap {
                from: HeapSource::Mallinfo2,
                allocator: "glibc 2.36".into(),
                in_use_bytes: resident(PartKind::HeapInUse),
                free_in_bins: free - top.min(free),
                top_bytes: top.min(free),
                ..AllocatorHeap::default()
            },
            leakscope_blocks: Amount::default(),
        },
        notes: Vec::new(),
    }
}

/// Nine breakdowns, one a second, from what `f` says of second `t`.
pub(crate) fn memory_run(
    f: impl Fn(u64) -> (Vec<(crate::memory::PartKind, u64, u32)>, u64),
) -> Vec<crate::memory::Breakdown> {
    (0..9)
        .map(|t| {
            let (parts, top) = f(t);
            memory_point(t, &parts, top)
        })
        .collect()
}
