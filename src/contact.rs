//! Contact sheets: a grid of equally sized cells, each an image with a label under it, with
//! optional column headers above and row headers to the left, labelled with [`crate::text`].
//! The `sheet` and `grid` commands (the paper's Figures 2 and 3) compose their results with it.

use crate::image_io::{self, Rgb8};
use crate::text::{draw_text, fit_text, text_height, text_width};
use ndarray::{s, Array3, ArrayView3};

/// Outer margin and the space between cells, in pixels.
pub const MARGIN: usize = 8;
pub const GAP: usize = 6;
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
pub const INK: [u8; 3] = [30, 30, 30];

/// One cell: an image (fitted into the cell, centred) and the label under it.
#[derive(Clone, Debug)]
pub struct Cell {
    pub image: Rgb8,
    pub label: String,
}

/// Where everything goes on a sheet of `rows` x `cols` cells of `cell_w` x `cell_h` pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub cell_w: usize,
    pub cell_h: usize,
    /// Text scale (font pixels are scale x scale).
    pub scale: usize,
    /// Width of the row-header column (0: none), height of the column-header band (0: none).
    pub left: usize,
    pub top: usize,
    /// Height of the label band under each cell.
    pub label_h: usize,
}

impl Layout {
    /// Text at scale 2 once cells are wide enough for it, else 1.
    pub fn new(rows: usize, cols: usize, (cell_w, cell_h): (usize, usize), row_headers: &[String], col_headers: &[String]) -> Layout {
        let scale = if cell_w >= 256 { 2 } else { 1 };
        let band = text_height(scale) + 2 * GAP;
        let widest = row_headers.iter().map(|t| text_width(t, scale)).max().unwrap_or(0);
        let left = if widest > 0 { widest + GAP } else { 0 };
        let top = if col_headers.iter().any(|t| !t.is_empty()) { band } else { 0 };
        Layout { rows, cols, cell_w, cell_h, scale, left, top, label_h: band }
    }

    /// Size of the whole sheet, (w, h).
    pub fn size(&self) -> (usize, usize) {
        let w = 2 * MARGIN + self.left + self.cols * self.cell_w + self.cols.saturating_sub(1) * GAP;
        let h = 2 * MARGIN + self.top + self.rows * (self.cell_h + self.label_h);
        (w, h)
    }

    /// Top-left pixel of cell (row, col)'s image area; its label band lies right under it.
    pub fn cell_origin(&self, row: usize, col: usize) -> (usize, usize) {
        (MARGIN + self.left + col * (self.cell_w + GAP), MARGIN + self.top + row * (self.cell_h + self.label_h))
    }
}

/// A sheet to compose: `cells` row-major (`rows * cols`, `None` for an empty cell); header
/// lists are empty or one entry per column / row.
#[derive(Clone, Debug)]
pub struct Sheet {
    pub rows: usize,
    pub cols: usize,
    pub cell_size: (usize, usize),
    pub col_headers: Vec<String>,
    pub row_headers: Vec<String>,
    pub cells: Vec<Option<Cell>>,
}

impl Sheet {
    pub fn layout(&self) -> Layout {
        Layout::new(self.rows, self.cols, self.cell_size, &self.row_headers, &self.col_headers)
    }

    /// Draws the sheet: images pasted into an ndarray canvas, then the text on top.
    pub fn compose(&self) -> Rgb8 {
        assert_eq!(self.cells.len(), self.rows * self.cols, "one entry per cell");
        let l = self.layout();
        let (w, h) = l.size();
        let mut canvas = Array3::<u8>::zeros((h, w, 3));
        for (c, v) in BACKGROUND.iter().enumerate() {
            canvas.slice_mut(s![.., .., c]).fill(*v);
        }
        for (k, cell) in self.cells.iter().enumerate() {
            let Some(cell) = cell else { continue };
            let img = fit_into(&cell.image, (l.cell_w, l.cell_h));
            let (x0, y0) = l.cell_origin(k / self.cols, k % self.cols);
            let (x, y) = (x0 + (l.cell_w - img.w) / 2, y0 + (l.cell_h - img.h) / 2);
            let view = ArrayView3::from_shape((img.h, img.w, 3), &img.data).expect("an Rgb8 is (h, w, 3)");
            canvas.slice_mut(s![y..y + img.h, x..x + img.w, ..]).assign(&view);
        }
        let (data, _) = canvas.into_raw_vec_and_offset();
        let mut out = Rgb8 { w, h, data };
        let th = text_height(l.scale) as i64;
        for (k, cell) in self.cells.iter().enumerate() {
            let Some(cell) = cell else { continue };
            let (x0, y0) = l.cell_origin(k / self.cols, k % self.cols);
            let text = fit_label(&cell.label, l.scale, l.cell_w);
            let x = x0 + (l.cell_w - text_width(&text, l.scale)) / 2;
            draw_text(&mut out, x as i64, (y0 + l.cell_h + GAP) as i64, &text, l.scale, INK);
        }
        for (col, t) in self.col_headers.iter().enumerate() {
            let (x0, _) = l.cell_origin(0, col);
            let text = fit_text(t, l.scale, l.cell_w);
            let x = x0 + (l.cell_w - text_width(&text, l.scale)) / 2;
            draw_text(&mut out, x as i64, (MARGIN + GAP) as i64, &text, l.scale, INK);
        }
        for (row, t) in self.row_headers.iter().enumerate() {
            let (_, y0) = l.cell_origin(row, 0);
            draw_text(&mut out, MARGIN as i64, y0 as i64 + (l.cell_h as i64 - th) / 2, t, l.scale, INK);
        }
        out
    }
}

/// `img` scaled to fit inside `(w, h)` keeping its aspect ratio (unchanged when it already fits
/// exactly one side and the other within).
pub fn fit_into(img: &Rgb8, (w, h): (usize, usize)) -> Rgb8 {
    let by_w = (w, ((img.h as f64 * w as f64 / img.w as f64).round() as usize).clamp(1, h));
    let by_h = (((img.w as f64 * h as f64 / img.h as f64).round() as usize).clamp(1, w), h);
    let size = if img.w * h >= img.h * w { by_w } else { by_h };
    image_io::resize_exact(img.clone(), size)
}

/// A cell's label in `max_w` pixels: whole where it fits, else its last word alone (the value:
/// a loss such as `1.23e5`, a file name), cut with dots only where even that does not fit, so
/// that a small cell shows `1.23e5` rather than `loss 1.2..`, which loses the exponent.
pub fn fit_label(label: &str, scale: usize, max_w: usize) -> String {
    if text_width(label, scale) <= max_w {
        return label.to_string();
    }
    match label.rsplit_once(' ') {
        Some((_, last)) if !last.is_empty() => fit_text(last, scale, max_w),
        _ => fit_text(label, scale, max_w),
    }
}

/// The paper's alpha/beta labels: 1e-4 rather than 0.0001.
pub fn ratio_label(ratio: f64) -> String {
    format!("a/b = {ratio:e}")
}

/// "relu1_1" for one layer, "relu1_1..relu3_1" for several (the first and the last).
pub fn layers_label(layers: &[String]) -> String {
    match layers {
        [] => "none".into(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}..{last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, rgb: [u8; 3]) -> Rgb8 {
        Rgb8 { w, h, data: rgb.repeat(w * h) }
    }

    fn px(img: &Rgb8, x: usize, y: usize) -> [u8; 3] {
        let i = (y * img.w + x) * 3;
        [img.data[i], img.data[i + 1], img.data[i + 2]]
    }

    fn inked(img: &Rgb8, x0: usize, y0: usize, w: usize, h: usize) -> usize {
        (y0..y0 + h).flat_map(|y| (x0..x0 + w).map(move |x| (x, y))).filter(|&(x, y)| px(img, x, y) == INK).count()
    }

    #[test]
    fn small_cells_keep_the_labels_value() {
        let w = |t: &str| text_width(t, 1);
        assert_eq!(fit_label("loss 1.23e5", 1, 200), "loss 1.23e5");
        assert_eq!(fit_label("loss 1.23e5", 1, w("1.23e5")), "1.23e5", "the exponent survives");
        assert_eq!(fit_label("content: photo.png", 1, w("photo.png") + 1), "photo.png");
        assert_eq!(fit_label("content: a_long_name.png", 1, w("a_long..")), "a_long..");
        assert_eq!(fit_label("nospace", 1, w("nos..")), "nos..");
    }

    #[test]
    fn cells_land_where_the_layout_says_with_labels_and_headers() {
        let colors = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]];
        let sheet = Sheet {
            rows: 2,
            cols: 2,
            cell_size: (30, 20),
            col_headers: vec!["a/b = 1e-4".into(), "a/b = 1e-3".into()],
            row_headers: vec!["relu1_1".into(), "relu1_1..relu2_1".into()],
            cells: colors.iter().map(|&c| Some(Cell { image: solid(30, 20, c), label: "x".into() })).collect(),
        };
        let l = sheet.layout();
        let img = sheet.compose();
        assert_eq!((img.w, img.h), l.size());
        assert_eq!(l.left, text_width("relu1_1..relu2_1", 1) + GAP);
        assert_eq!(l.size(), (2 * MARGIN + l.left + 2 * 30 + GAP, 2 * MARGIN + l.top + 2 * (20 + l.label_h)));
        for (k, c) in colors.iter().enumerate() {
            let (x, y) = l.cell_origin(k / 2, k % 2);
            assert_eq!(px(&img, x, y), *c);
            assert_eq!(px(&img, x + 29, y + 19), *c);
            assert_eq!(px(&img, x + 30, y), BACKGROUND, "right of cell {k}");
            assert!(inked(&img, x, y + 20, 30, l.label_h) > 0, "label of cell {k}");
        }
        assert!(inked(&img, l.cell_origin(0, 0).0, MARGIN, 30, l.top) > 0, "column header");
        assert!(inked(&img, MARGIN, l.cell_origin(1, 0).1, l.left, 20) > 0, "row header");
    }

    #[test]
    fn images_are_fitted_and_centred_and_empty_cells_stay_blank() {
        let sheet = Sheet {
            rows: 1,
            cols: 2,
            cell_size: (40, 20),
            col_headers: vec![],
            row_headers: vec![],
            cells: vec![Some(Cell { image: solid(10, 10, [9, 9, 9]), label: String::new() }), None],
        };
        let l = sheet.layout();
        assert_eq!((l.left, l.top), (0, 0));
        let img = sheet.compose();
        let (x, y) = l.cell_origin(0, 0);
        // 10x10 scaled to 20x20, centred: columns 10..30 of the cell.
        assert_eq!(px(&img, x + 9, y + 10), BACKGROUND);
        assert_eq!(px(&img, x + 10, y + 10), [9, 9, 9]);
        assert_eq!(px(&img, x + 29, y + 10), [9, 9, 9]);
        assert_eq!(px(&img, x + 30, y + 10), BACKGROUND);
        let (x1, y1) = l.cell_origin(0, 1);
        assert_eq!(inked(&img, x1, y1, 40, 20 + l.label_h), 0);
        assert!(img.data[(y1 * img.w + x1) * 3..][..3] == BACKGROUND);
    }

    #[test]
    fn fitting_keeps_the_aspect_ratio() {
        let f = fit_into(&solid(100, 50, [1, 2, 3]), (40, 40));
        assert_eq!((f.w, f.h), (40, 20));
        let f = fit_into(&solid(30, 90, [1, 2, 3]), (40, 40));
        assert_eq!((f.w, f.h), (13, 40));
    }

    #[test]
    fn labels() {
        assert_eq!(ratio_label(1e-4), "a/b = 1e-4");
        assert_eq!(ratio_label(0.5), "a/b = 5e-1");
        let l: Vec<String> = ["relu1_1", "relu2_1", "relu3_1"].map(String::from).to_vec();
        assert_eq!(layers_label(&l[..1]), "relu1_1");
        assert_eq!(layers_label(&l), "relu1_1..relu3_1");
    }
}
