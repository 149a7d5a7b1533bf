//! `neural-style batch`: many content images with one style. The inputs, the shard and the
//! resume decisions come from `neural_style::batch`; the main command's `plan` checks the style
//! options once (with the shard's first frame to run), the model is loaded once, and the style
//! Grams are computed once for all frames of one size (`MultiScale::set_content` swaps only
//! the content targets; a frame of another size rebuilds the objectives).

use super::serve::Serve;
use super::stylize::{finish_server, frame_deprocess, job, note_model, plan_with, save_result, start_server, Plan};
use super::{check_not_inputs, check_writable};
use super::Device;
use crate::cli::BatchArgs;
use anyhow::{ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use neural_style::batch::{list_inputs, output_paths, parse_shard, shard_from_env, steps, warm_up_range, without_earlier_results, Step};
use neural_style::image_io::{self, Rgb8};
use neural_style::multiscale::{resize_image, scales_from, MultiScale};
use neural_style::{cuda, Backend, CpuBackend, Image, Init, Job, Progress};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

struct Frame {
    input: PathBuf,
    output: PathBuf,
    step: Step,
    /// One of the frames before the shard's block (--temporal-overlap): optimised, not written.
    warm_up: bool,
}

pub fn batch(a: BatchArgs, matches: &clap::ArgMatches, argv: &[std::ffi::OsString]) -> Result<()> {
    let mut style = super::settings::resolve_in(a.style, matches, argv, Some("batch"))?;
    ensure!(style.content_image.is_none(), "batch takes its content images as arguments, not --content-image");
    ensure!(style.log_json.is_none(), "--log-json is not supported by batch");
    ensure!(style.plot.is_none(), "--plot is not supported by batch (it would draw one frame's curves): use the main command on a frame to see its loss curves");
    ensure!(style.resume.is_none(), "--resume is not supported by batch: run the same command again and it skips the frames already written");
    ensure!(style.init_image.is_none(), "--init-image is not supported by batch (--temporal-init starts each frame from the previous result)");
    ensure!(
        a.temporal_overlap == 0 || a.temporal_init,
        "--temporal-overlap needs --temporal-init (it warms the chain of results that --temporal-init starts each frame from)"
    );
    let ext = a.output_ext.trim_start_matches('.').to_ascii_lowercase();
    image_io::out_format(Path::new(&format!("result.{ext}"))).context("--output-ext")?;
    let (shard, source) = match &a.shard {
        Some(s) => {
            ensure!(a.shard_count.is_none(), "--shard-count goes with $JOB_COMPLETION_INDEX; --shard already names the count");
            (parse_shard(s)?, "--shard")
        }
        None => shard_from_env(|k| std::env::var(k).ok(), a.shard_count)?,
    };
    // A rerun whose output folder is an input folder lists the results it wrote there: they are
    // not frames (items named on the command line always are).
    let named: Vec<PathBuf> = a.inputs.iter().filter(|p| p.is_file()).filter_map(|p| p.canonicalize().ok()).collect();
    let (inputs, earlier) = without_earlier_results(&list_inputs(&a.inputs)?, &a.output, &ext, |p| p.canonicalize().map_or(true, |c| !named.contains(&c)))?;
    if !earlier.is_empty() {
        eprintln!("batch: {} file(s) in the input folders are this batch's earlier results, not frames ({:?}{})", earlier.len(), earlier[0], if earlier.len() > 1 { ", ..." } else { "" });
    }
    let inputs_all = inputs.clone();
    let outputs = output_paths(&inputs, &a.output, &ext)?;
    for o in &outputs {
        image_io::out_format(o)?;
    }
    // No frame's output may be an input (a frame, a style image, the model): one that exists
    // would be taken for a finished frame, so this comes before any frame is skipped.
    let mut inputs_read = super::input_paths(&style);
    inputs_read.extend(inputs_all.iter().map(|p| ("batch input", p.clone())));
    let all: Vec<(&str, PathBuf)> = outputs.iter().map(|o| ("--output", o.clone())).collect();
    check_not_inputs(&all, &inputs_read)?;
    let range = shard.range(inputs.len());
    if range.is_empty() {
        eprintln!("batch: shard {shard} (from {source}) takes none of the {} inputs", inputs.len());
    } else {
        eprintln!("batch: shard {shard} (from {source}) takes inputs {}..{} of {} ({} frames)", range.start + 1, range.end, inputs.len(), range.len());
    }
    let frames: Vec<Frame> = inputs[range.clone()]
        .iter()
        .zip(&outputs[range.clone()])
        .zip(steps(&outputs[range.clone()]))
        .map(|((i, o), step)| Frame { input: i.clone(), output: o.clone(), step, warm_up: false })
        .collect();
    let Some(first) = frames.iter().find(|f| f.step == Step::Run).map(|f| f.input.clone()) else {
        eprintln!("batch: nothing to do: all {} outputs of this shard exist", frames.len());
        return Ok(());
    };
    // The warm-up frames matter only to a chain that starts in this run: when the block's first
    // frame was written by an earlier run, the chain continues from that file instead. They are
    // always optimised here from --init, never read from the other shard's outputs, so a
    // shard's results do not depend on how far the shard before it had got.
    let warm_up = if a.temporal_init && frames[0].step == Step::Run { warm_up_range(&range, a.temporal_overlap) } else { 0..0 };
    if !warm_up.is_empty() {
        eprintln!("batch: --temporal-overlap: first optimising inputs {}..{} (not written) to warm the chain", warm_up.start + 1, warm_up.end);
    }
    let frames: Vec<Frame> = inputs[warm_up.clone()]
        .iter()
        .zip(&outputs[warm_up])
        .map(|(i, o)| Frame { input: i.clone(), output: o.clone(), step: Step::Run, warm_up: true })
        .chain(frames)
        .collect();
    // `plan` checks every style option with the first frame to run as the content image. Its
    // output path only has to pass the format check in an existing folder: nothing is written
    // there (the frames' outputs come from `outputs`, their folders are made below).
    style.content_image = Some(first);
    style.output_image = PathBuf::from(format!("batch-frame.{ext}"));
    style.save_iter = 0;
    let temporal = a.temporal_init;
    let plan = plan_with(style, false)?;
    // The outputs to write need writable folders; missing folders are made only once the
    // existing ones passed.
    let (ready, missing): (Vec<_>, Vec<_>) = frames
        .iter()
        .filter(|f| f.step == Step::Run && !f.warm_up)
        .map(|f| ("--output", f.output.clone()))
        .partition(|(_, o)| o.parent().map_or(true, |d| d.as_os_str().is_empty() || d.is_dir()));
    check_writable(&ready)?;
    for (_, o) in &missing {
        if let Some(dir) = o.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the output folder", dir.display()))?;
        }
    }
    check_writable(&missing)?;
    note_model(&plan);
    let server = start_server(&plan, &a.serve, "batch", frames.len(), a.output.display().to_string())?;
    let started = SystemTime::now();
    let result = match plan.device {
        Device::Cpu(p) => run(&CpuBackend::with_precision(p), &plan, &frames, temporal, server.as_ref()),
        Device::Cuda(precision) => cuda::CudaBackend::new(0, precision).map_err(Into::into).and_then(|b| run(&b, &plan, &frames, temporal, server.as_ref())),
    };
    let (result, summary) = match result {
        Ok(summary) => (Ok(()), summary),
        Err(e) => (Err(e), String::new()),
    };
    if let Some(server) = &server {
        finish_server(server, &result, None, started, summary);
    }
    result
}

/// Where the previous frame's result is, for --temporal-init.
enum Previous {
    None,
    /// Computed in this run (preprocessed floats).
    Memory(Image),
    /// Written by an earlier run (skipped now).
    File(PathBuf),
}

/// Stylises the shard's frames; the summary line it printed.
fn run<B: Backend>(backend: &B, plan: &Plan, frames: &[Frame], temporal: bool, server: Option<&Serve>) -> Result<String> {
    let base = Job { snapshot_every: server.map_or(0, |s| s.snapshot_every(0)), snapshot_gate: server.and_then(Serve::snapshot_gate), ..job(plan) };
    let image_size = plan.content.w.max(plan.content.h);
    let sizes = plan.scales.clone().unwrap_or_else(|| vec![(image_size, plan.iterations)]);
    let random = matches!(plan.init, Init::Random);
    let pre = |img: &Rgb8| Image { h: img.h, w: img.w, data: plan.convention.preprocess(&img.data) };
    eprintln!("stylising on {} with {}, {} iterations per frame", backend.name(), super::stylize::model_label(plan), plan.iterations);
    if let Some(scales) = &plan.scales {
        eprintln!("{}", super::multiscale::describe(scales));
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(frames.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} frames {msg} [{elapsed_precise}, eta {eta}]").expect("valid template").progress_chars("=> "),
        );
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    };
    let (mut objectives, mut built_for): (Option<MultiScale<B>>, (usize, usize)) = (None, (0, 0));
    let (mut done, mut skipped, mut rebuilt, mut warmed) = (0, 0, 0, 0);
    let mut previous = Previous::None;
    let warm_ups = frames.iter().filter(|f| f.warm_up).count();
    for (k, f) in frames.iter().enumerate() {
        let name = f.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tag = if f.warm_up { format!("[warm-up {}/{warm_ups}] {name}", k + 1) } else { format!("[{}/{}] {name}", k + 1 - warm_ups, frames.len() - warm_ups) };
        if f.step == Step::Skip {
            say(format!("{tag}: skipped, {} exists", f.output.display()));
            skipped += 1;
            if let Some(server) = server {
                server.batch_frame(k - warm_ups, &name, &f.output.display().to_string(), None, done, skipped, frames.len() - warm_ups);
            }
            previous = Previous::File(f.output.clone());
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            continue;
        }
        let fit = |(w, h)| image_io::fit_size(w, h, image_size);
        let (content, source) = image_io::load_for(&f.input, fit)?;
        let content = image_io::resize_exact(content, fit(source));
        let scales = scales_from(&content, &plan.styles, plan.convention, &sizes);
        match objectives.as_mut() {
            Some(o) if built_for == (content.w, content.h) => o.set_content(&scales.iter().map(|s| s.content.clone()).collect::<Vec<_>>())?,
            _ => {
                objectives = Some(MultiScale::new(backend, &plan.vgg, &plan.spec, &scales).with_context(|| f.input.display().to_string())?);
                built_for = (content.w, content.h);
                rebuilt += 1;
            }
        }
        let from_previous = match (&previous, temporal) {
            (Previous::Memory(img), true) => Some((resize_image(img, content.h, content.w), "the previous result")),
            (Previous::File(p), true) => Some((pre(&image_io::resize_exact(image_io::load_for(p, |_| (content.w, content.h))?.0, (content.w, content.h))), "the previous output file")),
            _ => None,
        };
        let (init, init_from) = match from_previous {
            Some((img, from)) => (Init::Image(img.data), from),
            None if random => (Init::Random, "noise"),
            None => (Init::Image(pre(&content).data), "the content image"),
        };
        let frame_job = Job { content: pre(&content), styles: Vec::new(), init, ..base.clone() };
        if let Some(server) = server {
            server.begin_run(k, &tag);
            server.set_deprocess(frame_deprocess(plan, &content));
        }
        let started = Instant::now();
        let mut observer = |p: &Progress, snapshot: Option<&[f32]>| -> Result<()> {
            if let Some(bar) = &bar {
                bar.set_message(format!("{name}: iteration {}/{}, loss {:.4e}", p.iteration, plan.iterations, p.loss.total));
            }
            if let Some(server) = server {
                server.progress(p, snapshot);
            }
            // SIGINT / SIGTERM: stop this frame at once; a rerun skips the frames already written.
            neural_style::interrupt::check()?;
            Ok(())
        };
        let out = objectives.as_mut().expect("built above").run(backend, &frame_job, &mut observer)?;
        if f.warm_up {
            say(format!("{tag}: warmed the chain (from {init_from}, not written) after {} evaluations in {:.1} s", out.evaluations, started.elapsed().as_secs_f64()));
            warmed += 1;
            previous = Previous::Memory(Image { h: out.h, w: out.w, data: out.image });
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            continue;
        }
        let provenance = super::settings::with_content(&plan.provenance, &f.input);
        let written = save_result(plan, &content, &out.image, (out.w, out.h), &f.output, &provenance)?;
        say(format!(
            "{tag}: wrote {} ({}x{}, from {init_from}) after {} evaluations in {:.1} s; loss {:.4e}",
            f.output.display(),
            out.w,
            out.h,
            out.evaluations,
            started.elapsed().as_secs_f64(),
            out.loss.total
        ));
        done += 1;
        if let Some(server) = server {
            server.batch_frame(k - warm_ups, &name, &f.output.display().to_string(), Some(&written), done, skipped, frames.len() - warm_ups);
        }
        previous = Previous::Memory(Image { h: out.h, w: out.w, data: out.image });
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let warm_note = if warmed > 0 { format!(", {warmed} optimised only to warm the chain (--temporal-overlap)") } else { String::new() };
    let summary = format!("batch: {done} stylised, {skipped} skipped (output already present){warm_note}; style targets computed {rebuilt} time(s)");
    eprintln!("{summary}");
    Ok(summary)
}
