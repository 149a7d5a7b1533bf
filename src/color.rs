//! Colour transfer: `--original-colors` keeps the content's colours and takes only the result's
//! luminance, in YUV as jcjohnson/neural-style does (torch `image.rgb2yuv` / `yuv2rgb`).

use crate::image_io::Rgb8;
use ndarray::{Array2, ArrayView2, Axis};

/// RGB -> YUV (BT.601 analogue, torch image's matrix), rows are Y, U, V.
const RGB_TO_YUV: [[f32; 3]; 3] = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]];
/// YUV -> RGB, rows are R, G, B.
const YUV_TO_RGB: [[f32; 3]; 3] = [[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]];

/// (pixels, 3) of an image, as floats.
fn pixels(img: &Rgb8) -> Array2<f32> {
    Array2::from_shape_vec((img.w * img.h, 3), img.data.iter().map(|&v| v as f32).collect()).expect("w*h*3 bytes")
}

/// Each row of `px` (pixels, 3) times the matrix `m`: (pixels, 3) in the other colour space.
fn convert(px: ArrayView2<f32>, m: &[[f32; 3]; 3]) -> Array2<f32> {
    let m = Array2::from_shape_fn((3, 3), |(i, j)| m[j][i]);
    px.dot(&m)
}

/// The luminance (Y) of `generated` with the chroma (U, V) of `content`, which must have the
/// same size; clamped and rounded to 8 bits.
pub fn original_colors(content: &Rgb8, generated: &Rgb8) -> Rgb8 {
    assert_eq!((content.w, content.h), (generated.w, generated.h), "original_colors: sizes differ");
    let mut yuv = convert(pixels(content).view(), &RGB_TO_YUV);
    let generated_yuv = convert(pixels(generated).view(), &RGB_TO_YUV);
    yuv.column_mut(0).assign(&generated_yuv.column(0));
    let rgb = convert(yuv.view(), &YUV_TO_RGB);
    let data = rgb.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect();
    Rgb8 { w: generated.w, h: generated.h, data }
}

/// Per-pixel (Y, U, V) of an 8-bit image, (pixels, 3).
pub fn yuv(img: &Rgb8) -> Array2<f32> {
    convert(pixels(img).view(), &RGB_TO_YUV)
}

/// Mean absolute difference per channel between two (pixels, 3) arrays.
pub fn mean_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> [f32; 3] {
    let d = (a - b).mapv(f32::abs).mean_axis(Axis(0)).expect("non-empty");
    [d[0], d[1], d[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> u8) -> Rgb8 {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data.push(f(x, y, c));
                }
            }
        }
        Rgb8 { w, h, data }
    }

    #[test]
    fn the_matrices_invert_each_other() {
        let px = Array2::from_shape_vec((2, 3), vec![10.0, 200.0, 30.0, 255.0, 0.0, 128.0]).unwrap();
        let back = convert(convert(px.view(), &RGB_TO_YUV).view(), &YUV_TO_RGB);
        for (a, b) in px.iter().zip(back.iter()) {
            approx::assert_abs_diff_eq!(a, b, epsilon = 0.01);
        }
    }

    #[test]
    fn keeps_the_content_chroma_and_the_result_luminance() {
        // Mid-range colours, so that clamping does not interfere.
        let content = image(16, 12, |x, y, c| (60 + (x * 7 + y * 3 + c * 40) % 120) as u8);
        let generated = image(16, 12, |x, y, c| (70 + (x * 5 + y * 11 + c * 13) % 110) as u8);
        let out = original_colors(&content, &generated);
        let (yo, yc, yg) = (yuv(&out), yuv(&content), yuv(&generated));
        let vs_content = mean_abs_diff(&yo, &yc);
        let vs_generated = mean_abs_diff(&yo, &yg);
        // Chroma from the content, luminance from the result, up to 8-bit rounding.
        assert!(vs_content[1] < 0.6 && vs_content[2] < 0.6, "chroma {vs_content:?}");
        assert!(vs_generated[0] < 0.6, "luminance {vs_generated:?}");
        // And it changed something: the result's own chroma differs from the content's.
        let before = mean_abs_diff(&yg, &yc);
        assert!(before[1] > 3.0 || before[2] > 3.0, "test images too alike: {before:?}");
    }
}
