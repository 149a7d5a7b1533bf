//! `neural-style bench`: time loss-and-gradient evaluations (the same work as torch_gatys.py).

use super::{choose_device, Device};
use crate::cli::BenchArgs;
use anyhow::{ensure, Result};
use neural_style::model::source;
use neural_style::model::Vgg;
use neural_style::{cpu, cuda, Backend, CpuBackend, Precision};

pub fn bench(a: BenchArgs) -> Result<()> {
    ensure!(!a.sizes.is_empty(), "--sizes must list at least one size");
    ensure!(a.evals > 0, "--evals must be at least 1");
    ensure!(a.evals <= super::MAX_ITERATIONS && a.warmup <= super::MAX_ITERATIONS, "--evals and --warmup must be at most {} each", super::MAX_ITERATIONS);
    let vgg = source::load(&source::resolve(None, 0))?;
    let spec = neural_style::bench::default_spec();
    let layers: Vec<String> = spec.content_layers.iter().chain(&spec.style_layers).cloned().collect();
    let (side, pools, deepest) = super::min_side(&vgg, &layers);
    for &s in &a.sizes {
        ensure!(s >= side, "--sizes: {s} is too small: the minimum size is {side} pixels ({pools} poolings before {deepest})");
    }
    let device = choose_device(a.device, a.precision)?;
    // Each timed evaluation is followed by an L-BFGS step (history 100).
    let pairs = (a.warmup + a.evals).min(100);
    for &s in &a.sizes {
        super::check_memory(&vgg, &spec.content_layers, &spec.style_layers, (s, s), &[(s, s)], 2 * pairs + 2, device).map_err(|e| anyhow::anyhow!("--sizes {s}: {e}"))?;
    }
    match device {
        Device::Cpu(p) => {
            let backend = CpuBackend::with_precision(p);
            let (kind, isa) = (cpu::bf16::cpu_kind(), cpu::bf16::instruction_set(backend.precision() == Precision::Bf16));
            if !a.json {
                println!("cpu: {kind}; {} convolutions and Grams on {isa}", format!("{:?}", backend.precision()).to_lowercase());
            }
            bench_on(&backend, &vgg, &a, &[("cpu", kind), ("instruction_set", isa.to_string())])
        }
        Device::Cuda(p) => bench_on(&cuda::CudaBackend::new(0, p)?, &vgg, &a, &[]),
    }
}

/// Median over timed evaluations (each followed by an L-BFGS step, as torch_gatys.py times its
/// closure); effective GFLOP/s = 2 x forward conv FLOPs / median time.
/// `extra`: fields added to each JSON line (the CPU's kind and instruction set).
fn bench_on<B: Backend>(backend: &B, vgg: &Vgg, a: &BenchArgs, extra: &[(&str, String)]) -> Result<()> {
    for &size in &a.sizes {
        let r = neural_style::bench::run_evaluations(backend, vgg, size, a.warmup, a.evals)?;
        if a.json {
            let mut line = serde_json::to_value(&r)?;
            for (key, value) in extra {
                line[*key] = serde_json::Value::String(value.clone());
            }
            println!("{line}");
        } else {
            let peak = r.peak_bytes.map(|b| format!("{:.2} GiB peak", b as f64 / (1u64 << 30) as f64)).unwrap_or_else(|| "peak n/a".into());
            println!(
                "{:>5} px  {:>9.2} ms/eval (min {:.2})  {:>8.1} GFLOP/s (= 2 x fwd conv FLOPs {:.2} G / median)  {}  {}",
                r.size,
                r.median_ms,
                r.min_ms,
                r.gflops_effective,
                r.flops_per_eval as f64 / 1e9,
                peak,
                r.backend
            );
        }
    }
    Ok(())
}
