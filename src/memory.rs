//! How much memory a run needs, estimated before anything is allocated, so that a size that
//! cannot fit is refused with the largest one that would (instead of aborting on an allocation).

use crate::backend::ConvShape;
use crate::model::{Layer, Vgg};

/// f32 values per buffer kind of one run of an h x w image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunFloats {
    /// Every layer output up to the deepest layer used (ReLU and pool outputs kept for backward).
    pub activations: u64,
    /// The largest style image's layer outputs and the image, held while its Grams are computed
    /// (`with_styles`; from `run_floats`: a style image of the content's size).
    pub style_activations: u64,
    /// The content layers' target features (`with_styles`; 0 from `run_floats`).
    pub content_targets: u64,
    /// The image, its gradient and the optimiser's vectors.
    pub image_vectors: u64,
    /// The conv weights of the layers used, as the backend keeps them (`run_floats_with_weights`;
    /// 0 from `run_floats`).
    pub weights: u64,
    /// Each style layer's target Gram, Gram and Gram gradient (`with_styles`; 0 from `run_floats`).
    pub grams: u64,
    /// The backend's scratch buffers at their largest (split-K partials; CUDA:
    /// `cuda::scratch_floats`), 0 unless set.
    pub scratch: u64,
}

impl RunFloats {
    /// Bytes in all: the activations twice (forward outputs and their gradients), a style image's
    /// while its Grams are computed (counted as if it overlapped the optimiser's vectors, which
    /// errs large), the content targets, the image-sized vectors, weights, Grams and scratch.
    pub fn bytes(&self) -> u64 {
        4 * (self.feature_floats() + self.image_vectors + self.weights + self.grams + self.scratch)
    }

    /// The floats that are layer outputs: activations, their gradients, a style image's, the content targets.
    pub fn feature_floats(&self) -> u64 {
        2 * self.activations + self.style_activations + self.content_targets
    }

    /// These floats with the objective's targets counted: the content layers' features, the
    /// three c x c matrices each style layer keeps (`Objective`'s StyleTerm), and the largest of
    /// the style images (each `(h, w)`, at the size it is used) instead of one of the content's size.
    pub fn with_styles(mut self, vgg: &Vgg, content_layers: &[String], style_layers: &[String], (h, w): (usize, usize), style_sizes: &[(usize, usize)]) -> RunFloats {
        let needed: Vec<String> = content_layers.iter().chain(style_layers).cloned().collect();
        self.grams = run_shapes(vgg, style_layers, style_layers, h, w).grams.iter().map(|&(_, c)| 3 * (c * c) as u64).sum();
        self.content_targets = content_layers.iter().map(|l| layer_outputs(vgg, std::slice::from_ref(l), h, w).1).sum();
        self.style_activations = style_sizes.iter().map(|&(sh, sw)| layer_outputs(vgg, &needed, sh, sw).0 + 3 * (sh * sw) as u64).max().unwrap_or(0);
        self
    }
}

/// Walks `vgg` on an h x w image up to the deepest layer of `needed`, calling `visit` with each
/// layer and the (height, width) of its output.
fn walk_until(vgg: &Vgg, needed: &[&String], h: usize, w: usize, mut visit: impl FnMut(&Layer, usize, usize)) {
    let (mut lh, mut lw) = (h, w);
    let mut remaining = needed.to_vec();
    for l in &vgg.layers {
        if remaining.is_empty() {
            break;
        }
        match l {
            Layer::Pool => (lh, lw) = (lh / 2, lw / 2),
            Layer::Conv(conv) => remaining.retain(|n| **n != conv.name),
        }
        visit(l, lh, lw);
    }
}

/// The layer outputs of an h x w image up to the deepest of `needed`: (all of them, the last one's).
fn layer_outputs(vgg: &Vgg, needed: &[String], h: usize, w: usize) -> (u64, u64) {
    let (mut c, mut all, mut last) = (3u64, 0u64, 0u64);
    walk_until(vgg, &needed.iter().collect::<Vec<_>>(), h, w, |l, lh, lw| {
        if let Layer::Conv(conv) = l {
            c = conv.c_out as u64;
        }
        last = (lh * lw) as u64 * c;
        all += last;
    });
    (all, last)
}

/// The layer shapes of a run of an h x w image: every conv up to the deepest of `needed`, and
/// (pixels, channels) of each of `style_layers`' Grams, in network order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunShapes {
    pub convs: Vec<ConvShape>,
    pub grams: Vec<(usize, usize)>,
}

pub fn run_shapes(vgg: &Vgg, needed: &[String], style_layers: &[String], h: usize, w: usize) -> RunShapes {
    let mut shapes = RunShapes::default();
    // A conv keeps its input's size (3x3, padding 1), so its output's (h, w) is its input's.
    walk_until(vgg, &needed.iter().chain(style_layers).collect::<Vec<_>>(), h, w, |l, lh, lw| {
        if let Layer::Conv(conv) = l {
            shapes.convs.push(ConvShape { h: lh, w: lw, c_in: conv.c_in, c_out: conv.c_out });
            if style_layers.contains(&conv.name) {
                shapes.grams.push((lh * lw, conv.c_out));
            }
        }
    });
    shapes
}

/// The floats a run needs: `needed` the content and style layers, `optimizer_vectors` how many
/// image-sized vectors the optimiser keeps (L-BFGS: 2 per history pair plus a few; Adam: 2).
pub fn run_floats(vgg: &Vgg, needed: &[String], h: usize, w: usize, optimizer_vectors: usize) -> RunFloats {
    let activations = layer_outputs(vgg, needed, h, w).0;
    let n = 3 * (h as u64) * (w as u64);
    RunFloats { activations, style_activations: activations, content_targets: 0, image_vectors: n * (2 + optimizer_vectors as u64), weights: 0, grams: 0, scratch: 0 }
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

/// `bytes` for a person: GiB from 1 GiB up, MiB below (one decimal), e.g. "0.3 MiB", "12.5 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
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
    fn the_targets_and_the_largest_style_image_are_counted() {
        let vgg = random_vgg19(0);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (content, style) = (names(&["relu2_2"]), names(&["relu1_1", "relu3_1"]));
        let needed = names(&["relu2_2", "relu1_1", "relu3_1"]);
        let base = run_floats(&vgg, &needed, 64, 64, 0);
        let f = base.with_styles(&vgg, &content, &style, (64, 64), &[(32, 32), (32, 128)]);
        // relu2_2 of a 64x64 image: 32x32x128.
        assert_eq!(f.content_targets, 32 * 32 * 128);
        assert_eq!(f.grams, 3 * (64 * 64 + 256 * 256));
        // The larger style image (32x128 has as many pixels as 64x64) and its pixels.
        assert_eq!(f.style_activations, base.activations + 3 * 32 * 128);
        assert_eq!(f.bytes(), base.bytes() + 4 * (f.content_targets + f.grams + 3 * 32 * 128));
        let shapes = run_shapes(&vgg, &needed, &style, 64, 64);
        assert_eq!(shapes.convs.len(), 5, "conv1_1 .. conv3_1");
        assert_eq!(shapes.convs[4], ConvShape { h: 16, w: 16, c_in: 128, c_out: 256 });
        assert_eq!(shapes.grams, vec![(64 * 64, 64), (16 * 16, 256)]);
    }

    #[test]
    fn sizes_read_as_mib_below_a_gib() {
        assert_eq!(human_bytes(0), "0.0 MiB");
        assert_eq!(human_bytes(300 << 10), "0.3 MiB");
        assert_eq!(human_bytes(1023 << 20), "1023.0 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(25 << 29), "12.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "17179869184.0 GiB");
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
