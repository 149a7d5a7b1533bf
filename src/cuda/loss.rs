//! Content, style and total-variation losses with their gradients on the GPU: the launches of
//! kernels/loss.cu, each a two-stage reduction.  Mirrors src/cpu/loss.rs.

use super::launch::{reduce_blocks, THREADS};
use super::{i32_of, CudaBackend};
use crate::backend::scales;
use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

pub(super) fn content_loss_acc(gpu: &CudaBackend, weight: f32, f: &CudaSlice<f32>, p: &CudaSlice<f32>, df: &mut CudaSlice<f32>) -> Result<f64> {
    ensure!(f.len() == p.len() && f.len() == df.len(), "content_loss_acc: lengths differ");
    let n = f.len();
    let (n_i, g) = (i32_of(n, "n")?, scales::mean_sq_grad_scale(weight, n));
    let blocks = reduce_blocks(n);
    let mut l = gpu.stream.launch_builder(&gpu.k.content_loss_acc);
    l.arg(f).arg(p).arg(df).arg(&n_i).arg(&g).arg(&gpu.partials);
    gpu.launch(&mut l, "content_loss_acc", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("n {n}"))?;
    let sum = gpu.finish_sum(blocks)?;
    Ok(scales::mean_sq_loss(weight, sum, n))
}

pub(super) fn style_loss(gpu: &CudaBackend, weight: f32, g: &CudaSlice<f32>, a: &CudaSlice<f32>, dg: &mut CudaSlice<f32>) -> Result<f64> {
    ensure!(g.len() == a.len() && g.len() == dg.len(), "style_loss: lengths differ");
    let n = g.len();
    let (n_i, k) = (i32_of(n, "n")?, scales::mean_sq_grad_scale(weight, n));
    let blocks = reduce_blocks(n);
    let mut l = gpu.stream.launch_builder(&gpu.k.style_loss);
    l.arg(g).arg(a).arg(dg).arg(&n_i).arg(&k).arg(&gpu.partials);
    gpu.launch(&mut l, "style_loss", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("n {n}"))?;
    let sum = gpu.finish_sum(blocks)?;
    Ok(scales::mean_sq_loss(weight, sum, n))
}

pub(super) fn tv_loss_acc(gpu: &CudaBackend, weight: f32, h: usize, w: usize, c: usize, x: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<f64> {
    ensure!(x.len() >= h * w * c && dx.len() >= h * w * c, "tv_loss_acc: buffer sizes do not match ({h}, {w}, {c})");
    let (hh, ww, cc, k) = (i32_of(h, "h")?, i32_of(w, "w")?, i32_of(c, "c")?, scales::tv_grad_scale(weight));
    i32_of(h * w * c, "image size")?;
    let blocks = reduce_blocks(h * w * c);
    let mut l = gpu.stream.launch_builder(&gpu.k.tv_loss_acc);
    l.arg(x).arg(dx).arg(&hh).arg(&ww).arg(&cc).arg(&k).arg(&gpu.partials);
    gpu.launch(&mut l, "tv_loss_acc", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("({h}, {w}, {c})"))?;
    let sum = gpu.finish_sum(blocks)?;
    Ok(scales::weighted_sum(weight, sum))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn tv_pow_loss_acc(gpu: &CudaBackend, weight: f32, power: f32, h: usize, w: usize, c: usize, x: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<f64> {
    ensure!(x.len() >= h * w * c && dx.len() >= h * w * c, "tv_pow_loss_acc: buffer sizes do not match ({h}, {w}, {c})");
    let (hh, ww, cc) = (i32_of(h, "h")?, i32_of(w, "w")?, i32_of(c, "c")?);
    i32_of(h * w * c, "image size")?;
    let blocks = reduce_blocks(h * w * c);
    let mut l = gpu.stream.launch_builder(&gpu.k.tv_pow_loss_acc);
    l.arg(x).arg(dx).arg(&hh).arg(&ww).arg(&cc).arg(&weight).arg(&power).arg(&gpu.partials);
    gpu.launch(&mut l, "tv_pow_loss_acc", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("({h}, {w}, {c}), power {power}"))?;
    let sum = gpu.finish_sum(blocks)?;
    Ok(scales::weighted_sum(weight, sum))
}
