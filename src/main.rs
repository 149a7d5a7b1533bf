//! The `neural-style` program. Everything a user can get wrong is checked before the long work
//! starts; errors print as one `error: ...` line and exit non-zero, and no output is written.

mod cli;

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use cli::{BenchArgs, Cli, Command, DeviceArg, FetchArgs, InitArg, MakeExamplesArgs, OptimizerArg, PoolingArg, PreprocessArg, StyleArgs};
use indicatif::{ProgressBar, ProgressStyle};
use neural_style::image_io::{self, Rgb8};
use neural_style::model::source::{self, ModelSource};
use neural_style::model::{Layer, Vgg};
use neural_style::{cuda, Backend, Convention, CpuBackend, Image, Init, Job, ObjectiveSpec, Optimizer, PoolKind, Precision, Progress};
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            eprintln!("{}", one_line_clap_error(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::FetchModel(a)) => fetch_model(a),
        Some(Command::Bench(a)) => bench(a),
        Some(Command::MakeExamples(a)) => make_examples(a),
        None => stylize(cli.style),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // anyhow's "{:#}" joins the context chain with ": " on one line.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// clap's messages span several lines (usage, hints); keep them to one.
fn one_line_clap_error(msg: &str) -> String {
    let parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    let line = parts.join(" ");
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

/// Default term weights per input convention. jcjohnson's 5 / 100 / 1e-3 balance Caffe-scale
/// inputs (0..255); torchvision inputs are ~1/60 of that scale, so features are smaller and the
/// style term (4th power of the scale) needs a much larger weight. Measured in README.md.
fn default_weights(convention: Convention) -> (f32, f32, f32) {
    match convention {
        Convention::Torchvision => (1.0, 1e4, 1e-5),
        Convention::Caffe => (5.0, 100.0, 1e-3),
    }
}

/// What the program will do, fully checked.
struct Plan {
    content: Rgb8,
    styles: Vec<(Rgb8, f32)>,
    init: Init,
    output: PathBuf,
    convention: Convention,
    spec: ObjectiveSpec,
    optimizer: Optimizer,
    iterations: usize,
    print_iter: usize,
    save_iter: usize,
    seed: u64,
    vgg: Vgg,
    model: ModelSource,
    device: Device,
    log_json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
enum Device {
    Cpu,
    Cuda(Precision),
}

fn check_weight(name: &str, v: f32) -> Result<()> {
    ensure!(v.is_finite() && v >= 0.0, "--{name} must be a finite number >= 0 (got {v})");
    Ok(())
}

fn positive(name: &str, v: i64) -> Result<usize> {
    ensure!(v >= 1, "--{name} must be at least 1 (got {v})");
    Ok(v as usize)
}

fn non_negative(name: &str, v: i64) -> Result<usize> {
    ensure!(v >= 0, "--{name} must be 0 or more (got {v})");
    Ok(v as usize)
}

/// Layer names without empty entries (so `--content-layers ''` means none).
fn layer_list(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Smallest side an input needs so that every layer up to the deepest of `needed` keeps a pixel:
/// 2^(pools before it). Returns (side, pools, deepest layer).
fn min_side(vgg: &Vgg, needed: &[String]) -> (usize, usize, String) {
    let (mut pools, mut found) = (0, (1, 0, String::new()));
    for l in &vgg.layers {
        match l {
            Layer::Pool => pools += 1,
            Layer::Conv(c) if needed.contains(&c.name) => found = (1 << pools, pools, c.name.clone()),
            Layer::Conv(_) => {}
        }
    }
    found
}

fn choose_device(device: DeviceArg, precision: Option<cli::PrecisionArg>) -> Result<Device> {
    let gpu_precision = precision.map(Precision::from).unwrap_or_default();
    match device {
        DeviceArg::Cpu => {
            if precision.is_some() {
                eprintln!("note: --precision applies to the GPU; the CPU computes in fp32");
            }
            Ok(Device::Cpu)
        }
        DeviceArg::Cuda => match cuda::probe() {
            Ok(()) => Ok(Device::Cuda(gpu_precision)),
            Err(e) => bail!("--device cuda: no usable GPU: {e:#}"),
        },
        DeviceArg::Auto => match cuda::probe() {
            Ok(()) => Ok(Device::Cuda(gpu_precision)),
            Err(e) => {
                eprintln!("using the CPU: no usable GPU ({:#})", e);
                Ok(Device::Cpu)
            }
        },
    }
}

fn plan(a: StyleArgs) -> Result<Plan> {
    // Cheap checks first: numbers, names, the output path.
    let content_path = a.content_image.ok_or_else(|| anyhow!("--content-image is required"))?;
    ensure!(!a.style_image.is_empty(), "--style-image is required");
    let image_size = positive("image-size", a.image_size)?;
    let iterations = positive("num-iterations", a.num_iterations)?;
    let history = positive("lbfgs-num-correction", a.lbfgs_num_correction)?;
    let print_iter = non_negative("print-iter", a.print_iter)?;
    let save_iter = non_negative("save-iter", a.save_iter)?;
    ensure!(a.learning_rate.is_finite() && a.learning_rate > 0.0, "--learning-rate must be a positive number (got {})", a.learning_rate);
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
            ensure!(b.iter().sum::<f32>() > 0.0, "--style-blend-weights must not all be 0");
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
    let out_dir = a.output_image.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    ensure!(out_dir.is_dir(), "{}: the output folder does not exist", out_dir.display());
    if let Some(log) = &a.log_json {
        let dir = log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ensure!(dir.is_dir(), "{}: the --log-json folder does not exist", dir.display());
    }

    let device = choose_device(a.device, a.precision)?;

    // Inputs: decoding problems surface before the model (which may be large) is read.
    let content = image_io::load(&content_path)?;
    let mut styles = Vec::new();
    for (p, b) in a.style_image.iter().zip(&blend) {
        styles.push((image_io::load(p)?, *b));
    }
    let init_image = a.init_image.as_deref().map(image_io::load).transpose()?;

    let model = source::resolve(a.model.as_deref(), a.seed);
    let vgg = source::load(&model)?;
    let names = vgg.relu_names();
    for l in content_layers.iter().chain(&style_layers) {
        ensure!(names.contains(&l.as_str()), "unknown layer '{l}': this model has {}", names.join(", "));
    }
    let convention = match a.preprocess {
        Some(PreprocessArg::Torchvision) => Convention::Torchvision,
        Some(PreprocessArg::Caffe) => Convention::Caffe,
        None => model.convention(),
    };
    let (dc, ds, dt) = default_weights(convention);

    // Sizes: resize, then check each input survives the poolings of the deepest layer used.
    let content = image_io::resize_max_side(content, image_size);
    let styles: Vec<(Rgb8, f32)> = styles.into_iter().map(|(s, b)| (image_io::resize_max_side(s, image_size), b)).collect();
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
    };
    let optimizer = match a.optimizer {
        OptimizerArg::Lbfgs => Optimizer::Lbfgs { history },
        OptimizerArg::Adam => Optimizer::Adam { learning_rate: a.learning_rate },
    };
    Ok(Plan {
        content,
        styles,
        init,
        output: a.output_image,
        convention,
        spec,
        optimizer,
        iterations,
        print_iter,
        save_iter,
        seed: a.seed,
        vgg,
        model,
        device,
        log_json: a.log_json,
    })
}

fn stylize(a: StyleArgs) -> Result<()> {
    let plan = plan(a)?;
    if let ModelSource::Embedded { .. } = plan.model {
        eprintln!(
            "note: no model file found, so the embedded random-weight VGG-19 is used: results are texture-like. \
             For real style transfer run `neural-style fetch-model` (torchvision's VGG-19) or pass --model PATH."
        );
    }
    match plan.device {
        Device::Cpu => run(&CpuBackend::new(), &plan),
        Device::Cuda(precision) => run(&cuda::CudaBackend::new(0, precision)?, &plan),
    }
}

fn model_label(plan: &Plan) -> String {
    match &plan.model {
        ModelSource::Embedded { .. } => plan.vgg.source.clone(),
        m => m.path().map(|p| p.display().to_string()).unwrap_or_default(),
    }
}

fn run<B: Backend>(backend: &B, plan: &Plan) -> Result<()> {
    let pre = |img: &Rgb8| Image { h: img.h, w: img.w, data: plan.convention.preprocess(&img.data) };
    let job = Job {
        content: pre(&plan.content),
        styles: plan.styles.iter().map(|(s, b)| (pre(s), *b)).collect(),
        spec: plan.spec.clone(),
        init: plan.init.clone(),
        optimizer: plan.optimizer,
        iterations: plan.iterations,
        seed: plan.seed,
        snapshot_every: plan.save_iter,
    };
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
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(plan.iterations as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let (w, h) = (plan.content.w, plan.content.h);
    let mut observer = |p: &Progress, snapshot: Option<&[f32]>| -> Result<()> {
        let l = p.loss;
        if let Some(log) = log.as_mut() {
            let line = serde_json::json!({
                "iteration": p.iteration, "evaluations": p.evaluations, "total": l.total, "content": l.content,
                "style": l.style, "tv": l.tv, "elapsed_ms": p.elapsed.as_secs_f64() * 1e3,
            });
            writeln!(log, "{line}")?;
        }
        let text = format!("loss {:.4e} (content {:.3e}, style {:.3e}, tv {:.3e})", l.total, l.content, l.style, l.tv);
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
        if let Some(x) = snapshot {
            let path = image_io::iteration_path(&plan.output, p.iteration);
            image_io::save(&Rgb8 { w, h, data: plan.convention.deprocess(x) }, &path)?;
        }
        Ok(())
    };
    let out = neural_style::stylize(backend, &plan.vgg, &job, &mut observer);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let out = out?;
    image_io::save(&Rgb8 { w: out.w, h: out.h, data: plan.convention.deprocess(&out.image) }, &plan.output)?;
    let ms_per_eval = out.elapsed.as_secs_f64() * 1e3 / out.evaluations.max(1) as f64;
    if let Some(mut log) = log {
        let summary = serde_json::json!({
            "summary": true, "device": device, "model": model_label(plan), "convention": format!("{:?}", plan.convention).to_lowercase(),
            "width": out.w, "height": out.h, "evaluations": out.evaluations, "ms_per_evaluation": ms_per_eval,
            "gflop_per_evaluation": out.flops_per_evaluation as f64 / 1e9,
            "final": out.loss, "output": plan.output.display().to_string(),
        });
        writeln!(log, "{summary}")?;
        log.flush()?;
    }
    eprintln!(
        "wrote {} after {} evaluations ({ms_per_eval:.1} ms each); final loss {:.4e} (content {:.3e}, style {:.3e}, tv {:.3e})",
        plan.output.display(),
        out.evaluations,
        out.loss.total,
        out.loss.content,
        out.loss.style,
        out.loss.tv
    );
    Ok(())
}

fn fetch_model(a: FetchArgs) -> Result<()> {
    let url = a
        .url
        .or_else(|| std::env::var("NEURAL_STYLE_MODEL_URL").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| source::TORCHVISION_VGG19_URL.to_string());
    let dest = match a.dest {
        Some(d) => d,
        None => neural_style::fetch::default_dest(&url)?,
    };
    neural_style::fetch::fetch(&url, &dest, std::io::stderr().is_terminal())
}

fn bench(a: BenchArgs) -> Result<()> {
    ensure!(!a.sizes.is_empty() && a.sizes.iter().all(|&s| s > 0), "--sizes must list sizes above 0");
    ensure!(a.evals > 0, "--evals must be at least 1");
    let precision = if a.device == DeviceArg::Cpu { None } else { Some(a.precision) };
    let vgg = source::load(&source::resolve(None, 0))?;
    match choose_device(a.device, precision)? {
        Device::Cpu => bench_on(&CpuBackend::new(), &vgg, &a),
        Device::Cuda(p) => bench_on(&cuda::CudaBackend::new(0, p)?, &vgg, &a),
    }
}

/// Median over timed evaluations (each followed by an L-BFGS step, as torch_gatys.py times its
/// closure); effective GFLOP/s = 2 x forward conv FLOPs / median time.
fn bench_on<B: Backend>(backend: &B, vgg: &Vgg, a: &BenchArgs) -> Result<()> {
    for &size in &a.sizes {
        let r = neural_style::bench::run_evaluations(backend, vgg, size, a.warmup, a.evals)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let peak = r.peak_bytes.map(|b| format!("{:.2} GiB peak", b as f64 / (1u64 << 30) as f64)).unwrap_or_else(|| "peak n/a".into());
            println!(
                "{:>5} px  {:>9.2} ms/eval (min {:.2})  {:>8.1} GFLOP/s (= 2 x fwd conv FLOPs {:.2} G / median)  {}  {}",
                r.size,
                r.median_ms,
                r.min_ms,
                r.gflops_effective,
                r.flops_per_eval as f64 / 1e9,
                peak,
                r.backend
            );
        }
    }
    Ok(())
}

fn make_examples(a: MakeExamplesArgs) -> Result<()> {
    ensure!(a.width >= 16, "--width must be at least 16");
    fs::create_dir_all(&a.out_dir).with_context(|| format!("{}: cannot create", a.out_dir.display()))?;
    if let Some(result) = &a.figure {
        return make_figure(&a.out_dir, result);
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

/// content | style | result at the result's height, 4 white pixels apart, as DIR/figure.png.
fn make_figure(dir: &Path, result: &Path) -> Result<()> {
    let result = image_io::load(result)?;
    let h = result.h;
    let scale_to_h = |img: Rgb8| {
        let w = ((img.w as f64 * h as f64 / img.h as f64).round() as usize).max(1);
        image_io::resize_exact(img, (w, h))
    };
    let panels = [scale_to_h(image_io::load(&dir.join("content.png"))?), scale_to_h(image_io::load(&dir.join("style.png"))?), result];
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
    let out = dir.join("figure.png");
    image_io::save(&Rgb8 { w, h, data }, &out)?;
    eprintln!("wrote {} ({w}x{h})", out.display());
    Ok(())
}
