//! Multi-scale stylisation: optimise at a small size first, then resize the result up and use it
//! as the starting image of the next, larger scale. Large outputs take fewer expensive
//! iterations and keep the style's structure at the scale the network sees it.
//!
//! Written once over [`Objective`] and [`optimize`], so it runs on every backend. Between scales
//! the image stays in floats: [`resize`] is a separable triangle-filter (bilinear) resize over
//! `ndarray` views, widened when shrinking so that it averages instead of skipping pixels.

use crate::backend::Backend;
use crate::image_io::{self, Rgb8};
use crate::model::Vgg;
use crate::objective::{Image, Objective};
use crate::preprocess::Convention;
use crate::stylize::{optimize, Init, Job, Observer, Output, Progress};
use anyhow::{ensure, Result};
use ndarray::{Array3, ArrayView3, Axis};

/// Resizes an `(h, w, c)` float image to `(out_h, out_w, c)` with a triangle filter (bilinear
/// when enlarging, an area-weighted average when shrinking), pixel centres aligned as in
/// PIL / torch's `align_corners=False`.
pub fn resize(img: ArrayView3<f32>, out_h: usize, out_w: usize) -> Array3<f32> {
    let rows = resize_axis(img, Axis(0), out_h);
    resize_axis(rows.view(), Axis(1), out_w)
}

/// Resizes a row-major `(h, w, 3)` float buffer to `(out_h, out_w, 3)`.
pub fn resize_flat(data: &[f32], (h, w): (usize, usize), (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let view = ArrayView3::from_shape((h, w, 3), data).expect("the buffer holds h*w*3 values");
    resize(view, out_h, out_w).into_raw_vec_and_offset().0
}

/// Resizes a preprocessed [`Image`] (any channel meaning: it works per channel).
pub fn resize_image(img: &Image, out_h: usize, out_w: usize) -> Image {
    Image { h: out_h, w: out_w, data: resize_flat(&img.data, (img.h, img.w), (out_h, out_w)) }
}

/// Weights of each input index for each output index along one axis of length `n_in` -> `n_out`.
fn triangle_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    let support = scale.max(1.0); // half-width of the triangle, in input pixels
    (0..n_out)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale - 0.5;
            let lo = (centre - support).floor().max(0.0) as usize;
            let hi = ((centre + support).ceil() as usize).min(n_in - 1);
            let mut taps: Vec<(usize, f32)> = (lo..=hi)
                .map(|i| (i, (1.0 - ((i as f64 - centre) / support).abs()).max(0.0)))
                .filter(|&(_, w)| w > 0.0)
                .map(|(i, w)| (i, w as f32))
                .collect();
            if taps.is_empty() {
                // Only at the border, where the centre lies outside the image: take the edge pixel.
                taps.push((centre.round().clamp(0.0, (n_in - 1) as f64) as usize, 1.0));
            }
            let sum: f32 = taps.iter().map(|t| t.1).sum();
            taps.iter_mut().for_each(|t| t.1 /= sum);
            taps
        })
        .collect()
}

fn resize_axis(img: ArrayView3<f32>, axis: Axis, n_out: usize) -> Array3<f32> {
    let n_in = img.len_of(axis);
    if n_in == n_out {
        return img.to_owned();
    }
    let mut shape = [img.shape()[0], img.shape()[1], img.shape()[2]];
    shape[axis.index()] = n_out;
    let mut out = Array3::<f32>::zeros(shape);
    for (o, taps) in triangle_weights(n_in, n_out).iter().enumerate() {
        let mut dst = out.index_axis_mut(axis, o);
        for &(i, w) in taps {
            dst.scaled_add(w, &img.index_axis(axis, i));
        }
    }
    out
}

/// Sizes (longer side) of `n` scales, each `factor` times the previous, the last being `last`.
pub fn geometric_sizes(n: usize, factor: f64, last: usize) -> Result<Vec<usize>> {
    ensure!(n >= 1, "--scales must name at least one scale");
    ensure!(factor.is_finite() && factor > 1.0, "--scale-factor must be a number above 1 (got {factor})");
    // Increasing sizes of at least 1 ending at `last`: at most `last` of them (checked before
    // the list is made: `--scales 1000000000000` would otherwise allocate terabytes).
    ensure!(n <= last, "--scales {n}: {n} increasing sizes cannot end at {last} pixels (at most {last} scales)");
    let sizes: Vec<usize> = (0..n).map(|k| (last as f64 / factor.powi((n - 1 - k) as i32)).round() as usize).collect();
    check_increasing(&sizes)?;
    Ok(sizes)
}

/// Scale sizes must be at least 1 and strictly increasing.
pub fn check_increasing(sizes: &[usize]) -> Result<()> {
    ensure!(!sizes.is_empty(), "--scales must name at least one scale");
    ensure!(sizes[0] >= 1, "--scales: scale sizes must be at least 1 pixel (got {:?}; with --scale-factor: fewer scales or a smaller factor)", sizes);
    ensure!(sizes.windows(2).all(|p| p[0] < p[1]), "--scales: scale sizes must increase from one scale to the next (got {:?})", sizes);
    Ok(())
}

/// The inputs of one scale, preprocessed.
#[derive(Clone, Debug)]
pub struct Scale {
    pub content: Image,
    pub styles: Vec<(Image, f32)>,
    pub iterations: usize,
}

/// Content and style images for each `(size, iterations)`: each image scaled so that its longer
/// side is the size, as the single-scale path does with `--image-size`, then preprocessed.
pub fn scales_from(content: &Rgb8, styles: &[(Rgb8, f32)], convention: Convention, sizes: &[(usize, usize)]) -> Vec<Scale> {
    let pre = |img: &Rgb8, size: usize| {
        let r = image_io::resize_max_side(img.clone(), size);
        Image { h: r.h, w: r.w, data: convention.preprocess(&r.data) }
    };
    sizes
        .iter()
        .map(|&(size, iterations)| Scale {
            content: pre(content, size),
            styles: styles.iter().map(|(s, b)| (pre(s, size), *b)).collect(),
            iterations,
        })
        .collect()
}

/// The starting image of a scale: the previous scale's result, resized (in floats) to `(h, w)`.
pub fn upscaled_init(prev: &Output, h: usize, w: usize) -> Init {
    Init::Image(resize_flat(&prev.image, (prev.h, prev.w), (h, w)))
}

/// One objective per scale, built once: a batch re-targets them with [`MultiScale::set_content`]
/// (the style Grams stay) and runs them again.
pub struct MultiScale<'b, B: Backend> {
    objectives: Vec<(Objective<'b, B>, usize)>,
}

impl<'b, B: Backend> MultiScale<'b, B> {
    pub fn new(backend: &'b B, vgg: &Vgg, spec: &crate::ObjectiveSpec, scales: &[Scale]) -> Result<Self> {
        ensure!(!scales.is_empty(), "no scales given");
        let objectives = scales
            .iter()
            .map(|s| Ok((Objective::new(backend, vgg, spec.clone(), &s.content, &s.styles)?, s.iterations)))
            .collect::<Result<_>>()?;
        Ok(MultiScale { objectives })
    }

    /// (height, width) of the last, output scale.
    pub fn output_size(&self) -> (usize, usize) {
        let (o, _) = self.objectives.last().expect("at least one scale");
        (o.height(), o.width())
    }

    /// Total iterations over all scales.
    pub fn iterations(&self) -> usize {
        self.objectives.iter().map(|o| o.1).sum()
    }

    /// Replaces the content targets of every scale (each image the size its scale was built for).
    pub fn set_content(&mut self, contents: &[Image]) -> Result<()> {
        ensure!(contents.len() == self.objectives.len(), "{} content images for {} scales", contents.len(), self.objectives.len());
        for ((o, _), c) in self.objectives.iter_mut().zip(contents) {
            o.set_content(c)?;
        }
        Ok(())
    }

    /// Runs every scale in turn. `job` gives the run settings: its init starts the first scale
    /// (an image is resized in floats to that scale's size), its snapshots apply to the last
    /// scale only (the one with the output's size). The observer sees iterations numbered
    /// across all scales (1 ..= [`MultiScale::iterations`]).
    pub fn run(&mut self, backend: &B, job: &Job, observer: &mut Observer) -> Result<Output> {
        let n = self.objectives.len();
        let (out_h, out_w) = self.output_size();
        let (mut done, mut evaluations, mut elapsed) = (0, 0, std::time::Duration::ZERO);
        let mut prev: Option<Output> = None;
        for (k, (objective, iterations)) in self.objectives.iter_mut().enumerate() {
            let (h, w) = (objective.height(), objective.width());
            let init = match (&prev, &job.init) {
                (Some(p), _) => upscaled_init(p, h, w),
                (None, Init::Image(data)) if (h, w) != (out_h, out_w) => {
                    ensure!(data.len() == out_h * out_w * 3, "the init image must have the output's size");
                    Init::Image(resize_flat(data, (out_h, out_w), (h, w)))
                }
                (None, init) => init.clone(),
            };
            let stage = Job { init, iterations: *iterations, snapshot_every: if k + 1 == n { job.snapshot_every } else { 0 }, snapshot_gate: if k + 1 == n { job.snapshot_gate.clone() } else { None }, ..job.clone() };
            let (offset, evals_before, time_before) = (done, evaluations, elapsed);
            let mut renumbered = |p: &Progress, snap: Option<&[f32]>| -> Result<()> {
                let p = Progress { iteration: p.iteration + offset, evaluations: p.evaluations + evals_before, loss: p.loss, elapsed: p.elapsed + time_before };
                observer(&p, snap)
            };
            let out = optimize(backend, objective, &stage, &mut renumbered)?;
            done += *iterations;
            evaluations += out.evaluations;
            elapsed += out.elapsed;
            prev = Some(out);
        }
        let last = prev.expect("at least one scale");
        Ok(Output { evaluations, elapsed, ..last })
    }
}

/// Multi-scale counterpart of [`crate::stylize`]: builds the objectives and runs them once.
pub fn stylize<B: Backend>(backend: &B, vgg: &Vgg, job: &Job, scales: &[Scale], observer: &mut Observer) -> Result<Output> {
    MultiScale::new(backend, vgg, &job.spec, scales)?.run(backend, job, observer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn ramp(h: usize, w: usize) -> Array3<f32> {
        Array3::from_shape_fn((h, w, 3), |(y, x, c)| y as f32 * 2.0 + x as f32 * 0.5 + c as f32 * 10.0)
    }

    #[test]
    fn resize_keeps_constants_and_linear_ramps_inside() {
        let c = Array3::from_elem((5, 7, 3), 3.25f32);
        for (h, w) in [(10, 14), (3, 4), (5, 7), (11, 2)] {
            let r = resize(c.view(), h, w);
            assert_eq!(r.shape(), &[h, w, 3]);
            assert!(r.iter().all(|v| (v - 3.25).abs() < 1e-5), "{h}x{w}");
        }
        // Doubling a linear ramp: interior output pixel centres map to (o + 0.5)/2 - 0.5.
        let r = resize(ramp(4, 4).view(), 8, 8);
        let y = (3.0 + 0.5) / 2.0 - 0.5;
        let x = (4.0 + 0.5) / 2.0 - 0.5;
        assert!((r[[3, 4, 1]] - (y * 2.0 + x * 0.5 + 10.0)).abs() < 1e-5, "{}", r[[3, 4, 1]]);
    }

    #[test]
    fn resize_is_float_not_quantised_and_halving_averages() {
        let img = Array3::from_shape_fn((2, 2, 3), |(y, x, _)| 0.001 * (y * 2 + x) as f32 - 2.1);
        let r = resize(img.view(), 1, 1);
        assert!((r[[0, 0, 0]] - (0.0015 - 2.1)).abs() < 1e-6, "{}", r[[0, 0, 0]]);
        // A checkerboard halved is its mean inside, not one of its pixels (as plain sampling gives).
        let chk = Array3::from_shape_fn((8, 8, 3), |(y, x, _)| ((y + x) % 2) as f32);
        let r = resize(chk.view(), 4, 4);
        assert!(r.slice(ndarray::s![1..3, 1..3, ..]).iter().all(|v| (v - 0.5).abs() < 1e-6), "{r:?}");
    }

    #[test]
    fn geometric_sizes_end_at_the_image_size() {
        assert_eq!(geometric_sizes(3, 2.0, 1024).unwrap(), vec![256, 512, 1024]);
        assert_eq!(geometric_sizes(1, 2.0, 300).unwrap(), vec![300]);
        assert_eq!(geometric_sizes(2, 1.5, 48).unwrap(), vec![32, 48]);
        assert!(geometric_sizes(3, 1.0, 64).is_err());
        assert!(geometric_sizes(12, 2.0, 64).is_err(), "sizes would round to 0");
        assert!(geometric_sizes(usize::MAX, 1.5, 64).unwrap_err().to_string().contains("at most 64 scales"), "checked before the list is made");
        assert!(check_increasing(&[64, 64]).is_err());
        assert!(check_increasing(&[128, 64]).is_err());
    }
}
