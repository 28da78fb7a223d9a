//! Every number the rules decide with, in one place. Growth itself is not
//! here: the growth model ([`crate::trend`]) decides what grows.

/// A holder-based finding (from snapshots) whose holder grows.
pub const CONFIDENCE_HOLDER: f64 = 0.85;
/// Pinned buffers whose number grows: the strongest evidence there is.
pub const CONFIDENCE_PINNED_GROWING: f64 = 0.95;
/// Pinned buffers that do not (yet) grow.
pub const CONFIDENCE_PINNED: f64 = 0.75;
/// Many live instances of what a client constructor builds.
pub const CONFIDENCE_INSTANCES: f64 = 0.9;
/// Live task cells or queue blocks counted per call site.
pub const CONFIDENCE_COUNTED: f64 = 0.9;
/// The general case (a collection that only grows), from a snapshot.
pub const CONFIDENCE_GENERAL_HOLDER: f64 = 0.8;
/// ... when what the holder reaches grew by at least this much.
pub const MIN_GENERAL_HOLDER_GROWTH: u64 = 256 << 10;
/// A dependency's own state that grows, from a snapshot: its holder is
/// known, what to bound in it is the dependency's to say.
pub const CONFIDENCE_DEPENDENCY_HOLDER: f64 = 0.8;
/// A scenario suggested by growing stacks alone: the holder is unknown.
pub const CONFIDENCE_STACK_ONLY: f64 = 0.5;
/// A finding from stacks whose sampled blocks a heap walk finds held by a
/// static: memory is being held (enough for a "leak" verdict), though the
/// rule judged the stack alone.
pub const CONFIDENCE_WALKED_STATIC: f64 = 0.6;
/// Size outliers measured in the profiles (a block of 1 MiB is sampled
/// with near certainty), without a holder.
pub const CONFIDENCE_OUTLIERS_FROM_STACKS: f64 = 0.6;
/// The general case from stacks alone.
pub const CONFIDENCE_GENERAL_STACK: f64 = 0.4;
/// Growth allocated inside a dependency's code, from stacks alone: what
/// the stacks do show (which crate allocates).
pub const CONFIDENCE_DEPENDENCY_STACK: f64 = 0.45;
/// Growth nothing explains.
pub const CONFIDENCE_UNCLASSIFIED: f64 = 0.3;

/// A finding at least this sure makes the verdict "leak" even when the
/// heap as a whole does not grow (memory held, e.g. by a pool).
pub const VERDICT_CONFIDENCE: f64 = 0.6;

/// Pinned buffers worth a finding: at least this many bytes ...
pub const MIN_PINNED_BYTES: u64 = 1 << 20;
/// ... or this share of the live heap, whichever is less.
pub const MIN_PINNED_SHARE: u64 = 5;

/// A size outlier: at least this large ...
pub const OUTLIER_MIN_BYTES: u64 = 1 << 20;
/// ... and this many times the average live block.
pub const OUTLIER_FACTOR: f64 = 64.0;

/// Client-per-call: at least this many live instances, each allocating at
/// least this much.
pub const MIN_INSTANCES: u64 = 16;
pub const MIN_INSTANCE_BYTES: u64 = 4096;

/// Idle connections: live connections grew by at least this many.
pub const MIN_NEW_CONNECTIONS: f64 = 10.0;
/// Cross-connection retention: at least this many connections opened, and
/// at most a quarter of them still open.
pub const MIN_OPENED_CONNECTIONS: f64 = 8.0;
pub const MAX_OPEN_SHARE: f64 = 0.25;

/// Task leak: live tasks of one spawn site grew by at least this many.
pub const MIN_NEW_TASKS: u64 = 64;
/// Unbounded channel: its queue grew by at least this many blocks (a
/// tokio block holds 32 messages).
pub const MIN_NEW_QUEUE_BLOCKS: u64 = 4;

/// "About one per request (or connection)": the ratio of blocks kept to
/// requests (or connections) lies in this range.
pub const PER_EVENT_RANGE: (f64, f64) = (0.5, 2.0);
/// A kept block this large on average is a payload (a reply, a request
/// copy), not an index entry.
pub const PAYLOAD_BYTES: f64 = 1024.0;
/// Growing stacks named as unclassified, at most.
pub const UNCLASSIFIED_STACKS: usize = 3;

/// Connection counts from sampled profiles use only blocks of at least a
/// sampling period divided by this (sampled with probability above 11%):
/// one sample of a 100-byte block stands for hundreds of blocks.
pub const SAMPLED_COUNT_DIVISOR: f64 = 8.0;

/// RSS grows, for the memory rules: by at least this many bytes ...
pub const MIN_RSS_GROWTH_BYTES: i64 = 8 << 20;
/// ... and this share of RSS after warm-up.
pub const MIN_RSS_GROWTH_SHARE: f64 = 0.10;
/// One part explains RSS growth when it grew by at least this share of it.
pub const EXPLAINING_SHARE: f64 = 0.5;
/// The live heap is flat beside RSS when it grew by at most this share of
/// RSS's growth.
pub const FLAT_LIVE_SHARE: f64 = 0.25;
/// The allocator keeps freed memory while the live heap is flat.
pub const CONFIDENCE_ALLOCATOR: f64 = 0.85;
/// The same while the live heap also grows (a leak may be the rest).
pub const CONFIDENCE_ALLOCATOR_BESIDE_GROWTH: f64 = 0.5;
/// One kind of mapping outside the heap explains RSS's growth.
pub const CONFIDENCE_OUTSIDE_HEAP: f64 = 0.9;
