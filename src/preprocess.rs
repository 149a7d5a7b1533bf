//! The two input conventions of VGG weights. Images inside the crate are `(h, w, 3)` f32,
//! preprocessed; 8-bit RGB goes in and comes out only at the edges (image_io).

use crate::backend::PixelBox;
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

    /// The box of displayable pixels in this convention: per network channel, the preprocessed
    /// images of the pixel values 0 and 255, computed by `preprocess`'s own arithmetic so that every
    /// saved image maps inside it and its bounds deprocess to 0 and 255.
    pub fn pixel_box(&self) -> PixelBox {
        let black = self.preprocess(&[0, 0, 0]);
        let white = self.preprocess(&[255, 255, 255]);
        PixelBox { lo: [black[0], black[1], black[2]], hi: [white[0], white[1], white[2]] }
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
    fn the_pixel_box_is_the_image_of_black_and_white_and_deprocesses_to_them() {
        for conv in [Convention::Torchvision, Convention::Caffe] {
            let bx = conv.pixel_box();
            assert!((0..3).all(|c| bx.lo[c] < bx.hi[c]), "{conv:?}: {bx:?}");
            assert_eq!(conv.deprocess(&bx.lo), [0, 0, 0], "{conv:?}");
            assert_eq!(conv.deprocess(&bx.hi), [255, 255, 255], "{conv:?}");
            // Every 8-bit value lands inside it, and just outside it is outside.
            let all: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
            assert!(bx.contains(&conv.preprocess(&all)), "{conv:?}");
            let below = [bx.lo[0] - 1e-3, bx.lo[1], bx.lo[2]];
            assert!(!bx.contains(&below) && !bx.contains(&[f32::NAN, 0.0, 0.0]), "{conv:?}");
        }
        // Caffe: BGR minus the mean pixel.
        let bx = Convention::Caffe.pixel_box();
        assert_eq!(bx.lo, [-103.939, -116.779, -123.68]);
        assert_eq!(bx.hi, [255.0 - 103.939, 255.0 - 116.779, 255.0 - 123.68]);
    }

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
