//! The small random networks, objectives and images the library-level tests share.

use neural_style::model::random::random_vgg;
use neural_style::rng::Rng;
use neural_style::{Image, ObjectiveSpec, PoolKind, Vgg};

/// VGG-19's layout up to relu5_1 with 4..8 channels: every layer a test may name, cheap.
pub fn narrow_vgg() -> Vgg {
    random_vgg(&[4, 4, 0, 6, 6, 0, 8, 8, 8, 8, 0, 8, 8, 8, 8, 0, 8], 7, "narrow".into())
}

/// Up to relu3_2 only: for whole runs (resume, multi-scale, bounds) of many iterations.
pub fn tiny_vgg() -> Vgg {
    random_vgg(&[4, 4, 0, 6, 6, 0, 8, 8], 3, "tiny".into())
}

/// The objective the whole-run tests use on `tiny_vgg`: content at relu2_2, style at relu1_1,
/// relu2_1 and relu3_1, weighted so that both terms move.
pub fn tiny_spec() -> ObjectiveSpec {
    ObjectiveSpec {
        content_layers: vec!["relu2_2".into()],
        style_layers: vec!["relu1_1".into(), "relu2_1".into(), "relu3_1".into()],
        content_weight: 1.0,
        style_weight: 1e3,
        tv_weight: 1e-5,
        pooling: PoolKind::Max,
        ..Default::default()
    }
}

/// An h x w image of standard normal values.
pub fn normal_image(rng: &mut Rng, h: usize, w: usize) -> Image {
    Image { h, w, data: rng.normal_vec(h * w * 3, 1.0) }
}

/// w x h RGB pixels of a fixed pattern, different for each `k`.
pub fn pattern_pixels(w: usize, h: usize, k: usize) -> Vec<u8> {
    (0..w * h * 3).map(|i| ((i * 37 + k * 101 + (i / 7) * 13) % 256) as u8).collect()
}

/// The bench's objective on the full-width VGG-19 (the embedded model's architecture, random
/// weights, seed 0) at 48², from the content image: 100 L-BFGS iterations, the run with which
/// winograd.rs and cpu_bf16.rs compare a convolution path's final objective with the reference's.
pub fn bench_job_48() -> (neural_style::Vgg, neural_style::Job) {
    use neural_style::bench::{default_spec, procedural_image};
    use neural_style::preprocess::Convention;
    use neural_style::{Image, Init, Job, Optimizer};
    let vgg = neural_style::model::random::random_vgg19(0);
    let size = 48;
    let conv = Convention::Torchvision;
    let content = Image { h: size, w: size, data: conv.preprocess(&procedural_image(size, 1, false)) };
    let style = Image { h: size, w: size, data: conv.preprocess(&procedural_image(size, 2, true)) };
    let job = Job {
        init: Init::Image(content.data.clone()),
        content,
        styles: vec![(style, 1.0)],
        spec: default_spec(),
        optimizer: Optimizer::lbfgs(100),
        iterations: 100,
        seed: 0,
        snapshot_every: 0,
        snapshot_gate: None,
        bounds: None,
    };
    (vgg, job)
}
