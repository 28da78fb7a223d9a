//! Generates the lab's tonic service and prost messages from proto/lab.proto,
//! with protox (no protoc). `bytes` fields become `bytes::Bytes`, decoded
//! zero-copy as slices of the received buffer, as in real services.

fn main() {
    println!("cargo:rerun-if-changed=proto/lab.proto");
    let fds = protox::compile(["proto/lab.proto"], ["proto"]).expect("proto/lab.proto must parse");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(fds)
        .expect("tonic code generation must succeed");
}
