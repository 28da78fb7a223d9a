//! Which field of a pinned buffer its slices are: the model that snapshot
//! files carry (tag paths, JSON paths, HTTP parts, offsets; never a buffer's
//! contents), its text, and its names from a service's protobuf
//! descriptors ([`schema`], [`naming`]).
//!
//! The walking itself happens where the memory is (the snapshot's forked
//! child, `leakscope::snapshot`); what reaches this model is structure only.

pub mod naming;
pub mod schema;

use serde::{Deserialize, Serialize};

use crate::units::format_value;

pub use naming::{FieldName, TypeBasis};
pub use schema::{Schema, SchemaError};

/// How the buffer is framed around the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// No framing recognised (a bare message or document, or unknown).
    None,
    /// A gRPC frame: compression flag, 4-byte length, message.
    Grpc,
    /// A compressed gRPC message: its fields are not visible.
    GrpcCompressed,
    HttpRequest,
    HttpResponse,
}

/// What the slice was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Nothing recognised: only the offset is known.
    Unknown,
    Protobuf,
    /// Framed as protobuf, but the message holding the slice does not parse
    /// (corrupt or truncated).
    NotProtobuf,
    Json,
    /// The head of an HTTP/1 message (see [`FieldRef::http_part`]).
    HttpHead,
    /// An HTTP/1 body that is neither JSON nor protobuf.
    HttpBody,
}

/// A protobuf wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireType {
    Varint,
    I64,
    /// Length-delimited: strings, bytes, nested messages, packed scalars.
    Len,
    I32,
}

impl WireType {
    pub fn from_wire(v: u8) -> Option<WireType> {
        Some(match v {
            0 => WireType::Varint,
            1 => WireType::I64,
            2 => WireType::Len,
            5 => WireType::I32,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::I64 => "64-bit",
            WireType::Len => "length-delimited",
            WireType::I32 => "32-bit",
        }
    }
}

/// Where in its buffer a slice is, as structure: what buffers are grouped
/// by (offsets and lengths, which differ from buffer to buffer, are kept
/// apart in [`FieldExample`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldRef {
    pub framing: Framing,
    pub content: Content,
    /// Protobuf field numbers from the outermost message inwards (`[3, 1]`
    /// is field 1 of the message in field 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire_type: Option<WireType>,
    /// The JSON value holding the slice: `$.items[3].name`; keys that do
    /// not read as identifiers are shown as `[?]`, `…` marks a path cut
    /// short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// The slice is a JSON member's key, not its value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json_key: bool,
    /// For an HTTP/1 head: `request line`, `status line`, `header NAME`
    /// (`header [?]` when the name is not an identifier), `end of head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_part: Option<String>,
}

/// One buffer of a group, with its numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldExample {
    pub buffer_len: u64,
    pub slice_offset: u64,
    /// 0 when the view's length was not known.
    pub slice_len: u64,
    /// The protobuf field's value or the HTTP body: offset in the buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_len: Option<u64>,
}

/// Pinned buffers whose slice is the same field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedField {
    pub field: FieldRef,
    /// How many pinned buffers of the group have their (first) slice here.
    pub buffers: u64,
    /// Their bytes.
    pub bytes: u64,
    pub example: FieldExample,
    /// Per protobuf nesting level along `tags`, the field numbers that occur
    /// in these buffers' messages (numbers above 63 are not listed): what
    /// the message type is inferred from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_tags: Vec<Vec<u32>>,
    /// The field's name, from the service's protobuf descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FieldName>,
}

fn bytes(v: u64) -> String {
    format_value(v as i64, "bytes")
}

impl PinnedField {
    /// `lab.EchoRequest.payload (field 2, bytes)`, `field 2 (length-delimited,
    /// 1.46kB) of a gRPC message`, `JSON $.items[3].name`, `offset 12 of
    /// 8.00kB`: what a reader is told the slice is.
    pub fn describe(&self) -> String {
        let f = &self.field;
        let e = &self.example;
        let offset_of = || format!("offset {} of {}", e.slice_offset, bytes(e.buffer_len));
        let json = || {
            f.json_path.as_ref().map(|p| {
                if f.json_key {
                    format!("JSON {p} (its key)")
                } else {
                    format!("JSON {p}")
                }
            })
        };
        let http = match f.framing {
            Framing::HttpRequest => "HTTP/1 request",
            Framing::HttpResponse => "HTTP/1 response",
            _ => "",
        };
        match f.content {
            Content::Protobuf => {
                let mut text = match &self.name {
                    Some(name) => name.describe(&f.tags),
                    None => {
                        let size = match (f.wire_type, e.part_len) {
                            (Some(WireType::Len), Some(n)) => format!(", {}", bytes(n)),
                            _ => String::new(),
                        };
                        let of = match f.framing {
                            Framing::Grpc => "a gRPC message".to_string(),
                            Framing::HttpRequest | Framing::HttpResponse => {
                                format!("the protobuf body of an {http}")
                            }
                            _ => "a protobuf message (unframed)".to_string(),
                        };
                        format!(
                            "field {} ({}{size}) of {of}",
                            tag_path(&f.tags),
                            f.wire_type.map_or("?", WireType::describe)
                        )
                    }
                };
                if let Some(j) = json() {
                    text += &format!(" at {j}");
                }
                text
            }
            Content::NotProtobuf => format!("not a protobuf message ({})", offset_of()),
            Content::Json if !http.is_empty() => {
                format!("{http} body: {}", json().unwrap_or_default())
            }
            Content::Json => json().unwrap_or_default(),
            Content::HttpHead => format!(
                "{http} head: {}",
                f.http_part.as_deref().unwrap_or("headers")
            ),
            Content::HttpBody => format!(
                "{http} body, offset {} of {}",
                e.slice_offset - e.part_offset.unwrap_or(0).min(e.slice_offset),
                bytes(e.part_len.unwrap_or(0))
            ),
            Content::Unknown if f.framing == Framing::GrpcCompressed => {
                format!(
                    "a compressed gRPC message ({}; its fields are not visible)",
                    offset_of()
                )
            }
            Content::Unknown => offset_of(),
        }
    }
}

/// `2` or `3.1`.
pub fn tag_path(tags: &[u32]) -> String {
    tags.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(content: Content, framing: Framing) -> PinnedField {
        PinnedField {
            field: FieldRef {
                framing,
                content,
                tags: vec![],
                wire_type: None,
                json_path: None,
                json_key: false,
                http_part: None,
            },
            buffers: 3,
            bytes: 3 * 8192,
            example: FieldExample {
                buffer_len: 8192,
                slice_offset: 100,
                slice_len: 1,
                part_offset: None,
                part_len: None,
            },
            seen_tags: vec![],
            name: None,
        }
    }

    #[test]
    fn describes_each_kind_of_place() {
        let mut p = field(Content::Protobuf, Framing::Grpc);
        p.field.tags = vec![3, 1];
        p.field.wire_type = Some(WireType::Len);
        p.example.part_len = Some(1500);
        assert_eq!(
            p.describe(),
            "field 3.1 (length-delimited, 1.46kB) of a gRPC message"
        );
        p.field.json_path = Some("$.user".into());
        assert_eq!(
            p.describe(),
            "field 3.1 (length-delimited, 1.46kB) of a gRPC message at JSON $.user"
        );
        let p = field(Content::NotProtobuf, Framing::Grpc);
        assert_eq!(
            p.describe(),
            "not a protobuf message (offset 100 of 8.00kB)"
        );
        let p = field(Content::Unknown, Framing::None);
        assert_eq!(p.describe(), "offset 100 of 8.00kB");
        let mut p = field(Content::Json, Framing::HttpRequest);
        p.field.json_path = Some("$.items[3].name".into());
        assert_eq!(p.describe(), "HTTP/1 request body: JSON $.items[3].name");
        let mut p = field(Content::HttpHead, Framing::HttpRequest);
        p.field.http_part = Some("header cookie".into());
        assert_eq!(p.describe(), "HTTP/1 request head: header cookie");
        let mut p = field(Content::HttpBody, Framing::HttpResponse);
        p.example.part_offset = Some(60);
        p.example.part_len = Some(4000);
        assert_eq!(p.describe(), "HTTP/1 response body, offset 40 of 3.91kB");
    }

    #[test]
    fn round_trips_through_json() {
        let mut p = field(Content::Protobuf, Framing::Grpc);
        p.field.tags = vec![2];
        p.field.wire_type = Some(WireType::Len);
        p.seen_tags = vec![vec![1, 2]];
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"framing\":\"grpc\""), "{text}");
        assert_eq!(serde_json::from_str::<PinnedField>(&text).unwrap(), p);
    }
}
