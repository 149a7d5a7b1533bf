//! One module per command, over the library's `stylize` / `Objective`; main.rs only dispatches.
//! Checks shared by the commands live here.

pub mod batch;
pub mod bench;
pub mod examples;
pub mod fetch;
pub mod presets;
pub mod serve;
pub mod settings;
pub mod multiscale;
pub mod sheet;
pub mod stylize;

use crate::cli::{self, DeviceArg, StyleArgs};
use anyhow::{anyhow, bail, ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use neural_style::image_io::{self, OutFormat};
use neural_style::model::{Layer, Vgg};
use neural_style::{cuda, Precision};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;

/// A malformed command line found after parsing (a required flag that no layer of the settings
/// gave): main exits with 2, as for clap's own errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
pub enum Device {
    /// The precision the CPU computes in: Fp32, or Bf16 where the CPU has AVX512_BF16.
    Cpu(Precision),
    Cuda(Precision),
}


pub fn check_weight(name: &str, v: f32) -> Result<()> {
    ensure!(v.is_finite() && v >= 0.0, "--{name} must be a finite number >= 0 (got {v})");
    Ok(())
}

pub fn positive(name: &str, v: i64) -> Result<usize> {
    ensure!(v >= 1, "--{name} must be at least 1 (got {v})");
    Ok(v as usize)
}

/// The most iterations a run may ask for: far beyond any real run (a billion evaluations take
/// days even at 64 px), while the loss history of that many still fits in memory.
pub const MAX_ITERATIONS: usize = 1_000_000_000;

/// An iteration count (`--num-iterations`, `--scale-iterations`): 1 to `MAX_ITERATIONS`.
pub fn iteration_count(name: &str, v: i64) -> Result<usize> {
    let n = positive(name, v)?;
    ensure!(n <= MAX_ITERATIONS, "--{name} must be at most {MAX_ITERATIONS} (got {v})");
    Ok(n)
}

/// The longest side of any image a run works on (2^20 pixels): far beyond what any memory
/// holds (the memory check refuses much less), it keeps the size arithmetic from overflowing.
pub const MAX_SIDE: usize = 1 << 20;

/// A size in pixels (`--image-size`, `--image-height`, `--scales`): 1 to `MAX_SIDE`.
pub fn image_side(name: &str, v: i64) -> Result<usize> {
    let n = positive(name, v)?;
    ensure!(n <= MAX_SIDE, "--{name} must be at most {MAX_SIDE} pixels (got {v})");
    Ok(n)
}

pub fn non_negative(name: &str, v: i64) -> Result<usize> {
    ensure!(v >= 0, "--{name} must be 0 or more (got {v})");
    Ok(v as usize)
}

/// Layer names without empty entries (so `--content-layers ''` means none).
pub fn layer_list(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Smallest side an input needs so that every layer up to the deepest of `needed` keeps a pixel:
/// 2^(pools before it). Returns (side, pools, deepest layer).
pub fn min_side(vgg: &Vgg, needed: &[String]) -> (usize, usize, String) {
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

pub fn choose_device(device: DeviceArg, precision: Option<cli::PrecisionArg>) -> Result<Device> {
    let gpu_precision = precision.map(Precision::from).unwrap_or_default();
    match device {
        DeviceArg::Cpu => Ok(Device::Cpu(cpu_precision(precision))),
        DeviceArg::Cuda => match cuda::probe() {
            Ok(()) => Ok(say_if_emulated(Device::Cuda(gpu_precision))),
            Err(e) => bail!("--device cuda: no usable GPU: {e:#}"),
        },
        DeviceArg::Auto => match cuda::probe() {
            Ok(()) => Ok(say_if_emulated(Device::Cuda(gpu_precision))),
            Err(e) => {
                eprintln!("using the CPU: no usable GPU ({:#})", e);
                Ok(Device::Cpu(cpu_precision(precision)))
            }
        },
    }
}

/// What `--precision` means on the CPU: fp32 by default and for fp32; bf16 (bf16 operands, f32
/// accumulation) where the CPU has AVX512_BF16, else fp32 with a note; tf32, a tensor-core
/// format no CPU has, computes in fp32 with a note (its nearest CPU counterpart, and what the
/// GPU's tf32 approximates). Each note once per process (a batch chooses per frame).
fn cpu_precision(precision: Option<cli::PrecisionArg>) -> Precision {
    match precision {
        None | Some(cli::PrecisionArg::Fp32) => Precision::Fp32,
        Some(cli::PrecisionArg::Tf32) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("note: --precision tf32 has no CPU counterpart (TF32 is a GPU tensor-core format); the CPU computes in fp32"));
            Precision::Fp32
        }
        Some(cli::PrecisionArg::Bf16) if neural_style::cpu::bf16::available() => Precision::Bf16,
        Some(cli::PrecisionArg::Bf16) => {
            neural_style::cpu::bf16::note_fallback_once();
            Precision::Fp32
        }
    }
}

/// On the emulated CUDA driver (NEURAL_STYLE_CUDA_DRIVER), says so before anything else, once
/// per process (a batch chooses its device once per frame): its timings mean nothing.
fn say_if_emulated(device: Device) -> Device {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(note) = cuda::driver::emulated_note() {
        SAID.call_once(|| eprintln!("note: {note}"));
    }
    device
}

/// The files a stylisation reads, each with the option that names it (--from-png included).
pub fn input_paths(a: &StyleArgs) -> Vec<(&'static str, PathBuf)> {
    let mut v: Vec<_> = a.content_image.clone().map(|p| ("--content-image", p)).into_iter().collect();
    v.extend(a.style_image.iter().map(|p| ("--style-image", p.clone())));
    v.extend(a.init_image.clone().map(|p| ("--init-image", p)));
    v.extend(a.model.clone().map(|p| ("--model", p)));
    v.extend(a.from_png.clone().map(|p| ("--from-png", p)));
    v
}

/// Where a path points once its folder's links are resolved (None when the folder is missing).
fn resolved(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
}

/// The one check of the files a command will write, run before any work: each `(flag, path)`
/// of `outputs` is none of `inputs` nor another output (`check_not_inputs`), and can be
/// written (`check_writable`).
pub fn check_outputs(outputs: &[(&str, PathBuf)], inputs: &[(&str, PathBuf)]) -> Result<()> {
    check_not_inputs(outputs, inputs)?;
    check_writable(outputs)
}

/// No output is an input (compared once links are resolved; an output need not exist yet) or
/// another output.
pub fn check_not_inputs(outputs: &[(&str, PathBuf)], inputs: &[(&str, PathBuf)]) -> Result<()> {
    let inputs: HashMap<PathBuf, &str> = inputs.iter().filter_map(|(f, p)| Some((resolved(p)?, *f))).collect();
    let mut seen: HashMap<PathBuf, &str> = HashMap::new();
    for (flag, path) in outputs {
        let Some(me) = resolved(path) else { continue }; // in a missing folder: no input is there
        if let Some(other) = inputs.get(&me) {
            bail!("{}: {flag} must not overwrite the {other} file", path.display());
        }
        if let Some(other) = seen.insert(me, flag) {
            bail!("{}: {flag} and {other} name the same file", path.display());
        }
    }
    Ok(())
}

/// Each output's folder exists and takes a new file (a temp file is created there and
/// removed), and the output is not an existing read-only file or a folder.
pub fn check_writable(outputs: &[(&str, PathBuf)]) -> Result<()> {
    let mut probed: HashSet<PathBuf> = HashSet::new();
    for (flag, path) in outputs {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ensure!(dir.is_dir(), "{}: the {flag} folder does not exist", dir.display());
        if let Ok(m) = std::fs::metadata(path) {
            ensure!(!m.is_dir(), "{}: {flag} names a folder, not a file", path.display());
            ensure!(m.is_file(), "{}: {flag} names a FIFO, socket or device, not a regular file", path.display());
            ensure!(!m.permissions().readonly(), "{}: {flag} is a read-only file", path.display());
        }
        if probed.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())) {
            let _writing = neural_style::interrupt::writing();
            let probe = image_io::temp_path_for(&dir.join(".neural-style-write-check"));
            std::fs::File::create(&probe).map_err(|e| anyhow!("{}: the {flag} folder is not writable ({e})", dir.display()))?;
            let _ = std::fs::remove_file(&probe);
        }
    }
    Ok(())
}

/// Bytes an RGB image of `w` x `h` can take on disk at most, as this program writes it: a PNG
/// that does not compress (its bytes, a filter byte per row, chunk and zlib framing) with the
/// settings record (a few KB); a JPEG takes less.
pub fn image_file_bound(w: usize, h: usize) -> u64 {
    (w as u64 * h as u64 * 3) + h as u64 + (16 << 10)
}

/// Free bytes for an unprivileged writer on the file system holding `dir` (None where that
/// cannot be told).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Each output folder's file system has room for what the run will write there (`needs`:
/// flag, path, bytes at most), summed per file system, so that a full disk is found before the
/// run rather than after it. Where the free space cannot be told, nothing is refused: the
/// writes are atomic (a failed one leaves the previous file), so a disk that fills during the
/// run loses only the newest file.
pub fn check_free_space(needs: &[(&str, PathBuf, u64)]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut per_device: Vec<(u64, PathBuf, u64, Vec<&str>)> = Vec::new(); // (device, folder, bytes, flags)
    for (flag, path, bytes) in needs.iter().filter(|(_, _, b)| *b > 0) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let Ok(meta) = std::fs::metadata(dir) else { continue };
        match per_device.iter_mut().find(|(dev, ..)| *dev == meta.dev()) {
            Some((_, _, total, flags)) => {
                *total = total.saturating_add(*bytes);
                if !flags.contains(flag) {
                    flags.push(flag);
                }
            }
            None => per_device.push((meta.dev(), dir.to_path_buf(), *bytes, vec![flag])),
        }
    }
    for (_, dir, need, flags) in per_device {
        let Some(free) = free_bytes(&dir) else { continue };
        ensure!(
            need <= free,
            "{:?}: the file system has {} free, and {} may need up to {}: free some space or write elsewhere",
            dir,
            neural_style::memory::human_bytes(free),
            flags.join(", "),
            neural_style::memory::human_bytes(need)
        );
    }
    Ok(())
}

/// `--plot FILE.png` writes a PNG.
pub fn check_plot(a: &StyleArgs) -> Result<()> {
    let Some(plot) = &a.plot else { return Ok(()) };
    ensure!(image_io::out_format(plot).ok() == Some(OutFormat::Png), "{}: --plot writes a PNG: name it FILE.png", plot.display());
    Ok(())
}

/// A progress bar of `len` steps when stderr is a terminal; None (plain lines instead) otherwise.
pub fn progress_bar(len: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]")
            .expect("valid template")
            .progress_chars("=> "),
    );
    Some(bar)
}

/// Bytes a run of `size` needs by `memory::run_floats`'s estimate; refuses a size that cannot fit
/// in the device's memory (CPU: available memory; GPU: free device memory), naming the largest
/// that would. `optimizer_vectors`: the image-sized vectors the optimiser keeps.
pub fn check_memory(vgg: &Vgg, content_layers: &[String], style_layers: &[String], (w, h): (usize, usize), style_sizes: &[(usize, usize)], optimizer_vectors: usize, device: Device) -> Result<u64> {
    let needed: Vec<String> = content_layers.iter().chain(style_layers).cloned().collect();
    let floats = match device {
        Device::Cpu(p) => neural_style::memory::run_floats_with_weights(vgg, &needed, h, w, optimizer_vectors, |c_in, c_out| neural_style::cpu::conv_weight_floats_in(p == Precision::Bf16, c_in, c_out)),
        Device::Cuda(_) => neural_style::memory::run_floats_with_weights(vgg, &needed, h, w, optimizer_vectors, |c_in, c_out| 2 * 9 * c_in * c_out),
    };
    // (Sizes here are (w, h); the estimate's are (h, w).)
    let style_hw: Vec<(usize, usize)> = style_sizes.iter().map(|&(sw, sh)| (sh, sw)).collect();
    let mut floats = floats.with_styles(vgg, content_layers, style_layers, (h, w), &style_hw);
    if let Device::Cuda(precision) = device {
        // The scratch grows to the largest launch, for x or for a style image.
        let mut shapes = neural_style::memory::run_shapes(vgg, &needed, style_layers, h, w);
        for &(sh, sw) in &style_hw {
            let s = neural_style::memory::run_shapes(vgg, &needed, style_layers, sh, sw);
            shapes.convs.extend(s.convs);
            shapes.grams.extend(s.grams);
        }
        floats.scratch = neural_style::cuda::run_scratch_floats(0, precision, &shapes)?;
    }
    let need = floats.bytes();
    let (available, what) = match device {
        Device::Cpu(_) => (neural_style::memory::available_bytes(), "available"),
        Device::Cuda(_) => (neural_style::cuda::free_memory(0).ok().map(|(free, _)| free), "free on the GPU"),
    };
    let Some(available) = available else { return Ok(need) };
    if need > available {
        let (weights, size) = (4 * floats.weights, neural_style::memory::human_bytes);
        // What does not shrink with the image: the weights, the Grams and (taken as fixed, which
        // errs small) the scratch buffers.
        let fixed = 4 * (floats.weights + floats.grams + floats.scratch);
        let fits = if weights >= available {
            format!("the model's weights alone need {}, so no size fits", size(weights))
        } else if fixed >= available {
            format!("the weights, Grams and scratch alone need {}, so no size fits", size(fixed))
        } else {
            let side = neural_style::memory::largest_side(w.max(h), need - fixed, available - fixed);
            format!("the largest size that fits is about {side} pixels on the longer side")
        };
        bail!(
            "a {w}x{h} run needs about {} (layer outputs and their gradients {}, image and optimiser vectors {}, weights {}, Grams and scratch {}), more than the {} {what}: {fits}",
            size(need),
            size(4 * floats.feature_floats()),
            size(4 * floats.image_vectors),
            size(weights),
            size(4 * (floats.grams + floats.scratch)),
            size(available),
        );
    }
    Ok(need)
}
