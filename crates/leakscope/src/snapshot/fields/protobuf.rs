//! The protobuf wire format, walked to the field that contains a slice.
//!
//! A message is a sequence of fields, each a key (field number and wire
//! type, one varint) and a value: a varint, 8 or 4 fixed bytes, or a length
//! and that many bytes (strings, bytes, nested messages, packed repeated
//! scalars). The walker checks every field it passes and never reads outside
//! the range it is given; anything that does not parse is "not a protobuf
//! message", never a guessed field. Groups (wire types 3 and 4, deprecated
//! since proto2) are treated as corrupt.
//!
//! A length-delimited field is walked into as a nested message only when its
//! whole value parses cleanly as fields and the slice lies inside one of
//! their length-delimited values: a `bytes` payload that happens to start
//! like a key stays the field it is. Without the schema a nested message and
//! a `bytes` field holding an encoded message look the same; the naming step
//! (with descriptors) stops the path at a `bytes` field.

use super::MAX_TAGS;

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const I32: u8 = 5;

/// The largest field number protobuf allows (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// Fields looked at in one attribution, at most: a bound on the work per
/// buffer whatever its contents (each field costs a few instructions).
const FIELD_BUDGET: u32 = 1 << 20;

/// Frames of one buffer looked at, at most.
const MAX_FRAMES: u32 = 1 << 16;

/// Where a slice lies in a message: the field path from the outermost
/// message inwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) depth: usize,
    /// Field numbers, outermost first.
    pub(crate) tags: [u32; MAX_TAGS],
    /// Per level: the field numbers that occur in that message (bit `n` for
    /// numbers 1 to 63; bit 0 for any larger number), for choosing the
    /// message type whose fields fit best.
    pub(crate) seen: [u64; MAX_TAGS],
    /// Wire type of the innermost field.
    pub(crate) wire_type: u8,
    /// The innermost field's value: start offset in the buffer and length.
    pub(crate) value_start: usize,
    pub(crate) value_len: usize,
}

impl Path {
    fn new() -> Path {
        Path {
            depth: 0,
            tags: [0; MAX_TAGS],
            seen: [0; MAX_TAGS],
            wire_type: 0,
            value_start: 0,
            value_len: 0,
        }
    }
}

/// What the start of a buffer says about gRPC framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grpc {
    /// The slice is in the message of a frame starting at `start`.
    Message { start: usize, path: Path },
    /// The slice is in a compressed message (its fields are not visible).
    Compressed { start: usize },
    /// The buffer is framed as gRPC but the message holding the slice does
    /// not parse (or a frame runs past the buffer's end).
    Corrupt,
    /// The buffer does not start with a gRPC frame around the slice.
    NotFramed,
}

/// A field's key and value range.
#[derive(Clone, Copy, Debug)]
struct Field {
    number: u32,
    wire_type: u8,
    value_start: usize,
    value_end: usize,
}

/// Reads a varint at `at`, ending before `end`: its value and the offset
/// after it. At most ten bytes, the tenth holding only the top bit.
fn varint(buf: &[u8], at: usize, end: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let pos = at + i;
        if pos >= end {
            return None;
        }
        let byte = *buf.get(pos)?;
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, pos + 1));
        }
    }
    None
}

/// Reads the field at `at`; its value must end by `end`.
fn field(buf: &[u8], at: usize, end: usize) -> Option<Field> {
    let (key, start) = varint(buf, at, end)?;
    let number = key >> 3;
    if number == 0 || number > MAX_FIELD_NUMBER {
        return None;
    }
    let wire_type = (key & 7) as u8;
    let (value_start, value_end) = match wire_type {
        VARINT => (start, varint(buf, start, end)?.1),
        I64 => (start, start.checked_add(8)?),
        I32 => (start, start.checked_add(4)?),
        LEN => {
            let (len, value_start) = varint(buf, start, end)?;
            let len = usize::try_from(len).ok()?;
            (value_start, value_start.checked_add(len)?)
        }
        _ => return None,
    };
    (value_end <= end).then_some(Field {
        number: number as u32,
        wire_type,
        value_start,
        value_end,
    })
}

fn seen_bit(number: u32) -> u64 {
    if number < 64 {
        1 << number
    } else {
        1
    }
}

/// Whether `buf[start..end]` is exactly a sequence of valid fields; returns
/// the field numbers seen.
fn parses_cleanly(buf: &[u8], start: usize, end: usize, budget: &mut u32) -> Option<u64> {
    let mut at = start;
    let mut seen = 0;
    while at < end {
        *budget = budget.checked_sub(1)?;
        let f = field(buf, at, end)?;
        seen |= seen_bit(f.number);
        at = f.value_end;
    }
    Some(seen)
}

/// The field of the message `buf[start..end]` whose value holds
/// `[off, off + len)`, walking every field of the message (`strict`: the
/// fields must end exactly at `end`) or only up to that field (the end of
/// an unframed message is not known). Returns it and the field numbers seen.
fn containing_field(
    buf: &[u8],
    start: usize,
    end: usize,
    off: usize,
    len: usize,
    strict: bool,
    budget: &mut u32,
) -> Option<(Field, u64)> {
    let mut at = start;
    let mut seen = 0;
    let mut found = None;
    while at < end {
        *budget = budget.checked_sub(1)?;
        let f = field(buf, at, end)?;
        seen |= seen_bit(f.number);
        if off >= f.value_start && off + len <= f.value_end {
            found = Some(f);
            if !strict {
                break;
            }
        } else if off < f.value_start && found.is_none() {
            // The slice starts in this field's key: no field's value.
            return None;
        }
        at = f.value_end;
    }
    found.map(|f| (f, seen))
}

/// Walks the message `buf[start..end]` down to the innermost field holding
/// `[off, off + len)`.
pub(crate) fn walk(
    buf: &[u8],
    start: usize,
    end: usize,
    off: usize,
    len: usize,
    strict: bool,
) -> Option<Path> {
    if end > buf.len() || start > end || off < start || off + len > end {
        return None;
    }
    let mut budget = FIELD_BUDGET;
    let mut path = Path::new();
    let (mut f, seen) = containing_field(buf, start, end, off, len, strict, &mut budget)?;
    path.tags[0] = f.number;
    path.seen[0] = seen;
    path.depth = 1;
    // Into nested messages while the value parses as one and the slice is
    // inside a length-delimited value of it (not the whole value itself).
    while f.wire_type == LEN
        && path.depth < MAX_TAGS
        && !(off == f.value_start && off + len == f.value_end)
    {
        let mut trial = budget;
        let Some(inner_seen) = parses_cleanly(buf, f.value_start, f.value_end, &mut trial) else {
            break;
        };
        let Some((inner, _)) =
            containing_field(buf, f.value_start, f.value_end, off, len, true, &mut trial)
        else {
            break;
        };
        if inner.wire_type != LEN {
            break;
        }
        budget = trial;
        path.tags[path.depth] = inner.number;
        path.seen[path.depth] = inner_seen;
        path.depth += 1;
        f = inner;
    }
    path.wire_type = f.wire_type;
    path.value_start = f.value_start;
    path.value_len = f.value_end - f.value_start;
    Some(path)
}

/// Reads the buffer as gRPC frames from its start (a compression flag of 0
/// or 1, a 4-byte big-endian length, the message) up to the frame holding
/// `[off, off + len)`.
pub(crate) fn grpc(buf: &[u8], off: usize, len: usize) -> Grpc {
    let mut at = 0usize;
    for _ in 0..MAX_FRAMES {
        let Some(header) = buf.get(at..at + 5) else {
            return Grpc::NotFramed;
        };
        let flag = header[0];
        if flag > 1 {
            return Grpc::NotFramed;
        }
        let message_len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let start = at + 5;
        let end = start + message_len;
        if off < start {
            // The slice starts in a frame header.
            return Grpc::NotFramed;
        }
        if end > buf.len() {
            // A frame running past the buffer: truncated (or not gRPC, but
            // then not text, JSON or a protobuf message either: those never
            // start with a 0 or 1 byte).
            return Grpc::Corrupt;
        }
        if off + len <= end {
            if flag == 1 {
                return Grpc::Compressed { start };
            }
            return match walk(buf, start, end, off, len, true) {
                Some(path) => Grpc::Message { start, path },
                None => Grpc::Corrupt,
            };
        }
        if off < end {
            // The slice runs across the frame's end.
            return Grpc::Corrupt;
        }
        at = end;
    }
    Grpc::NotFramed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes protobuf by hand, as the tests' ground truth.
    #[derive(Default)]
    pub(crate) struct Enc(pub(crate) Vec<u8>);

    impl Enc {
        pub(crate) fn varint_raw(&mut self, mut v: u64) -> &mut Self {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(byte);
                    return self;
                }
                self.0.push(byte | 0x80);
            }
        }
        fn key(&mut self, number: u32, wire_type: u8) -> &mut Self {
            self.varint_raw(u64::from(number) << 3 | u64::from(wire_type))
        }
        pub(crate) fn varint(&mut self, number: u32, v: u64) -> &mut Self {
            self.key(number, VARINT).varint_raw(v)
        }
        pub(crate) fn fixed64(&mut self, number: u32, v: u64) -> &mut Self {
            self.key(number, I64);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn fixed32(&mut self, number: u32, v: u32) -> &mut Self {
            self.key(number, I32);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn bytes(&mut self, number: u32, v: &[u8]) -> &mut Self {
            self.key(number, LEN).varint_raw(v.len() as u64);
            self.0.extend_from_slice(v);
            self
        }
    }

    pub(crate) fn grpc_frame(message: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    /// The value offset of `needle` in `hay`.
    pub(crate) fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("needle present")
    }

    fn tags(p: &Path) -> &[u32] {
        &p.tags[..p.depth]
    }

    fn message(buf: &[u8], grpc_result: Grpc) -> Path {
        match grpc_result {
            Grpc::Message { path, .. } => path,
            other => panic!("not a message: {other:?} in {buf:?}"),
        }
    }

    #[test]
    fn names_a_bytes_field_of_a_grpc_frame() {
        // lab.EchoRequest { id: 7, payload: "abcdefgh..." }
        let payload: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
        let mut m = Enc::default();
        m.varint(1, 7).bytes(2, &payload);
        let buf = grpc_frame(&m.0);
        let at = 5 + find(&m.0, &payload);
        let p = message(&buf, grpc(&buf, at, 1));
        assert_eq!(tags(&p), [2]);
        assert_eq!(p.wire_type, LEN);
        assert_eq!((p.value_start, p.value_len), (at, 300));
        assert_eq!(p.seen[0], 1 << 1 | 1 << 2);
        // The whole field, and its last byte (at the buffer's end).
        assert_eq!(tags(&message(&buf, grpc(&buf, at, 300))), [2]);
        assert_eq!(tags(&message(&buf, grpc(&buf, buf.len() - 1, 1))), [2]);
        // The id's varint is a field too, but a slice never starts in a key.
        assert_eq!(tags(&message(&buf, grpc(&buf, 6, 1))), [1]);
        assert_eq!(grpc(&buf, 5, 1), Grpc::Corrupt);
    }

    #[test]
    fn walks_into_nested_messages_that_parse_cleanly() {
        // Outer { 1: 42, 3: Inner { 1: "name-of-it", 2: Deeper { 5: "x..." } }, 4: 9 }
        let text = b"the-deepest-text".repeat(4);
        let mut deeper = Enc::default();
        deeper.varint(1, 1).bytes(5, &text);
        let mut inner = Enc::default();
        inner.bytes(1, b"name-of-it").bytes(2, &deeper.0);
        let mut outer = Enc::default();
        outer.varint(1, 42).bytes(3, &inner.0).varint(4, 9);
        let buf = grpc_frame(&outer.0);
        let name = 5 + find(&outer.0, b"name-of-it");
        let p = message(&buf, grpc(&buf, name + 2, 3));
        assert_eq!(tags(&p), [3, 1]);
        assert_eq!((p.value_start, p.value_len), (name, 10));
        assert_eq!(p.seen[0], 1 << 1 | 1 << 3 | 1 << 4);
        assert_eq!(p.seen[1], 1 << 1 | 1 << 2);
        let deep = 5 + find(&outer.0, &text);
        let p = message(&buf, grpc(&buf, deep + 10, 8));
        assert_eq!(tags(&p), [3, 2, 5]);
        assert_eq!(p.seen[2], 1 << 1 | 1 << 5);
        // A slice of the whole nested message is field 3 itself.
        let whole = 5 + find(&outer.0, &inner.0);
        assert_eq!(tags(&message(&buf, grpc(&buf, whole, inner.0.len()))), [3]);
    }

    #[test]
    fn a_bytes_value_that_does_not_parse_stays_the_field() {
        // 0x0a 0xff: a key and a length running past the value's end.
        let mut m = Enc::default();
        m.bytes(2, &[0x0a, 0xff, 0x01, 0x02, 0x03]);
        let buf = grpc_frame(&m.0);
        let p = message(&buf, grpc(&buf, 5 + 2 + 2, 2));
        assert_eq!(tags(&p), [2]);
        // Parses cleanly, but the slice is in a varint, not a nested value.
        let mut m = Enc::default();
        m.bytes(2, &[0x08, 0x96, 0x01]);
        let buf = grpc_frame(&m.0);
        assert_eq!(tags(&message(&buf, grpc(&buf, 5 + 3, 1))), [2]);
    }

    #[test]
    fn passes_packed_repeated_and_unknown_fields() {
        let mut packed = Enc::default();
        for v in [1u64, 300, 70000, 5] {
            packed.varint_raw(v);
        }
        let mut m = Enc::default();
        m.bytes(4, &packed.0) // packed repeated uint32
            .fixed64(100, u64::MAX) // unknown fields of every wire type
            .fixed32(101, 7)
            .varint(102, u64::MAX)
            .bytes(103, b"")
            .bytes(7, b"target-bytes-here");
        let buf = grpc_frame(&m.0);
        let at = 5 + find(&m.0, b"target");
        let p = message(&buf, grpc(&buf, at, 6));
        assert_eq!(tags(&p), [7]);
        assert_eq!(p.seen[0], 1 << 4 | 1 << 7 | 1);
        // A slice inside the packed field is the packed field.
        let packed_at = 5 + find(&m.0, &packed.0);
        let p = message(&buf, grpc(&buf, packed_at + 1, 2));
        assert_eq!(tags(&p), [4]);
        assert_eq!(p.value_len, packed.0.len());
    }

    #[test]
    fn truncated_and_corrupt_frames_are_not_messages() {
        let mut m = Enc::default();
        m.varint(1, 7).bytes(2, b"some payload bytes");
        let full = grpc_frame(&m.0);
        let at = 5 + find(&m.0, b"payload");
        // The frame claims more bytes than the buffer has.
        let cut = &full[..full.len() - 3];
        assert_eq!(grpc(cut, at, 1), Grpc::Corrupt);
        // A length inside the message running past the frame.
        let mut bad = full.clone();
        bad[5 + 3] = 0x7f;
        assert_eq!(grpc(&bad, at, 1), Grpc::Corrupt);
        // Field number 0, a group, an over-long varint.
        for corrupt in [
            &[0x00, 0x01][..],
            &[0x0b, 0x0c],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            let mut msg = corrupt.to_vec();
            msg.extend_from_slice(&m.0);
            let buf = grpc_frame(&msg);
            let at = 5 + corrupt.len() + find(&m.0, b"payload");
            assert_eq!(grpc(&buf, at, 1), Grpc::Corrupt, "{corrupt:?}");
        }
        // Bytes after the message inside the frame that are not fields.
        let mut trailing = m.0.clone();
        trailing.push(0x00);
        let buf = grpc_frame(&trailing);
        assert_eq!(grpc(&buf, at, 1), Grpc::Corrupt);
        // A compressed message: no fields to see.
        let mut compressed = full.clone();
        compressed[0] = 1;
        assert_eq!(grpc(&compressed, at, 1), Grpc::Compressed { start: 5 });
        // Not gRPC at all: text.
        assert_eq!(grpc(b"GET / HTTP/1.1\r\n\r\n", 4, 1), Grpc::NotFramed);
    }

    #[test]
    fn finds_the_frame_holding_the_slice() {
        let mut a = Enc::default();
        a.varint(1, 1).bytes(2, b"first message");
        let mut b = Enc::default();
        b.varint(1, 2).bytes(3, b"second message");
        let mut buf = grpc_frame(&a.0);
        let second = buf.len() + 5;
        buf.extend(grpc_frame(&b.0));
        // Unused capacity after the frames (stale or zero bytes).
        buf.extend_from_slice(&[0xAA; 40]);
        let at = second + find(&b.0, b"second");
        match grpc(&buf, at, 6) {
            Grpc::Message { start, path } => {
                assert_eq!(start, second);
                assert_eq!(tags(&path), [3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_messages_are_walked_up_to_the_field() {
        let mut m = Enc::default();
        m.varint(1, 5).bytes(2, b"hello bare world");
        let mut buf = m.0.clone();
        buf.extend_from_slice(&[0xff; 16]); // no message end is known
        let at = find(&buf, b"bare");
        let p = walk(&buf, 0, buf.len(), at, 4, false).expect("a field");
        assert_eq!(tags(&p), [2]);
        assert!(walk(&buf, 0, buf.len(), at, 4, true).is_none());
        // The slice must be inside a value, and the fields before it valid.
        assert!(walk(&buf, 0, buf.len(), 0, 1, false).is_none());
        let mut bad = buf.clone();
        bad[0] = 0x07; // field 0
        assert!(walk(&bad, 0, bad.len(), at, 4, false).is_none());
    }

    #[test]
    fn never_reads_outside_the_buffer() {
        // Every prefix of a valid frame and every slice position: no panic,
        // and a path only where the frame is whole.
        let mut inner = Enc::default();
        inner.bytes(1, b"abc").fixed32(2, 1);
        let mut m = Enc::default();
        m.varint(1, 300)
            .bytes(2, &inner.0)
            .fixed64(3, 1)
            .bytes(4, b"xyz");
        let buf = grpc_frame(&m.0);
        for cut in 0..=buf.len() {
            let b = &buf[..cut];
            for off in 0..cut + 2 {
                for len in [1usize, 3] {
                    let r = grpc(b, off, len);
                    if cut < buf.len() {
                        assert!(!matches!(r, Grpc::Message { .. }), "{cut} {off}: {r:?}");
                    }
                    let _ = walk(b, 0, cut, off, len, false);
                }
            }
        }
    }
}
