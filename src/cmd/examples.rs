//! `neural-style make-examples`: draw the README's procedural inputs, and its figure.

use crate::cli::MakeExamplesArgs;
use anyhow::{ensure, Context, Result};
use neural_style::image_io::{self, Rgb8};
use std::fs;
use std::path::Path;

pub fn make_examples(a: MakeExamplesArgs) -> Result<()> {
    ensure!(a.width >= 16, "--width must be at least 16");
    fs::create_dir_all(&a.out_dir).with_context(|| format!("{}: cannot create", a.out_dir.display()))?;
    if let Some(result) = &a.figure {
        let out = a.figure_output.clone().unwrap_or_else(|| a.out_dir.join("figure.png"));
        let inputs = [("--figure", result.clone()), ("content", a.out_dir.join("content.png")), ("style", a.out_dir.join("style.png"))];
        super::check_outputs(&[("--figure-output", out.clone())], &inputs)?;
        return make_figure(&a.out_dir, result, &out);
    }
    let content = neural_style::procedural::landscape(a.width, a.width * 2 / 3);
    let style = neural_style::procedural::swirls(a.width, a.width);
    for (img, name) in [(&content, "content.png"), (&style, "style.png")] {
        let p = a.out_dir.join(name);
        image_io::save(img, &p)?;
        eprintln!("wrote {} ({}x{})", p.display(), img.w, img.h);
    }
    Ok(())
}

/// The longest side of a figure panel, in pixels.
const MAX_FIGURE_SIDE: usize = 2048;

/// content | style | result at the result's height, 4 white pixels apart, written to `out`.
/// The figure is at most `MAX_FIGURE_SIDE` high, and each panel at most that wide: the panels
/// are scaled to the result's height, so a result of 1x10000 would otherwise make a 2.4 GB
/// figure out of a 125-byte PNG.
fn make_figure(dir: &Path, result: &Path, out: &Path) -> Result<()> {
    let bounded = |(w, h): (usize, usize)| image_io::fit_size(w, h, MAX_FIGURE_SIDE.min(w.max(h)));
    let (result, source) = image_io::load_for(result, bounded)?;
    let result = image_io::resize_exact(result, bounded(source));
    let h = result.h;
    let scale_to_h = |img: Rgb8| {
        let w = ((img.w as f64 * h as f64 / img.h as f64).round() as usize).clamp(1, MAX_FIGURE_SIDE);
        image_io::resize_exact(img, (w, h))
    };
    let load = |name: &str| image_io::load_for(&dir.join(name), bounded).map(|(img, _)| img);
    let panels = [scale_to_h(load("content.png")?), scale_to_h(load("style.png")?), result];
    let gap = 4;
    let w: usize = panels.iter().map(|p| p.w).sum::<usize>() + gap * (panels.len() - 1);
    let mut data = vec![255u8; w * h * 3];
    let mut x0 = 0;
    for p in &panels {
        for y in 0..h {
            data[(y * w + x0) * 3..(y * w + x0 + p.w) * 3].copy_from_slice(&p.data[y * p.w * 3..(y + 1) * p.w * 3]);
        }
        x0 += p.w + gap;
    }
    image_io::save(&Rgb8 { w, h, data }, out)?;
    eprintln!("wrote {} ({w}x{h})", out.display());
    Ok(())
}
