//! Gram matrix and its backward pass on the GPU: the launches of kernels/gram.cu and
//! kernels/gram_mma.cu (split-K partials, then their reduce).  Mirrors src/cpu/gram.rs.

use super::launch::{gemm_launch, gram_split, gram_split_mma, grid_1d};
use super::{i32_of, CudaBackend, Gemm};
use crate::backend::scales;
use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

impl CudaBackend {
    fn tile_grid(&self, m: usize, n: usize, z: usize) -> LaunchConfig {
        gemm_launch(self.gemm, m, n, z)
    }

    fn gram_split(&self, hw: usize, c: usize) -> (usize, usize) {
        match self.gemm {
            Gemm::Wmma => gram_split(hw, c),
            Gemm::Mma => gram_split_mma(hw, c),
        }
    }
}

pub(super) fn gram(gpu: &CudaBackend, hw: usize, c: usize, f: &CudaSlice<f32>, g: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(f.len() >= hw * c && g.len() >= c * c, "gram: buffer sizes do not match hw {hw}, c {c}");
    let (hw_i, c_i) = (i32_of(hw, "hw")?, i32_of(c, "c")?);
    i32_of(hw * c, "feature size")?;
    let (splits, chunk) = gpu.gram_split(hw, c);
    let (splits_i, chunk_i) = (splits as i32, chunk as i32);
    let partials = gpu.scratch(&gpu.gram_partials, splits * c * c)?;
    let mut l = gpu.stream.launch_builder(&gpu.k.gram_partial);
    l.arg(f).arg(&*partials).arg(&hw_i).arg(&c_i).arg(&chunk_i);
    gpu.launch(&mut l, "gram_partial", gpu.tile_grid(c, c, splits), || format!("hw {hw}, c {c}, {splits} splits"))?;
    let scale = scales::gram_scale_f64(hw, c);
    let mut l = gpu.stream.launch_builder(&gpu.k.gram_reduce);
    l.arg(&*partials).arg(g).arg(&c_i).arg(&splits_i).arg(&scale);
    gpu.launch(&mut l, "gram_reduce", grid_1d(c * c), || format!("c {c}, {splits} splits"))?;
    Ok(())
}

pub(super) fn gram_bwd_acc(gpu: &CudaBackend, hw: usize, c: usize, f: &CudaSlice<f32>, dg: &CudaSlice<f32>, df: &mut CudaSlice<f32>) -> Result<()> {
    ensure!(f.len() >= hw * c && df.len() >= hw * c && dg.len() >= c * c, "gram_bwd_acc: buffer sizes do not match hw {hw}, c {c}");
    let (hw_i, c_i) = (i32_of(hw, "hw")?, i32_of(c, "c")?);
    i32_of(hw * c, "feature size")?;
    let sym = gpu.scratch(&gpu.gram_sym, c * c)?;
    let scale = scales::gram_scale_f32(hw, c);
    let mut l = gpu.stream.launch_builder(&gpu.k.gram_bwd_sym);
    l.arg(dg).arg(&*sym).arg(&c_i).arg(&scale);
    gpu.launch(&mut l, "gram_bwd_sym", grid_1d(c * c), || format!("c {c}"))?;
    let mut l = gpu.stream.launch_builder(&gpu.k.gram_bwd_acc);
    l.arg(f).arg(&*sym).arg(df).arg(&hw_i).arg(&c_i);
    gpu.launch(&mut l, "gram_bwd_acc", gpu.tile_grid(hw, c, 1), || format!("hw {hw}, c {c}"))?;
    Ok(())
}
