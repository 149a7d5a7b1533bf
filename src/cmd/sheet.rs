//! `neural-style sheet` and `neural-style grid`: the paper's two experiments (Figures 2 and 3),
//! each written as one labelled contact sheet. The options are the main command's, checked by
//! the same `plan`; the model is loaded once, the content features and each style's Grams are
//! computed once on one `Objective`, and every cell is an `optimize` run on it.

use super::serve::Serve;
use super::stylize::{self, Plan};
use super::{progress_bar, Device};
use crate::cli::{GridArgs, PresetArg, SheetArgs, StyleArgs};
use anyhow::{ensure, Result};
use indicatif::ProgressBar;
use neural_style::contact::{layers_label, ratio_label, Cell, Sheet};
use neural_style::image_io::{self, Rgb8};
use neural_style::{cuda, optimize, Backend, CpuBackend, Job, LossParts, Objective, Progress};
use std::path::Path;
use std::time::SystemTime;

/// Options of the main command that a sheet cannot honour: refused rather than ignored.
fn refuse(cmd: &str, a: &StyleArgs, also: &[(&str, bool)]) -> Result<()> {
    let common = [
        ("--plot", a.plot.is_some()),
        ("--log-json", a.log_json.is_some()),
        ("--resume (an interrupted sheet or grid starts again)", a.resume.is_some()),
    ];
    for (flag, given) in common.iter().chain(also) {
        ensure!(!given, "{flag} is not supported by `neural-style {cmd}`");
    }
    Ok(())
}

/// The file names of the style images, for labels.
fn file_names(a: &StyleArgs) -> Vec<String> {
    a.style_image.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect()
}

/// Checks shared by both commands, then the main command's `plan`.
fn plan(cmd: &str, a: StyleArgs, also: &[(&str, bool)]) -> Result<Plan> {
    refuse(cmd, &a, also)?;
    let plan = stylize::plan(a)?;
    stylize::note_model(&plan);
    Ok(plan)
}

/// Progress over every cell: one bar of cells x iterations on a terminal, else plain lines
/// every --print-iter iterations, naming the cell.
/// With --serve, each cell's progress and frames go to the page, then the sheet so far.
struct Cells<'p> {
    plan: &'p Plan,
    count: usize,
    bar: Option<ProgressBar>,
    server: Option<&'p Serve>,
}

impl<'p> Cells<'p> {
    fn new(plan: &'p Plan, count: usize, server: Option<&'p Serve>) -> Cells<'p> {
        Cells { plan, count, bar: progress_bar(count * plan.iterations), server }
    }

    /// The job of every cell: frames for the page, no snapshot files (a sheet writes none).
    fn job(&self) -> Job {
        let snapshot_every = self.server.map_or(0, |s| s.snapshot_every(0));
        Job { snapshot_every, snapshot_gate: self.server.and_then(Serve::snapshot_gate), ..stylize::job(self.plan) }
    }

    /// The page's contact sheet, with `filled` cells done.
    fn show(&self, sheet: &Sheet, filled: usize) {
        if let Some(server) = self.server {
            server.show_sheet(sheet.compose(), filled, self.count);
        }
    }

    /// Runs cell `index` on the objective as it is now set up: its image in 8 bits, and the
    /// objective at that image (the loss of the pixels shown, not of the optimiser's floats).
    fn run<B: Backend>(&self, backend: &B, objective: &mut Objective<B>, job: &Job, index: usize, what: &str) -> Result<(Rgb8, LossParts)> {
        let (iters, print_iter) = (self.plan.iterations, self.plan.print_iter);
        if let Some(server) = self.server {
            server.begin_run(index, &format!("cell {}/{}: {what}", index + 1, self.count));
        }
        let mut observer = |p: &Progress, snapshot: Option<&[f32]>| -> Result<()> {
            let l = p.loss;
            let text = format!("loss {l}");
            match &self.bar {
                Some(bar) => {
                    bar.set_position((index * iters + p.iteration) as u64);
                    bar.set_message(format!("cell {}/{} [{what}] {text}", index + 1, self.count));
                }
                None if print_iter > 0 && (p.iteration % print_iter == 0 || p.iteration == iters) => {
                    eprintln!("cell {}/{} [{what}] iteration {} / {iters}: {text}", index + 1, self.count, p.iteration);
                }
                None => {}
            }
            if let Some(server) = self.server {
                server.progress(p, snapshot);
            }
            // SIGINT / SIGTERM: stop at once (the sheet is not resumable).
            neural_style::interrupt::check()?;
            Ok(())
        };
        let out = optimize(backend, objective, job, &mut observer)?;
        if let Some(bar) = &self.bar {
            bar.set_position(((index + 1) * iters) as u64);
        }
        let img = Rgb8 { w: out.w, h: out.h, data: self.plan.convention.deprocess(&out.image) };
        let loss = neural_style::stylize::loss_of_saved(backend, objective, self.plan.convention, &img.data)?;
        Ok((img, loss))
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn save(sheet: &Sheet, out: &Path, what: &str) -> Result<()> {
    let img = sheet.compose();
    image_io::save(&img, out)?;
    eprintln!("wrote {} ({}x{}, {what})", out.display(), img.w, img.h);
    Ok(())
}

// ---- sheet ----------------------------------------------------------------------------------

pub fn sheet(mut a: SheetArgs, matches: &clap::ArgMatches, argv: &[std::ffi::OsString]) -> Result<()> {
    a.style = super::settings::resolve_in(a.style, matches, argv, Some("sheet"))?;
    let per_row = super::positive("pairs-per-row", a.pairs_per_row)?;
    let names = file_names(&a.style);
    let content_name = a.style.content_image.as_deref().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let blend = a.style.style_blend_weights.is_some();
    let plan = plan("sheet", a.style, &[("--style-blend-weights (each style gets its own pair)", blend)])?;
    let server = stylize::start_server(&plan, &a.serve, "sheet", plan.styles.len(), plan.output.display().to_string())?;
    let what = format!("content + {} style | result pairs", plan.styles.len());
    served(server.as_ref(), &plan.output, &what, || {
        let sheet = match plan.device {
            Device::Cpu(p) => run_sheet(&CpuBackend::with_precision(p), &plan, &content_name, &names, per_row, server.as_ref()),
            Device::Cuda(p) => run_sheet(&cuda::CudaBackend::new(0, p)?, &plan, &content_name, &names, per_row, server.as_ref()),
        }?;
        save(&sheet, &plan.output, &what)
    })
}

/// Runs `work` (which writes `output`), then tells --serve's pages how it ended.
fn served(server: Option<&Serve>, output: &Path, what: &str, work: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = SystemTime::now();
    let result = work();
    if let Some(server) = server {
        stylize::finish_server(server, &result, Some(output), started, format!("wrote {} ({what})", output.display()));
    }
    result
}

/// Where the sheet puts things: (rows, cols) and the (row, col) of style pair k's style cell.
pub fn sheet_shape(styles: usize, per_row: usize) -> ((usize, usize), impl Fn(usize) -> (usize, usize)) {
    let per_row = per_row.min(styles).max(1);
    let rows = styles.div_ceil(per_row);
    ((rows, 1 + 2 * per_row), move |k| (k / per_row, 1 + 2 * (k % per_row)))
}

/// Every cell of the sheet, on one objective: the content features once, each style's Grams once.
fn run_sheet<B: Backend>(backend: &B, plan: &Plan, content_name: &str, names: &[String], per_row: usize, server: Option<&Serve>) -> Result<Sheet> {
    let progress = Cells::new(plan, plan.styles.len(), server);
    let job = progress.job();
    let k = job.styles.len();
    eprintln!(
        "sheet: {} style(s) on {}x{} with {} on {}, {} iterations each; content features and each style's Grams computed once",
        k,
        plan.content.w,
        plan.content.h,
        stylize::model_label(plan),
        backend.name(),
        plan.iterations
    );
    let ((rows, cols), place) = sheet_shape(k, per_row);
    let mut sheet = Sheet { rows, cols, cell_size: (plan.content.w, plan.content.h), col_headers: vec![], row_headers: vec![], cells: vec![None; rows * cols] };
    sheet.cells[0] = Some(Cell { image: plan.content.clone(), label: format!("content: {content_name}") });
    for (i, (rgb, _)) in plan.styles.iter().enumerate() {
        let (r, c) = place(i);
        sheet.cells[r * cols + c] = Some(Cell { image: rgb.clone(), label: format!("style: {}", names[i]) });
    }
    progress.show(&sheet, 0);
    let first = [(job.styles[0].0.clone(), 1.0)];
    let mut objective = Objective::new(backend, &plan.vgg, plan.spec.clone(), &job.content, &first)?;
    for (i, (style, _)) in job.styles.iter().enumerate() {
        if i > 0 {
            objective.set_styles(&[(style.clone(), 1.0)])?;
        }
        let (img, loss) = progress.run(backend, &mut objective, &job, i, &names[i])?;
        let (r, c) = place(i);
        sheet.cells[r * cols + c + 1] = Some(Cell { image: img, label: format!("result, loss {:.2e}", loss.total) });
        progress.show(&sheet, i + 1);
    }
    progress.finish();
    Ok(sheet)
}

// ---- grid -----------------------------------------------------------------------------------

pub fn grid(mut a: GridArgs, matches: &clap::ArgMatches, argv: &[std::ffi::OsString]) -> Result<()> {
    // The paper's objective unless another preset is named: its ratios (the default --ratios,
    // 1e-5 .. 1e-2) are α/β in that normalisation, and mean little in jcjohnson's.
    if a.style.preset.is_none() {
        a.style.preset = Some(PresetArg::Gatys2015);
    }
    // Only a --style-weight given here is refused: a preset's or a PNG's is replaced per column.
    let style_weight = matches.value_source("style_weight") == Some(clap::parser::ValueSource::CommandLine);
    a.style = super::settings::resolve_in(a.style, matches, argv, Some("grid"))?;
    a.style.style_weight = None;
    ensure!(!a.ratios.is_empty(), "--ratios needs at least one value");
    for &r in &a.ratios {
        ensure!(r.is_finite() && r > 0.0, "--ratios must be positive numbers (got {r})");
    }
    let plan = plan("grid", a.style, &[("--style-weight (each column sets it from --content-weight and --ratios)", style_weight)])?;
    ensure!(plan.spec.content_weight > 0.0, "--content-weight must be above 0 for a grid (the ratios divide it)");
    let alpha = plan.spec.content_weight as f64;
    for &r in &a.ratios {
        // The column's style weight is an f32: it must neither overflow nor round to 0.
        let beta = alpha / r;
        ensure!(
            beta <= f32::MAX as f64 && (beta as f32) > 0.0,
            "--ratios: {r:e} gives a style weight of {beta:.3e} (--content-weight {alpha} / {r:e}), {}: use ratios from {:.1e} to {:.1e}",
            if beta > 1.0 { "more than an f32 holds" } else { "which rounds to 0 in f32" },
            alpha / f32::MAX as f64,
            alpha / f32::MIN_POSITIVE as f64
        );
    }
    ensure!(!plan.spec.style_layers.is_empty(), "--style-layers is empty: the grid's rows are its prefixes");
    let (rows, cols) = (grid_rows(&plan.spec.style_layers).len(), a.ratios.len());
    let server = stylize::start_server(&plan, &a.serve, "grid", rows * cols, plan.output.display().to_string())?;
    let what = format!("{rows} x {cols} cells");
    served(server.as_ref(), &plan.output, &what, || {
        let sheet = match plan.device {
            Device::Cpu(p) => run_grid(&CpuBackend::with_precision(p), &plan, &a.ratios, server.as_ref()),
            Device::Cuda(p) => run_grid(&cuda::CudaBackend::new(0, p)?, &plan, &a.ratios, server.as_ref()),
        }?;
        save(&sheet, &plan.output, &what)
    })
}

/// The grid's rows: relu1_1, relu1_1..relu2_1, ... (the prefixes of the style layers).
pub fn grid_rows(style_layers: &[String]) -> Vec<Vec<String>> {
    (1..=style_layers.len()).map(|n| style_layers[..n].to_vec()).collect()
}

/// Every cell of the grid, on one objective built with all the style layers: the content and
/// style features once; each cell narrows the style layers and re-weights.
fn run_grid<B: Backend>(backend: &B, plan: &Plan, ratios: &[f64], server: Option<&Serve>) -> Result<Sheet> {
    let rows = grid_rows(&plan.spec.style_layers);
    let progress = Cells::new(plan, rows.len() * ratios.len(), server);
    let job = progress.job();
    let (alpha, tv) = (plan.spec.content_weight, plan.spec.tv_weight);
    eprintln!(
        "grid: {} style-layer rows x {} ratios on {}x{} with {} on {}, {} iterations each; content and style features computed once",
        rows.len(),
        ratios.len(),
        plan.content.w,
        plan.content.h,
        stylize::model_label(plan),
        backend.name(),
        plan.iterations
    );
    // Built once with every style layer; each cell narrows it and re-weights it.
    let mut objective = Objective::new(backend, &plan.vgg, plan.spec.clone(), &job.content, &job.styles)?;
    let mut sheet = Sheet {
        rows: rows.len(),
        cols: ratios.len(),
        cell_size: (plan.content.w, plan.content.h),
        col_headers: ratios.iter().map(|&r| ratio_label(r)).collect(),
        row_headers: rows.iter().map(|l| layers_label(l)).collect(),
        cells: vec![None; rows.len() * ratios.len()],
    };
    progress.show(&sheet, 0);
    for (r, layers) in rows.iter().enumerate() {
        objective.set_style_layers(layers)?;
        for (c, &ratio) in ratios.iter().enumerate() {
            objective.set_weights(alpha, (alpha as f64 / ratio) as f32, tv);
            let what = format!("{}, {}", layers_label(layers), ratio_label(ratio));
            let index = r * ratios.len() + c;
            let (img, loss) = progress.run(backend, &mut objective, &job, index, &what)?;
            sheet.cells[index] = Some(Cell { image: img, label: format!("loss {:.2e}", loss.total) });
            progress.show(&sheet, index + 1);
        }
    }
    progress.finish();
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use neural_style::backend::{AdamStep, PixelBox, ConvShape, PoolKind, PoolShape};
    use std::cell::Cell as Counter;

    /// The CPU backend, counting the buffers uploaded: the network's weights and each image
    /// whose features are computed (content, styles) once per objective, plus one starting
    /// image per optimisation.
    struct Counting(CpuBackend, Counter<usize>);

    type Buf = Vec<f32>;
    #[rustfmt::skip]
    impl Backend for Counting {
        type Buf = Buf;
        fn name(&self) -> String { self.0.name() }
        fn zeros(&self, len: usize) -> Result<Buf> { self.0.zeros(len) }
        fn upload(&self, host: &[f32]) -> Result<Buf> { self.1.set(self.1.get() + 1); self.0.upload(host) }
        fn download(&self, buf: &Buf) -> Result<Vec<f32>> { self.0.download(buf) }
        fn len(&self, buf: &Buf) -> usize { self.0.len(buf) }
        fn synchronize(&self) -> Result<()> { self.0.synchronize() }
        fn conv3x3_fwd(&self, s: ConvShape, x: &Buf, w: &Buf, b: &Buf, y: &mut Buf) -> Result<()> { self.0.conv3x3_fwd(s, x, w, b, y) }
        fn conv3x3_bwd_input(&self, s: ConvShape, dy: &Buf, w: &Buf, w_flip: &Buf, dx: &mut Buf) -> Result<()> { self.0.conv3x3_bwd_input(s, dy, w, w_flip, dx) }
        fn relu_bwd(&self, y: &Buf, dy: &mut Buf) -> Result<()> { self.0.relu_bwd(y, dy) }
        fn pool_fwd(&self, k: PoolKind, s: PoolShape, x: &Buf, y: &mut Buf) -> Result<()> { self.0.pool_fwd(k, s, x, y) }
        fn pool_bwd(&self, k: PoolKind, s: PoolShape, x: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> { self.0.pool_bwd(k, s, x, dy, dx) }
        fn gram(&self, hw: usize, c: usize, f: &Buf, g: &mut Buf) -> Result<()> { self.0.gram(hw, c, f, g) }
        fn gram_bwd_acc(&self, hw: usize, c: usize, f: &Buf, dg: &Buf, df: &mut Buf) -> Result<()> { self.0.gram_bwd_acc(hw, c, f, dg, df) }
        fn content_loss_acc(&self, w: f32, f: &Buf, p: &Buf, df: &mut Buf) -> Result<f64> { self.0.content_loss_acc(w, f, p, df) }
        fn style_loss(&self, w: f32, g: &Buf, a: &Buf, dg: &mut Buf) -> Result<f64> { self.0.style_loss(w, g, a, dg) }
        fn tv_loss_acc(&self, w: f32, h: usize, wd: usize, c: usize, x: &Buf, dx: &mut Buf) -> Result<f64> { self.0.tv_loss_acc(w, h, wd, c, x, dx) }
        fn tv_pow_loss_acc(&self, w: f32, p: f32, h: usize, wd: usize, c: usize, x: &Buf, dx: &mut Buf) -> Result<f64> { self.0.tv_pow_loss_acc(w, p, h, wd, c, x, dx) }
        fn fill(&self, x: &mut Buf, v: f32) -> Result<()> { self.0.fill(x, v) }
        fn copy(&self, src: &Buf, dst: &mut Buf) -> Result<()> { self.0.copy(src, dst) }
        fn dot(&self, a: &Buf, b: &Buf) -> Result<f64> { self.0.dot(a, b) }
        fn asum(&self, x: &Buf) -> Result<f64> { self.0.asum(x) }
        fn amax(&self, x: &Buf) -> Result<f64> { self.0.amax(x) }
        fn axpy(&self, a: f32, x: &Buf, y: &mut Buf) -> Result<()> { self.0.axpy(a, x, y) }
        fn scale(&self, a: f32, x: &mut Buf) -> Result<()> { self.0.scale(a, x) }
        fn adam_step(&self, s: AdamStep, p: &mut Buf, g: &Buf, m: &mut Buf, v: &mut Buf) -> Result<()> { self.0.adam_step(s, p, g, m, v) }
        fn project_to_box(&self, b: &PixelBox, x: &mut Buf) -> Result<()> { self.0.project_to_box(b, x) }
        fn zero_outward(&self, b: &PixelBox, x: &Buf, v: &mut Buf) -> Result<()> { self.0.zero_outward(b, x, v) }
        fn hold_at_bounds(&self, b: &PixelBox, x: &Buf, g: &Buf, v: &mut Buf) -> Result<()> { self.0.hold_at_bounds(b, x, g, v) }
    }

    /// A plan for `sub` over tiny procedural inputs in `dir`, with `styles` style images.
    fn tiny_plan(dir: &Path, sub: &str, styles: usize) -> Plan {
        image_io::save(&neural_style::procedural::landscape(24, 16), &dir.join("c.png")).unwrap();
        let names: Vec<String> = (0..styles).map(|k| dir.join(format!("s{k}.png")).display().to_string()).collect();
        for (k, n) in names.iter().enumerate() {
            image_io::save(&neural_style::procedural::swirls(16 + 4 * k, 16), Path::new(n)).unwrap();
        }
        let (c, o) = (dir.join("c.png").display().to_string(), dir.join("o.png").display().to_string());
        let argv = ["neural-style", sub, "--content-image", &c, "--style-image", &names.join(","), "--output-image", &o, "--image-size", "24"];
        let more = ["--num-iterations", "2", "--device", "cpu", "--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1,relu3_1"];
        let style = match Cli::parse_from(argv.iter().chain(&more)).command {
            Some(Command::Sheet(a)) => a.style,
            Some(Command::Grid(a)) => a.style,
            _ => unreachable!(),
        };
        plan(sub, style, &[]).unwrap()
    }

    fn uploads(f: impl FnOnce(&Counting) -> Result<Sheet>) -> usize {
        let be = Counting(CpuBackend::new(), Counter::new(0));
        f(&be).unwrap();
        be.1.get()
    }

    #[test]
    fn features_are_computed_once_per_sheet_and_grid() {
        let dir = tempfile::tempdir().unwrap();
        // Grid: one more column is 3 more cells (one per row) and only their 3 starting images
        // and 3 results as saved (each label's loss is measured at its 8-bit image).
        let plan = tiny_plan(dir.path(), "grid", 1);
        let one = uploads(|be| run_grid(be, &plan, &[1e-3], None));
        let two = uploads(|be| run_grid(be, &plan, &[1e-3, 1e-2], None));
        assert_eq!(two - one, 3 * 2);
        // Sheet: one more style is its image, one starting image and its result as saved; the
        // content and the network are not uploaded again.
        let names = |n: usize| (0..n).map(|k| format!("s{k}.png")).collect::<Vec<_>>();
        let p1 = tiny_plan(dir.path(), "sheet", 1);
        let p3 = tiny_plan(dir.path(), "sheet", 3);
        let one = uploads(|be| run_sheet(be, &p1, "c.png", &names(1), 3, None));
        let three = uploads(|be| run_sheet(be, &p3, "c.png", &names(3), 3, None));
        assert_eq!(three - one, 2 * 3);
    }

    #[test]
    fn sheet_places_pairs_after_the_content() {
        let ((rows, cols), place) = sheet_shape(5, 3);
        assert_eq!((rows, cols), (2, 7));
        assert_eq!([place(0), place(2), place(3), place(4)], [(0, 1), (0, 5), (1, 1), (1, 3)]);
        let ((rows, cols), _) = sheet_shape(2, 3);
        assert_eq!((rows, cols), (1, 5));
    }

    #[test]
    fn grid_rows_are_prefixes() {
        let l: Vec<String> = ["relu1_1", "relu2_1", "relu3_1"].map(String::from).to_vec();
        let rows = grid_rows(&l);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], l[..1]);
        assert_eq!(rows[2], l);
    }
}
