//! Times whole evaluations (forward + losses + image gradient, then an L-BFGS step) on the CPU
//! backend with the embedded random VGG-19, as `neural-style bench` does; prints JSON lines.
//! Usage: cargo run --release --example bench_eval -- [SIZES=256] [EVALS=10] [WARMUP=2]

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or_else(|| default.to_string());
    let sizes: Vec<usize> = arg(1, "256").split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let evals: usize = arg(2, "10").parse()?;
    let warmup: usize = arg(3, "2").parse()?;
    let vgg = neural_style::model::random::random_vgg19(0);
    let backend = neural_style::CpuBackend::new();
    for size in sizes {
        let r = neural_style::bench::run_evaluations(&backend, &vgg, size, warmup, evals)?;
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
