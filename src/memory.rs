//! How much memory a run needs, estimated before anything is allocated, so that a size that
//! cannot fit is refused with the largest one that would (instead of aborting on an allocation).

use crate::model::{Layer, Vgg};

/// f32 values per buffer kind of one run of an h x w image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunFloats {
    /// Every layer output up to the deepest layer used (ReLU and pool outputs kept for backward).
    pub activations: u64,
    /// The image, its gradient and the optimiser's vectors.
    pub image_vectors: u64,
    /// The conv weights of the layers used, as the backend keeps them (`run_floats_with_weights`;
    /// 0 from `run_floats`).
    pub weights: u64,
}

impl RunFloats {
    /// Bytes in all: activations three times (forward outputs, their gradients, and a style image
    /// of about the same size while its Grams are computed), plus the image-sized vectors.
    pub fn bytes(&self) -> u64 {
        4 * (3 * self.activations + self.image_vectors + self.weights)
    }
}

/// The floats a run needs: `needed` the content and style layers, `optimizer_vectors` how many
/// image-sized vectors the optimiser keeps (L-BFGS: 2 per history pair plus a few; Adam: 2).
pub fn run_floats(vgg: &Vgg, needed: &[String], h: usize, w: usize, optimizer_vectors: usize) -> RunFloats {
    let (mut lh, mut lw) = (h as u64, w as u64);
    let mut c = 3u64;
    let mut activations = 0u64;
    let mut remaining: Vec<&String> = needed.iter().collect();
    for l in &vgg.layers {
        if remaining.is_empty() {
            break;
        }
        match l {
            Layer::Pool => {
                lh /= 2;
                lw /= 2;
            }
            Layer::Conv(conv) => {
                c = conv.c_out as u64;
                remaining.retain(|n| **n != conv.name);
            }
        }
        activations += lh * lw * c;
    }
    let n = 3 * (h as u64) * (w as u64);
    RunFloats { activations, image_vectors: n * (2 + optimizer_vectors as u64), weights: 0 }
}

/// `run_floats` plus the weights of the convs up to the deepest layer used, `conv_floats(c_in,
/// c_out)` each (the CPU keeps the Winograd transform U alone where it has one, both direct
/// layouts elsewhere: `cpu::conv_weight_floats`; CUDA both layouts).
pub fn run_floats_with_weights(vgg: &Vgg, needed: &[String], h: usize, w: usize, optimizer_vectors: usize, conv_floats: impl Fn(usize, usize) -> usize) -> RunFloats {
    let mut floats = run_floats(vgg, needed, h, w, optimizer_vectors);
    let mut remaining: Vec<&String> = needed.iter().collect();
    for l in &vgg.layers {
        if remaining.is_empty() {
            break;
        }
        if let Layer::Conv(conv) = l {
            floats.weights += (conv_floats(conv.c_in, conv.c_out) + conv.c_out) as u64;
            remaining.retain(|n| **n != conv.name);
        }
    }
    floats
}

/// The longer side (pixels) of the largest run that fits in `available` bytes, for a run of
/// longer side `side` that needs `need` bytes: every term grows with the pixel count, so the
/// side scales with the square root, less 5% for what the estimate leaves out.
pub fn largest_side(side: usize, need: u64, available: u64) -> usize {
    (side as f64 * (available as f64 / need.max(1) as f64).sqrt() * 0.95).floor() as usize
}

/// Memory the system can give this process now (Linux: MemAvailable), if known.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The most resident memory this process has used so far (Linux: VmHWM), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::random_vgg19;

    #[test]
    fn vgg19_keeps_320_floats_per_pixel_up_to_relu5_1() {
        // DESIGN.md's count: 128 + 16 + 64 + 8 + 64 + 4 + 32 + 2 + 2 per input pixel.
        let vgg = random_vgg19(0);
        let f = run_floats(&vgg, &["relu5_1".to_string(), "relu4_2".to_string()], 256, 256, 0);
        assert_eq!(f.activations, 320 * 256 * 256);
        assert_eq!(f.image_vectors, 2 * 3 * 256 * 256);
        // Only the layers up to the deepest one used: relu2_1 is 64 + 64 + 16 + 32 per pixel.
        assert_eq!(run_floats(&vgg, &["relu2_1".to_string()], 256, 256, 0).activations, 176 * 256 * 256);
        // The cost grows with the pixels.
        let big = run_floats(&vgg, &["relu5_1".to_string()], 512, 512, 200);
        assert_eq!(big.activations, 4 * f.activations);
        assert_eq!(big.bytes(), 4 * (3 * big.activations + 3 * 512 * 512 * 202));
        assert_eq!(big.weights, 0);
    }

    #[test]
    fn weights_are_counted_up_to_the_deepest_layer_used() {
        let vgg = random_vgg19(0);
        let direct = |c_in: usize, c_out: usize| 9 * c_in * c_out;
        // conv1_1 .. conv5_1 with biases: 12,944,960 parameters.
        let f = run_floats_with_weights(&vgg, &["relu5_1".to_string()], 64, 64, 0, direct);
        assert_eq!(f.weights, 12_944_960);
        assert_eq!(f.activations, run_floats(&vgg, &["relu5_1".to_string()], 64, 64, 0).activations);
        assert_eq!(run_floats_with_weights(&vgg, &["relu1_1".to_string()], 64, 64, 0, direct).weights, 1792);
        // The CPU keeps both direct layouts for conv1_1, and U (36 floats per channel pair, both
        // directions; rows padded by 16 floats) alone for the others.
        assert_eq!(crate::cpu::conv_weight_floats(3, 64), 2 * 9 * 3 * 64);
        if std::env::var("NEURAL_STYLE_CPU_CONV").map_or(true, |v| v == "auto") {
            assert_eq!(crate::cpu::conv_weight_floats(64, 128), 36 * 64 * (128 + 16));
        }
    }

    #[test]
    fn the_largest_side_that_fits_scales_with_the_square_root_of_the_memory() {
        assert_eq!(largest_side(1000, 4 << 30, 1 << 30), 475);
        assert_eq!(largest_side(512, 1 << 30, 1 << 30), 486);
        // An estimate of 0 bytes does not divide by zero.
        assert!(largest_side(512, 0, 1 << 30) > 512);
    }
}
