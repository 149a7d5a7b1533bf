//! `--scales`, `--scale-factor`, `--scale-iterations`: the checks `plan` runs on them and the
//! branch of `run` that hands the plan to `neural_style::multiscale`.

use super::min_side;
use super::positive;
use super::stylize::Plan;
use anyhow::{ensure, Result};
use neural_style::image_io::{self, Rgb8};
use neural_style::model::Vgg;
use neural_style::multiscale::{self, check_increasing, geometric_sizes};
use neural_style::{Backend, Job, Observer, Output};

/// The multi-scale flags of `StyleArgs`.
pub struct Flags<'a> {
    pub scales: &'a Option<Vec<i64>>,
    pub scale_factor: Option<f64>,
    pub scale_iterations: &'a Option<Vec<i64>>,
}

/// `(size, iterations)` of each scale, or None for a single-scale run; with the image size and
/// iteration count the rest of the plan uses (the last scale's size and the total).
pub fn parse(a: Flags, image_size: usize, iterations: usize) -> Result<(Option<Vec<(usize, usize)>>, usize, usize)> {
    let Some(scales) = a.scales else {
        ensure!(a.scale_factor.is_none(), "--scale-factor needs --scales N (the number of scales)");
        ensure!(a.scale_iterations.is_none(), "--scale-iterations needs --scales");
        return Ok((None, image_size, iterations));
    };
    let sizes = match a.scale_factor {
        Some(f) => {
            ensure!(scales.len() == 1, "with --scale-factor, --scales is the number of scales (got a list of {})", scales.len());
            geometric_sizes(positive("scales", scales[0])?, f, image_size)?
        }
        None => {
            let sizes = scales.iter().map(|&s| super::image_side("scales", s)).collect::<Result<Vec<_>>>()?;
            check_increasing(&sizes)?;
            sizes
        }
    };
    let iters = match a.scale_iterations {
        None => vec![iterations; sizes.len()],
        Some(v) => {
            ensure!(v.len() == sizes.len(), "--scale-iterations has {} values for {} scales", v.len(), sizes.len());
            v.iter().map(|&n| super::iteration_count("scale-iterations", n)).collect::<Result<Vec<_>>>()?
        }
    };
    let last = *sizes.last().expect("at least one scale");
    let total = iters.iter().try_fold(0usize, |t, &n| t.checked_add(n)).filter(|&t| t <= super::MAX_ITERATIONS);
    let total = total.ok_or_else(|| anyhow::anyhow!("the scales' iterations add up to more than {} (--scale-iterations, or --num-iterations at each scale)", super::MAX_ITERATIONS))?;
    Ok((Some(sizes.into_iter().zip(iters).collect()), last, total))
}

/// The images must survive the layers' poolings at the smallest scale too (`plan` checks the
/// output size).
pub fn check_smallest(vgg: &Vgg, scales: &Option<Vec<(usize, usize)>>, content: &Rgb8, styles: &[(Rgb8, f32)], all_layers: &[String], style_layers: &[String]) -> Result<()> {
    let Some(&(size, _)) = scales.as_ref().and_then(|s| s.first()) else { return Ok(()) };
    let check = |what: String, img: &Rgb8, layers: &[String]| -> Result<()> {
        let (w, h) = image_io::fit_size(img.w, img.h, size);
        let (side, pools, deepest) = min_side(vgg, layers);
        ensure!(
            w >= side && h >= side,
            "{what} is {w}x{h} pixels at the smallest scale ({size}), too small for {deepest}: it needs at least {side} pixels per side ({pools} poolings); raise the smallest --scales size or use shallower layers"
        );
        Ok(())
    };
    check("the content image".into(), content, all_layers)?;
    for (k, (s, _)) in styles.iter().enumerate() {
        check(format!("style image {}", k + 1), s, style_layers)?;
    }
    Ok(())
}

/// Runs `job` over the plan's scales (the plan's content and styles resized to each).
pub fn run<B: Backend>(backend: &B, plan: &Plan, scales: &[(usize, usize)], job: &Job, observer: &mut Observer) -> Result<Output> {
    eprintln!("{}", describe(scales));
    let inputs = multiscale::scales_from(&plan.content, &plan.styles, plan.convention, scales);
    multiscale::stylize(backend, &plan.vgg, job, &inputs, observer)
}

/// `scales (longer side x iterations): 256 px x 500, 512 px x 200`, for the progress output.
pub fn describe(scales: &[(usize, usize)]) -> String {
    let list: Vec<String> = scales.iter().map(|(s, n)| format!("{s} px x {n}")).collect();
    format!("scales (longer side x iterations): {}", list.join(", "))
}
