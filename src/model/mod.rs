//! The frozen VGG feature extractor: its layer table and where its weights come from.
//!
//! Files hold torchvision's `features.N.weight` / `features.N.bias` tensors. The layer table is
//! read off the file: conv N is followed by its ReLU at N+1, and a gap of three indices to the
//! next conv means a pooling layer sat between them. Names follow the paper: relu{block}_{k}.
//!
//! [`load_file`] reads `.pth` (PyTorch's zip serialisation and the legacy one of torchvision's
//! `vgg19-dcbb9e9d.pth`) through a restricted pickle reader that never runs code ([`pickle`]),
//! and `.safetensors` (f32, f16, bf16); it reads only the `features.*` tensors.

pub mod file;
pub mod pickle;
pub mod pth;
pub mod random;
pub mod safetensors_file;
pub mod source;

pub use file::load_file;

/// Most input or output channels a conv may have. VGG's widest convs have 512; 4096 leaves room
/// for wider nets while refusing counts that would exhaust memory later (a Gram matrix holds c²
/// floats: 200,000 channels ask for 160 GB). 0 channels is no network either.
pub const MAX_CHANNELS: usize = 4096;

/// Convolution + ReLU, with torch-layout weights `(c_out, c_in, 3, 3)`.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    /// "relu1_1", ...: the name of the ReLU that follows the conv.
    pub name: String,
    /// Index N of `features.N.weight` in the file.
    pub feature_index: usize,
    pub c_in: usize,
    pub c_out: usize,
    /// (c_out, c_in, 3, 3), as PyTorch stores it.
    pub weight: Vec<f32>,
    /// (c_out).
    pub bias: Vec<f32>,
}

#[derive(Clone, Debug)]
pub enum Layer {
    Conv(ConvLayer),
    Pool,
}

/// A VGG-style conv stack (VGG-19, VGG-16 or a narrow test network of the same layout).
#[derive(Clone, Debug)]
pub struct Vgg {
    pub layers: Vec<Layer>,
    /// Where the weights came from, for logs ("embedded random VGG-19 (seed 0)", a path, ...).
    pub source: String,
}

impl Vgg {
    /// Layer names in network order (only the ReLU outputs can be content or style layers).
    pub fn relu_names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Conv(c) => Some(c.name.as_str()),
                Layer::Pool => None,
            })
            .collect()
    }

    /// Drops the layers after the deepest of `needed` (ReLU names; unknown names are ignored), so
    /// that weights no loss reaches are not held for the whole run (conv5_2..conv5_4, 28 MB, for
    /// the default layers). Keeps everything if none of `needed` is found.
    pub fn truncate_after(&mut self, needed: &[String]) {
        let deepest = self.layers.iter().rposition(|l| matches!(l, Layer::Conv(c) if needed.contains(&c.name)));
        if let Some(i) = deepest {
            self.layers.truncate(i + 1);
        }
    }

    /// Builds the layer table from `(feature_index, weight (c_out,c_in,3,3), weight shape, bias)`
    /// entries sorted by index. Checks that shapes chain and that the index gaps are a conv's 2
    /// (conv, relu) or 3 (conv, relu, pool) slots.
    pub fn from_features(entries: Vec<(usize, Vec<usize>, Vec<f32>, Vec<f32>)>, source: String) -> anyhow::Result<Vgg> {
        use anyhow::{bail, ensure};
        ensure!(!entries.is_empty(), "no features.N.weight tensors found: not a VGG feature stack");
        let mut layers = Vec::new();
        let (mut block, mut k) = (1usize, 0usize);
        let mut prev: Option<(usize, usize)> = None; // (index, c_out)
        for (index, shape, weight, bias) in entries {
            ensure!(
                shape.len() == 4 && shape[2] == 3 && shape[3] == 3,
                "features.{index}.weight has shape {shape:?}; expected (c_out, c_in, 3, 3)"
            );
            let (c_out, c_in) = (shape[0], shape[1]);
            for (c, what) in [(c_out, "output"), (c_in, "input")] {
                ensure!((1..=MAX_CHANNELS).contains(&c), "features.{index}.weight has {c} {what} channels; expected 1 to {MAX_CHANNELS}");
            }
            ensure!(weight.len() == c_out * c_in * 9, "features.{index}.weight holds {} values, shape says {}", weight.len(), c_out * c_in * 9);
            ensure!(bias.len() == c_out, "features.{index}.bias has {} values; expected {c_out}", bias.len());
            match prev {
                None => {
                    ensure!(index == 0, "the first conv is features.{index}; expected features.0");
                    ensure!(c_in == 3, "features.0.weight takes {c_in} input channels; expected 3 (RGB)");
                }
                Some((pi, pc)) => {
                    ensure!(c_in == pc, "features.{index}.weight takes {c_in} channels but features.{pi} gives {pc}");
                    match index - pi {
                        2 => {}
                        3 => {
                            layers.push(Layer::Pool);
                            block += 1;
                            k = 0;
                        }
                        gap => bail!("features.{pi} and features.{index} are {gap} apart; VGG layout has 2 (conv, relu) or 3 (conv, relu, pool)"),
                    }
                }
            }
            k += 1;
            layers.push(Layer::Conv(ConvLayer { name: format!("relu{block}_{k}"), feature_index: index, c_in, c_out, weight, bias }));
            prev = Some((index, c_out));
        }
        Ok(Vgg { layers, source })
    }
}

#[cfg(test)]
mod truncate_tests {
    use super::*;

    #[test]
    fn truncate_after_keeps_up_to_the_deepest_needed_layer() {
        let names = |v: &Vgg| v.relu_names().iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut vgg = random::random_vgg19(0);
        let all = names(&vgg);
        vgg.truncate_after(&["relu2_1".into(), "relu1_1".into(), "no_such_layer".into()]);
        assert_eq!(names(&vgg), ["relu1_1", "relu1_2", "relu2_1"]);
        assert!(matches!(vgg.layers.last(), Some(Layer::Conv(_))));
        // Nothing known: nothing dropped.
        let mut full = random::random_vgg19(0);
        full.truncate_after(&["relu9_9".into()]);
        assert_eq!(names(&full), all);
    }
}
