//! Which field a pinned buffer's slice is: a protobuf field (in a gRPC
//! frame or a bare message), a JSON value, a part of an HTTP/1 message, or
//! else just an offset.
//!
//! These walkers run where the memory is, in the snapshot's forked child:
//! they never allocate (fixed-size records), every loop is bounded, and they
//! read only inside the buffer they are given. Only structure leaves them:
//! tag numbers, wire types, lengths, offsets, JSON paths and HTTP header
//! names, never the buffer's contents. JSON keys and header names are names
//! of a schema, not data, but a map keyed by user data (emails, ids) would
//! make them data: a name leaves only when it reads as an identifier
//! ([`Name::bounded`]), else it is shown as `[?]`.
//!
//! Order of the attempts: gRPC framing (a flag byte of 0 or 1 and a length
//! that fits: a buffer that starts so is read as gRPC or as "not a protobuf
//! message", since text, JSON and protobuf never start with such a byte),
//! then HTTP/1 (its body read as JSON or protobuf when it says so, or looks
//! like JSON), then a JSON document, then a bare protobuf message; inside a
//! protobuf `bytes`/`string` field, a JSON document is followed too.
//!
//! [`model`] is the parent's side: it turns the child's fixed records into
//! the report's model, and allocates.

pub(crate) mod http;
pub(crate) mod json;
pub(crate) mod model;
pub(crate) mod protobuf;

/// Protobuf tags kept in a path (nested messages), at most.
pub(crate) const MAX_TAGS: usize = 8;
/// JSON path segments kept, at most.
pub(crate) const MAX_JSON_DEPTH: usize = 8;
/// Longest key or header name copied out.
pub(crate) const NAME_BYTES: usize = 24;
/// Most digits a copied-out name may have (more look like an id).
const NAME_DIGITS: usize = 3;

/// A JSON key or HTTP header name, copied out only when it reads as an
/// identifier: 1 to [`NAME_BYTES`] bytes of ASCII letters, digits, `_` and
/// `-`, starting with a letter or `_`, with at most three digits. Any other
/// name is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Name {
    /// Bytes used, or [`Name::MASKED`].
    len: u8,
    bytes: [u8; NAME_BYTES],
}

impl Name {
    const MASKED: u8 = u8::MAX;
    pub(crate) const EMPTY: Name = Name {
        len: 0,
        bytes: [0; NAME_BYTES],
    };

    pub(crate) fn bounded(raw: &[u8]) -> Name {
        let identifier = !raw.is_empty()
            && raw.len() <= NAME_BYTES
            && (raw[0].is_ascii_alphabetic() || raw[0] == b'_')
            && raw
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            && raw.iter().filter(|c| c.is_ascii_digit()).count() <= NAME_DIGITS;
        if !identifier {
            return Name {
                len: Self::MASKED,
                bytes: [0; NAME_BYTES],
            };
        }
        let mut bytes = [0; NAME_BYTES];
        bytes[..raw.len()].copy_from_slice(raw);
        Name {
            len: raw.len() as u8,
            bytes,
        }
    }

    /// The name, or `None` when it was masked.
    pub(crate) fn as_str(&self) -> Option<&str> {
        if self.len == Self::MASKED {
            return None;
        }
        let bytes = self.bytes.get(..usize::from(self.len))?;
        std::str::from_utf8(bytes).ok()
    }
}

/// How the buffer is framed around the slice ([`Attribution::framing`]).
pub(crate) mod framing {
    pub(crate) const NONE: u8 = 0;
    pub(crate) const GRPC: u8 = 1;
    pub(crate) const GRPC_COMPRESSED: u8 = 2;
    pub(crate) const HTTP_REQUEST: u8 = 3;
    pub(crate) const HTTP_RESPONSE: u8 = 4;
}

/// What the slice was found in ([`Attribution::content`]).
pub(crate) mod content {
    /// Nothing recognised: only the offset is known.
    pub(crate) const UNKNOWN: u8 = 0;
    pub(crate) const PROTOBUF: u8 = 1;
    /// Framed as protobuf (gRPC) but does not parse.
    pub(crate) const NOT_PROTOBUF: u8 = 2;
    pub(crate) const JSON: u8 = 3;
    /// The head of an HTTP/1 message (see [`super::Attribution::http_part`]).
    pub(crate) const HTTP_HEAD: u8 = 4;
    /// An HTTP/1 body that is neither JSON nor protobuf.
    pub(crate) const HTTP_BODY: u8 = 5;
}

/// Parts of an HTTP/1 head ([`Attribution::http_part`]).
pub(crate) mod http_part {
    pub(crate) const NONE: u8 = 0;
    pub(crate) const START_LINE: u8 = 1;
    pub(crate) const HEADER: u8 = 2;
    pub(crate) const END_OF_HEAD: u8 = 3;
}

/// What a slice of a buffer is, in structure only (a fixed-size record the
/// child writes for the parent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Attribution {
    /// [`framing`].
    pub(crate) framing: u8,
    /// [`content`].
    pub(crate) content: u8,
    /// Protobuf tags used in `tags`.
    pub(crate) tag_depth: u8,
    /// Wire type of the innermost protobuf field.
    pub(crate) wire_type: u8,
    /// JSON segments used in `json`.
    pub(crate) json_depth: u8,
    /// The JSON value lies deeper than the segments kept.
    pub(crate) json_deeper: u8,
    /// The slice is a JSON member's key.
    pub(crate) json_in_key: u8,
    /// [`http_part`].
    pub(crate) http_part: u8,
    /// A JSON path was found (`json_depth` 0 is the document itself).
    pub(crate) has_json: u8,
    pub(crate) tags: [u32; MAX_TAGS],
    /// Per protobuf level, the field numbers seen (see `protobuf::Path`).
    pub(crate) seen: [u64; MAX_TAGS],
    pub(crate) buffer_len: u64,
    pub(crate) slice_offset: u64,
    pub(crate) slice_len: u64,
    /// Where the message (gRPC frame's message, HTTP message) starts.
    pub(crate) message_start: u64,
    /// The innermost protobuf field's value, or the HTTP body: offset in
    /// the buffer and length.
    pub(crate) part_start: u64,
    pub(crate) part_len: u64,
    pub(crate) json: [json::Segment; MAX_JSON_DEPTH],
    /// The HTTP header holding the slice.
    pub(crate) header: Name,
}

impl Attribution {
    fn unknown(buffer_len: usize, offset: usize, len: usize) -> Attribution {
        Attribution {
            framing: framing::NONE,
            content: content::UNKNOWN,
            tag_depth: 0,
            wire_type: 0,
            json_depth: 0,
            json_deeper: 0,
            json_in_key: 0,
            http_part: http_part::NONE,
            has_json: 0,
            tags: [0; MAX_TAGS],
            seen: [0; MAX_TAGS],
            buffer_len: buffer_len as u64,
            slice_offset: offset as u64,
            slice_len: len as u64,
            message_start: 0,
            part_start: 0,
            part_len: 0,
            json: [json::Segment::EMPTY; MAX_JSON_DEPTH],
            header: Name::EMPTY,
        }
    }

    fn set_protobuf(&mut self, path: &protobuf::Path) {
        self.content = content::PROTOBUF;
        self.tag_depth = path.depth as u8;
        self.tags = path.tags;
        self.seen = path.seen;
        self.wire_type = path.wire_type;
        self.part_start = path.value_start as u64;
        self.part_len = path.value_len as u64;
    }

    fn set_json(&mut self, path: &json::Path) {
        self.has_json = 1;
        self.json_depth = path.depth as u8;
        self.json = path.segments;
        self.json_deeper = u8::from(path.deeper);
        self.json_in_key = u8::from(path.in_key);
    }
}

/// What `[offset, offset + len)` of `buf` is. A `len` of 0 means the view's
/// length is not known: the byte at `offset` is looked up.
pub(crate) fn attribute(buf: &[u8], offset: usize, len: usize) -> Attribution {
    let mut a = Attribution::unknown(buf.len(), offset, len);
    if offset >= buf.len() {
        return a;
    }
    let len = len.clamp(1, buf.len() - offset);
    match protobuf::grpc(buf, offset, len) {
        protobuf::Grpc::Message { start, path } => {
            a.framing = framing::GRPC;
            a.message_start = start as u64;
            a.set_protobuf(&path);
            json_inside_field(buf, &path, offset, len, &mut a);
            return a;
        }
        protobuf::Grpc::Compressed { start } => {
            a.framing = framing::GRPC_COMPRESSED;
            a.message_start = start as u64;
            return a;
        }
        protobuf::Grpc::Corrupt => {
            a.framing = framing::GRPC;
            a.content = content::NOT_PROTOBUF;
            return a;
        }
        protobuf::Grpc::NotFramed => {}
    }
    if http::starts_like_http(buf) {
        if let Some(located) = http::locate(buf, offset) {
            http_part_of(buf, &located, offset, len, &mut a);
        }
        return a;
    }
    if let Some(path) = json::path(buf, 0, buf.len(), offset, len) {
        a.content = content::JSON;
        a.set_json(&path);
        return a;
    }
    if let Some(path) = protobuf::walk(buf, 0, buf.len(), offset, len, false) {
        a.set_protobuf(&path);
        json_inside_field(buf, &path, offset, len, &mut a);
    }
    a
}

/// A JSON document inside a protobuf `bytes` or `string` field.
fn json_inside_field(
    buf: &[u8],
    path: &protobuf::Path,
    offset: usize,
    len: usize,
    a: &mut Attribution,
) {
    if path.wire_type != protobuf::LEN {
        return;
    }
    let end = path.value_start + path.value_len;
    if let Some(p) = json::path(buf, path.value_start, end, offset, len) {
        a.set_json(&p);
    }
}

fn http_part_of(
    buf: &[u8],
    located: &http::Located,
    offset: usize,
    len: usize,
    a: &mut Attribution,
) {
    a.framing = if located.response {
        framing::HTTP_RESPONSE
    } else {
        framing::HTTP_REQUEST
    };
    a.message_start = located.message_start as u64;
    a.content = content::HTTP_HEAD;
    match located.part {
        http::Part::RequestLine | http::Part::StatusLine => a.http_part = http_part::START_LINE,
        http::Part::Header(name) => {
            a.http_part = http_part::HEADER;
            a.header = name;
        }
        http::Part::EndOfHead => a.http_part = http_part::END_OF_HEAD,
        http::Part::Body {
            start,
            len: body_len,
            body_type,
            chunked,
        } => {
            a.content = content::HTTP_BODY;
            a.part_start = start as u64;
            a.part_len = body_len as u64;
            let end = start + body_len;
            if chunked {
                return;
            }
            let looks_like_json = matches!(
                buf.get(start..end)
                    .and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace())),
                Some(b'{' | b'[')
            );
            if body_type == http::BodyType::Json
                || (body_type == http::BodyType::Unknown && looks_like_json)
            {
                if let Some(p) = json::path(buf, start, end, offset, len) {
                    a.content = content::JSON;
                    a.set_json(&p);
                }
            } else if body_type == http::BodyType::Protobuf {
                if let Some(p) = protobuf::walk(buf, start, end, offset, len, true) {
                    // The body's own offsets stay in `part_*` for the
                    // field's: the message starts at the body.
                    a.set_protobuf(&p);
                    a.message_start = start as u64;
                }
            }
        }
    }
}

/// The first view of each pinned buffer, noted while the pinning phase
/// reads its holder: offset in the buffer plus one (0: none yet), and its
/// length (0: not known). Eight bytes per block (one array over all
/// blocks): views past 4 GiB into a buffer are not noted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FirstView {
    offset_plus_one: u32,
    len: u32,
}

impl FirstView {
    pub(crate) const NONE: FirstView = FirstView {
        offset_plus_one: 0,
        len: 0,
    };

    /// Notes a view at `offset` of `len` bytes (0: unknown); a view with a
    /// known length replaces one without.
    pub(crate) fn note(&mut self, offset: u64, len: u64) {
        let Ok(offset_plus_one) = u32::try_from(offset + 1) else {
            return;
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if self.offset_plus_one == 0 || (self.len == 0 && len > 0) {
            *self = FirstView {
                offset_plus_one,
                len,
            };
        }
    }

    fn get(&self) -> Option<(u64, u64)> {
        (self.offset_plus_one > 0)
            .then(|| (u64::from(self.offset_plus_one - 1), u64::from(self.len)))
    }
}

/// Attributes the first view of each pinned buffer and writes one record
/// per buffer (in block order) to `out`. `pinned` yields
/// `(block index, address, size, first view)`; each block is read through
/// `mem` (a block it cannot read is skipped).
pub(crate) fn attribute_pinned<M: super::image::Memory>(
    mem: &M,
    pinned: impl Iterator<Item = (u32, u64, u64, FirstView)>,
    out: &mut super::wire::Output,
) {
    let mut n = 0;
    for (block, addr, size, view) in pinned {
        let Some((offset, len)) = view.get() else {
            continue;
        };
        if n == out.field_capacity() {
            break;
        }
        let Some(words) = mem.words(addr, addr + size / 8 * 8) else {
            continue;
        };
        // SAFETY: the same memory as the word slice, seen as its bytes
        // (u8 has no alignment or validity requirement).
        let buf =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
        let field = attribute(buf, offset as usize, len as usize);
        out.write_field(n, &super::wire::FieldOut { block, field });
        n += 1;
    }
    out.set_fields(n);
}

#[cfg(test)]
mod tests {
    use super::protobuf::tests::{find, grpc_frame, Enc};
    use super::*;

    #[test]
    fn names_are_copied_only_when_they_read_as_identifiers() {
        for ok in [
            "name",
            "_id",
            "user_name",
            "x-request-id",
            "v2",
            "Content-Type",
        ] {
            assert_eq!(Name::bounded(ok.as_bytes()).as_str(), Some(ok));
        }
        for masked in [
            "",
            "alice@example.org",
            "12345",
            "user1234",
            "a.b",
            "has space",
            "ünïcode",
            "a-name-longer-than-24-bytes",
        ] {
            assert_eq!(Name::bounded(masked.as_bytes()).as_str(), None, "{masked}");
        }
    }

    #[test]
    fn a_json_document_inside_a_bytes_field() {
        let doc = br#"{"user": {"name": "user-7"}, "blob": "abcabc"}"#;
        let mut m = Enc::default();
        m.varint(1, 7).bytes(2, doc);
        let buf = grpc_frame(&m.0);
        let user = 5 + find(&m.0, br#"{"name""#);
        let a = attribute(&buf, user, 18);
        assert_eq!((a.framing, a.content), (framing::GRPC, content::PROTOBUF));
        assert_eq!(&a.tags[..usize::from(a.tag_depth)], [2]);
        assert_eq!(a.json_depth, 1);
        assert_eq!(a.json[0].name.as_str(), Some("user"));
        assert_eq!(a.part_len, doc.len() as u64);
        // A slice across members is the document's: `$`.
        let a = attribute(&buf, user - 3, 20);
        assert_eq!((a.has_json, a.json_depth), (1, 0));
    }

    #[test]
    fn http_bodies_text_and_binary() {
        let req = b"POST /v1/items HTTP/1.1\r\ncontent-type: application/json\r\n\
            content-length: 33\r\n\r\n{\"items\": [{}, {\"name\": \"kept\"}]}";
        let at = find(req, b"kept");
        let a = attribute(req, at, 4);
        assert_eq!(
            (a.framing, a.content),
            (framing::HTTP_REQUEST, content::JSON)
        );
        assert_eq!(a.json_depth, 3);
        assert_eq!(a.json[1].index, 1);
        assert_eq!(a.json[2].name.as_str(), Some("name"));
        let a = attribute(req, 3, 1);
        assert_eq!(
            (a.content, a.http_part),
            (content::HTTP_HEAD, http_part::START_LINE)
        );
        // A body that is neither: its offset.
        let req = b"POST /up HTTP/1.1\r\ncontent-length: 10\r\n\r\n0123456789";
        let a = attribute(req, req.len() - 3, 1);
        assert_eq!(a.content, content::HTTP_BODY);
        assert_eq!(a.slice_offset - a.part_start, 7);
        assert_eq!(a.part_len, 10);
        // A JSON document alone, and bytes that are nothing known.
        let a = attribute(br#"[{"a": "b"}]"#, 7, 3);
        assert_eq!(a.content, content::JSON);
        let binary = [0xffu8; 64];
        let a = attribute(&binary, 10, 2);
        assert_eq!((a.framing, a.content), (framing::NONE, content::UNKNOWN));
        // A view past the buffer's end.
        assert_eq!(attribute(&binary, 64, 1).content, content::UNKNOWN);
    }

    /// Random damage to valid frames, documents and heads, at random
    /// offsets: never a panic or a read outside the buffer, and every
    /// answer points inside it.
    #[test]
    fn random_damage_never_breaks_the_walkers() {
        let mut inner = Enc::default();
        inner.bytes(1, b"name").fixed32(2, 9);
        let mut m = Enc::default();
        m.varint(1, 300)
            .bytes(3, &inner.0)
            .bytes(4, br#"{"a": [1, {"b": "c"}]}"#);
        let samples = [
            grpc_frame(&m.0),
            br#"{"items": [{"name": "x"}, {"k": [true, null, -1.5]}]}"#.to_vec(),
            b"POST /x HTTP/1.1\r\ncontent-length: 9\r\n\r\n{\"a\": 1}".to_vec(),
            m.0.clone(),
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut buf = samples[round % samples.len()].clone();
            for _ in 0..=(next() % 3) {
                let i = next() as usize % buf.len();
                buf[i] = next() as u8;
            }
            if next() % 4 == 0 {
                buf.truncate(next() as usize % buf.len());
            }
            let off = next() as usize % (buf.len() + 2);
            let len = next() as usize % 6;
            let a = attribute(&buf, off, len);
            assert!(usize::from(a.tag_depth) <= MAX_TAGS);
            assert!(usize::from(a.json_depth) <= MAX_JSON_DEPTH);
            assert!(a.part_start + a.part_len <= buf.len() as u64, "{a:?}");
            if a.content == content::PROTOBUF {
                assert!(a.tag_depth > 0 && a.tags[0] > 0);
            }
        }
    }

    #[test]
    fn a_view_of_unknown_length_is_looked_up_at_its_first_byte() {
        let mut m = Enc::default();
        m.varint(1, 7).bytes(2, b"payload");
        let buf = grpc_frame(&m.0);
        let a = attribute(&buf, 5 + find(&m.0, b"load"), 0);
        assert_eq!(&a.tags[..usize::from(a.tag_depth)], [2]);
        let mut v = FirstView::NONE;
        v.note(40, 0);
        v.note(50, 8);
        v.note(60, 2);
        assert_eq!(v.get(), Some((50, 8)));
        let mut far = FirstView::NONE;
        far.note(u64::from(u32::MAX), 1);
        assert_eq!(far.get(), None);
        far.note(7, u64::MAX);
        assert_eq!(far.get(), Some((7, u64::from(u32::MAX))));
    }
}
