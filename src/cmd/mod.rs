//! One module per command, over the library's `stylize` / `Objective`; main.rs only dispatches.
//! Checks shared by the commands live here.

pub mod batch;
pub mod bench;
pub mod examples;
pub mod fetch;
pub mod presets;
pub mod settings;
pub mod multiscale;
pub mod stylize;

use crate::cli::{self, DeviceArg};
use anyhow::{bail, ensure, Result};
use neural_style::model::{Layer, Vgg};
use neural_style::{cuda, Precision};

#[derive(Clone, Copy, Debug)]
pub enum Device {
    Cpu,
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
