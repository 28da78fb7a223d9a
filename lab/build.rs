//! Generates the lab's tonic service and prost messages from proto/lab.proto,
//! with protox (no protoc). `bytes` fields become `bytes::Bytes`, decoded
//! zero-copy as slices of the received buffer, as in real services. The
//! descriptor set is kept too (as a reflection service would serve it), for
//! leakscope to name the fields of pinned buffers.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/lab.proto");
    let fds = protox::compile(["proto/lab.proto"], ["proto"]).expect("proto/lab.proto must parse");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("lab_descriptor.bin"), fds.encode_to_vec())
        .expect("the descriptor set must be written");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(fds)
        .expect("tonic code generation must succeed");
}
