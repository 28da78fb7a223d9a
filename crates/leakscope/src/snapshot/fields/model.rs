//! The parent's side: the child's attributions turned into the report's
//! model ([`leakscope_profile::fields`]) and grouped by field. Runs in the
//! parent after the child exits, so it allocates freely.

use std::collections::HashMap;

use leakscope_profile::fields::{Content, FieldExample, FieldRef, Framing, PinnedField, WireType};

use super::{content, framing, http_part, json, Attribution};

fn json_path(a: &Attribution) -> Option<String> {
    if a.has_json == 0 {
        return None;
    }
    let mut path = String::from("$");
    for seg in a.json.iter().take(usize::from(a.json_depth)) {
        if seg.kind == json::KEY {
            match seg.name.as_str() {
                Some(name) => {
                    path.push('.');
                    path.push_str(name);
                }
                None => path.push_str("[?]"),
            }
        } else {
            path.push_str(&format!("[{}]", seg.index));
        }
    }
    if a.json_deeper != 0 {
        path.push('…');
    }
    Some(path)
}

/// The structure of an attribution: what buffers are grouped by.
pub(crate) fn field_ref(a: &Attribution) -> FieldRef {
    let protobuf = a.content == content::PROTOBUF;
    FieldRef {
        framing: match a.framing {
            framing::GRPC => Framing::Grpc,
            framing::GRPC_COMPRESSED => Framing::GrpcCompressed,
            framing::HTTP_REQUEST => Framing::HttpRequest,
            framing::HTTP_RESPONSE => Framing::HttpResponse,
            _ => Framing::None,
        },
        content: match a.content {
            content::PROTOBUF => Content::Protobuf,
            content::NOT_PROTOBUF => Content::NotProtobuf,
            content::JSON => Content::Json,
            content::HTTP_HEAD => Content::HttpHead,
            content::HTTP_BODY => Content::HttpBody,
            _ => Content::Unknown,
        },
        tags: if protobuf {
            a.tags
                .iter()
                .take(usize::from(a.tag_depth))
                .copied()
                .collect()
        } else {
            Vec::new()
        },
        wire_type: protobuf.then(|| WireType::from_wire(a.wire_type)).flatten(),
        json_path: json_path(a),
        json_key: a.json_in_key != 0,
        http_part: match a.http_part {
            http_part::START_LINE if a.framing == framing::HTTP_RESPONSE => {
                Some("status line".into())
            }
            http_part::START_LINE => Some("request line".into()),
            http_part::HEADER => Some(format!("header {}", a.header.as_str().unwrap_or("[?]"))),
            http_part::END_OF_HEAD => Some("end of head".into()),
            _ => None,
        },
    }
}

fn example(a: &Attribution) -> FieldExample {
    let part = a.part_len > 0 || a.part_start > 0;
    FieldExample {
        buffer_len: a.buffer_len,
        slice_offset: a.slice_offset,
        slice_len: a.slice_len,
        part_offset: part.then_some(a.part_start),
        part_len: part.then_some(a.part_len),
    }
}

/// The field numbers of each protobuf level, from the seen bitmasks.
fn seen_tags(a: &Attribution) -> Vec<Vec<u32>> {
    if a.content != content::PROTOBUF {
        return Vec::new();
    }
    a.seen
        .iter()
        .take(usize::from(a.tag_depth))
        .map(|&bits| (1..64).filter(|&n| bits & (1 << n) != 0).collect())
        .collect()
}

/// The pinned buffers of one group, by field.
#[derive(Default)]
pub(crate) struct FieldGroups {
    groups: HashMap<FieldRef, PinnedField>,
}

impl FieldGroups {
    /// Adds a buffer of `bytes` whose first slice is `a`; returns its field.
    pub(crate) fn add(&mut self, a: &Attribution, bytes: u64) -> FieldRef {
        let key = field_ref(a);
        let seen = seen_tags(a);
        let g = self
            .groups
            .entry(key.clone())
            .or_insert_with(|| PinnedField {
                field: key.clone(),
                buffers: 0,
                bytes: 0,
                example: example(a),
                seen_tags: Vec::new(),
                name: None,
            });
        g.buffers += 1;
        g.bytes += bytes;
        if g.seen_tags.len() < seen.len() {
            g.seen_tags.resize(seen.len(), Vec::new());
        }
        for (mine, theirs) in g.seen_tags.iter_mut().zip(seen) {
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
        key
    }

    /// Most buffers first.
    pub(crate) fn into_sorted(self) -> Vec<PinnedField> {
        let mut v: Vec<PinnedField> = self.groups.into_values().collect();
        v.sort_by(|a, b| {
            b.buffers
                .cmp(&a.buffers)
                .then_with(|| a.field.tags.cmp(&b.field.tags))
                .then_with(|| a.field.json_path.cmp(&b.field.json_path))
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::attribute;
    use super::super::protobuf::tests::{find, grpc_frame, Enc};
    use super::*;

    #[test]
    fn groups_buffers_by_field_and_merges_the_numbers_seen() {
        let mut groups = FieldGroups::default();
        for id in [0u64, 7, 9] {
            let mut m = Enc::default();
            if id != 0 {
                m.varint(1, id); // proto3 leaves a zero id out
            }
            m.bytes(2, &vec![b'x'; 100 + id as usize]);
            let buf = grpc_frame(&m.0);
            groups.add(
                &attribute(&buf, 5 + find(&m.0, b"xxx"), 1),
                buf.len() as u64,
            );
        }
        let json = br#"{"items": [{"name": "kept"}]}"#;
        groups.add(&attribute(json, find(json, b"kept"), 4), 30);
        groups.add(&attribute(json, 0, json.len()), 30);
        let fields = groups.into_sorted();
        assert_eq!(fields.len(), 3);
        let proto = &fields[0];
        assert_eq!(proto.buffers, 3);
        assert_eq!(proto.field.tags, [2]);
        assert_eq!(proto.field.wire_type, Some(WireType::Len));
        assert_eq!(proto.seen_tags, [vec![1, 2]]);
        assert_eq!(proto.example.part_len, Some(100));
        assert_eq!(
            proto.describe(),
            "field 2 (length-delimited, 100B) of a gRPC message"
        );
        assert_eq!(fields[1].describe(), "JSON $");
        assert_eq!(fields[2].describe(), "JSON $.items[0].name");
    }
}
