//! HTTP/1 messages: whether a slice lies in a message's head (which line)
//! or its body (at which offset), and what the body's declared type is.
//! Heads are parsed by `httparse`, which never allocates (headers go into a
//! fixed array here).
//!
//! Only the structure leaves: the part, header names as bounded [`Name`]s,
//! offsets and lengths. The request line (with its path and query) and
//! header values are never copied; the content type is only classified.

use super::Name;

/// Headers of one message parsed, at most (more: not followed).
const MAX_HEADERS: usize = 64;

/// Messages of one buffer followed (pipelined requests), at most.
const MAX_MESSAGES: usize = 64;

/// What a body's `Content-Type` says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyType {
    Unknown,
    Json,
    Protobuf,
}

/// The part of an HTTP/1 message a slice starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    RequestLine,
    StatusLine,
    Header(Name),
    /// The empty line ending the head.
    EndOfHead,
    Body {
        /// Offset of the body in the buffer.
        start: usize,
        /// Its length: `Content-Length`, else what the buffer holds.
        len: usize,
        body_type: BodyType,
        /// `Transfer-Encoding: chunked`: chunk sizes are mixed into it.
        chunked: bool,
    },
}

/// The part of the HTTP/1 message in `buf` holding offset `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) response: bool,
    /// Offset of the message in the buffer (pipelined messages follow one
    /// another).
    pub(crate) message_start: usize,
    pub(crate) part: Part,
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    s.iter().try_fold(0usize, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + usize::from(c - b'0'))
    })
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// Whether the buffer starts like an HTTP/1 message.
pub(crate) fn starts_like_http(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.") || METHODS.iter().any(|m| buf.starts_with(m))
}

/// Parses a complete head at the start of `rest`: whether it is a
/// response, its length, and how many of `headers` it filled.
fn parse_head<'b>(
    rest: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Option<(bool, usize, usize)> {
    if rest.starts_with(b"HTTP/") {
        let mut r = httparse::Response::new(headers);
        match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) => Some((true, n, r.headers.len())),
            _ => None,
        }
    } else {
        let mut r = httparse::Request::new(headers);
        match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) => Some((false, n, r.headers.len())),
            _ => None,
        }
    }
}

/// Finds the HTTP/1 message and part of `buf` that holds `off`.
pub(crate) fn locate(buf: &[u8], off: usize) -> Option<Located> {
    let base = buf.as_ptr() as usize;
    let mut start = 0;
    for _ in 0..MAX_MESSAGES {
        let rest = buf.get(start..)?;
        if !starts_like_http(rest) {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (response, head_len, n) = parse_head(rest, &mut headers)?;
        let headers = &headers[..n];
        let body_start = start + head_len;
        // The head's lines: the start line, one per header (each up to the
        // next one's name), then the empty line.
        let end_of_lines = body_start - 2;
        let line_start = |i: usize| {
            headers
                .get(i)
                .map_or(end_of_lines, |h| h.name.as_ptr() as usize - base)
        };
        let mut part = if (start..line_start(0)).contains(&off) {
            Some(if response {
                Part::StatusLine
            } else {
                Part::RequestLine
            })
        } else if (end_of_lines..body_start).contains(&off) {
            Some(Part::EndOfHead)
        } else {
            None
        };
        let mut content_length = None;
        let mut body_type = BodyType::Unknown;
        let mut chunked = false;
        for (i, h) in headers.iter().enumerate() {
            if (line_start(i)..line_start(i + 1)).contains(&off) {
                part = Some(Part::Header(Name::bounded(h.name.as_bytes())));
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = Some(decimal(h.value)?);
            } else if h.name.eq_ignore_ascii_case("content-type") {
                body_type = if contains_ignore_case(h.value, b"json") {
                    BodyType::Json
                } else if contains_ignore_case(h.value, b"protobuf") {
                    BodyType::Protobuf
                } else {
                    BodyType::Unknown
                };
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = contains_ignore_case(h.value, b"chunked");
            }
        }
        if let Some(part) = part {
            return Some(Located {
                response,
                message_start: start,
                part,
            });
        }
        if off < body_start {
            return None;
        }
        let available = buf.len() - body_start.min(buf.len());
        let len = match content_length {
            Some(n) if !chunked => n,
            _ => available,
        };
        let body_end = body_start.checked_add(len)?;
        if off < body_end {
            return Some(Located {
                response,
                message_start: start,
                part: Part::Body {
                    start: body_start,
                    len: len.min(available),
                    body_type,
                    chunked,
                },
            });
        }
        if content_length.is_none() || chunked || body_end > buf.len() {
            return None;
        }
        start = body_end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "POST /api/items?user=alice HTTP/1.1\r\nHost: example.org\r\n\
        Content-Type: application/json\r\nX-Api-Key: secret\r\nContent-Length: 23\r\n\r\n\
        {\"items\": [{\"n\": \"x\"}]}";

    fn at(buf: &str, needle: &str) -> Option<Located> {
        locate(buf.as_bytes(), buf.find(needle).expect("needle"))
    }

    #[test]
    fn tells_head_lines_from_the_body() {
        assert_eq!(at(REQUEST, "alice").unwrap().part, Part::RequestLine);
        match at(REQUEST, "secret").unwrap().part {
            Part::Header(name) => assert_eq!(name.as_str(), Some("X-Api-Key")),
            other => panic!("{other:?}"),
        }
        let body = REQUEST.find("{\"items\"").unwrap();
        match at(REQUEST, "\"x\"").unwrap().part {
            Part::Body {
                start,
                len,
                body_type,
                chunked,
            } => {
                assert_eq!((start, len), (body, 23));
                assert_eq!(body_type, BodyType::Json);
                assert!(!chunked);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            locate(REQUEST.as_bytes(), body - 1).unwrap().part,
            Part::EndOfHead
        );
    }

    #[test]
    fn follows_pipelined_messages_and_responses() {
        let two = format!("{REQUEST}GET /next HTTP/1.1\r\nHost: b\r\n\r\n");
        let l = at(&two, "/next").unwrap();
        assert_eq!(l.message_start, REQUEST.len());
        assert_eq!(l.part, Part::RequestLine);
        let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\r\n\x08\x01";
        let l = locate(response.as_bytes(), response.len() - 1).unwrap();
        assert!(l.response);
        assert!(matches!(
            l.part,
            Part::Body {
                body_type: BodyType::Protobuf,
                len: 2,
                ..
            }
        ));
    }

    #[test]
    fn other_text_is_not_http() {
        assert_eq!(locate(b"GETTING STARTED\r\n\r\nbody", 20), None);
        assert_eq!(locate(b"{\"json\": 1}", 3), None);
        // A head that never ends (truncated).
        assert_eq!(locate(b"GET / HTTP/1.1\r\nHost: a\r\n", 3), None);
        // A header line without a colon.
        assert_eq!(locate(b"GET / HTTP/1.1\r\nbroken\r\n\r\n", 3), None);
        // Past the declared body, with nothing after it.
        let short = "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab-stale-bytes";
        assert_eq!(locate(short.as_bytes(), short.len() - 2), None);
    }
}
