//! `--proto FILE...` and `--descriptor-set FILE` of `report` and `refs`:
//! the service's protobuf schema, to name the message fields whose slices
//! pin buffers (`lab.EchoRequest.payload (field 2, bytes)`). Names given
//! here replace those a snapshot was written with (from descriptors the
//! service registered).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leakscope_profile::fields::{naming, Schema};
use leakscope_profile::snapshot::SnapshotReport;

#[derive(clap::Args, Default)]
pub struct DescriptorArgs {
    /// The service's .proto files, to name the message fields that pin
    /// buffers (imports are looked up beside each file, or in --proto-path;
    /// give them after the snapshot or directory).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub proto: Vec<PathBuf>,
    /// Directories to look up the imports of --proto files in.
    #[arg(long, value_name = "DIR")]
    pub proto_path: Vec<PathBuf>,
    /// A serialized FileDescriptorSet (protoc --descriptor_set_out, or the
    /// set a service builds for gRPC reflection), to name message fields.
    #[arg(long, value_name = "FILE")]
    pub descriptor_set: Vec<PathBuf>,
}

impl DescriptorArgs {
    /// The schema the flags give, if any.
    pub fn schema(&self) -> Result<Option<Schema>> {
        if self.proto.is_empty() && self.descriptor_set.is_empty() {
            return Ok(None);
        }
        let mut schema = Schema::default();
        for path in &self.descriptor_set {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let set = Schema::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
            schema.merge(&set);
        }
        if !self.proto.is_empty() {
            schema.merge(&Schema::from_set(&compile(&self.proto, &self.proto_path)?));
        }
        Ok(Some(schema))
    }
}

/// Parses .proto files with protox (no protoc needed).
fn compile(files: &[PathBuf], includes: &[PathBuf]) -> Result<prost_types::FileDescriptorSet> {
    for f in files {
        if !f.is_file() {
            anyhow::bail!("cannot read {}: not a .proto file", f.display());
        }
    }
    let mut dirs: Vec<PathBuf> = includes.to_vec();
    if dirs.is_empty() {
        for f in files {
            let dir = f
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    protox::compile(files, &dirs).map_err(|e| {
        let first = e.to_string();
        anyhow::anyhow!(
            "cannot parse {}: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            first.lines().next().unwrap_or("invalid protobuf")
        )
    })
}

/// Names the pinned buffers' fields of every snapshot with `schema`.
pub fn name_fields(snapshots: &mut [SnapshotReport], schema: Option<&Schema>) {
    if let Some(schema) = schema {
        for s in snapshots {
            naming::name_snapshot(s, schema);
        }
    }
}
