//! 3x3 convolution on the GPU: the launches of kernels/conv3x3.cu and kernels/conv3x3_mma.cu
//! (split-K, narrow tiles, the masked conv1_1 input gradient).  Mirrors src/cpu/conv.rs.

use super::launch::{conv_launch, conv_split_k, gemm_launch, grid_1d, masked_n4_blocks, mma_conv_narrow, N4_MAX_C_IN, THREADS};
use super::{i32_of, CudaBackend, Gemm};
use crate::backend::{relu_then_conv3x3_bwd_input, ConvShape};
use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

impl CudaBackend {
    /// The conv kernel for GEMM width n: the narrow one where `conv_launch` sizes for it.
    fn conv_kernel<'a>(&self, wide: &'a CudaFunction, narrow: &'a Option<CudaFunction>, n: usize) -> &'a CudaFunction {
        match narrow {
            Some(f) if self.gemm == Gemm::Mma && mma_conv_narrow(n) => f,
            _ => wide,
        }
    }

    /// The split-K of an mma conv launch with an (m, n) output and K = k, when it splits.
    fn conv_split(&self, m: usize, n: usize, k: usize) -> Option<(usize, usize)> {
        let (splits, chunk) = conv_split_k(m, n, k, self.sm_count);
        (self.gemm == Gemm::Mma && splits > 1).then_some((splits, chunk))
    }

    /// A split-K conv: `f` (conv3x3_*_mma_splitk_*) writes the (splits, m, n) partial products of
    /// the GEMM over `a` (x or dy) and `wt` (w or w_flip) into the workspace, then
    /// conv3x3_splitk_reduce adds them in split order into y, plus the bias and the ReLU when
    /// given one (the forward pass).
    #[allow(clippy::too_many_arguments)]
    fn conv_split_launch(&self, name: &str, f: &CudaFunction, s: ConvShape, a: &CudaSlice<f32>, wt: &CudaSlice<f32>, bias: Option<&CudaSlice<f32>>, y: &mut CudaSlice<f32>, (splits, chunk): (usize, usize)) -> Result<()> {
        let ConvShape { h, w: wd, c_in, c_out } = s;
        let (m, n) = (h * wd, if bias.is_some() { c_out } else { c_in });
        let reduce = self.k.conv3x3_splitk_reduce.as_ref().ok_or_else(|| anyhow!("conv3x3_splitk_reduce is not loaded"))?;
        let (hh, ww, ci, co) = (i32_of(h, "h")?, i32_of(wd, "w")?, i32_of(c_in, "c_in")?, i32_of(c_out, "c_out")?);
        let (chunk_i, splits_i, mn, n_i) = (i32_of(chunk, "chunk")?, i32_of(splits, "splits")?, i32_of(m * n, "m n")?, i32_of(n, "n")?);
        let ws = self.scratch(&self.conv_partials, splits * m * n)?;
        let mut l = self.stream.launch_builder(f);
        l.arg(a).arg(wt).arg(&*ws).arg(&hh).arg(&ww).arg(&ci).arg(&co).arg(&chunk_i);
        self.launch(&mut l, name, gemm_launch(Gemm::Mma, m, n, splits), || format!("{s:?}, {splits} splits of {chunk} K slices"))?;
        // A null bias pointer: the backward pass has neither bias nor ReLU.
        let (null, relu) = (0u64, bias.is_some() as i32);
        let mut l = self.stream.launch_builder(reduce);
        l.arg(&*ws);
        match bias {
            Some(b) => l.arg(b),
            None => l.arg(&null),
        };
        l.arg(y).arg(&mn).arg(&n_i).arg(&splits_i).arg(&relu);
        self.launch(&mut l, "conv3x3_splitk_reduce", grid_1d(m * n), || format!("({m}, {n}), {splits} splits"))
    }
}

pub(super) fn conv3x3_fwd(gpu: &CudaBackend, s: ConvShape, x: &CudaSlice<f32>, w: &CudaSlice<f32>, b: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    ensure!(x.len() >= h * wd * c_in && w.len() >= 9 * c_in * c_out && b.len() >= c_out && y.len() >= h * wd * c_out, "conv3x3_fwd: buffer sizes do not match {s:?}");
    let (hh, ww, ci, co) = (i32_of(h, "h")?, i32_of(wd, "w")?, i32_of(c_in, "c_in")?, i32_of(c_out, "c_out")?);
    i32_of(h * wd * c_in.max(c_out), "activation size")?;
    if let (Some(split), Some(f)) = (gpu.conv_split(h * wd, c_out, 9 * c_in), &gpu.k.conv3x3_fwd_splitk) {
        return gpu.conv_split_launch("conv3x3_fwd_mma_splitk", f, s, x, w, Some(b), y, split);
    }
    let f = gpu.conv_kernel(&gpu.k.conv3x3_fwd, &gpu.k.conv3x3_fwd_narrow, c_out);
    let mut l = gpu.stream.launch_builder(f);
    l.arg(x).arg(w).arg(b).arg(y).arg(&hh).arg(&ww).arg(&ci).arg(&co);
    gpu.launch(&mut l, "conv3x3_fwd", conv_launch(gpu.gemm, h * wd, c_out), || format!("{s:?}"))?;
    Ok(())
}

pub(super) fn conv3x3_bwd_input(gpu: &CudaBackend, s: ConvShape, dy: &CudaSlice<f32>, w_flip: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    ensure!(dy.len() >= h * wd * c_out && w_flip.len() >= 9 * c_in * c_out && dx.len() >= h * wd * c_in, "conv3x3_bwd_input: buffer sizes do not match {s:?}");
    let (hh, ww, ci, co) = (i32_of(h, "h")?, i32_of(wd, "w")?, i32_of(c_in, "c_in")?, i32_of(c_out, "c_out")?);
    i32_of(h * wd * c_in.max(c_out), "activation size")?;
    // The GEMM's N is the input's channel count.
    if let (Some(split), Some(f)) = (gpu.conv_split(h * wd, c_in, 9 * c_out), &gpu.k.conv3x3_bwd_input_splitk) {
        return gpu.conv_split_launch("conv3x3_bwd_input_mma_splitk", f, s, dy, w_flip, None, dx, split);
    }
    let f = gpu.conv_kernel(&gpu.k.conv3x3_bwd_input, &gpu.k.conv3x3_bwd_input_narrow, c_in);
    let mut l = gpu.stream.launch_builder(f);
    l.arg(dy).arg(w_flip).arg(dx).arg(&hh).arg(&ww).arg(&ci).arg(&co);
    gpu.launch(&mut l, "conv3x3_bwd_input", conv_launch(gpu.gemm, h * wd, c_in), || format!("{s:?}"))?;
    Ok(())
}

pub(super) fn conv3x3_bwd_input_masked(gpu: &CudaBackend, s: ConvShape, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>, w: &CudaSlice<f32>, w_flip: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
    // conv1_1 (c_in = 3) on the mma path: one memory-bound kernel that masks dy as it reads it.
    let Some(f) = gpu.k.conv3x3_bwd_input_masked_n4.as_ref().filter(|_| s.c_in <= N4_MAX_C_IN) else {
        return relu_then_conv3x3_bwd_input(gpu, s, y, dy, w, w_flip, dx);
    };
    let ConvShape { h, w: wd, c_in, c_out } = s;
    ensure!(y.len() >= h * wd * c_out && dy.len() >= h * wd * c_out && w_flip.len() >= 9 * c_in * c_out && dx.len() >= h * wd * c_in, "conv3x3_bwd_input_masked: buffer sizes do not match {s:?}");
    let (hh, ww, ci, co) = (i32_of(h, "h")?, i32_of(wd, "w")?, i32_of(c_in, "c_in")?, i32_of(c_out, "c_out")?);
    i32_of(h * wd * c_in.max(c_out), "activation size")?;
    let cfg = LaunchConfig { grid_dim: masked_n4_blocks(h, wd), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut l = gpu.stream.launch_builder(f);
    l.arg(y).arg(&*dy).arg(w_flip).arg(dx).arg(&hh).arg(&ww).arg(&ci).arg(&co);
    gpu.launch(&mut l, "conv3x3_bwd_input_masked_n4", cfg, || format!("{s:?}"))
}
