//! Optimisation-based neural style transfer (Gatys, Ecker, Bethge 2015/2016).
//!
//! Layout: [`backend::Backend`] is the one trait every device implements ([`cpu`] and [`cuda`]
//! mirror each other op for op); [`model`] reads VGG weights; [`network`] runs the frozen conv
//! stack; [`objective`] is the content + style + TV loss and its gradient; [`optim`] holds
//! L-BFGS and Adam over backend vector ops; [`stylize`] is the loop that ties them together.
//! Around it: [`image_io`] (files in and out), [`model::source`] (which weights), [`fetch`]
//! (downloading them) and [`procedural`] (the README's example inputs).
//! Stopping and going on: [`interrupt`] (SIGINT / SIGTERM stop a run after its current iteration)
//! and [`resume`] (the saved state of a stopped run, to continue it bit for bit).
//! Figures: [`contact`] composes contact sheets, [`plot`] draws loss curves, and [`text`] is the
//! bitmap font that labels both.

pub mod aligned_alloc;
pub mod backend;
pub mod batch;
pub mod bench;
pub mod color;
pub mod contact;
pub mod cpu;
pub mod cuda;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod image_io;
pub mod interrupt;
pub mod memory;
pub mod model;
pub mod multiscale;
pub mod network;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod preprocess;
pub mod procedural;
pub mod resume;
pub mod rng;
pub mod settings_record;
pub mod stylize;
pub mod text;

pub use backend::{Backend, ConvShape, PoolKind, PoolShape, Precision};
pub use cpu::CpuBackend;
pub use model::Vgg;
pub use objective::{GramNormalization, Image, LossParts, Objective, ObjectiveSpec, Reduction};
pub use preprocess::Convention;
pub use stylize::{optimize, optimize_from, stylize, stylize_from, Init, Job, NonFinite, Observer, Optimizer, Output, Progress, Run, SnapshotGate};
