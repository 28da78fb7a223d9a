//! `leakscope demo`: profiles a small built-in program that leaks (a request
//! cache that keeps every fourth request body) in full mode, then shows what
//! leakscope finds: the top allocators of live memory, what grew between two
//! profiles, and a flame graph.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::commands::flame::write_flame_graph;
use crate::input::load_profile;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the profiles and the flame graph.
    #[arg(long, default_value = "leakscope-demo")]
    pub out: PathBuf,
    /// Requests the demo service handles.
    #[arg(long, default_value_t = 40_000)]
    pub requests: u64,
}

#[derive(clap::Args)]
pub struct WorkloadArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub requests: u64,
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let exe = std::env::current_exe().context("cannot find the leakscope binary")?;
    println!(
        "Running the demo service ({} requests) under leakscope in full mode...",
        args.requests
    );
    let status = Command::new(exe)
        .arg("demo-workload")
        .arg("--out")
        .arg(&args.out)
        .arg("--requests")
        .arg(args.requests.to_string())
        .env("LEAKSCOPE_MODE", "full")
        .status()
        .context("cannot start the demo workload")?;
    if !status.success() {
        bail!("the demo workload failed ({status})");
    }
    let early = args.out.join("heap-early.pb.gz");
    let late = args.out.join("heap-late.pb.gz");
    let early_view = load_profile(&early)?;
    let late_view = load_profile(&late)?;
    let inuse = late_view
        .sample_index(Some("inuse_space"))
        .map_err(anyhow::Error::msg)?;

    println!(
        "\n== Where live memory was allocated (leakscope top {}) ==",
        late.display()
    );
    print!("{}", leakscope_profile::top(&late_view, inuse, 8).render());

    println!("\n== What grew between the two profiles (leakscope diff) ==");
    let early_inuse = early_view
        .sample_index(Some("inuse_space"))
        .map_err(anyhow::Error::msg)?;
    let rows = leakscope_profile::diff(&early_view, early_inuse, &late_view, inuse);
    print!(
        "{}",
        leakscope_profile::diff::render_diff(&rows, "bytes", 5, 4)
    );

    let svg = args.out.join("inuse_space.svg");
    write_flame_graph(&late_view, inuse, "demo service: inuse_space", &svg)?;
    println!("\nFlame graph of live memory: {}", svg.display());
    if let Some(top) = rows.first().filter(|r| r.delta() > 0) {
        println!(
            "Verdict: live memory grows under {} (+{} bytes in the second half); the memory it allocates is being kept.",
            top.stack.first().map_or("?", String::as_str),
            top.delta()
        );
    }
    Ok(())
}

static REQUEST_CACHE: Mutex<Option<HashMap<u64, Vec<u8>>>> = Mutex::new(None);

#[inline(never)]
fn decode_body(id: u64) -> Vec<u8> {
    black_box(vec![(id % 251) as u8; 2048 + (id as usize * 37) % 2048])
}

#[inline(never)]
fn cache_request(id: u64, body: Vec<u8>) {
    let mut cache = REQUEST_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.get_or_insert_with(HashMap::new).insert(id, body);
}

#[inline(never)]
fn handle_request(id: u64) {
    let body = decode_body(id);
    let reply: Vec<u8> = body.iter().map(|b| b.wrapping_mul(3)).collect();
    black_box(&reply);
    if id % 4 == 0 {
        // The leak: every fourth request body is kept forever.
        cache_request(id, body);
    }
}

/// The profiled half of the demo: handles requests, writing a heap profile
/// halfway through and at the end.
pub fn workload(args: WorkloadArgs) -> Result<()> {
    for id in 0..args.requests {
        handle_request(id);
        if id == args.requests / 2 {
            leakscope::heap_profile().write_pprof(args.out.join("heap-early.pb.gz"))?;
        }
    }
    leakscope::heap_profile().write_pprof(args.out.join("heap-late.pb.gz"))?;
    Ok(())
}
