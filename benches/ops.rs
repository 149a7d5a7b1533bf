//! Criterion benches of the CPU ops on VGG-19 layer shapes at 256², and of whole evaluations;
//! the same on CUDA (conv per precision, evaluations at 512² and 1024²) where a GPU is found.
//! Throughput is in FLOPs ("elements" in criterion's report = FLOP/s). Quick by design:
//! `cargo bench --bench ops` (filter with a name, e.g. `cargo bench --bench ops -- conv_fwd`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use neural_style::backend::{ConvShape, PoolKind, PoolShape, Precision};
use neural_style::cpu::{conv, gram, pool, winograd};
use neural_style::rng::Rng;
use neural_style::{Backend, CpuBackend, Image, Objective};
use std::hint::black_box;
use std::time::Duration;

/// As the program: large buffers on cache lines (neural_style::aligned_alloc).
#[global_allocator]
static ALLOC: neural_style::aligned_alloc::CacheLineAligned = neural_style::aligned_alloc::CacheLineAligned;

/// (name, h = w, c_in, c_out) of distinct VGG-19 conv shapes for a 256² input.
const CONVS: [(&str, usize, usize, usize); 6] = [
    ("conv1_1", 256, 3, 64),
    ("conv1_2", 256, 64, 64),
    ("conv2_2", 128, 128, 128),
    ("conv3_2", 64, 256, 256),
    ("conv4_2", 32, 512, 512),
    ("conv5_1", 16, 512, 512),
];

fn quick<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g
}

fn bench_conv(c: &mut Criterion) {
    let mut rng = Rng::new(0);
    let mut g = quick(c, "conv_fwd");
    for (name, hw, c_in, c_out) in CONVS {
        let s = ConvShape { h: hw, w: hw, c_in, c_out };
        let x = rng.normal_vec(hw * hw * c_in, 1.0);
        let w = rng.normal_vec(9 * c_in * c_out, 0.05);
        let b = rng.normal_vec(c_out, 0.01);
        let mut y = vec![0.0; hw * hw * c_out];
        g.throughput(Throughput::Elements(s.flops()));
        g.bench_function(BenchmarkId::from_parameter(name), |bch| bch.iter(|| conv::conv3x3_fwd(s, black_box(&x), &w, &b, &mut y)));
    }
    g.finish();
    let mut g = quick(c, "conv_bwd_input");
    for (name, hw, c_in, c_out) in CONVS {
        let s = ConvShape { h: hw, w: hw, c_in, c_out };
        let dy = rng.normal_vec(hw * hw * c_out, 1.0);
        let w_flip = rng.normal_vec(9 * c_in * c_out, 0.05);
        let mut dx = vec![0.0; hw * hw * c_in];
        g.throughput(Throughput::Elements(s.flops()));
        g.bench_function(BenchmarkId::from_parameter(name), |bch| bch.iter(|| conv::conv3x3_bwd_input(s, black_box(&dy), &w_flip, &mut dx)));
    }
    g.finish();
}

/// Winograd F(4x4,3x3) against the direct path at every VGG-19 channel pair that uses it, at
/// 64x64 (forward with bias + ReLU, and backward-input with the flipped weights).
/// `cargo bench --bench ops -- winograd_vs_direct`.
fn bench_winograd(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let hw = 64;
    for (dir, bwd) in [("fwd", false), ("bwd_input", true)] {
        let mut g = quick(c, &format!("winograd_vs_direct_{dir}"));
        for (c_in, c_out) in [(64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)] {
            let s = ConvShape { h: hw, w: hw, c_in, c_out };
            // The direct path's orientation: (k, n) = (c_in, c_out) forward, (c_out, c_in) for the
            // backward-input (its flipped layout); Winograd runs both on the forward's U.
            let (k, n) = if bwd { (c_out, c_in) } else { (c_in, c_out) };
            let x = rng.normal_vec(hw * hw * k, 1.0);
            let w = rng.normal_vec(9 * k * n, 0.05);
            let u = winograd::transform_weights(c_in, c_out, &rng.normal_vec(9 * c_in * c_out, 0.05));
            let b = rng.normal_vec(c_out, 0.01);
            let mut y = vec![0.0; hw * hw * n];
            let id = format!("{c_in}x{c_out}");
            g.throughput(Throughput::Elements(s.flops()));
            g.bench_function(BenchmarkId::new("direct", &id), |bch| {
                bch.iter(|| if bwd { conv::conv3x3_bwd_input(s, black_box(&x), &w, &mut y) } else { conv::conv3x3_fwd(s, black_box(&x), &w, &b, &mut y) })
            });
            g.bench_function(BenchmarkId::new("winograd", &id), |bch| {
                bch.iter(|| if bwd { winograd::conv3x3_bwd_input(s, black_box(&x), &u, &mut y) } else { winograd::conv3x3_fwd(s, black_box(&x), &u, &b, &mut y) })
            });
        }
        g.finish();
    }
}

fn bench_gram(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    // The style layers at 256²: relu1_1, relu3_1, relu5_1.
    for (group, bwd) in [("gram", false), ("gram_bwd_acc", true)] {
        let mut g = quick(c, group);
        for (name, hw, ch) in [("relu1_1", 256 * 256, 64), ("relu3_1", 64 * 64, 256), ("relu5_1", 16 * 16, 512)] {
            let f = rng.normal_vec(hw * ch, 1.0);
            let dg = rng.normal_vec(ch * ch, 1.0);
            let mut out_g = vec![0.0; ch * ch];
            let mut df = vec![0.0; hw * ch];
            g.throughput(Throughput::Elements(2 * (hw * ch * ch) as u64));
            g.bench_function(BenchmarkId::from_parameter(name), |bch| {
                bch.iter(|| if bwd { gram::gram_bwd_acc(hw, ch, black_box(&f), &dg, &mut df) } else { gram::gram(hw, ch, black_box(&f), &mut out_g) })
            });
        }
        g.finish();
    }
}

fn bench_pool(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let s = PoolShape { h: 256, w: 256, c: 64 }; // pool1 at 256²
    let x = rng.normal_vec(256 * 256 * 64, 1.0);
    let dy = rng.normal_vec(128 * 128 * 64, 1.0);
    let mut y = vec![0.0; 128 * 128 * 64];
    let mut dx = vec![0.0; 256 * 256 * 64];
    let mut g = quick(c, "memory_bound");
    // Bytes moved: forward reads x and writes y; backward reads x, dy and writes dx.
    g.throughput(Throughput::Bytes((x.len() + y.len()) as u64 * 4));
    g.bench_function("max_pool_fwd_pool1", |bch| bch.iter(|| pool::pool_fwd(PoolKind::Max, s, black_box(&x), &mut y)));
    g.throughput(Throughput::Bytes((2 * x.len() + dy.len()) as u64 * 4));
    g.bench_function("max_pool_bwd_pool1", |bch| bch.iter(|| pool::pool_bwd(PoolKind::Max, s, black_box(&x), &dy, &mut dx)));
    let be = CpuBackend::new();
    let mut d = dx.clone();
    g.throughput(Throughput::Bytes(2 * x.len() as u64 * 4));
    g.bench_function("relu_bwd_conv1_2", |bch| bch.iter(|| be.relu_bwd(black_box(&x), &mut d).unwrap()));
    g.finish();
}

fn bench_evaluate(c: &mut Criterion) {
    let be = CpuBackend::new();
    let vgg = neural_style::model::random::random_vgg19(0);
    let mut g = c.benchmark_group("evaluate");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for size in [128usize, 256] {
        let conv = neural_style::Convention::Torchvision;
        let content = Image { h: size, w: size, data: conv.preprocess(&neural_style::bench::procedural_image(size, 1, false)) };
        let style = Image { h: size, w: size, data: conv.preprocess(&neural_style::bench::procedural_image(size, 2, true)) };
        let mut obj = Objective::new(&be, &vgg, neural_style::bench::default_spec(), &content, &[(style, 1.0)]).unwrap();
        let x = Rng::new(3).normal_vec(size * size * 3, 0.001);
        let mut grad = vec![0.0; x.len()];
        g.throughput(Throughput::Elements(obj.flops_per_evaluation()));
        g.bench_function(BenchmarkId::from_parameter(size), |bch| bch.iter(|| obj.evaluate(black_box(&x), &mut grad).unwrap()));
    }
    g.finish();
}

/// The same conv shapes and whole evaluations on the GPU, per precision, where one is found
/// (`cuda::probe()`); elsewhere it prints why and benches nothing. Each sample ends with a
/// device synchronise, so kernel time is counted rather than launch time.
fn bench_cuda(c: &mut Criterion) {
    if let Err(why) = neural_style::cuda::probe() {
        eprintln!("cuda benches skipped: {why:#}");
        return;
    }
    for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
        let be = neural_style::cuda::CudaBackend::new(0, precision).unwrap();
        let mut rng = Rng::new(0);
        let mut g = quick(c, &format!("cuda_{precision:?}_conv"));
        for (name, hw, c_in, c_out) in CONVS {
            let s = ConvShape { h: hw, w: hw, c_in, c_out };
            let x = be.upload(&rng.normal_vec(hw * hw * c_in, 1.0)).unwrap();
            let w = be.upload(&rng.normal_vec(9 * c_in * c_out, 0.05)).unwrap();
            let b = be.upload(&rng.normal_vec(c_out, 0.01)).unwrap();
            let mut y = be.zeros(hw * hw * c_out).unwrap();
            let mut dx = be.zeros(hw * hw * c_in).unwrap();
            let w_flip = be.upload(&rng.normal_vec(9 * c_in * c_out, 0.05)).unwrap();
            g.throughput(Throughput::Elements(s.flops()));
            g.bench_function(BenchmarkId::new("fwd", name), |bch| {
                bch.iter_custom(|iters| timed(&be, iters, || be.conv3x3_fwd(s, &x, &w, &b, &mut y).unwrap()))
            });
            g.bench_function(BenchmarkId::new("bwd_input", name), |bch| {
                bch.iter_custom(|iters| timed(&be, iters, || be.conv3x3_bwd_input(s, &y, &w, &w_flip, &mut dx).unwrap()))
            });
        }
        g.finish();
        let vgg = neural_style::model::random::random_vgg19(0);
        let mut g = quick(c, &format!("cuda_{precision:?}_evaluate"));
        for size in [512usize, 1024] {
            let conv = neural_style::Convention::Torchvision;
            let content = Image { h: size, w: size, data: conv.preprocess(&neural_style::bench::procedural_image(size, 1, false)) };
            let style = Image { h: size, w: size, data: conv.preprocess(&neural_style::bench::procedural_image(size, 2, true)) };
            let mut obj = Objective::new(&be, &vgg, neural_style::bench::default_spec(), &content, &[(style, 1.0)]).unwrap();
            let x = be.upload(&Rng::new(3).normal_vec(size * size * 3, 0.001)).unwrap();
            let mut grad = be.zeros(size * size * 3).unwrap();
            g.throughput(Throughput::Elements(obj.flops_per_evaluation()));
            g.bench_function(BenchmarkId::from_parameter(size), |bch| {
                bch.iter_custom(|iters| timed(&be, iters, || {
                    obj.evaluate(&x, &mut grad).unwrap();
                }))
            });
        }
        g.finish();
    }
}

/// Runs `f` iters times and waits for the device before reading the clock.
fn timed<B: Backend>(be: &B, iters: u64, mut f: impl FnMut()) -> Duration {
    be.synchronize().unwrap();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        f();
    }
    be.synchronize().unwrap();
    t.elapsed()
}

criterion_group!(benches, bench_conv, bench_winograd, bench_gram, bench_pool, bench_evaluate, bench_cuda);
criterion_main!(benches);
