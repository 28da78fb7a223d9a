//! Builds the initial-exec TLS variable of the hooks' countdown
//! (`src/countdown.c`).

fn main() {
    println!("cargo:rerun-if-changed=src/countdown.c");
    cc::Build::new()
        .file("src/countdown.c")
        .flag_if_supported("-ftls-model=initial-exec")
        .compile("leakscope_preload_countdown");
}
