//! Loss curves (`--plot`): the total and each term against the iteration, log-scale y, drawn
//! with plotters' bitmap backend into an [`Rgb8`]; every piece of text is drawn afterwards with
//! [`crate::text`], so no font library or system font is needed.

use crate::image_io::{self, Rgb8};
use crate::objective::LossParts;
use crate::text::{draw_text, fill_rect, text_height, text_width};
use anyhow::{anyhow, Result};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use std::path::Path;

/// Size of the plot `--plot` writes.
pub const PLOT_SIZE: (usize, usize) = (800, 500);
const LEFT: u32 = 56;
const RIGHT: u32 = 16;
const TOP: u32 = 30;
const BOTTOM: u32 = 40;
const GRID: RGBColor = RGBColor(225, 225, 225);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const INK: [u8; 3] = [30, 30, 30];

/// The curves, in legend order: name, colour, and the term's value.
pub const SERIES: [(&str, [u8; 3], fn(&LossParts) -> f64); 4] = [
    ("total", [0, 0, 0], |l| l.total),
    ("content", [31, 100, 200], |l| l.content),
    ("style", [210, 40, 40], |l| l.style),
    ("tv", [40, 150, 60], |l| l.tv),
];

/// Decade range [10^lo, 10^hi] covering the positive finite values (lo < hi).
fn decades(losses: &[LossParts]) -> (i32, i32) {
    let vals = losses.iter().flat_map(|l| SERIES.map(|s| (s.2)(l))).filter(|v| v.is_finite() && *v > 0.0);
    let (mn, mx) = vals.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if mx == 0.0 {
        return (0, 1);
    }
    let lo = mn.log10().floor() as i32;
    let hi = (mx.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// A 1-2-5 step giving at most ~8 ticks over 1..=n.
fn x_step(n: usize) -> usize {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if n / (step * m) <= 8 {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Draws the curves of `losses` (one entry per iteration, the first being iteration 1).
/// Non-positive values (a term with weight 0) cannot sit on a log axis and are left out.
pub fn loss_plot(losses: &[LossParts], (w, h): (usize, usize)) -> Result<Rgb8> {
    let mut img = Rgb8 { w, h, data: vec![255; w * h * 3] };
    let n = losses.len().max(2);
    let (lo, hi) = decades(losses);
    let step = x_step(n);
    let mut labels: Vec<(i64, i64, String, bool)> = Vec::new(); // x, y, text, centred
    {
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the loss plot: {e}");
        let root = BitMapBackend::with_buffer(&mut img.data, (w as u32, h as u32)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin_left(LEFT)
            .margin_right(RIGHT)
            .margin_top(TOP)
            .margin_bottom(BOTTOM)
            .build_cartesian_2d(1.0..n as f64, (10f64.powi(lo)..10f64.powi(hi)).log_scale())
            .map_err(|e| err(&e))?;
        let (x0, x1) = (1.0, n as f64);
        let (y0, y1) = (10f64.powi(lo), 10f64.powi(hi));
        for k in lo..=hi {
            let y = 10f64.powi(k);
            chart.draw_series(LineSeries::new([(x0, y), (x1, y)], GRID)).map_err(|e| err(&e))?;
            let (px, py) = chart.backend_coord(&(x0, y));
            labels.push((px as i64 - 6 - text_width(&format!("1e{k}"), 1) as i64, py as i64 - 3, format!("1e{k}"), false));
        }
        for x in (step..=n).step_by(step).chain([1]) {
            let x = x as f64;
            chart.draw_series(LineSeries::new([(x, y0), (x, y1)], GRID)).map_err(|e| err(&e))?;
            let (px, py) = chart.backend_coord(&(x, y0));
            labels.push((px as i64, py as i64 + 6, format!("{}", x as usize), true));
        }
        for (_, rgb, value) in SERIES {
            let pts: Vec<(f64, f64)> =
                losses.iter().enumerate().map(|(i, l)| ((i + 1) as f64, value(l))).filter(|(_, v)| v.is_finite() && *v > 0.0).collect();
            let style = RGBColor(rgb[0], rgb[1], rgb[2]).stroke_width(2);
            chart.draw_series(LineSeries::new(pts, style)).map_err(|e| err(&e))?;
        }
        for (a, b) in [((x0, y0), (x1, y0)), ((x0, y0), (x0, y1)), ((x0, y1), (x1, y1)), ((x1, y0), (x1, y1))] {
            chart.draw_series(LineSeries::new([a, b], AXIS)).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    for (x, y, t, centred) in &labels {
        let x = if *centred { x - text_width(t, 1) as i64 / 2 } else { *x };
        draw_text(&mut img, x, *y, t, 1, INK);
    }
    let title = "loss (log scale)";
    draw_text(&mut img, ((w - text_width(title, 2)) / 2) as i64, 8, title, 2, INK);
    let xl = "iteration";
    draw_text(&mut img, ((w - text_width(xl, 1)) / 2) as i64, (h - BOTTOM as usize / 2) as i64, xl, 1, INK);
    // Legend, top right inside the plot: a colour swatch and the name (and "0" for absent terms).
    let mut y = TOP as i64 + 8;
    for (name, rgb, value) in SERIES {
        let shown = losses.iter().any(|l| value(l) > 0.0 && value(l).is_finite());
        let text = if shown { name.to_string() } else { format!("{name} (0)") };
        let x = w as i64 - RIGHT as i64 - 12 - text_width("content (0)", 1) as i64 - 18;
        fill_rect(&mut img, x, y + 2, 12, 3, rgb);
        draw_text(&mut img, x + 18, y, &text, 1, INK);
        y += text_height(1) as i64 + 6;
    }
    Ok(img)
}

/// Draws the plot at [`PLOT_SIZE`] and saves it (atomically) as PNG.
pub fn save_loss_plot(losses: &[LossParts], path: &Path) -> Result<()> {
    image_io::save(&loss_plot(losses, PLOT_SIZE)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn losses(n: usize, tv: f64) -> Vec<LossParts> {
        (1..=n)
            .map(|i| {
                let (content, style) = (10.0 / i as f64, 1e4 / (i * i) as f64);
                LossParts { total: content + style + tv, content, style, tv }
            })
            .collect()
    }

    fn count(img: &Rgb8, rgb: [u8; 3]) -> usize {
        img.data.chunks(3).filter(|p| *p == rgb).count()
    }

    #[test]
    fn draws_each_curve_in_its_colour() {
        let img = loss_plot(&losses(50, 0.5), PLOT_SIZE).unwrap();
        assert_eq!((img.w, img.h), PLOT_SIZE);
        for (name, rgb, _) in SERIES {
            // Well beyond the legend swatch (12x3 = 36 pixels): the curve itself is there.
            assert!(count(&img, rgb) > 200, "{name}: {} pixels", count(&img, rgb));
        }
        // Text (title, ticks) is drawn.
        assert!(count(&img, INK) > 300);
    }

    #[test]
    fn a_zero_term_has_no_curve_and_the_range_covers_the_data() {
        let img = loss_plot(&losses(20, 0.0), (400, 300)).unwrap();
        assert!(count(&img, SERIES[3].1) <= 36, "only the legend swatch");
        assert!(count(&img, SERIES[2].1) > 36);
        assert_eq!(decades(&losses(20, 0.0)), (-1, 5)); // 0.5 .. 10010
        assert_eq!(decades(&[LossParts { total: 1.0, content: 1.0, style: 0.0, tv: 0.0 }]), (0, 1));
        assert_eq!(x_step(1000), 200);
        assert_eq!(x_step(5), 1);
    }
}
