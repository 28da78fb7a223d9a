//! A service's protobuf schema, as much of it as naming fields needs:
//! every message type (nested ones included) with its fields' numbers,
//! names and types, and every service method with its input and output
//! types. Read from a serialized `FileDescriptorSet` (what `protoc
//! --descriptor_set_out`, `protox` and tonic's reflection builders produce).

use std::collections::HashMap;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// A field as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDecl {
    pub number: u32,
    pub name: String,
    pub ty: Type,
    /// For message and enum fields: the type's full name (`lab.Inner`).
    pub type_name: Option<String>,
    pub repeated: bool,
}

impl FieldDecl {
    /// The type as a reader writes it: `bytes`, `lab.Inner`, `repeated
    /// uint32`.
    pub fn type_text(&self) -> String {
        let base = match self.ty {
            Type::Message | Type::Enum | Type::Group => {
                self.type_name.clone().unwrap_or_else(|| "?".into())
            }
            ty => scalar_name(ty).to_string(),
        };
        if self.repeated {
            format!("repeated {base}")
        } else {
            base
        }
    }

    /// Whether a value of this field can arrive with `wire_type` (0 varint,
    /// 1 64-bit, 2 length-delimited, 5 32-bit); repeated scalars may be
    /// packed (length-delimited).
    pub fn accepts(&self, wire_type: u8) -> bool {
        let natural = match self.ty {
            Type::Double | Type::Fixed64 | Type::Sfixed64 => 1,
            Type::Float | Type::Fixed32 | Type::Sfixed32 => 5,
            Type::String | Type::Bytes | Type::Message => 2,
            Type::Group => 3,
            _ => 0,
        };
        wire_type == natural || (self.repeated && wire_type == 2 && natural != 3)
    }

    pub fn is_message(&self) -> bool {
        self.ty == Type::Message
    }
}

fn scalar_name(ty: Type) -> &'static str {
    match ty {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Message => "message",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Enum => "enum",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    }
}

/// A message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    /// `lab.EchoRequest`, `lab.Outer.Inner`.
    pub full_name: String,
    pub fields: Vec<FieldDecl>,
}

impl MessageType {
    pub fn field(&self, number: u32) -> Option<&FieldDecl> {
        self.fields.iter().find(|f| f.number == number)
    }

    /// The name of the Rust type prost generates for it (`EchoRequest`;
    /// `Inner` for `lab.Outer.Inner`, in module `outer`).
    pub fn rust_name(&self) -> &str {
        self.full_name.rsplit('.').next().unwrap_or(&self.full_name)
    }
}

/// A service method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `Lab` (the service's own name, without the package).
    pub service: String,
    /// `Echo`.
    pub name: String,
    /// Full names of the request and response types.
    pub input: String,
    pub output: String,
}

/// The message types and methods of one or more descriptor sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub messages: Vec<MessageType>,
    pub methods: Vec<Method>,
    by_name: HashMap<String, usize>,
}

/// Why a descriptor set could not be read.
#[derive(Debug)]
pub struct SchemaError(prost::DecodeError);

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a serialized FileDescriptorSet ({})", self.0)
    }
}

impl std::error::Error for SchemaError {}

fn strip_dot(name: &str) -> String {
    name.strip_prefix('.').unwrap_or(name).to_string()
}

impl Schema {
    /// Reads a serialized `FileDescriptorSet`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Schema, SchemaError> {
        let set = FileDescriptorSet::decode(bytes).map_err(SchemaError)?;
        Ok(Schema::from_set(&set))
    }

    pub fn from_set(set: &FileDescriptorSet) -> Schema {
        let mut schema = Schema::default();
        for file in &set.file {
            let package = file.package();
            for m in &file.message_type {
                schema.add_message(package, m);
            }
            for s in &file.service {
                for m in &s.method {
                    schema.methods.push(Method {
                        service: s.name().to_string(),
                        name: m.name().to_string(),
                        input: strip_dot(m.input_type()),
                        output: strip_dot(m.output_type()),
                    });
                }
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, m: &DescriptorProto) {
        let full_name = if scope.is_empty() {
            m.name().to_string()
        } else {
            format!("{scope}.{}", m.name())
        };
        let fields = m
            .field
            .iter()
            .filter_map(|f| {
                Some(FieldDecl {
                    number: u32::try_from(f.number()).ok()?,
                    name: f.name().to_string(),
                    ty: f.r#type(),
                    type_name: f.type_name.as_deref().map(strip_dot),
                    repeated: f.label() == Label::Repeated,
                })
            })
            .collect();
        for nested in &m.nested_type {
            self.add_message(&full_name, nested);
        }
        if !self.by_name.contains_key(&full_name) {
            self.by_name.insert(full_name.clone(), self.messages.len());
            self.messages.push(MessageType { full_name, fields });
        }
    }

    /// Adds another schema's types and methods (a type already known keeps
    /// its first declaration).
    pub fn merge(&mut self, other: &Schema) {
        for m in &other.messages {
            if !self.by_name.contains_key(&m.full_name) {
                self.by_name
                    .insert(m.full_name.clone(), self.messages.len());
                self.messages.push(m.clone());
            }
        }
        for m in &other.methods {
            if !self.methods.contains(m) {
                self.methods.push(m.clone());
            }
        }
    }

    pub fn message(&self, full_name: &str) -> Option<&MessageType> {
        self.by_name.get(full_name).map(|&i| &self.messages[i])
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost_types::{
        FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto,
    };

    pub(crate) fn field(
        name: &str,
        number: i32,
        ty: Type,
        type_name: Option<&str>,
    ) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(String::from),
            ..Default::default()
        }
    }

    pub(crate) fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field: fields,
            ..Default::default()
        }
    }

    /// The lab's proto, plus a nested type.
    pub(crate) fn lab_set() -> FileDescriptorSet {
        let echo = |name: &str, second: &str| {
            message(
                name,
                vec![
                    field("id", 1, Type::Uint64, None),
                    field(second, 2, Type::Bytes, None),
                ],
            )
        };
        let mut outer = message(
            "Outer",
            vec![
                field("id", 1, Type::Uint64, None),
                field("inner", 3, Type::Message, Some(".lab.Outer.Inner")),
            ],
        );
        outer.nested_type.push(message(
            "Inner",
            vec![
                field("name", 1, Type::String, None),
                field("blob", 2, Type::Bytes, None),
            ],
        ));
        let mut ids = field("ids", 4, Type::Uint32, None);
        ids.label = Some(Label::Repeated as i32);
        outer.field.push(ids);
        let method = |name: &str, input: &str, output: &str| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(format!(".lab.{input}")),
            output_type: Some(format!(".lab.{output}")),
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("lab.proto".into()),
                package: Some("lab".into()),
                message_type: vec![
                    echo("EchoRequest", "payload"),
                    echo("EchoReply", "payload"),
                    echo("IngestRequest", "json"),
                    message(
                        "IngestReply",
                        vec![
                            field("id", 1, Type::Uint64, None),
                            field("accepted_bytes", 2, Type::Uint64, None),
                        ],
                    ),
                    outer,
                ],
                service: vec![ServiceDescriptorProto {
                    name: Some("Lab".into()),
                    method: vec![
                        method("Echo", "EchoRequest", "EchoReply"),
                        method("Ingest", "IngestRequest", "IngestReply"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn reads_messages_nested_types_and_methods() {
        let bytes = lab_set().encode_to_vec();
        let s = Schema::from_bytes(&bytes).unwrap();
        assert_eq!(s.messages.len(), 6);
        let inner = s.message("lab.Outer.Inner").unwrap();
        assert_eq!(inner.rust_name(), "Inner");
        assert_eq!(inner.field(2).unwrap().type_text(), "bytes");
        let outer = s.message("lab.Outer").unwrap();
        assert_eq!(outer.field(3).unwrap().type_text(), "lab.Outer.Inner");
        let ids = outer.field(4).unwrap();
        assert_eq!(ids.type_text(), "repeated uint32");
        assert!(ids.accepts(0) && ids.accepts(2) && !ids.accepts(1));
        assert!(!inner.field(1).unwrap().accepts(0));
        assert_eq!(s.methods[1].input, "lab.IngestRequest");
        assert!(Schema::from_bytes(b"\xff\xff not a set").is_err());
    }
}
