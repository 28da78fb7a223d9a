//! Generates the pprof message types with prost from `proto/profile.proto`.
//! protox parses the schema in Rust, so no `protoc` binary is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/profile.proto");
    let descriptors = protox::compile(["proto/profile.proto"], ["proto"])
        .expect("proto/profile.proto must parse");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation must succeed");
}
