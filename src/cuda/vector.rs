//! Vector ops for the optimisers on the GPU: the launches of kernels/vector.cu (the reductions
//! two-stage, atomic-free).  Mirrors src/cpu/vector.rs.

use super::launch::{grid_1d, reduce_blocks, THREADS};
use super::{i32_of, CudaBackend};
use crate::backend::{scales, AdamStep, PixelBox};
use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

pub(super) fn fill(gpu: &CudaBackend, x: &mut CudaSlice<f32>, value: f32) -> Result<()> {
    let n = i32_of(x.len(), "n")?;
    let cfg = grid_1d(x.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.fill);
    l.arg(x).arg(&n).arg(&value);
    gpu.launch(&mut l, "fill", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn dot(gpu: &CudaBackend, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<f64> {
    ensure!(a.len() == b.len(), "dot: lengths differ");
    let (n, blocks) = (i32_of(a.len(), "n")?, reduce_blocks(a.len()));
    let mut l = gpu.stream.launch_builder(&gpu.k.dot_partial);
    l.arg(a).arg(b).arg(&n).arg(&gpu.partials);
    gpu.launch(&mut l, "dot_partial", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("n {n}"))?;
    gpu.finish_sum(blocks)
}

pub(super) fn asum(gpu: &CudaBackend, x: &CudaSlice<f32>) -> Result<f64> {
    let (n, blocks) = (i32_of(x.len(), "n")?, reduce_blocks(x.len()));
    let mut l = gpu.stream.launch_builder(&gpu.k.asum_partial);
    l.arg(x).arg(&n).arg(&gpu.partials);
    gpu.launch(&mut l, "asum_partial", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("n {n}"))?;
    gpu.finish_sum(blocks)
}

pub(super) fn amax(gpu: &CudaBackend, x: &CudaSlice<f32>) -> Result<f64> {
    let (n, blocks) = (i32_of(x.len(), "n")?, reduce_blocks(x.len()));
    let mut l = gpu.stream.launch_builder(&gpu.k.amax_partial);
    l.arg(x).arg(&n).arg(&gpu.partials);
    gpu.launch(&mut l, "amax_partial", LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }, || format!("n {n}"))?;
    gpu.finish(&gpu.k.reduce_partials_max, blocks)
}

pub(super) fn axpy(gpu: &CudaBackend, alpha: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(x.len() == y.len(), "axpy: lengths differ");
    let n = i32_of(y.len(), "n")?;
    let cfg = grid_1d(y.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.axpy);
    l.arg(&alpha).arg(x).arg(y).arg(&n);
    gpu.launch(&mut l, "axpy", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn scale(gpu: &CudaBackend, alpha: f32, x: &mut CudaSlice<f32>) -> Result<()> {
    let n = i32_of(x.len(), "n")?;
    let cfg = grid_1d(x.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.scale);
    l.arg(&alpha).arg(x).arg(&n);
    gpu.launch(&mut l, "scale", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn adam_step(gpu: &CudaBackend, s: AdamStep, param: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(param.len() == grad.len() && m.len() == grad.len() && v.len() == grad.len(), "adam_step: lengths differ");
    // The bias corrections in f32 on the host, shared with src/cpu/vector.rs.
    let scales::AdamFactors { step, bc2_sqrt } = s.factors();
    let n = i32_of(grad.len(), "n")?;
    let cfg = grid_1d(grad.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.adam_step);
    l.arg(param).arg(grad).arg(m).arg(v).arg(&n).arg(&s.beta1).arg(&s.beta2).arg(&s.eps).arg(&step).arg(&bc2_sqrt);
    gpu.launch(&mut l, "adam_step", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn project_to_box(gpu: &CudaBackend, bx: &PixelBox, x: &mut CudaSlice<f32>) -> Result<()> {
    let n = i32_of(x.len(), "n")?;
    let cfg = grid_1d(x.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.project_to_box);
    l.arg(x).arg(&n).arg(&bx.lo[0]).arg(&bx.lo[1]).arg(&bx.lo[2]).arg(&bx.hi[0]).arg(&bx.hi[1]).arg(&bx.hi[2]);
    gpu.launch(&mut l, "project_to_box", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn zero_outward(gpu: &CudaBackend, bx: &PixelBox, x: &CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(x.len() == v.len(), "zero_outward: lengths differ");
    let n = i32_of(v.len(), "n")?;
    let cfg = grid_1d(v.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.zero_outward);
    l.arg(x).arg(v).arg(&n).arg(&bx.lo[0]).arg(&bx.lo[1]).arg(&bx.lo[2]).arg(&bx.hi[0]).arg(&bx.hi[1]).arg(&bx.hi[2]);
    gpu.launch(&mut l, "zero_outward", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn hold_at_bounds(gpu: &CudaBackend, bx: &PixelBox, x: &CudaSlice<f32>, g: &CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(x.len() == v.len() && g.len() == v.len(), "hold_at_bounds: lengths differ");
    let n = i32_of(v.len(), "n")?;
    let cfg = grid_1d(v.len());
    let mut l = gpu.stream.launch_builder(&gpu.k.hold_at_bounds);
    l.arg(x).arg(g).arg(v).arg(&n).arg(&bx.lo[0]).arg(&bx.lo[1]).arg(&bx.lo[2]).arg(&bx.hi[0]).arg(&bx.hi[1]).arg(&bx.hi[2]);
    gpu.launch(&mut l, "hold_at_bounds", cfg, || format!("n {n}"))?;
    Ok(())
}
