//! The main command: stylise one content image. `plan` checks every input before the long work
//! starts (nothing is written on a bad input); `run` drives `neural_style::stylize` with a
//! progress bar, snapshots and the JSON log.
//!
//! SIGINT / SIGTERM (neural_style::interrupt): the run stops after its current iteration,
//! writes the image so far to the output and the run's state beside it (`<output>.resume`,
//! neural_style::resume), says how to go on, and exits with 130 / 143. `--resume STATE` goes on
//! from there to the uninterrupted run's bytes; the state file is deleted when the run finishes.
//! Multi-scale runs stop at once instead, saving nothing, and refuse `--resume`.

use super::{check_outputs, check_weight, choose_device, input_paths, layer_list, min_side, non_negative, positive, settings, Device};
use super::serve::{self, Serve};
use crate::cli::{ServeArgs, GramNormalizationArg, InitArg, LineSearchArg, OptimizerArg, PoolingArg, PreprocessArg, ReductionArg, StyleArgs, StyleResizeArg};
use clap::ArgMatches;
use neural_style::optim::lbfgs::LineSearch;
use neural_style::{GramNormalization, Reduction};
use std::ffi::OsString;
use anyhow::{anyhow, bail, ensure, Context, Result};
use neural_style::image_io::{self, Rgb8};
use neural_style::model::source::{self, ModelSource};
use neural_style::backend::OutOfDeviceMemory;
use neural_style::model::Vgg;
use neural_style::interrupt::{self, Interrupted};
use neural_style::resume::{self, Header};
use neural_style::{cuda, Backend, Convention, CpuBackend, Image, Init, Job, LossParts, Objective, ObjectiveSpec, Optimizer, PoolKind, Progress, Run};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default term weights per input convention. jcjohnson's 5 / 100 / 1e-3 balance Caffe-scale
/// inputs (0..255); torchvision inputs are ~1/60 of that scale, so features are smaller and the
/// style term (4th power of the scale) needs a much larger weight. Measured in docs/algorithm.md, "Default weights".
pub fn default_weights(convention: Convention) -> (f32, f32, f32) {
    match convention {
        Convention::Torchvision => (1.0, 1e4, 1e-5),
        Convention::Caffe => (5.0, 100.0, 1e-3),
    }
}

/// Adam's learning rate where --learning-rate is not given. Like the weights it follows the
/// input scale: jcjohnson/neural-style's 10 is for Caffe inputs (0..255), and torchvision
/// inputs are about 1/58 of that scale, where 10 throws the image into noise in one step.
/// Measured on the example inputs (docs/algorithm.md, "Default weights").
pub fn default_learning_rate(convention: Convention) -> f32 {
    match convention {
        Convention::Torchvision => 0.1,
        Convention::Caffe => 10.0,
    }
}

/// What the program will do, fully checked.
pub struct Plan {
    pub content: Rgb8,
    pub styles: Vec<(Rgb8, f32)>,
    pub init: Init,
    pub output: PathBuf,
    pub convention: Convention,
    pub spec: ObjectiveSpec,
    pub optimizer: Optimizer,
    /// The pixel box every evaluated image stays in (None: --unbounded).
    pub bounds: Option<neural_style::backend::PixelBox>,
    pub iterations: usize,
    pub print_iter: usize,
    pub save_iter: usize,
    pub seed: u64,
    pub vgg: Vgg,
    pub model: ModelSource,
    pub device: Device,
    pub log_json: Option<PathBuf>,
    /// Keep the content's colours (YUV chroma) in the result.
    pub original_colors: bool,
    /// PNG text chunks recording the settings (settings::record).
    pub provenance: String,
    /// `(size, iterations)` per scale for `--scales`; None: one scale.
    pub scales: Option<Vec<(usize, usize)>>,
    pub plot: Option<PathBuf>,
    /// Bytes the run needs by `memory::run_floats`'s estimate.
    pub memory_need: u64,
    /// `--resume`: the state file to go on from.
    pub resume: Option<PathBuf>,
    /// Where an interrupted run saves its state (`resume::state_path` of the output).
    pub state: PathBuf,
    /// The command line, for the command that resumes an interrupted run (empty: not known).
    pub command: Vec<OsString>,
}

pub fn plan(a: StyleArgs) -> Result<Plan> {
    plan_with(a, true)
}

/// The files a run of `a` writes that could clash with `others` (the inputs, the state file),
/// with the flag that names each: the output, --log-json, --plot, and of the --save-iter
/// snapshots (`<stem>_<N>.<ext>` for every N that will be written) the first one and each that
/// has the name of one of `others` or of those outputs. Not every snapshot: a billion
/// iterations with --save-iter 1 would make a billion paths.
pub fn output_paths(a: &StyleArgs, iterations: usize, save_iter: usize, others: &[PathBuf]) -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("--output-image", a.output_image.clone())];
    v.extend(a.log_json.clone().map(|p| ("--log-json", p)));
    v.extend(a.plot.clone().map(|p| ("--plot", p)));
    if save_iter > 0 && save_iter < iterations {
        let written = |n: usize| n >= save_iter && n < iterations && n % save_iter == 0;
        let mut snapshots = vec![save_iter];
        let names = others.iter().chain(v.iter().map(|(_, p)| p));
        snapshots.extend(names.filter_map(|p| snapshot_number(&a.output_image, p)).filter(|&n| written(n)));
        snapshots.sort_unstable();
        snapshots.dedup();
        v.extend(snapshots.into_iter().map(|n| ("--save-iter", image_io::iteration_path(&a.output_image, n))));
    }
    v
}

/// N where the file name of `p` is the one `image_io::iteration_path(output, N)` gives (the
/// folders are compared by `check_not_inputs`, once links are resolved).
fn snapshot_number(output: &Path, p: &Path) -> Option<usize> {
    let name = p.file_name()?.to_str()?;
    let stem = output.file_stem()?.to_str()?;
    let rest = name.strip_prefix(stem)?.strip_prefix('_')?;
    let digits = match output.extension() {
        Some(ext) => rest.strip_suffix(ext.to_str()?)?.strip_suffix('.')?,
        None => rest,
    };
    let n: usize = digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    (image_io::iteration_path(output, n).file_name()? == p.file_name()?).then_some(n)
}

/// `plan`, checking the files it will write (`check_paths`) or not (batch checks its own).
pub fn plan_with(a: StyleArgs, check_paths: bool) -> Result<Plan> {
    let recorded = settings::recorded_args(&a)?;
    // Cheap checks first: numbers, names, the output path.
    let content_path = a.content_image.clone().ok_or_else(|| anyhow!("--content-image is required"))?;
    ensure!(!a.style_image.is_empty(), "--style-image is required");
    let seed = non_negative("seed", a.seed)? as u64;
    let image_size = super::image_side("image-size", a.image_size)?;
    let image_height = a.image_height.map(|h| super::image_side("image-height", h)).transpose()?;
    ensure!(a.style_scale.is_finite() && a.style_scale > 0.0, "--style-scale must be a positive number (got {})", a.style_scale);
    if let Some(p) = a.tv_power {
        ensure!(p.is_finite() && p >= 1.0, "--tv-power must be a number >= 1 (got {p}): below 1 its gradient is unbounded where neighbours are equal");
    }
    let round = non_negative("lbfgs-round", a.lbfgs_round)?;
    let iterations = super::iteration_count("num-iterations", a.num_iterations)?;
    let (scales, image_size, iterations) = super::multiscale::parse(
        super::multiscale::Flags { scales: &a.scales, scale_factor: a.scale_factor, scale_iterations: &a.scale_iterations },
        image_size,
        iterations,
    )?;
    let history = positive("lbfgs-num-correction", a.lbfgs_num_correction)?;
    let print_iter = non_negative("print-iter", a.print_iter)?;
    let save_iter = non_negative("save-iter", a.save_iter)?;
    if let Some(lr) = a.learning_rate {
        ensure!(lr.is_finite() && lr > 0.0, "--learning-rate must be a positive number (got {lr})");
    }
    for (name, w) in [("content-weight", a.content_weight), ("style-weight", a.style_weight), ("tv-weight", a.tv_weight)] {
        if let Some(w) = w {
            check_weight(name, w)?;
        }
    }
    let blend = match &a.style_blend_weights {
        None => vec![1.0; a.style_image.len()],
        Some(b) => {
            ensure!(
                b.len() == a.style_image.len(),
                "--style-blend-weights has {} values but --style-image names {} image(s)",
                b.len(),
                a.style_image.len()
            );
            for &w in b {
                check_weight("style-blend-weights", w)?;
            }
            let sum = b.iter().sum::<f32>();
            ensure!(sum.is_finite(), "--style-blend-weights sum to more than {:e}: use smaller values (only their ratios matter)", f32::MAX);
            ensure!(sum > 0.0, "--style-blend-weights must not all be 0");
            b.clone()
        }
    };
    if a.init_image.is_some() && a.init == InitArg::Random {
        bail!("--init-image needs --init image");
    }
    let content_layers = layer_list(&a.content_layers);
    let style_layers = layer_list(&a.style_layers);
    ensure!(!content_layers.is_empty() || !style_layers.is_empty(), "no content or style layers chosen");
    image_io::out_format(&a.output_image)?;
    let state = resume::state_path(&a.output_image);
    if let Some(r) = &a.resume {
        ensure!(scales.is_none(), "--resume does not work with --scales (an interrupted multi-scale run saves no state)");
        ensure!(r.is_file(), "{}: --resume names no state file", r.display());
    }
    if check_paths {
        // The state file an interruption would write, unless it is the one --resume reads.
        let mut inputs = input_paths(&a);
        let others: Vec<PathBuf> = inputs.iter().map(|(_, p)| p.clone()).chain(a.resume.clone()).chain([state.clone()]).collect();
        let mut outputs = output_paths(&a, iterations, save_iter, &others);
        match &a.resume {
            Some(r) if fs::canonicalize(r).ok() == fs::canonicalize(&state).ok() => {}
            Some(r) => {
                inputs.push(("--resume", r.clone()));
                outputs.push(("--output-image's state file", state.clone()));
            }
            None => outputs.push(("--output-image's state file", state.clone())),
        }
        check_outputs(&outputs, &inputs)?;
    }

    let device = choose_device(a.device, a.precision)?;

    // Inputs: decoding problems surface before the model (which may be large) is read. Each is
    // decoded for the size it will be resized to (a PNG much larger is reduced as it is read).
    let content_size = |(w, h): (usize, usize)| match image_height {
        None => image_io::fit_size(w, h, image_size),
        Some(ih) => (((w as f64 * ih as f64 / h as f64).round() as usize).max(1), ih),
    };
    let (content, content_source) = image_io::load_for(&content_path, content_size)?;
    let target = content_size(content_source);
    // A very wide image at --image-height N, or --style-scale S, may ask for sides the flags
    // alone do not show.
    ensure!(
        target.0.max(target.1) <= super::MAX_SIDE,
        "{}: a {}x{} image at --image-height {} would be {}x{} pixels, more than the {} a side this program works on",
        content_path.display(),
        content_source.0,
        content_source.1,
        image_height.unwrap_or(image_size),
        target.0,
        target.1,
        super::MAX_SIDE
    );
    let style_side = (target.0.max(target.1) as f64 * a.style_scale as f64).round();
    ensure!(
        style_side <= super::MAX_SIDE as f64,
        "--style-scale {} makes style images {} pixels on the longer side, more than the {} this program works on",
        if a.style_scale < 1e6 { format!("{}", a.style_scale) } else { format!("{:e}", a.style_scale) },
        if style_side < 1e12 { format!("{style_side:.0}") } else { format!("{style_side:.3e}") },
        super::MAX_SIDE
    );
    let style_side = (style_side as usize).max(1);
    let style_size = |(w, h): (usize, usize)| match a.style_resize {
        StyleResizeArg::LongerSide => image_io::fit_size(w, h, style_side),
        StyleResizeArg::MatchContent => target,
    };
    let mut styles = Vec::new();
    for (p, b) in a.style_image.iter().zip(&blend) {
        let (img, source) = image_io::load_for(p, style_size)?;
        styles.push((img, style_size(source), *b));
    }
    let init_image = a.init_image.as_deref().map(|p| image_io::load_for(p, |_| target)).transpose()?.map(|(img, _)| img);

    let model = source::resolve(a.model.as_deref(), seed);
    let vgg = source::load(&model)?;
    let names = vgg.relu_names();
    for (flag, layers) in [("--content-layers", &content_layers), ("--style-layers", &style_layers)] {
        for l in layers {
            ensure!(names.contains(&l.as_str()), "{flag}: unknown layer '{l}': this model has {}", names.join(", "));
        }
    }
    let convention = match a.preprocess {
        Some(PreprocessArg::Torchvision) => Convention::Torchvision,
        Some(PreprocessArg::Caffe) => Convention::Caffe,
        None => model.convention(),
    };
    let (dc, ds, dt) = default_weights(convention);

    // Memory first, from the target size alone: resizing to a size that cannot fit would abort.
    let style_sizes: Vec<(usize, usize)> = styles.iter().map(|(_, size, _)| *size).collect();
    let memory_need = check_run_memory(&vgg, &content_layers, &style_layers, target, &style_sizes, &a, history.min(iterations), device)?;
    if check_paths {
        // (After the memory check: a size too large for memory is that message, not this one.)
        // Every snapshot and the result at the output's size, the JSON log's lines, the plot.
        let image = super::image_file_bound(target.0, target.1);
        let snapshots = if save_iter == 0 { 0 } else { (iterations.saturating_sub(1) / save_iter) as u64 };
        let mut needs = vec![("--output-image", a.output_image.clone(), image), ("--save-iter", a.output_image.clone(), snapshots.saturating_mul(image))];
        needs.extend(a.log_json.clone().map(|p| ("--log-json", p, 512 * (iterations as u64 + 2))));
        needs.extend(a.plot.clone().map(|p| ("--plot", p, super::image_file_bound(800, 500))));
        super::check_free_space(&needs)?;
    }

    // Sizes: resize, then check each input survives the poolings of the deepest layer used.
    let content = image_io::resize_exact(content, target);
    let styles: Vec<(Rgb8, f32)> = styles.into_iter().map(|(s, size, b)| (image_io::resize_exact(s, size), b)).collect();
    let all_layers: Vec<String> = content_layers.iter().chain(&style_layers).cloned().collect();
    let too_small = |what: &str, img: &Rgb8, layers: &[String]| -> Result<()> {
        let (side, pools, deepest) = min_side(&vgg, layers);
        ensure!(
            img.w >= side && img.h >= side,
            "{what} is {}x{} pixels at --image-size {image_size}, too small for {deepest}: it needs at least {side} pixels per side ({pools} poolings); raise --image-size or use shallower layers",
            img.w,
            img.h
        );
        Ok(())
    };
    too_small("the content image", &content, &all_layers)?;
    for (k, (s, _)) in styles.iter().enumerate() {
        too_small(&format!("style image {}", k + 1), s, &style_layers)?;
    }
    super::multiscale::check_smallest(&vgg, &scales, &content, &styles, &all_layers, &style_layers)?;
    let mut vgg = vgg;
    vgg.truncate_after(&all_layers);
    let init = match (a.init, init_image) {
        (InitArg::Random, _) => Init::Random,
        (InitArg::Image, None) => Init::Image(convention.preprocess(&content.data)),
        (InitArg::Image, Some(img)) => Init::Image(convention.preprocess(&image_io::resize_exact(img, (content.w, content.h)).data)),
    };
    let spec = ObjectiveSpec {
        content_layers,
        style_layers,
        content_weight: a.content_weight.unwrap_or(dc),
        style_weight: a.style_weight.unwrap_or(ds),
        tv_weight: a.tv_weight.unwrap_or(dt),
        pooling: match a.pooling {
            PoolingArg::Max => PoolKind::Max,
            PoolingArg::Avg => PoolKind::Avg,
        },
        content_reduction: match a.content_reduction {
            ReductionArg::Mean => Reduction::Mean,
            ReductionArg::Sum => Reduction::Sum,
            ReductionArg::HalfSum => Reduction::HalfSum,
        },
        gram_normalization: match a.gram_normalization {
            GramNormalizationArg::Chw => GramNormalization::Chw,
            GramNormalizationArg::KerasExample => GramNormalization::KerasExample,
            GramNormalizationArg::Gatys2015 => GramNormalization::Gatys2015,
        },
        tv_power: a.tv_power,
        normalize_gradients: a.normalize_gradients,
    };
    let line_search = match a.lbfgs_line_search {
        LineSearchArg::None => LineSearch::None,
        LineSearchArg::StrongWolfe => LineSearch::StrongWolfe,
    };
    let model_sha256 = model.path().map(neural_style::fetch::sha256_file).transpose()?;
    let provenance = settings::record(recorded, model_sha256.as_deref(), &vgg.source);
    if let Some(png) = &a.from_png {
        let recorded = settings::recorded_model_sha256(png);
        if recorded.is_some() && recorded != model_sha256 {
            eprintln!("note: {} was made with other model weights (sha256 {}); this run uses {}", png.display(), recorded.unwrap_or_default(), model_sha256.as_deref().unwrap_or("the embedded model"));
        }
    }
    let optimizer = match a.optimizer {
        OptimizerArg::Lbfgs => Optimizer::Lbfgs { history, line_search, round },
        OptimizerArg::Adam => Optimizer::Adam { learning_rate: a.learning_rate.unwrap_or(default_learning_rate(convention)) },
    };
    Ok(Plan {
        content,
        styles,
        init,
        output: a.output_image,
        convention,
        spec,
        optimizer,
        bounds: (!a.unbounded).then(|| convention.pixel_box()),
        iterations,
        print_iter,
        save_iter,
        seed,
        vgg,
        model,
        device,
        log_json: a.log_json,
        original_colors: a.original_colors,
        provenance,
        scales,
        plot: a.plot,
        memory_need,
        resume: a.resume,
        state,
        command: Vec::new(),
    })
}

/// Bytes a run of this size needs (`cmd::check_memory`), counting the optimiser's vectors.
#[allow(clippy::too_many_arguments)]
fn check_run_memory(vgg: &Vgg, content_layers: &[String], style_layers: &[String], size: (usize, usize), style_sizes: &[(usize, usize)], a: &StyleArgs, pairs: usize, device: Device) -> Result<u64> {
    let optimizer_vectors = match a.optimizer {
        // Two per curvature pair, the direction and the previous gradient, and the line search's five.
        OptimizerArg::Lbfgs => 2 * pairs + 2 + if a.lbfgs_line_search == LineSearchArg::StrongWolfe { 5 } else { 0 },
        OptimizerArg::Adam => 2,
    };
    super::check_memory(vgg, content_layers, style_layers, size, style_sizes, optimizer_vectors, device)
}

/// The message for a run that ran out of GPU memory although the estimate fitted (other
/// processes, fragmentation, or an estimate too low): what would fit, by the same estimate.
fn out_of_device_memory(plan: &Plan, oom: &OutOfDeviceMemory) -> anyhow::Error {
    let (w, h) = (plan.content.w, plan.content.h);
    let precision = match plan.device {
        Device::Cuda(p) => format!("{p:?}").to_lowercase(),
        Device::Cpu(p) => format!("{p:?}").to_lowercase(),
    };
    // The estimate missed by at least this much: scale it so that it explains the failure.
    let fits = neural_style::memory::largest_side(w.max(h), plan.memory_need.max(oom.free_at_start + 1), oom.free_at_start);
    anyhow!(
        "{oom} during a {w}x{h} run in {precision} (estimated need {}): try --image-size {fits} or smaller; every precision keeps f32 buffers, so --precision does not change the memory needed",
        neural_style::memory::human_bytes(plan.memory_need)
    )
}

pub fn stylize(a: StyleArgs, serve: ServeArgs, matches: &ArgMatches, argv: &[OsString]) -> Result<()> {
    let a = settings::resolve(a, matches, argv)?;
    for (missing, flag) in [(a.content_image.is_none(), "--content-image <FILE>"), (a.style_image.is_empty(), "--style-image <FILE[,FILE...]>")] {
        if missing {
            return Err(super::UsageError(format!("the following required arguments were not provided: {flag}")).into());
        }
    }
    super::check_plot(&a)?;
    let mut plan = plan(a)?;
    plan.command = argv.to_vec();
    note_model(&plan);
    // The server listens before the run starts, so that an address in use is an error at once.
    let server = start_server(&plan, &serve, "stylize", 1, plan.output.display().to_string())?;
    let started = SystemTime::now();
    let result = match plan.device {
        Device::Cpu(p) => run(&CpuBackend::with_precision(p), &plan, server.as_ref()),
        Device::Cuda(precision) => match cuda::CudaBackend::new(0, precision) {
            Ok(backend) => run(&backend, &plan, server.as_ref()),
            Err(e) => Err(e.into()),
        },
    };
    if let Some(server) = &server {
        finish_server(server, &result, Some(&plan.output), started, format!("wrote {}", plan.output.display()));
    }
    result
}

/// `--serve`'s server for a run of `command` (`stylize`, `sheet`, `grid`, `batch`) made of
/// `runs` optimisations of the plan's size, writing to `output`; None without --serve.
pub(super) fn start_server(plan: &Plan, serve: &ServeArgs, command: &'static str, runs: usize, output: String) -> Result<Option<Serve>> {
    let Some(addr) = serve.serve else { return Ok(None) };
    let info = serve::Info {
        command,
        settings: plan.provenance.clone(),
        output,
        width: plan.content.w,
        height: plan.content.h,
        iterations: plan.iterations,
        runs,
    };
    let every = serve.serve_every.map(|n| n as usize);
    serve::start(addr, info, every, serve.serve_linger, frame_deprocess(plan, &plan.content)).map(Some)
}

/// How `--serve`'s frames of an optimisation of `content` are made: as the output will look,
/// 8-bit, with the content's colours under --original-colors.
pub(super) fn frame_deprocess(plan: &Plan, content: &Rgb8) -> serve::Deprocess {
    let (convention, original_colors, content) = (plan.convention, plan.original_colors, content.clone());
    Box::new(move |x| result_image(convention, original_colors, &content, x, (content.w, content.h)))
}

/// Tells the pages how the run ended, with the image `shown` if this run wrote it (it is read
/// back only if it was written during this run: an error before saving leaves an older file).
pub(super) fn finish_server(server: &Serve, result: &Result<()>, shown: Option<&Path>, started: SystemTime, finished: String) {
    let written = shown.filter(|p| fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t >= started));
    let image = written.and_then(|p| image_io::load(p).ok());
    let output = written.map(|p| p.display().to_string());
    let (state, message) = match result {
        Ok(()) => ("finished", finished),
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(i) => ("stopped", i.to_string()),
            None => ("failed", format!("{e:#}")),
        },
    };
    server.finish(state, &message, output.as_deref(), image.as_ref());
}

/// Says so when the embedded random-weight model stands in for a real one.
pub fn note_model(plan: &Plan) {
    if let ModelSource::Embedded { .. } = plan.model {
        eprintln!(
            "note: no model file found, so the embedded random-weight VGG-19 is used: results are texture-like. \
             For real style transfer run `neural-style fetch-model` (torchvision's VGG-19) or pass --model PATH."
        );
    }
}

pub fn model_label(plan: &Plan) -> String {
    match &plan.model {
        ModelSource::Embedded { .. } => plan.vgg.source.clone(),
        m => m.path().map(|p| p.display().to_string()).unwrap_or_default(),
    }
}

/// The library job of a plan (the base of each batch frame's, sheet cell's and grid cell's job).
pub fn job(plan: &Plan) -> Job {
    let pre = |img: &Rgb8| Image { h: img.h, w: img.w, data: plan.convention.preprocess(&img.data) };
    Job {
        content: pre(&plan.content),
        styles: plan.styles.iter().map(|(s, b)| (pre(s), *b)).collect(),
        spec: plan.spec.clone(),
        init: plan.init.clone(),
        optimizer: plan.optimizer,
        iterations: plan.iterations,
        seed: plan.seed,
        snapshot_every: plan.save_iter,
        snapshot_gate: None,
        bounds: plan.bounds,
    }
}

/// One `--log-json` line per iteration; serde writes the fields in this order, docs/options.md's.
#[derive(serde::Serialize)]
struct IterationLine {
    iteration: usize,
    evaluations: usize,
    total: f64,
    content: f64,
    style: f64,
    tv: f64,
    elapsed_ms: f64,
}

/// The `--log-json` summary line, its keys in docs/options.md's order.
#[derive(serde::Serialize)]
struct SummaryLine<'a> {
    summary: bool,
    device: &'a str,
    model: String,
    convention: String,
    width: usize,
    height: usize,
    evaluations: usize,
    ms_per_evaluation: f64,
    gflop_per_evaluation: f64,
    /// The objective at the image written.
    #[serde(rename = "final")]
    final_loss: LossParts,
    /// At the optimiser's float image.
    final_optimizer: LossParts,
    output: String,
    peak_rss_bytes: Option<u64>,
    peak_device_bytes: Option<u64>,
    estimated_bytes: u64,
}

/// The final line's losses: the saved image's, and the optimiser's last float objective where
/// it differs (by more than 1e-4 relative: rounding to 8 bits alone moves the loss that much).
pub fn final_losses(saved: &LossParts, optimizer: &LossParts) -> String {
    let line = format!("final loss {saved} of the saved image");
    if (saved.total - optimizer.total).abs() <= 1e-4 * optimizer.total.abs() {
        line
    } else {
        format!("{line}; the optimiser's float image had {optimizer} (the saved image's loss is {:.3}x it)", saved.total / optimizer.total)
    }
}

/// A result as the user gets it: the preprocessed (h, w, 3) `image` back to 8-bit RGB at the size
/// of `content` (the resized content image), with the content's colours under --original-colors,
/// written with its recorded settings (`provenance`, from settings::record).
pub fn save_result(plan: &Plan, content: &Rgb8, image: &[f32], (w, h): (usize, usize), path: &std::path::Path, provenance: &str) -> Result<Rgb8> {
    let img = result_image(plan.convention, plan.original_colors, content, image, (w, h));
    image_io::save_with_text(&img, path, &[(settings::SETTINGS_KEY, provenance)])?;
    Ok(img)
}

/// The preprocessed (h, w, 3) `image` as 8-bit RGB at the size of `content`, with the content's
/// colours under --original-colors: what save_result writes and --serve's page shows.
fn result_image(convention: Convention, original_colors: bool, content: &Rgb8, image: &[f32], (w, h): (usize, usize)) -> Rgb8 {
    let img = image_io::resize_exact(Rgb8 { w, h, data: convention.deprocess(image) }, (content.w, content.h));
    if original_colors {
        neural_style::color::original_colors(content, &img)
    } else {
        img
    }
}

/// A run whose loss or gradient stopped being finite: writes its last good image to the output
/// path and returns the one-line error, with advice that fits the optimiser.
fn keep_last_good(plan: &Plan, nf: &neural_style::NonFinite) -> anyhow::Error {
    let advice = match plan.optimizer {
        Optimizer::Lbfgs { .. } => "L-BFGS has no learning rate: lower --content-weight, --style-weight or --tv-weight, or try another --init".to_string(),
        Optimizer::Adam { learning_rate } => format!("try a smaller --learning-rate (this run used {learning_rate:e})"),
    };
    let kept = match nf.last_good_iteration {
        0 => "the starting image (no iteration was finite)".to_string(),
        k => format!("the last finite image (iteration {k})"),
    };
    match save_result(plan, &plan.content, &nf.last_good, (nf.w, nf.h), &plan.output, &plan.provenance) {
        Ok(_) => anyhow!("{nf}; {advice}; wrote {kept} to {}", plan.output.display()),
        Err(e) => anyhow!("{nf}; {advice}; could not write {kept} to {}: {e:#}", plan.output.display()),
    }
}

/// What names this run in its state file: a fingerprint of everything that decides the result
/// (the recorded settings with the program version and model hash, the resized inputs' pixels,
/// the starting image, the size), so that `--resume` with anything else is refused.
fn resume_header(plan: &Plan, job: &Job) -> Header {
    let settings: serde_json::Value = serde_json::from_str(&plan.provenance).unwrap_or_default();
    let (w, h) = (plan.content.w, plan.content.h);
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let init = match &job.init {
        Init::Random => Vec::new(),
        Init::Image(data) => floats(data),
    };
    let size = [w as u64, h as u64, plan.iterations as u64].map(u64::to_le_bytes).concat();
    let mut parts: Vec<&[u8]> = vec![plan.provenance.as_bytes(), &size, &plan.content.data, &init];
    let blends: Vec<[u8; 4]> = plan.styles.iter().map(|(_, b)| b.to_le_bytes()).collect();
    for ((s, _), b) in plan.styles.iter().zip(&blends) {
        parts.extend([&s.data[..], b]);
    }
    Header { fingerprint: resume::fingerprint(&parts), settings, width: w, height: h, iterations: plan.iterations }
}

/// The state a `--resume` names, checked against this run.
fn load_state(plan: &Plan, job: &Job) -> Result<Option<resume::RunState>> {
    let Some(path) = &plan.resume else { return Ok(None) };
    let (header, state) = resume::load(path).context("--resume")?;
    let expected = resume_header(plan, job);
    header.check(&expected).with_context(|| format!("--resume {}", path.display()))?;
    // Every value and counter against this run's size, budget and optimiser settings.
    state.validate(&expected, Some(&job.optimizer)).with_context(|| format!("--resume {}", path.display()))?;
    state.validate_bounds(job.bounds.as_ref()).with_context(|| format!("--resume {}", path.display()))?;
    Ok(Some(state))
}

/// `argv` with `--resume STATE` (instead of any it had), quoted for a POSIX shell.
fn resume_command(argv: &[OsString], state: &Path) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for a in argv.iter().map(|a| a.to_string_lossy().into_owned()) {
        if std::mem::take(&mut skip) {
            continue;
        }
        match a.as_str() {
            "--resume" => skip = true,
            _ if a.starts_with("--resume=") => {}
            _ => args.push(a),
        }
    }
    if args.is_empty() {
        args.push("neural-style".into());
    }
    args.extend(["--resume".to_string(), state.display().to_string()]);
    let quote = |a: &String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=,:+@%".contains(c)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A run that a signal stopped: writes the image so far to the output and the state beside it,
/// says where they went, and returns the `Interrupted` that main turns into the exit code.
fn save_stopped(plan: &Plan, job: &Job, signal: i32, state: &resume::RunState) -> Result<()> {
    let (w, h) = (plan.content.w, plan.content.h);
    save_result(plan, &plan.content, &state.x, (w, h), &plan.output, &plan.provenance)?;
    resume::save(&plan.state, &resume_header(plan, job), state)?;
    let mb = fs::metadata(&plan.state).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    eprintln!(
        "{} after iteration {} of {}: wrote {} (the image so far) and {} (the run's state, {mb:.1} MB)",
        interrupt::signal_name(signal),
        state.history.len(),
        plan.iterations,
        plan.output.display(),
        plan.state.display()
    );
    Err(Interrupted { signal, message: format!("continue with: {}", resume_command(&plan.command, &plan.state)) }.into())
}

pub fn run<B: Backend>(backend: &B, plan: &Plan, server: Option<&Serve>) -> Result<()> {
    let mut job = job(plan);
    // The page's frames come from the snapshots, taken more often than --save-iter's files then
    // (every --serve-every iterations, or about once a second).
    // Not in a multi-scale run, whose snapshots are numbered within its last scale: its page
    // gets --save-iter's snapshots only.
    let more_snapshots = server.is_some() && plan.scales.is_none();
    if let (Some(server), true) = (server, more_snapshots) {
        job.snapshot_every = server.snapshot_every(plan.save_iter);
        job.snapshot_gate = server.snapshot_gate();
    }
    let from = load_state(plan, &job)?;
    let device = backend.name();
    eprintln!(
        "stylising {}x{} on {device} with {}, {} iterations (weights: content {}, style {}, tv {})",
        plan.content.w,
        plan.content.h,
        model_label(plan),
        plan.iterations,
        plan.spec.content_weight,
        plan.spec.style_weight,
        plan.spec.tv_weight
    );
    let mut log = match &plan.log_json {
        Some(p) => Some(std::io::BufWriter::new(fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?)),
        None => None,
    };
    let bar = super::progress_bar(plan.iterations);
    let mut losses = Vec::new();
    let (w, h) = (plan.content.w, plan.content.h);
    let log_line = |log: &mut std::io::BufWriter<fs::File>, p: &Progress| -> Result<()> {
        let l = p.loss;
        let line = IterationLine {
            iteration: p.iteration,
            evaluations: p.evaluations,
            total: l.total,
            content: l.content,
            style: l.style,
            tv: l.tv,
            elapsed_ms: p.elapsed.as_secs_f64() * 1e3,
        };
        Ok(writeln!(log, "{}", serde_json::to_string(&line)?)?)
    };
    if let Some(state) = &from {
        // The iterations of the earlier sessions: in the log and the plot, as if run now.
        eprintln!("resuming from {} after iteration {}", plan.resume.as_deref().unwrap_or(Path::new("")).display(), state.history.len());
        for (k, &(loss, elapsed)) in state.history.iter().enumerate() {
            losses.push(loss);
            if let Some(log) = log.as_mut() {
                log_line(log, &Progress { iteration: k + 1, evaluations: k + 1, loss, elapsed })?;
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(state.history.len() as u64);
        }
    }
    let multiscale = plan.scales.is_some();
    let mut announced = false;
    let mut observer = |p: &Progress, snapshot: Option<&[f32]>| -> Result<()> {
        let l = p.loss;
        losses.push(l);
        if let Some(log) = log.as_mut() {
            log_line(log, p)?;
        }
        let text = format!("loss {l}");
        match &bar {
            Some(bar) => {
                bar.set_position(p.iteration as u64);
                bar.set_message(text);
            }
            None => {
                if plan.print_iter > 0 && (p.iteration % plan.print_iter == 0 || p.iteration == plan.iterations) {
                    eprintln!("iteration {} / {}: {text}, {:.1} s", p.iteration, plan.iterations, p.elapsed.as_secs_f64());
                }
            }
        }
        if let Some(server) = server {
            server.progress(p, snapshot);
        }
        if let Some(x) = snapshot.filter(|_| !more_snapshots || (plan.save_iter > 0 && p.iteration % plan.save_iter == 0)) {
            let path = image_io::iteration_path(&plan.output, p.iteration);
            image_io::save(&Rgb8 { w, h, data: plan.convention.deprocess(x) }, &path)?;
            if !announced {
                // Once, so that files appearing beside the output are explained.
                announced = true;
                let line = format!("wrote {} (a snapshot every {} iterations beside the output; --save-iter 0: none)", path.display(), plan.save_iter);
                match &bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
        if multiscale {
            // Multi-scale runs cannot be resumed: a signal stops them at once.
            interrupt::check()?;
        }
        Ok(())
    };
    // Single-scale runs stop between iterations and save their state. Their objective is kept
    // to measure the saved image with; a multi-scale run builds its last scale's after the run.
    let mut stop = || interrupt::requested().is_some();
    let mut objective = None;
    let out = match &plan.scales {
        None => Objective::new(backend, &plan.vgg, job.spec.clone(), &job.content, &job.styles)
            .and_then(|o| neural_style::optimize_from(backend, objective.insert(o), &job, from.as_ref(), &mut stop, &mut observer)),
        Some(scales) => super::multiscale::run(backend, plan, scales, &job, &mut observer).map(Run::Finished),
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let out = match out {
        Ok(Run::Finished(out)) => out,
        Ok(Run::Stopped(state)) => {
            drop(log); // flushed, without a summary
            let signal = interrupt::requested().unwrap_or(interrupt::SIGINT);
            return save_stopped(plan, &job, signal, &state);
        }
        Err(e) => {
            if let Some(nf) = e.downcast_ref::<neural_style::NonFinite>() {
                return Err(keep_last_good(plan, nf));
            }
            if let Some(oom) = e.chain().find_map(|c| c.downcast_ref::<OutOfDeviceMemory>()) {
                return Err(out_of_device_memory(plan, oom));
            }
            return Err(e);
        }
    };
    let saved = save_result(plan, &plan.content, &out.image, (out.w, out.h), &plan.output, &plan.provenance)?;
    // The loss the user's image has: the objective at the pixels written, not at the optimiser's
    // float image (saving clamps and rounds).
    let mut objective = match objective {
        Some(o) => o,
        None => Objective::new(backend, &plan.vgg, job.spec.clone(), &job.content, &job.styles)?,
    };
    let saved_loss = neural_style::stylize::loss_of_saved(backend, &mut objective, plan.convention, &saved.data)?;
    drop(objective);
    losses.push(saved_loss);
    // The run is complete: a state saved by an interruption of it is spent.
    for state in plan.resume.iter().chain([&plan.state]) {
        if state.is_file() {
            fs::remove_file(state).with_context(|| format!("{}: cannot remove the spent state file", state.display()))?;
            eprintln!("removed {} (the state of the interrupted run, now finished)", state.display());
        }
    }
    if let Some(p) = &plan.plot {
        neural_style::plot::save_loss_plot(&losses, p)?;
        eprintln!("wrote {} (loss curves)", p.display());
    }
    let ms_per_eval = out.elapsed.as_secs_f64() * 1e3 / out.evaluations.max(1) as f64;
    if let Some(mut log) = log {
        let summary = SummaryLine {
            summary: true,
            device: &device,
            model: model_label(plan),
            convention: format!("{:?}", plan.convention).to_lowercase(),
            width: out.w,
            height: out.h,
            evaluations: out.evaluations,
            ms_per_evaluation: ms_per_eval,
            gflop_per_evaluation: out.flops_per_evaluation as f64 / 1e9,
            final_loss: saved_loss,
            final_optimizer: out.loss,
            output: plan.output.display().to_string(),
            peak_rss_bytes: neural_style::memory::peak_rss_bytes(),
            peak_device_bytes: backend.peak_bytes(),
            estimated_bytes: plan.memory_need,
        };
        writeln!(log, "{}", serde_json::to_string(&summary)?)?;
        log.flush()?;
    }
    eprintln!("wrote {} after {} evaluations ({ms_per_eval:.1} ms each); {}", plan.output.display(), out.evaluations, final_losses(&saved_loss, &out.loss));
    Ok(())
}
