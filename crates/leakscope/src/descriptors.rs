//! Protobuf descriptors the service registers, so that snapshots name the
//! message fields that pin buffers (`lab.EchoRequest.payload (field 2,
//! bytes)`) without any flag at report time.

use std::sync::Mutex;

use leakscope_profile::fields::Schema;
pub use leakscope_profile::fields::SchemaError;

static REGISTERED: Mutex<Option<Schema>> = Mutex::new(None);

/// Registers a serialized `FileDescriptorSet` (the bytes a tonic service
/// already builds for gRPC reflection, or `protoc --descriptor_set_out`).
/// Every snapshot taken afterwards names the protobuf fields of pinned
/// buffers with it; registering several sets adds them up.
///
/// ```no_run
/// # const FILE_DESCRIPTOR_SET: &[u8] = &[];
/// leakscope::register_descriptor_set(FILE_DESCRIPTOR_SET).expect("a descriptor set");
/// ```
pub fn register_descriptor_set(bytes: &[u8]) -> Result<(), SchemaError> {
    let schema = Schema::from_bytes(bytes)?;
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    match registered.as_mut() {
        Some(known) => known.merge(&schema),
        None => *registered = Some(schema),
    }
    Ok(())
}

/// Runs `f` with the registered schema, if any.
pub(crate) fn with_registered<R>(f: impl FnOnce(&Schema) -> R) -> Option<R> {
    let registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    registered.as_ref().map(f)
}
