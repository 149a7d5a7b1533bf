//! Command-line options: jcjohnson/neural-style's, in kebab-case, plus a few subcommands.

use clap::{Args, Parser, Subcommand, ValueEnum};
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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download torchvision's VGG-19 weights into torch.hub's cache (checked against the sha256 prefix in the file name).
    FetchModel(FetchArgs),
    /// Time loss-and-gradient evaluations at several sizes.
    Bench(BenchArgs),
    /// Draw the README's procedural example inputs (content.png, style.png).
    MakeExamples(MakeExamplesArgs),
    /// The paper's Figure 2 as one labelled PNG: the content image, then a style | result pair for each --style-image (each style alone, not blended).
    #[command(mut_arg("output_image", |a| a.default_value("sheet.png")))]
    Sheet(SheetArgs),
    /// The paper's Figure 3 as one labelled PNG: rows use the style layers relu1_1, relu1_1..relu2_1, ... (prefixes of --style-layers), columns the content/style weight ratios of --ratios.
    #[command(mut_arg("output_image", |a| a.default_value("grid.png")))]
    Grid(GridArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// Gaussian noise (std 0.001) from --seed.
    Random,
    /// The content image, or --init-image when given.
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreprocessArg {
    /// RGB, x/255, ImageNet mean/std (torchvision weights, the embedded model).
    Torchvision,
    /// BGR, 0..255, minus the mean pixel (Caffe-converted weights).
    Caffe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU (saying why).
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Tf32,
    Bf16,
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

/// Stylisation options (the top-level form). Numbers are parsed as signed/floating values and
/// range-checked by the program, so that `-1` gets a message about the range, not about syntax.
#[derive(Args, Debug)]
pub struct StyleArgs {
    /// Content image (PNG or JPEG).
    #[arg(long, value_name = "FILE", required = true)]
    pub content_image: Option<PathBuf>,
    /// Style image(s), comma-separated.
    #[arg(long, value_name = "FILE[,FILE...]", value_delimiter = ',', required = true)]
    pub style_image: Vec<PathBuf>,
    /// Relative weight of each style image, comma-separated (default: equal).
    #[arg(long, value_name = "W[,W...]", value_delimiter = ',', allow_negative_numbers = true)]
    pub style_blend_weights: Option<Vec<f32>>,
    /// Output file; .png, .jpg or .jpeg.
    #[arg(long, value_name = "FILE", default_value = "out.png")]
    pub output_image: PathBuf,
    /// Longer side of the generated image, in pixels (style images are scaled to it too).
    #[arg(long, value_name = "PIXELS", default_value_t = 512, allow_negative_numbers = true)]
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
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true)]
    pub num_iterations: i64,
    /// Starting image.
    #[arg(long, value_enum, default_value_t = InitArg::Image)]
    pub init: InitArg,
    /// Start from this image instead of the content image (with --init image); scaled to the content's size.
    #[arg(long, value_name = "FILE")]
    pub init_image: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Lbfgs)]
    pub optimizer: OptimizerArg,
    /// Adam's learning rate (L-BFGS uses step 1, as torch.optim.LBFGS).
    #[arg(long, value_name = "LR", default_value_t = 1e1, allow_negative_numbers = true)]
    pub learning_rate: f32,
    /// L-BFGS history length.
    #[arg(long, value_name = "M", default_value_t = 100, allow_negative_numbers = true)]
    pub lbfgs_num_correction: i64,
    /// Print the losses every N iterations when stderr is not a terminal (0: never).
    #[arg(long, value_name = "N", default_value_t = 50, allow_negative_numbers = true)]
    pub print_iter: i64,
    /// Save the image every N iterations as <stem>_<N>.<ext> (0: never).
    #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true)]
    pub save_iter: i64,
    #[arg(long, value_enum, default_value_t = PoolingArg::Max)]
    pub pooling: PoolingArg,
    /// Content layers, comma-separated ReLU names.
    #[arg(long, value_name = "LAYERS", value_delimiter = ',', default_value = "relu4_2")]
    pub content_layers: Vec<String>,
    /// Style layers, comma-separated ReLU names.
    #[arg(long, value_name = "LAYERS", value_delimiter = ',', default_value = DEFAULT_STYLE_LAYERS)]
    pub style_layers: Vec<String>,
    /// Seed of the random init and of the embedded model's weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// VGG weights file (.pth or .safetensors) [default: $NEURAL_STYLE_MODEL, then torch.hub's vgg19-dcbb9e9d.pth, then the embedded model].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Input convention [default: caffe for known Caffe conversions, else torchvision].
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// GPU arithmetic for convolutions and Grams (the CPU computes in fp32).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Write one JSON line per iteration, and a summary line at the end, to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,
    /// Draw the loss curves (total, content, style, tv; log-scale y) against the iteration as an 800x500 PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
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
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    pub sizes: Vec<usize>,
    /// Timed evaluations per size.
    #[arg(long, default_value_t = 10)]
    pub evals: usize,
    /// Untimed evaluations first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Tf32)]
    pub precision: PrecisionArg,
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
}

/// `sheet`: the stylisation options, with --style-image naming one style per pair.
#[derive(Args, Debug)]
pub struct SheetArgs {
    #[command(flatten)]
    pub style: StyleArgs,
    /// Style | result pairs per row of the sheet.
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true)]
    pub pairs_per_row: i64,
}

/// `grid`: the stylisation options; --style-weight is set per column from --content-weight and --ratios.
#[derive(Args, Debug)]
pub struct GridArgs {
    #[command(flatten)]
    pub style: StyleArgs,
    /// Content/style weight ratios (the paper's alpha/beta), one column each, comma-separated.
    #[arg(long, value_name = "R[,R...]", value_delimiter = ',', default_value = "1e-5,1e-4,1e-3,1e-2", allow_negative_numbers = true)]
    pub ratios: Vec<f64>,
}
