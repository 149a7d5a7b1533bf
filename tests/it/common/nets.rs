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
