//! The embedded default model: VGG-19's layout with seeded random weights, made at run time.

use super::Vgg;
use crate::rng::Rng;

/// Channel widths of VGG-19's whole conv stack (conv1_1 .. conv5_4); 0 marks a pool. The
/// default layers need up to relu5_1; the Keras example's content layer is relu5_2.
pub const VGG19_CONVS: [usize; 20] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512];

/// Builds a network of the given widths (0 = pool) with He-normal weights and small biases,
/// numbered as torchvision numbers `features.N`.
pub fn random_vgg(widths: &[usize], seed: u64, source: String) -> Vgg {
    let mut rng = Rng::new(seed);
    let (mut index, mut c_in) = (0usize, 3usize);
    let mut entries = Vec::new();
    for &c_out in widths {
        if c_out == 0 {
            index += 1; // the pool occupies one slot
            continue;
        }
        let std = (2.0 / (c_in * 9) as f32).sqrt();
        let weight = (0..c_out * c_in * 9).map(|_| rng.normal() * std).collect();
        let bias = (0..c_out).map(|_| rng.normal() * 0.01).collect();
        entries.push((index, vec![c_out, c_in, 3, 3], weight, bias));
        index += 2;
        c_in = c_out;
    }
    Vgg::from_features(entries, source).expect("the built-in layout is valid")
}

/// VGG-19's conv stack with seeded random weights (layers are drawn in order, so adding the
/// ones after conv5_1 left the earlier weights as they were).
pub fn random_vgg19(seed: u64) -> Vgg {
    random_vgg(&VGG19_CONVS, seed, format!("embedded random VGG-19 (seed {seed})"))
}
