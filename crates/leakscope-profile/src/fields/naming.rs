//! Names for walked tag paths: which message type a pinned buffer holds,
//! and the names of the fields along the path.
//!
//! A buffer does not say which message it holds, so the type is chosen:
//!
//! 1. **Fit**: a message type fits when every tag of the path is a field it
//!    declares, each outer one a message field (or a `bytes`/`string` field,
//!    where naming stops: the walker read its bytes as a nested message),
//!    and the last one accepts the wire type seen (repeated scalars may be
//!    packed). Types that do not fit are never named.
//! 2. **Stacks**: among the types that fit, those the buffer's or holder's
//!    allocation stack names win: a frame generic over the type
//!    (`UnaryService<…::EchoRequest>`, `<…::EchoRequest as prost::Message>`),
//!    a tonic-generated client method (`lab_client::LabClient<T>::echo`: the
//!    method's response type) or server trait method (`<… as
//!    lab_server::Lab>::echo`: its request type).
//!    When no frame names a type, a frame of a tonic-generated server
//!    (`lab_server::LabServer<T>`, the service's generic receive path) or
//!    client (`lab_client::LabClient<T>`) still says which side received
//!    the buffer: the types that fit are narrowed to the service's request
//!    types, or to its response types.
//! 3. **Field numbers seen**: then the type declaring the most of the field
//!    numbers that occur in the buffers' messages (minus those it does not
//!    declare) wins.
//! 4. Still tied: the first is shown with the others as alternatives, and
//!    the name says it is ambiguous.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::schema::{MessageType, Method, Schema};
use super::{tag_path, Content, PinnedField, WireType};
use crate::snapshot::{Pinning, SnapshotReport};

/// How the message type was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeBasis {
    /// The allocation stacks name it (and it fits).
    Stacks,
    /// The only message type that fits.
    OnlyFit,
    /// Of several that fit, it declares the most of the field numbers seen.
    BestFit,
    /// Several fit equally well (see `alternatives`).
    Ambiguous,
}

/// A field path named from descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldName {
    /// `lab.EchoRequest`.
    pub message: String,
    /// Field names along the tag path (`["payload"]`); shorter than the
    /// path when it runs into a `bytes` or `string` field.
    pub fields: Vec<String>,
    /// The declared type of the last named field: `bytes`, `lab.Inner`,
    /// `repeated uint32`.
    pub field_type: String,
    pub basis: TypeBasis,
    /// Other fields the path names as well (`lab.EchoReply.payload`), when
    /// the choice is ambiguous.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<String>,
}

impl FieldName {
    /// `lab.EchoRequest.payload`.
    pub fn full(&self) -> String {
        format!("{}.{}", self.message, self.fields.join("."))
    }

    /// `lab.EchoRequest.payload (field 2, bytes)`, with the alternatives
    /// when ambiguous.
    pub fn describe(&self, tags: &[u32]) -> String {
        let named = &tags[..self.fields.len().min(tags.len())];
        let mut text = format!(
            "{} (field {}, {})",
            self.full(),
            tag_path(named),
            self.field_type
        );
        if !self.alternatives.is_empty() {
            text += &format!(" or {} (ambiguous)", self.alternatives.join(" or "));
        }
        text
    }
}

/// A type that fits a path: its score, field names and last field's type.
struct Fit<'a> {
    message: &'a MessageType,
    score: i64,
    names: Vec<String>,
    field_type: String,
}

fn fit<'a>(
    schema: &'a Schema,
    message: &'a MessageType,
    tags: &[u32],
    wire_type: u8,
    seen: &[Vec<u32>],
) -> Option<Fit<'a>> {
    let mut ty = message;
    let mut score = 0i64;
    let mut names = Vec::new();
    for (level, &tag) in tags.iter().enumerate() {
        for &t in seen.get(level).into_iter().flatten() {
            score += if ty.field(t).is_some() { 1 } else { -1 };
        }
        let f = ty.field(tag)?;
        names.push(f.name.clone());
        let last = level + 1 == tags.len();
        if last {
            if !f.accepts(wire_type) {
                return None;
            }
        } else if f.is_message() {
            ty = schema.message(f.type_name.as_deref()?)?;
            continue;
        } else if !f.accepts(2) || f.repeated {
            return None;
        }
        return Some(Fit {
            message,
            score,
            names,
            field_type: f.type_text(),
        });
    }
    None
}

/// Whether `frame` names the Rust type `name` as a type argument or a
/// qualified self type: `…::Name>`, `…::Name,`, `…::Name as …`.
fn mentions_type(frame: &str, name: &str) -> bool {
    let needle = format!("::{name}");
    frame.match_indices(&needle).any(|(i, _)| {
        let rest = &frame[i + needle.len()..];
        rest.starts_with('>') || rest.starts_with(',') || rest.starts_with(" as ")
    })
}

/// `EchoRequest` → `echo_request`, as prost and tonic name modules and
/// methods.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `frame` has `…>::method` ending the name or followed by `::`.
fn calls_method(frame: &str, method: &str) -> bool {
    let needle = format!(">::{method}");
    frame.match_indices(&needle).any(|(i, _)| {
        let rest = &frame[i + needle.len()..];
        rest.is_empty() || rest.starts_with("::")
    })
}

/// How tonic's generated code for `m`'s service reads in frames: the
/// client type (`lab_client::LabClient<`) and the server module's trait
/// (`lab_server::Lab`, followed by `Server<` for its server type).
fn generated_paths(m: &Method) -> (String, String) {
    let service = snake_case(&m.service);
    (
        format!("{service}_client::{}Client<", m.service),
        format!("{service}_server::{}", m.service),
    )
}

/// Message types the frames name (see the module's doc).
fn named_by_stacks<'a>(schema: &'a Schema, frames: &[&str]) -> HashSet<&'a str> {
    let mut named = HashSet::new();
    for m in &schema.messages {
        if frames.iter().any(|f| mentions_type(f, m.rust_name())) {
            named.insert(m.full_name.as_str());
        }
    }
    for m in &schema.methods {
        let method = snake_case(&m.name);
        let (client, server) = generated_paths(m);
        for f in frames {
            if f.contains(&client) && calls_method(f, &method) {
                named.insert(m.output.as_str());
            }
            if f.contains(&server) && calls_method(f, &method) {
                named.insert(m.input.as_str());
            }
        }
    }
    named
}

/// Message types the frames' side of a service admits: the request types of
/// a service whose generated server is on the stack, the response types of
/// one whose generated client is.
fn admitted_by_side<'a>(schema: &'a Schema, frames: &[&str]) -> HashSet<&'a str> {
    let mut admitted = HashSet::new();
    for m in &schema.methods {
        let (client, server) = generated_paths(m);
        let server = format!("{server}Server<");
        if frames.iter().any(|f| f.contains(&server)) {
            admitted.insert(m.input.as_str());
        }
        if frames.iter().any(|f| f.contains(&client)) {
            admitted.insert(m.output.as_str());
        }
    }
    admitted
}

/// Names a pinned field's tag path from the schema, using `frames` (the
/// buffers' and holder's allocation stacks) as hints. `None` when it is not
/// a protobuf field or no message type fits.
pub fn name_field(schema: &Schema, field: &PinnedField, frames: &[&str]) -> Option<FieldName> {
    let f = &field.field;
    if f.content != Content::Protobuf || f.tags.is_empty() {
        return None;
    }
    let wire_type = match f.wire_type? {
        WireType::Varint => 0,
        WireType::I64 => 1,
        WireType::Len => 2,
        WireType::I32 => 5,
    };
    let fits: Vec<Fit<'_>> = schema
        .messages
        .iter()
        .filter_map(|m| fit(schema, m, &f.tags, wire_type, &field.seen_tags))
        .collect();
    let named = named_by_stacks(schema, frames);
    let (from_stacks, others): (Vec<Fit<'_>>, Vec<Fit<'_>>) = fits
        .into_iter()
        .partition(|fit| named.contains(fit.message.full_name.as_str()));
    let admitted = admitted_by_side(schema, frames);
    let (from_side, others): (Vec<Fit<'_>>, Vec<Fit<'_>>) = others
        .into_iter()
        .partition(|fit| admitted.contains(fit.message.full_name.as_str()));
    let by_stacks = !from_stacks.is_empty() || !from_side.is_empty();
    let pool = if !from_stacks.is_empty() {
        from_stacks
    } else if !from_side.is_empty() {
        from_side
    } else {
        others
    };
    let best = pool.iter().map(|fit| fit.score).max()?;
    let only = pool.len() == 1;
    let mut winners = pool.into_iter().filter(|fit| fit.score == best);
    let first = winners.next()?;
    let alternatives: Vec<String> = winners
        .map(|w| format!("{}.{}", w.message.full_name, w.names.join(".")))
        .collect();
    let basis = if !alternatives.is_empty() {
        TypeBasis::Ambiguous
    } else if by_stacks {
        TypeBasis::Stacks
    } else if only {
        TypeBasis::OnlyFit
    } else {
        TypeBasis::BestFit
    };
    Some(FieldName {
        message: first.message.full_name.clone(),
        fields: first.names,
        field_type: first.field_type,
        basis,
        alternatives,
    })
}

/// Names every field of a pinning group, with its buffers' and holder's
/// allocation stacks as hints (fields no type fits lose a previous name).
pub fn name_pinning(pinning: &mut Pinning, schema: &Schema) {
    let frames: Vec<&str> = pinning
        .buffer_site
        .iter()
        .chain(&pinning.holder.site)
        .map(String::as_str)
        .collect();
    let names: Vec<Option<FieldName>> = pinning
        .fields
        .iter()
        .map(|f| name_field(schema, f, &frames))
        .collect();
    for (f, name) in pinning.fields.iter_mut().zip(names) {
        f.name = name;
    }
}

/// Names the fields of every pinning group of a snapshot.
pub fn name_snapshot(report: &mut SnapshotReport, schema: &Schema) {
    for p in &mut report.pinned {
        name_pinning(p, schema);
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::lab_set;
    use super::super::{FieldExample, FieldRef, Framing};
    use super::*;

    fn pinned(tags: &[u32], wire_type: WireType, seen: &[&[u32]]) -> PinnedField {
        PinnedField {
            field: FieldRef {
                framing: Framing::Grpc,
                content: Content::Protobuf,
                tags: tags.to_vec(),
                wire_type: Some(wire_type),
                json_path: None,
                json_key: false,
                http_part: None,
            },
            buffers: 1,
            bytes: 8192,
            example: FieldExample::default(),
            seen_tags: seen.iter().map(|s| s.to_vec()).collect(),
            name: None,
        }
    }

    fn lab() -> Schema {
        Schema::from_set(&lab_set())
    }

    /// A sampled buffer's stack through tonic's generic receive path: the
    /// lab's server received it, so it is one of the service's requests
    /// (still two of the same shape), never a reply; a generated client's
    /// buffer is one of the replies.
    #[test]
    fn a_generated_server_on_the_stack_admits_only_requests() {
        let p = pinned(&[2], WireType::Len, &[&[1, 2]]);
        let server = "<leakscope_lab::proto::lab_server::LabServer<T> as \
                      tower_service::Service<http::request::Request<B>>>::call::{{closure}}";
        let n = name_field(&lab(), &p, &[server]).unwrap();
        assert_eq!(n.basis, TypeBasis::Ambiguous);
        assert_eq!(n.full(), "lab.EchoRequest.payload");
        assert_eq!(n.alternatives, ["lab.IngestRequest.json"]);
        // The client's `ingest` names IngestReply, which does not fit (its
        // field 2 is a number); of the client's replies, EchoReply does.
        let client = "leakscope_lab::proto::lab_client::LabClient<T>::ingest::{{closure}}";
        let n = name_field(&lab(), &p, &[client]).unwrap();
        assert_eq!(n.basis, TypeBasis::Stacks);
        assert_eq!(n.full(), "lab.EchoReply.payload");
    }

    #[test]
    fn converts_names_to_snake_case_as_prost_does() {
        assert_eq!(snake_case("EchoRequest"), "echo_request");
        assert_eq!(snake_case("Echo"), "echo");
        assert_eq!(snake_case("GetHTTPHeaders"), "get_http_headers");
        assert_eq!(snake_case("V2Thing"), "v2_thing");
    }

    #[test]
    fn without_hints_the_same_shapes_are_ambiguous() {
        let p = pinned(&[2], WireType::Len, &[&[1, 2]]);
        let n = name_field(&lab(), &p, &[]).unwrap();
        assert_eq!(n.basis, TypeBasis::Ambiguous);
        assert_eq!(n.full(), "lab.EchoRequest.payload");
        assert_eq!(
            n.alternatives,
            [
                "lab.EchoReply.payload",
                "lab.IngestRequest.json",
                "lab.Outer.Inner.blob"
            ]
        );
        assert_eq!(
            n.describe(&[2]),
            "lab.EchoRequest.payload (field 2, bytes) or lab.EchoReply.payload or \
             lab.IngestRequest.json or lab.Outer.Inner.blob (ambiguous)"
        );
    }

    #[test]
    fn the_stacks_choose_among_types_that_fit() {
        let p = pinned(&[2], WireType::Len, &[&[1, 2]]);
        let schema = lab();
        // The server's handler (the holder's stack).
        let server = [
            "<<x::LabServer<T> as tower_service::Service<http::Request<B>>>::call::EchoSvc<T> \
             as tonic::server::service::UnaryService<leakscope_lab::proto::EchoRequest>>::call",
        ];
        let n = name_field(&schema, &p, &server).unwrap();
        assert_eq!(
            (n.full().as_str(), n.basis),
            ("lab.EchoRequest.payload", TypeBasis::Stacks)
        );
        assert_eq!(n.describe(&[2]), "lab.EchoRequest.payload (field 2, bytes)");
        let trait_method =
            ["<leakscope_lab::server::LabService as leakscope_lab::proto::lab_server::Lab>::ingest::{{closure}}"];
        let n = name_field(&schema, &p, &trait_method).unwrap();
        assert_eq!(n.full(), "lab.IngestRequest.json");
        // The generated client's method: its response type.
        let client = ["leakscope_lab::proto::lab_client::LabClient<T>::echo::{{closure}}"];
        let n = name_field(&schema, &p, &client).unwrap();
        assert_eq!(
            (n.full().as_str(), n.basis),
            ("lab.EchoReply.payload", TypeBasis::Stacks)
        );
        // Look-alikes name nothing: tonic's own Request type, another
        // service's client.
        let unrelated = [
            "tonic::request::Request<T>::into_inner",
            "x::other_client::OtherClient<T>::echo",
        ];
        assert_eq!(
            name_field(&schema, &p, &unrelated).unwrap().basis,
            TypeBasis::Ambiguous
        );
        // A method name inside a longer one names no method; the client it
        // belongs to still says the buffer is one of its service's replies.
        let longer = ["x::lab_client::LabClient<T>::echo_twice"];
        let n = name_field(&schema, &p, &longer).unwrap();
        assert_eq!(
            (n.full().as_str(), n.basis),
            ("lab.EchoReply.payload", TypeBasis::Stacks)
        );
    }

    #[test]
    fn fit_and_field_numbers_decide_without_stacks() {
        let schema = lab();
        // A varint in field 2: only IngestReply declares one there.
        let p = pinned(&[2], WireType::Varint, &[&[1, 2]]);
        let n = name_field(&schema, &p, &[]).unwrap();
        assert_eq!(
            (n.full().as_str(), n.basis),
            ("lab.IngestReply.accepted_bytes", TypeBasis::OnlyFit)
        );
        // Nested: 3.1 names Outer.inner.name.
        let p = pinned(&[3, 1], WireType::Len, &[&[1, 3], &[1, 2]]);
        let n = name_field(&schema, &p, &[]).unwrap();
        assert_eq!(
            n.describe(&[3, 1]),
            "lab.Outer.inner.name (field 3.1, string)"
        );
        // A path through a bytes field stops there.
        let p = pinned(&[3, 2, 7], WireType::Len, &[&[3], &[2], &[7]]);
        let n = name_field(&schema, &p, &[]).unwrap();
        assert_eq!(
            n.describe(&[3, 2, 7]),
            "lab.Outer.inner.blob (field 3.2, bytes)"
        );
        // Packed repeated scalars.
        let p = pinned(&[4], WireType::Len, &[&[4]]);
        assert_eq!(
            name_field(&schema, &p, &[]).unwrap().describe(&[4]),
            "lab.Outer.ids (field 4, repeated uint32)"
        );
        // The numbers seen prefer the type declaring them: 1, 3 and 4 are
        // Outer's; fields 1 and 2 are the echo types'.
        let p = pinned(&[1], WireType::Varint, &[&[1, 3, 4]]);
        let n = name_field(&schema, &p, &[]).unwrap();
        assert_eq!(
            (n.full().as_str(), n.basis),
            ("lab.Outer.id", TypeBasis::BestFit)
        );
        // Nothing fits: unknown field, wrong wire type.
        assert!(name_field(&schema, &pinned(&[9], WireType::Len, &[]), &[]).is_none());
        assert!(name_field(&schema, &pinned(&[2], WireType::I32, &[]), &[]).is_none());
    }
}
