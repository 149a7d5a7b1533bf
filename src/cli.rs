//! Command-line options: jcjohnson/neural-style's, in kebab-case, plus a few subcommands.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

const DEFAULT_STYLE_LAYERS: &str = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1";

#[derive(Parser, Debug)]
#[command(
    name = "neural-style",
    version,
    long_version = neural_style::cuda::kernels::LONG_VERSION,
    about = "Optimisation-based neural style transfer (Gatys et al.) on the CPU or a CUDA GPU",
    long_about = "Optimisation-based neural style transfer (Gatys et al.) on the CPU or a CUDA GPU.\n\n\
        Stylise with `neural-style --content-image A --style-image B [options]`; \
        the subcommands below fetch weights, benchmark and draw the example inputs.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--serve`: the main command's, `sheet`'s, `grid`'s and `batch`'s (not in StyleArgs: it is
/// not recorded in the output's settings, since it does not change the image).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Serve a live page of the run (image, loss curves, settings, a Stop button) on IP:PORT (port 0: a free one); prints its URL, with an access token (docs/serve.md).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8787")]
    pub serve: Option<std::net::SocketAddr>,
    /// With --serve: send the page the image every N iterations [default: at most one a second].
    #[arg(long, value_name = "N", requires = "serve", value_parser = clap::value_parser!(u64).range(1..))]
    pub serve_every: Option<u64>,
    /// With --serve: keep serving the page this many seconds after the run ends.
    #[arg(long, value_name = "SECONDS", default_value = "0", requires = "serve", allow_negative_numbers = true, value_parser = seconds)]
    pub serve_linger: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download torchvision's VGG-19 weights into torch.hub's cache (checked against the sha256 prefix in the file name).
    FetchModel(FetchArgs),
    /// Time loss-and-gradient evaluations at several sizes.
    Bench(BenchArgs),
    /// Draw the README's procedural example inputs (content.png, style.png).
    MakeExamples(MakeExamplesArgs),
    /// Stylise many content images (e.g. video frames) with one style, resumable and split
    /// across machines (--shard, or a Slurm array / Kubernetes indexed job's environment).
    #[command(
        mut_arg("content_image", |a| a.required(false).hide(true)),
        mut_arg("output_image", |a| a.hide(true)),
        mut_arg("log_json", |a| a.hide(true)),
        mut_arg("init_image", |a| a.hide(true)),
        mut_arg("plot", |a| a.hide(true)),
        mut_arg("resume", |a| a.hide(true))
    )]
    Batch(BatchArgs),
    /// The paper's Figure 2 as one labelled PNG: the content image, then a style | result pair for each --style-image (each style alone, not blended).
    // Flags a sheet refuses (src/cmd/sheet.rs, `refuse`) are left out of its help.
    #[command(
        mut_arg("output_image", |a| a.default_value("sheet.png")),
        mut_arg("plot", |a| a.hide(true)),
        mut_arg("log_json", |a| a.hide(true)),
        mut_arg("resume", |a| a.hide(true)),
        mut_arg("style_blend_weights", |a| a.hide(true))
    )]
    Sheet(SheetArgs),
    /// The paper's Figure 3 as one labelled PNG: rows use the style layers relu1_1, relu1_1..relu2_1, ... (prefixes of --style-layers), columns the content/style weight ratios of --ratios.
    #[command(
        mut_arg("output_image", |a| a.default_value("grid.png")),
        mut_arg("plot", |a| a.hide(true)),
        mut_arg("log_json", |a| a.hide(true)),
        mut_arg("resume", |a| a.hide(true)),
        mut_arg("style_weight", |a| a.hide(true))
    )]
    Grid(GridArgs),
}

/// `neural-style batch`: the main command's style options, the content images as arguments and
/// an output folder or pattern instead of --content-image / --output-image.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// Content images: folders (their .png, .jpg and .jpeg files in natural order: f2 before f10) and/or image files (in the order given).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if missing; results are <input stem>.<--output-ext>), or a pattern holding {stem} and/or {index} (0-based position in the whole list, 6 digits), e.g. out/frame_{index}.jpg.
    #[arg(long, short = 'o', value_name = "DIR|PATTERN", required = true)]
    pub output: PathBuf,
    /// Extension (format) of the results in an output folder: png, jpg or jpeg.
    #[arg(long, value_name = "EXT", default_value = "png")]
    pub output_ext: String,
    /// Take share INDEX of COUNT (0-based) of the inputs: a contiguous block [INDEX*n/COUNT, (INDEX+1)*n/COUNT) [default: from $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN of $SLURM_ARRAY_TASK_COUNT, else $JOB_COMPLETION_INDEX of --shard-count / $NEURAL_STYLE_SHARD_COUNT, else all].
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<String>,
    /// Number of shards beside Kubernetes' $JOB_COMPLETION_INDEX (the Job's completions) [default: $NEURAL_STYLE_SHARD_COUNT].
    #[arg(long, value_name = "COUNT")]
    pub shard_count: Option<usize>,
    /// Start each frame from the previous frame's result (its output file when an earlier run wrote it) instead of --init.
    #[arg(long)]
    pub temporal_init: bool,
    /// With --temporal-init: each shard but the first also optimises the K frames before its block (from --init, results not written), so that its own first frame starts from a warm chain instead of restarting.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub temporal_overlap: usize,
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitArg {
    /// Gaussian noise (std 0.001) from --seed.
    Random,
    /// The content image, or --init-image when given.
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolingArg {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreprocessArg {
    /// RGB, x/255, ImageNet mean/std (torchvision weights, the embedded model).
    Torchvision,
    /// BGR, 0..255, minus the mean pixel (Caffe-converted weights).
    Caffe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU (saying why).
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecisionArg {
    Fp32,
    Tf32,
    Bf16,
}

/// Settings bundles (cmd/presets.rs); flags given on the command line win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PresetArg {
    /// jcjohnson/neural-style's defaults: Caffe convention, weights 5 / 100 / 1e-3, noise init, 512 px, 1000 iterations.
    Jcjohnson,
    /// The Keras neural_style_transfer.py example, objective and optimiser (see docs/options.md, "Presets").
    KerasExample,
    /// Gatys, Ecker and Bethge's paper: its objective (½Σ content, unnormalised Grams over 4N²M², 1/L per layer), Caffe inputs, average pooling, α/β = 1e-3.
    Gatys2015,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReductionArg {
    /// mean((F - P)²)
    Mean,
    /// Σ (F - P)²
    Sum,
    /// ½ Σ (F - P)² (the paper's)
    HalfSum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GramNormalizationArg {
    /// G = F Fᵀ / (C H W), style = mean((G - A)²)
    Chw,
    /// G = F Fᵀ, style = Σ (G - A)² / (4 · 3² · (H W)²) with the input image's H W
    KerasExample,
    /// The paper's: G = F Fᵀ, style = Σ_l (1/L) Σ (G - A)² / (4 N_l² M_l²) with each layer's channels N_l and positions M_l
    Gatys2015,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineSearchArg {
    /// A fixed step, one evaluation per iteration (torch.optim.LBFGS's default, jcjohnson's).
    None,
    /// torch.optim.LBFGS's strong-Wolfe line search.
    StrongWolfe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StyleResizeArg {
    /// Longer side = --style-scale x the content's size (jcjohnson).
    LongerSide,
    /// Exactly the content's width x height, aspect not kept (the Keras example).
    MatchContent,
}

impl From<PrecisionArg> for neural_style::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Self::Fp32,
            PrecisionArg::Tf32 => Self::Tf32,
            PrecisionArg::Bf16 => Self::Bf16,
        }
    }
}

/// A path in a comma-separated list: an empty one (`a.png,`) is refused with the likely cause.
fn file_name(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("an empty file name (a trailing or doubled comma?)".into());
    }
    Ok(PathBuf::from(s))
}

/// A whole number for an `i64` flag (the program checks its range): one too large for 64 bits,
/// or not whole, is refused naming the range rather than with Rust's parse error.
fn whole_number(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i128>() {
        Ok(v) => i64::try_from(v).map_err(|_| format!("{s} is out of range: the largest accepted is {} (2^63 - 1)", i64::MAX)),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// A number of seconds, 0 or more (fractions allowed), as a Duration: NaN, infinities, negative
/// and unrepresentable values are refused as the command-line errors they are.
fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(v).map_err(|_| format!("'{s}' is not a number of seconds from 0 to about 1.8e19"))
}

/// A `bench --sizes` entry: a size in pixels.
fn size_value(s: &str) -> Result<usize, String> {
    s.trim().parse::<usize>().map_err(|_| format!("'{s}' is not a size: give image sizes as whole numbers of pixels, e.g. 256,512"))
}

/// Stylisation options (the top-level form). Numbers are parsed as signed/floating values and
/// range-checked by the program, so that `-1` gets a message about the range, not about syntax.
#[derive(Args, Debug, Serialize)]
pub struct StyleArgs {
    /// Content image (PNG or JPEG).
    /// (Required unless --from-png gives it: checked after the settings are layered.)
    #[arg(long, value_name = "FILE")]
    pub content_image: Option<PathBuf>,
    /// Style image(s), comma-separated.
    #[arg(long, value_name = "FILE[,FILE...]", value_delimiter = ',', value_parser = file_name)]
    pub style_image: Vec<PathBuf>,
    /// Relative weight of each style image, comma-separated (default: equal).
    #[arg(long, value_name = "W[,W...]", value_delimiter = ',', allow_negative_numbers = true)]
    pub style_blend_weights: Option<Vec<f32>>,
    /// Output file; .png, .jpg or .jpeg.
    #[arg(long, value_name = "FILE", default_value = "out.png")]
    pub output_image: PathBuf,
    /// Longer side of the generated image, in pixels (style images are scaled to it too).
    #[arg(long, value_name = "PIXELS", default_value_t = 512, allow_negative_numbers = true, value_parser = whole_number)]
    pub image_size: i64,
    /// Content weight [default: 1 for torchvision inputs, 5 for Caffe inputs].
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub content_weight: Option<f32>,
    /// Style weight [default: 1e4 for torchvision inputs, 100 for Caffe inputs].
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub style_weight: Option<f32>,
    /// Total-variation weight [default: 1e-5 for torchvision inputs, 1e-3 for Caffe inputs].
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub tv_weight: Option<f32>,
    /// Iterations (one loss-and-gradient evaluation each).
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true, value_parser = whole_number)]
    pub num_iterations: i64,
    /// Starting image.
    #[arg(long, value_enum, default_value_t = InitArg::Image)]
    pub init: InitArg,
    /// Start from this image instead of the content image (with --init image); scaled to the content's size.
    #[arg(long, value_name = "FILE")]
    pub init_image: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Lbfgs)]
    pub optimizer: OptimizerArg,
    /// Adam's learning rate [default: 10 for Caffe inputs, 0.1 for torchvision inputs] (L-BFGS uses step 1, as torch.optim.LBFGS).
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    pub learning_rate: Option<f32>,
    /// L-BFGS history length.
    #[arg(long, value_name = "M", default_value_t = 100, allow_negative_numbers = true, value_parser = whole_number)]
    pub lbfgs_num_correction: i64,
    /// Print the losses every N iterations when stderr is not a terminal (0: never).
    #[arg(long, value_name = "N", default_value_t = 50, allow_negative_numbers = true, value_parser = whole_number)]
    pub print_iter: i64,
    /// Save the image every N iterations as <stem>_<N>.<ext> (0: never).
    #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true, value_parser = whole_number)]
    pub save_iter: i64,
    #[arg(long, value_enum, default_value_t = PoolingArg::Max)]
    pub pooling: PoolingArg,
    /// Content layers, comma-separated ReLU names.
    #[arg(long, value_name = "LAYERS", value_delimiter = ',', default_value = "relu4_2")]
    pub content_layers: Vec<String>,
    /// Style layers, comma-separated ReLU names.
    #[arg(long, value_name = "LAYERS", value_delimiter = ',', default_value = DEFAULT_STYLE_LAYERS)]
    pub style_layers: Vec<String>,
    /// Start from a bundle of settings; flags given explicitly still win.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Run again with the settings recorded in a PNG this program wrote (flags given explicitly win).
    #[arg(long, value_name = "FILE")]
    pub from_png: Option<PathBuf>,
    /// Height of the generated image in pixels, instead of --image-size's longer side.
    #[arg(long, value_name = "PIXELS", allow_negative_numbers = true, value_parser = whole_number)]
    pub image_height: Option<i64>,
    /// Style images are resized so their longer side is S x the generated image's longer side.
    #[arg(long, value_name = "S", default_value_t = 1.0, allow_negative_numbers = true)]
    pub style_scale: f32,
    /// How style images are resized.
    #[arg(long, value_enum, default_value_t = StyleResizeArg::LongerSide)]
    pub style_resize: StyleResizeArg,
    /// Keep the content's colours: the result's luminance with the content's chroma (YUV).
    #[arg(long)]
    pub original_colors: bool,
    /// Divide each content and style term's gradient by its L1 norm before weighting it.
    #[arg(long)]
    pub normalize_gradients: bool,
    /// How the content term reduces its squared differences.
    #[arg(long, value_enum, default_value_t = ReductionArg::Mean)]
    pub content_reduction: ReductionArg,
    /// How Gram matrices are normalised (and so what the style term measures).
    #[arg(long, value_enum, default_value_t = GramNormalizationArg::Chw)]
    pub gram_normalization: GramNormalizationArg,
    /// Total variation as Σ_{i<H-1, j<W-1} ((x[i,j]-x[i+1,j])² + (x[i,j]-x[i,j+1])²)^P (the Keras example; default: jcjohnson's squared differences).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub tv_power: Option<f32>,
    /// L-BFGS line search.
    #[arg(long, value_enum, default_value_t = LineSearchArg::None)]
    pub lbfgs_line_search: LineSearchArg,
    /// Restart L-BFGS with a fresh history every N evaluations (0: never).
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    pub lbfgs_round: i64,
    /// Optimise without bounds, as torch.optim.LBFGS and jcjohnson/neural-style do: values may leave the pixel range, and saving clamps them (default: every image the optimiser evaluates stays inside the pixel range, so the saved image is the one optimised).
    #[arg(long)]
    pub unbounded: bool,
    /// Seed of the random init and of the embedded model's weights.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    pub seed: i64,
    /// VGG weights file (.pth or .safetensors) [default: $NEURAL_STYLE_MODEL, then torch.hub's vgg19-dcbb9e9d.pth, then the embedded model].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Input convention [default: caffe for known Caffe conversions, else torchvision].
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Arithmetic of the convolutions and Grams [default: tf32 on the GPU, fp32 on the CPU]. On the CPU, bf16 needs AVX512_BF16 (else fp32, with a note) and tf32 computes in fp32.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Write one JSON line per iteration, and a summary line at the end, to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,
    /// Multi-scale: sizes (longer side) of the scales, smallest first, comma-separated, e.g. 256,512,1024; each scale starts from the previous result resized up, and the last size is the output's (it replaces --image-size). With --scale-factor: the number of scales.
    #[arg(long, value_name = "SIZES|N", value_delimiter = ',', allow_negative_numbers = true, value_parser = whole_number)]
    pub scales: Option<Vec<i64>>,
    /// With --scales N: each scale is F times the previous one, the last being --image-size.
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub scale_factor: Option<f64>,
    /// Iterations at each scale, comma-separated, one per scale [default: --num-iterations at each].
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', allow_negative_numbers = true, value_parser = whole_number)]
    pub scale_iterations: Option<Vec<i64>>,
    /// Draw the loss curves (total, content, style, tv; log-scale y) against the iteration as an 800x500 PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Go on with a run that SIGINT or SIGTERM stopped, from the state it saved (<output>.resume), given the same settings: the result is the uninterrupted run's, bit for bit. The state file is deleted when the run finishes.
    #[arg(long, value_name = "STATE")]
    pub resume: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Where to download from [default: $NEURAL_STYLE_MODEL_URL, else torchvision's VGG-19].
    #[arg(long)]
    pub url: Option<String>,
    /// Where to put the file [default: $TORCH_HOME/hub/checkpoints/<file name of the URL>].
    #[arg(long, value_name = "PATH")]
    pub dest: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Image sizes (longer side), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512", allow_negative_numbers = true, value_parser = size_value)]
    pub sizes: Vec<usize>,
    /// Timed evaluations per size.
    #[arg(long, default_value_t = 10)]
    pub evals: usize,
    /// Untimed evaluations first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// As for stylize [default: tf32 on the GPU, fp32 on the CPU]; the CPU reports its kind and the instruction set used.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Print one JSON line per size instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MakeExamplesArgs {
    #[arg(long, value_name = "DIR", default_value = "examples")]
    pub out_dir: PathBuf,
    /// Width of both images (height is 2/3 of it for the content, equal for the style).
    #[arg(long, default_value_t = 384)]
    pub width: usize,
    /// Instead of drawing the inputs, compose DIR/figure.png: content | style | this result, side by side.
    #[arg(long, value_name = "RESULT")]
    pub figure: Option<PathBuf>,
    /// Where --figure writes the figure, instead of DIR/figure.png (content and style are still read from DIR).
    #[arg(long, value_name = "FILE", requires = "figure")]
    pub figure_output: Option<PathBuf>,
}

/// `sheet`: the stylisation options, with --style-image naming one style per pair.
#[derive(Args, Debug)]
pub struct SheetArgs {
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Style | result pairs per row of the sheet.
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true, value_parser = whole_number)]
    pub pairs_per_row: i64,
}

/// `grid`: the stylisation options; --style-weight is set per column from --content-weight and --ratios.
#[derive(Args, Debug)]
pub struct GridArgs {
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Content/style weight ratios (the paper's alpha/beta), one column each, comma-separated.
    #[arg(long, value_name = "R[,R...]", value_delimiter = ',', default_value = "1e-5,1e-4,1e-3,1e-2", allow_negative_numbers = true)]
    pub ratios: Vec<f64>,
}
