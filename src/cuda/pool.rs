//! 2x2 stride-2 pooling and the ReLU's backward on the GPU: the launches of kernels/pool.cu and
//! kernels/relu.cu.  Mirrors src/cpu/pool.rs.

use super::launch::grid_1d;
use super::{i32_of, CudaBackend};
use crate::backend::{PoolKind, PoolShape};
use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, PushKernelArg};

pub(super) fn relu_bwd(gpu: &CudaBackend, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(y.len() == dy.len(), "relu_bwd: lengths differ");
    let (n, cfg) = (i32_of(dy.len(), "n")?, grid_1d(dy.len()));
    let mut l = gpu.stream.launch_builder(&gpu.k.relu_bwd);
    l.arg(y).arg(dy).arg(&n);
    gpu.launch(&mut l, "relu_bwd", cfg, || format!("n {n}"))?;
    Ok(())
}

pub(super) fn pool_fwd(gpu: &CudaBackend, kind: PoolKind, s: PoolShape, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
    let PoolShape { h, w, c } = s;
    let out = s.out_h() * s.out_w() * c;
    ensure!(x.len() >= h * w * c && y.len() >= out, "pool_fwd: buffer sizes do not match {s:?}");
    let (hh, ww, cc, max_pool) = (i32_of(h, "h")?, i32_of(w, "w")?, i32_of(c, "c")?, (kind == PoolKind::Max) as i32);
    i32_of(h * w * c, "pool input size")?;
    if out == 0 {
        return Ok(());
    }
    let mut l = gpu.stream.launch_builder(&gpu.k.pool_fwd);
    l.arg(x).arg(y).arg(&hh).arg(&ww).arg(&cc).arg(&max_pool);
    gpu.launch(&mut l, "pool_fwd", grid_1d(out), || format!("{kind:?} {s:?}"))?;
    Ok(())
}

pub(super) fn pool_bwd(gpu: &CudaBackend, kind: PoolKind, s: PoolShape, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
    let PoolShape { h, w, c } = s;
    ensure!(x.len() >= h * w * c && dx.len() >= h * w * c && dy.len() >= s.out_h() * s.out_w() * c, "pool_bwd: buffer sizes do not match {s:?}");
    let (hh, ww, cc, max_pool) = (i32_of(h, "h")?, i32_of(w, "w")?, i32_of(c, "c")?, (kind == PoolKind::Max) as i32);
    i32_of(h * w * c, "pool input size")?;
    let mut l = gpu.stream.launch_builder(&gpu.k.pool_bwd);
    l.arg(x).arg(dy).arg(dx).arg(&hh).arg(&ww).arg(&cc).arg(&max_pool);
    gpu.launch(&mut l, "pool_bwd", grid_1d(h * w * c), || format!("{kind:?} {s:?}"))?;
    Ok(())
}
