//! The two input conventions of VGG weights. Images inside the crate are `(h, w, 3)` f32,
//! preprocessed; 8-bit RGB goes in and comes out only at the edges (image_io).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub enum Convention {
    /// torchvision: RGB, x/255, minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225).
    #[default]
    Torchvision,
    /// Caffe (jcjohnson/neural-style's converted weights): BGR, 0..255, minus mean pixel (103.939, 116.779, 123.68).
    Caffe,
}

const TV_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TV_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Caffe's mean pixel, in BGR order.
const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

impl std::str::FromStr for Convention {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "torchvision" => Ok(Self::Torchvision),
            "caffe" => Ok(Self::Caffe),
            _ => anyhow::bail!("unknown preprocessing '{s}' (expected torchvision or caffe)"),
        }
    }
}

impl Convention {
    /// 8-bit RGB (h, w, 3) -> network input (h, w, 3).
    pub fn preprocess(&self, rgb: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; rgb.len()];
        for (o, px) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
            match self {
                Convention::Torchvision => {
                    for c in 0..3 {
                        o[c] = (px[c] as f32 / 255.0 - TV_MEAN[c]) / TV_STD[c];
                    }
                }
                Convention::Caffe => {
                    for c in 0..3 {
                        o[c] = px[2 - c] as f32 - CAFFE_MEAN_BGR[c];
                    }
                }
            }
        }
        out
    }

    /// Network input (h, w, 3) -> 8-bit RGB, clamped and rounded to nearest.
    pub fn deprocess(&self, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; x.len()];
        for (o, v) in out.chunks_exact_mut(3).zip(x.chunks_exact(3)) {
            for c in 0..3 {
                let unit = match self {
                    Convention::Torchvision => v[c] * TV_STD[c] + TV_MEAN[c],
                    Convention::Caffe => (v[2 - c] + CAFFE_MEAN_BGR[2 - c]) / 255.0,
                };
                o[c] = (unit.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_names_and_refuses_others() {
        assert_eq!("torchvision".parse::<Convention>().unwrap(), Convention::Torchvision);
        assert_eq!("caffe".parse::<Convention>().unwrap(), Convention::Caffe);
        for bad in ["", "Caffe", "torch", "bgr"] {
            let err = bad.parse::<Convention>().unwrap_err().to_string();
            assert!(err.contains("expected torchvision or caffe"), "{bad:?}: {err}");
        }
    }
}
