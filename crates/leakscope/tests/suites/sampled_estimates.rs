// The tests of `sampled_estimates`, included by one test binary per wrapped
// allocator (`sampled_estimates.rs`, `sampled_estimates_jemalloc.rs`, `sampled_estimates_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::hint::black_box;

use leakscope::{Mode, Profiler};

use common::{current_view, figures_for};

const RATE: u64 = 8192;

#[global_allocator]
static ALLOC: Profiler<Inner> = Profiler::wrap(INNER)
    .with_mode(Mode::Sampled)
    .with_rate(RATE)
    .with_seed(0x5EED_1EAF);

/// Expected value and variance of the four estimates for a set of blocks.
#[derive(Default, Debug)]
struct Truth {
    objects: f64,
    bytes: f64,
    var_objects: f64,
    var_bytes: f64,
}

impl Truth {
    fn block(&mut self, size: usize) {
        let s = size as f64;
        let p = 1.0 - (-s / RATE as f64).exp();
        self.objects += 1.0;
        self.bytes += s;
        self.var_objects += (1.0 - p) / p;
        self.var_bytes += s * s * (1.0 - p) / p;
    }
}

fn check(name: &str, estimate: i64, expected: f64, variance: f64, failures: &mut Vec<String>) {
    let sd = variance.sqrt();
    // Values are rounded to integers per call site: allow a few units.
    let tolerance = 3.0 * sd + 4.0;
    let z = (estimate as f64 - expected) / sd.max(1e-9);
    println!(
        "{name:<28} estimate {estimate:>12} expected {expected:>14.1} sd {sd:>12.1} z {z:>6.2}"
    );
    if (estimate as f64 - expected).abs() > tolerance {
        failures.push(format!(
            "{name}: {estimate} is not within 3 sd ({sd:.1}) of {expected:.1}"
        ));
    }
}

#[inline(never)]
fn planted_small(n: usize, truth: &mut Truth) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(n);
    truth.block(n * std::mem::size_of::<Vec<u8>>());
    for _ in 0..n {
        kept.push(black_box(Vec::with_capacity(64)));
        truth.block(64);
    }
    kept
}

#[inline(never)]
fn planted_medium(n: usize, truth: &mut Truth) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(n);
    truth.block(n * std::mem::size_of::<Vec<u8>>());
    for _ in 0..n {
        kept.push(black_box(Vec::with_capacity(3000)));
        truth.block(3000);
    }
    kept
}

/// Small and large blocks from one call site: only per-block unbiasing
/// gets this right.
#[inline(never)]
fn planted_mixed(n: usize, truth: &mut Truth) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(n);
    truth.block(n * std::mem::size_of::<Vec<u8>>());
    for i in 0..n {
        let size = if i % 10 == 0 { 60_000 } else { 48 };
        kept.push(black_box(Vec::with_capacity(size)));
        truth.block(size);
    }
    kept
}

#[inline(never)]
fn planted_churn(n: usize, truth: &mut Truth) {
    for _ in 0..n {
        black_box(Vec::<u8>::with_capacity(200));
        truth.block(200);
    }
}

#[test]
fn estimates_are_within_three_standard_deviations() {
    let (mut small, mut medium, mut mixed, mut churn) = Default::default();
    let kept = (
        planted_small(40_000, &mut small),
        planted_medium(4_000, &mut medium),
        planted_mixed(20_000, &mut mixed),
    );
    planted_churn(100_000, &mut churn);
    let view = current_view();
    assert_eq!(view.period, RATE as i64);

    let mut failures = Vec::new();
    for (name, truth, live) in [
        ("planted_small", &small, true),
        ("planted_medium", &medium, true),
        ("planted_mixed", &mixed, true),
        ("planted_churn", &churn, false),
    ] {
        let [alloc_objects, alloc_space, inuse_objects, inuse_space] =
            figures_for(&view, &format!("::{name}"));
        check(
            &format!("{name} alloc_objects"),
            alloc_objects,
            truth.objects,
            truth.var_objects,
            &mut failures,
        );
        check(
            &format!("{name} alloc_space"),
            alloc_space,
            truth.bytes,
            truth.var_bytes,
            &mut failures,
        );
        if live {
            check(
                &format!("{name} inuse_objects"),
                inuse_objects,
                truth.objects,
                truth.var_objects,
                &mut failures,
            );
            check(
                &format!("{name} inuse_space"),
                inuse_space,
                truth.bytes,
                truth.var_bytes,
                &mut failures,
            );
        } else {
            // Freed blocks are forgotten exactly, sampled or not.
            assert_eq!((inuse_objects, inuse_space), (0, 0), "{name}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(kept);

    repeated_runs_show_no_bias();
}

#[inline(never)]
fn planted_repeat(truth: &mut Truth) {
    for i in 0..20_000 {
        let size = if i % 2 == 0 { 200 } else { 5000 };
        black_box(Vec::<u8>::with_capacity(size));
        truth.block(size);
    }
}

/// Forty independent runs (each thread samples with its own random stream):
/// the z-scores of the alloc_space estimates must average near 0 with a
/// spread near 1, which a biased or over-confident estimator would not show.
fn repeated_runs_show_no_bias() {
    let runs = 40;
    let mut zs = Vec::new();
    for _ in 0..runs {
        let before = figures_for(&current_view(), "::planted_repeat")[1];
        let truth = std::thread::spawn(|| {
            let mut truth = Truth::default();
            planted_repeat(&mut truth);
            truth
        })
        .join()
        .unwrap();
        let after = figures_for(&current_view(), "::planted_repeat")[1];
        zs.push(((after - before) as f64 - truth.bytes) / truth.var_bytes.sqrt());
    }
    let mean = zs.iter().sum::<f64>() / runs as f64;
    let sd = (zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / (runs - 1) as f64).sqrt();
    println!("{runs} runs: mean z {mean:.3}, sd of z {sd:.3}");
    // The mean of 40 standard normals has sd 0.16: 3 sd is 0.47.
    assert!(mean.abs() < 0.47, "estimates are biased: mean z {mean:.3}");
    assert!(
        (0.6..1.45).contains(&sd),
        "spread of z is {sd:.3}, theory says 1"
    );
}
