//! What the three slice-pinning rules share: which pinned buffers count, and
//! the one place a pinning finding's evidence is written.

use super::super::evidence::{Evidence, PinEvidence, SnapshotEvidence, StackEvidence};
use super::super::thresholds::CONFIDENCE_STACK_ONLY;
use super::super::thresholds::{
    CONFIDENCE_PINNED, CONFIDENCE_PINNED_GROWING, MIN_PINNED_BYTES, MIN_PINNED_SHARE,
};
use super::super::Finding;
use super::{bytes, chain_labels, finding, stack_finding};
use crate::frames::Class;
use crate::snapshot::NodeKind;

/// Pinned buffers kept by the application (a static, or a structure its own
/// code allocated), and enough of them to matter. A framework's connection
/// state holding a slice of its current read buffer is how buffers work,
/// not a leak.
pub(crate) fn counts(ev: &Evidence, p: &PinEvidence) -> bool {
    ev.snapshots.as_ref().is_some_and(|s| counts_in(ev, s, p))
}

/// The same for the pins of `snaps` (a run's snapshots or its heap walks).
/// A heap walk knows no stack for most holders: one whose chain starts at
/// a static is the application's (a framework's connection state is
/// reached from thread stacks and task lists, not from a static).
pub(crate) fn counts_in(ev: &Evidence, snaps: &SnapshotEvidence, p: &PinEvidence) -> bool {
    let live = snaps.last.totals.live.bytes.max(1);
    if p.pin.buffers.bytes < MIN_PINNED_BYTES.min(live / MIN_PINNED_SHARE) {
        return false;
    }
    match p.pin.holder.kind {
        NodeKind::Static | NodeKind::Data => true,
        NodeKind::Heap if p.pin.holder.site.is_empty() => p
            .pin
            .chain
            .first()
            .is_some_and(|l| matches!(l.node.kind, NodeKind::Static | NodeKind::Data)),
        NodeKind::Heap => p
            .pin
            .holder
            .site
            .first()
            .is_some_and(|f| ev.is_application(f)),
        _ => false,
    }
}

/// A pin of the heap walk (sampled mode) that [`counts_in`], is not JSON
/// values, and whose buffers were allocated where the growing stack `s`
/// allocates: the same frames up to its receive frame (else its first
/// frame past allocation plumbing). Callers above may differ: hyper reads
/// into its buffer from `parse` and from `force_io_read`, and the sampled
/// profile may rank either path first. Or the same application function
/// asked for both, through a few library frames: a connection's read
/// buffer is made by `BytesMut::with_capacity` and regrown by `reserve`
/// in the same handler, and the walk may have sampled either kind.
pub(crate) fn walked_pin<'e>(ev: &'e Evidence, s: &StackEvidence) -> Option<&'e PinEvidence> {
    walked_pin_of(ev, s, false)
}

/// [`walked_pin`] for pins whose holder is (or reaches) JSON values.
pub(crate) fn walked_json_pin<'e>(ev: &'e Evidence, s: &StackEvidence) -> Option<&'e PinEvidence> {
    walked_pin_of(ev, s, true)
}

fn walked_pin_of<'e>(ev: &'e Evidence, s: &StackEvidence, json: bool) -> Option<&'e PinEvidence> {
    let walked = ev.walked.as_ref()?;
    let stack = s.frames();
    let upto = s
        .facts
        .role_frame
        .or(s.facts.leaf)
        .map_or(usize::MAX, |i| i + 1);
    let same = |site: &[String]| {
        // A snapshot's sites stop after 16 frames: one may be a prefix.
        let n = site.len().min(stack.len()).min(upto);
        n >= 1 && site[..n] == stack[..n]
    };
    let same_caller = |p: &PinEvidence| {
        same_application_caller(
            stack,
            s.facts.first_app,
            &p.pin.buffer_site,
            p.buffer_facts.first_app,
        )
    };
    walked
        .pins
        .iter()
        .filter(|p| (same(&p.pin.buffer_site) || same_caller(p)) && counts_in(ev, walked, p))
        .filter(|p| walked_json(ev, walked, p) == json)
        .max_by_key(|p| p.pin.buffers.bytes)
}

/// How deep under its first application frame a buffer may be allocated
/// for that frame to count as the one that asked for it: a few library
/// frames (`reserve` < `chunk_mut` < `ReadBuf::poll`). Deeper, the first
/// application frame is a spawn site or `main`, which asked for everything.
const MAX_LIBRARY_DEPTH: usize = 8;

/// Whether two stacks (leaf first) reach their first application frames
/// (`i` in `a`, `j` in `b`) within [`MAX_LIBRARY_DEPTH`] and agree from
/// there on (as far as both go: a snapshot's sites stop after 16 frames).
fn same_application_caller(a: &[String], i: Option<usize>, b: &[String], j: Option<usize>) -> bool {
    let (Some(i), Some(j)) = (i, j) else {
        return false;
    };
    if i > MAX_LIBRARY_DEPTH || j > MAX_LIBRARY_DEPTH || i >= a.len() || j >= b.len() {
        return false;
    }
    let n = (a.len() - i).min(b.len() - j);
    a[i..i + n] == b[j..j + n]
}

/// Whether a walk's pin is JSON values': its holder is (or reaches) them,
/// or, where the walk knows nothing of the holder (its allocation was not
/// sampled), the run makes zero-copy JSON values. The pinned buffers are
/// the walk's evidence either way; this only says whose slices they are.
fn walked_json(ev: &Evidence, walked: &SnapshotEvidence, p: &PinEvidence) -> bool {
    is_json_in(walked, p) || (p.pin.holder.site.is_empty() && ev.seen.contains(Class::JsonZeroCopy))
}

/// The finding for a growing stack whose buffers a heap walk finds pinned:
/// the evidence a stack alone lacks (a stack's name never chooses a
/// slice-pinning scenario). `kept` says what is being kept.
pub(crate) fn walked_finding(
    ev: &Evidence,
    id: &str,
    s: &StackEvidence,
    p: &PinEvidence,
    kept: &str,
) -> Finding {
    let pin = &p.pin;
    stack_finding(
        ev,
        id,
        CONFIDENCE_STACK_ONLY,
        s,
        format!(
            "a walk of glibc's heap finds {} buffers allocated here ({}) kept alive by {} of \
             slices of them, held from {}: {kept}",
            pin.buffers.blocks,
            bytes(pin.buffers.bytes as f64),
            bytes(pin.slice_bytes as f64),
            p.root.as_deref().unwrap_or("an unknown root")
        ),
    )
}

/// Whether the pinning holder is (or reaches) values made by a JSON parser.
pub(crate) fn is_json(ev: &Evidence, p: &PinEvidence) -> bool {
    ev.snapshots.as_ref().is_some_and(|s| is_json_in(s, p))
}

fn is_json_in(snaps: &SnapshotEvidence, p: &PinEvidence) -> bool {
    let json =
        |c: crate::frames::Classes| c.contains(Class::Json) || c.contains(Class::JsonZeroCopy);
    slices_in_json_documents(&p.pin)
        || json(p.holder_facts.classes)
        || (p.root.is_some()
            && snaps.sites.iter().any(|g| {
                json(g.facts.classes) && g.chain.first().map(|l| l.node.label()) == p.root
            }))
}

/// Whether most of the pinned buffers have their slice inside a JSON
/// document (a value or key at a JSON path, as the snapshot's field
/// attribution read it): whatever allocated the holder (a map's table that
/// keeps parsed values inline, sampled in a walk while the parser's own
/// blocks were not), the slices are JSON values' borrowed strings.
fn slices_in_json_documents(pin: &crate::snapshot::Pinning) -> bool {
    let in_json: u64 = pin
        .fields
        .iter()
        .filter(|f| f.field.json_path.is_some())
        .map(|f| f.buffers)
        .sum();
    in_json * 2 > pin.buffers.blocks
}

/// The finding for pinned buffers: counts, sizes, where they were read,
/// who holds the slices, the chain.
pub(crate) fn pinned_finding(ev: &Evidence, p: &PinEvidence, id: &str) -> Finding {
    let pin = &p.pin;
    let growing = pin.buffers.bytes > p.earlier_bytes && ev.heap_grows();
    let mut f = finding(
        id,
        if growing {
            CONFIDENCE_PINNED_GROWING
        } else {
            CONFIDENCE_PINNED
        },
    );
    let avg = pin.buffers.bytes as f64 / pin.buffers.blocks.max(1) as f64;
    // Where the buffers were read: the receive-path frame, else the leaf.
    let read_at = p
        .buffer_facts
        .role_frame
        .or(p.buffer_facts.leaf)
        .and_then(|i| pin.buffer_site.get(i))
        .or(pin.buffer_site.first())
        .map_or("an unknown stack", String::as_str);
    let held_in = p
        .holder_facts
        .first_app
        .and_then(|i| pin.holder.site.get(i))
        .map_or(pin.holder.name.as_str(), String::as_str);
    f.evidence.push(format!(
        "{} buffers ({}, about {} each) allocated in {} are kept alive by {} of slices of them",
        pin.buffers.blocks,
        bytes(pin.buffers.bytes as f64),
        bytes(avg),
        read_at,
        bytes(pin.slice_bytes as f64)
    ));
    // Field attributions (which message field, JSON path or HTTP offset the
    // slices are of) go here when the snapshot carries them.
    f.evidence.push(format!(
        "the slices are held in {} (allocated in {held_in})",
        pin.holder.label()
    ));
    f.evidence.push(format!(
        "holder chain: {}",
        crate::snapshot::chain_text(&pin.chain)
    ));
    if growing {
        f.evidence
            .push("the number of pinned buffers grows over the run".to_string());
    }
    f.chain = chain_labels(&pin.chain);
    f.stack = pin.buffer_site.clone();
    f.claims.extend(p.root.iter().cloned());
    f.claims.push(pin.holder.label());
    f
}
