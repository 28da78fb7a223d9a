//! JSON documents, tokenised up to the value that contains a slice.
//!
//! The walker keeps a fixed stack of open containers (object or array, the
//! current key or index of each) and checks the grammar of everything it
//! passes; a document that does not parse up to the slice is not JSON. The
//! answer is the innermost value whose text holds the whole slice: a string
//! for a borrowed `&str`, an object for a zero-copy lazy value. Keys leave
//! only as bounded [`Name`]s (see `fields`).

use super::{Name, MAX_JSON_DEPTH};

/// Containers open at once, at most; deeper documents are not followed.
const MAX_NESTING: usize = 64;

/// Bytes of one document read, at most: a bound on the work per buffer.
const MAX_SCAN: usize = 16 << 20;

pub(crate) const KEY: u8 = 1;
pub(crate) const INDEX: u8 = 2;

/// One step of a JSON path: a member's key or an element's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Segment {
    /// [`KEY`] or [`INDEX`].
    pub(crate) kind: u8,
    pub(crate) name: Name,
    pub(crate) index: u32,
}

impl Segment {
    pub(crate) const EMPTY: Segment = Segment {
        kind: 0,
        name: Name::EMPTY,
        index: 0,
    };
}

/// The path of the value holding a slice: `$` and its segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) depth: usize,
    pub(crate) segments: [Segment; MAX_JSON_DEPTH],
    /// The value lies deeper than the segments kept.
    pub(crate) deeper: bool,
    /// The slice is the member's key, not its value.
    pub(crate) in_key: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    FirstValueOrEnd,
    FirstKeyOrEnd,
    Key,
    Colon,
    CommaOrEnd,
}

fn skip_ws(doc: &[u8], mut pos: usize) -> usize {
    while pos < doc.len() && matches!(doc[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// The end (after the closing quote) of the string opening at `pos`.
/// (Strings are most of a document's bytes: `memchr` skips them in wide
/// steps. Raw control characters inside are not looked for.)
fn string_end(doc: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', doc.get(i..)?)?;
        if doc[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

fn number_end(doc: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos;
    while i < doc.len() && matches!(doc[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
        i += 1;
    }
    // At least one digit.
    doc[pos..i].iter().any(u8::is_ascii_digit).then_some(i)
}

fn literal_end(doc: &[u8], pos: usize) -> Option<usize> {
    for word in [&b"true"[..], b"false", b"null"] {
        if doc[pos..].starts_with(word) {
            return Some(pos + word.len());
        }
    }
    None
}

/// The JSON path of the innermost value of the document `buf[start..end]`
/// that holds `[off, off + len)`. The document must be an object or array.
pub(crate) fn path(buf: &[u8], start: usize, end: usize, off: usize, len: usize) -> Option<Path> {
    if start > end || end > buf.len() || off < start || off + len > end {
        return None;
    }
    let doc = &buf[start..end.min(start.saturating_add(MAX_SCAN))];
    let off = off - start;
    let mut pos = skip_ws(doc, 0);
    if !matches!(doc.get(pos), Some(b'{' | b'[')) || off < pos {
        return None;
    }
    let mut is_object = [false; MAX_NESTING];
    let mut index = [0u32; MAX_NESTING];
    let mut keys = [Name::EMPTY; MAX_JSON_DEPTH];
    let mut level = 0usize;
    // The depth of the innermost value known to hold `off` whose end has
    // not been reached yet (an open container), once `off` is passed.
    let mut pending: Option<usize> = None;
    let mut expect = Expect::Value;
    let answer = |depth: usize, in_key: bool, is_object: &[bool], index: &[u32], keys: &[Name]| {
        let kept = depth.min(MAX_JSON_DEPTH);
        let mut segments = [Segment::EMPTY; MAX_JSON_DEPTH];
        for (i, s) in segments.iter_mut().enumerate().take(kept) {
            *s = if is_object[i] {
                Segment {
                    kind: KEY,
                    name: keys[i],
                    index: 0,
                }
            } else {
                Segment {
                    kind: INDEX,
                    name: Name::EMPTY,
                    index: index[i],
                }
            };
        }
        Some(Path {
            depth: kept,
            segments,
            deeper: depth > MAX_JSON_DEPTH,
            in_key,
        })
    };
    loop {
        pos = skip_ws(doc, pos);
        let c = *doc.get(pos)?;
        if pending.is_none() && pos > off {
            // `off` lies in the space or punctuation of the open container.
            pending = Some(level.checked_sub(1)?);
        }
        let closes = match expect {
            Expect::FirstValueOrEnd => c == b']',
            Expect::FirstKeyOrEnd => c == b'}',
            Expect::CommaOrEnd => c == if is_object[level - 1] { b'}' } else { b']' },
            _ => false,
        };
        if closes {
            level -= 1;
            if pending.is_none() && pos == off {
                // `off` is this closing bracket.
                pending = Some(level);
            }
            if pending.is_some_and(|p| p >= level) {
                if off + len <= pos + 1 {
                    return answer(level, false, &is_object, &index, &keys);
                }
                pending = Some(level.checked_sub(1)?);
            }
            if level == 0 {
                return None;
            }
            pos += 1;
            expect = Expect::CommaOrEnd;
            continue;
        }
        match expect {
            Expect::Value | Expect::FirstValueOrEnd => {
                if c == b'{' || c == b'[' {
                    if level == MAX_NESTING {
                        return None;
                    }
                    if pending.is_none() && pos == off {
                        pending = Some(level);
                    }
                    is_object[level] = c == b'{';
                    index[level] = 0;
                    level += 1;
                    pos += 1;
                    expect = if c == b'{' {
                        Expect::FirstKeyOrEnd
                    } else {
                        Expect::FirstValueOrEnd
                    };
                    continue;
                }
                let end = match c {
                    b'"' => string_end(doc, pos)?,
                    b't' | b'f' | b'n' => literal_end(doc, pos)?,
                    b'-' | b'0'..=b'9' => number_end(doc, pos)?,
                    _ => return None,
                };
                if pending.is_none() && off < end {
                    if off + len <= end {
                        return answer(level, false, &is_object, &index, &keys);
                    }
                    pending = Some(level - 1);
                }
                pos = end;
                expect = Expect::CommaOrEnd;
            }
            Expect::FirstKeyOrEnd | Expect::Key => {
                if c != b'"' {
                    return None;
                }
                let end = string_end(doc, pos)?;
                if level - 1 < MAX_JSON_DEPTH {
                    keys[level - 1] = Name::bounded(&doc[pos + 1..end - 1]);
                }
                if pending.is_none() && off < end {
                    if off + len <= end {
                        return answer(level, true, &is_object, &index, &keys);
                    }
                    pending = Some(level - 1);
                }
                pos = end;
                expect = Expect::Colon;
            }
            Expect::Colon => {
                if c != b':' {
                    return None;
                }
                pos += 1;
                expect = Expect::Value;
            }
            Expect::CommaOrEnd => {
                if c != b',' {
                    return None;
                }
                pos += 1;
                expect = if is_object[level - 1] {
                    Expect::Key
                } else {
                    index[level - 1] = index[level - 1].saturating_add(1);
                    Expect::Value
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path as text, as the report will show it.
    fn text(p: &Path) -> String {
        let mut s = String::from("$");
        for seg in &p.segments[..p.depth] {
            match seg.kind {
                KEY => match seg.name.as_str() {
                    Some(n) => s += &format!(".{n}"),
                    None => s += "[?]",
                },
                _ => s += &format!("[{}]", seg.index),
            }
        }
        if p.deeper {
            s += "…";
        }
        if p.in_key {
            s += " (key)";
        }
        s
    }

    fn at(doc: &str, needle: &str, len: usize) -> Option<String> {
        let off = doc.find(needle).expect("needle present");
        path(doc.as_bytes(), 0, doc.len(), off, len).map(|p| text(&p))
    }

    const DOC: &str = r#"{"user": {"name": "user-7", "email": "u@example.org", "tier": "gold"},
        "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "the-fourth", "n": -1.5e3}],
        "flags": [true, false, null], "blob": "xyzxyz"}"#;

    #[test]
    fn names_strings_objects_and_elements() {
        assert_eq!(at(DOC, "the-fourth", 3).unwrap(), "$.items[3].name");
        assert_eq!(at(DOC, "\"the-fourth\"", 12).unwrap(), "$.items[3].name");
        assert_eq!(at(DOC, "-1.5e3", 2).unwrap(), "$.items[3].n");
        assert_eq!(at(DOC, "null", 4).unwrap(), "$.flags[2]");
        assert_eq!(at(DOC, "xyzxyz", 6).unwrap(), "$.blob");
        // A lazy value of the whole "user" object.
        let user = DOC.find("{\"name\": \"user-7\"").unwrap();
        let user_end = DOC.find("\"gold\"}").unwrap() + 7;
        let p = path(DOC.as_bytes(), 0, DOC.len(), user, user_end - user).unwrap();
        assert_eq!(text(&p), "$.user");
        // A slice across two elements is their array's.
        assert_eq!(at(DOC, "\"a\"}, {\"name\"", 12).unwrap(), "$.items");
        // In punctuation or space: the container.
        assert_eq!(at(DOC, ", \"email\"", 1).unwrap(), "$.user");
        // A key.
        assert_eq!(at(DOC, "tier", 4).unwrap(), "$.user.tier (key)");
        // The whole document.
        assert_eq!(at(DOC, "{\"user\"", DOC.len()).unwrap(), "$");
    }

    #[test]
    fn keys_that_are_data_are_not_copied_out() {
        let doc = r#"{"alice@example.org": {"x": "1"}, "1234567": "v", "user_4711": "w",
            "a-very-long-key-name-indeed-yes": "z", "esc\"aped": "q", "ok_key-2": "k"}"#;
        assert_eq!(at(doc, "\"1\"", 3).unwrap(), "$[?].x");
        assert_eq!(at(doc, "\"v\"", 3).unwrap(), "$[?]");
        assert_eq!(at(doc, "\"w\"", 3).unwrap(), "$[?]");
        assert_eq!(at(doc, "\"z\"", 3).unwrap(), "$[?]");
        assert_eq!(at(doc, "\"q\"", 3).unwrap(), "$[?]");
        assert_eq!(at(doc, "\"k\"", 3).unwrap(), "$.ok_key-2");
    }

    #[test]
    fn deep_documents_keep_the_first_levels() {
        let mut doc = String::new();
        for _ in 0..12 {
            doc += "{\"k\": ";
        }
        doc += "\"leaf\"";
        for _ in 0..12 {
            doc += "}";
        }
        assert_eq!(at(&doc, "leaf", 4).unwrap(), "$.k.k.k.k.k.k.k.k…");
        // Nesting past the bound is not followed.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(path(deep.as_bytes(), 0, deep.len(), 100, 1), None);
    }

    #[test]
    fn corrupt_or_foreign_text_is_not_json() {
        for doc in [
            r#"{"a" "b"}"#,
            r#"{"a": tru}"#,
            r#"{"a": "b" "c": 1}"#,
            r#"["a", }"#,
            "\"just a string\"",
            "plain text, not json",
            "{\"a\": \"unterminated",
        ] {
            let last = doc.len() - 2;
            assert_eq!(path(doc.as_bytes(), 0, doc.len(), last, 1), None, "{doc}");
        }
        // A slice past the document's end (stale bytes after it).
        let doc = "{\"a\": 1}   garbage";
        assert_eq!(path(doc.as_bytes(), 0, doc.len(), 12, 3), None);
        // Leading whitespace is not part of the document.
        let doc = "  [1, 2]";
        assert_eq!(at(doc, "2", 1).unwrap(), "$[1]");
        assert_eq!(path(doc.as_bytes(), 0, doc.len(), 0, 1), None);
    }

    #[test]
    fn never_reads_outside_the_document() {
        let doc = DOC.as_bytes();
        for cut in 0..doc.len() {
            for off in (0..cut + 2).step_by(3) {
                let _ = path(doc, 0, cut, off, 1);
                let _ = path(doc, 3, cut, off, 2);
            }
        }
    }
}
