//! The CUDA backend: kernels/*.cu compiled to PTX by build.rs, loaded through cudarc's driver API
//! (dynamic loading: a binary built without CUDA runs anywhere and finds libcuda at run time).
//!
//! Launch code only: one function per op, in the file of its CPU twin (conv.rs, gram.rs, loss.rs,
//! pool.rs, vector.rs, as in src/cpu/), each a thin wrapper that checks lengths, picks a grid
//! (launch.rs) and launches the kernel of the same name (loaded by load.rs); the Backend impl
//! below delegates to them in the order of src/cpu/mod.rs. Every op runs on one stream, in order;
//! the reductions (losses, dot, asum, amax) are two-stage and atomic-free, so the same inputs give
//! the same bits on every run. Loss values come back as one f64 download.

pub mod driver;
mod conv;
mod gram;
mod launch;
mod load;
mod loss;
mod pool;
mod vector;

use crate::backend::{AdamStep, Backend, ConvShape, OutOfDeviceMemory, PixelBox, PoolKind, PoolShape, Precision};
use anyhow::{anyhow, bail, ensure, Result};
use cudarc::driver::sys::cudaError_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchArgs, LaunchConfig, PushKernelArg};
use launch::{MAX_PARTIALS, THREADS};
use load::Kernels;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use launch::{blocks_1d, conv_launch, conv_split_k, gemm_launch, gram_split, gram_split_mma, masked_n4_blocks, mma_conv_narrow, mma_tile_blocks, reduce_blocks, scratch_floats, tile_blocks};
pub use load::{kernels, pick_image, KernelImage};
pub use kernels::{KernelImages, KERNELS_BUILT, KERNELS_BUILT_WITH};

/// (free, total) bytes of GPU `ordinal`'s memory now.
pub fn free_memory(ordinal: usize) -> Result<(u64, u64)> {
    context_memory(&open_context(ordinal)?, ordinal)
}

/// The scratch floats (`launch::scratch_floats`) a run of these shapes in `precision` reaches on
/// GPU `ordinal`, with the GEMM loop NEURAL_STYLE_CUDA_GEMM chooses and that GPU's SM count.
pub fn run_scratch_floats(ordinal: usize, precision: Precision, shapes: &crate::memory::RunShapes) -> Result<u64> {
    let gemm = Gemm::from_env()?.for_precision(precision);
    let sms = sm_count(&open_context(ordinal)?, ordinal)?;
    Ok(scratch_floats(gemm, sms, &shapes.convs, &shapes.grams))
}

/// The SM count of the GPU behind `ctx`.
fn sm_count(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<usize> {
    let n = ctx
        .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| anyhow!("reading GPU {ordinal}'s SM count failed: {e}"))?;
    Ok(n.max(1) as usize)
}

/// GPU `ordinal`'s (primary) context; a clean error, never a panic, when the driver refuses.
fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    driver::select()?;
    std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| anyhow!("creating a CUDA context panicked (driver library too old for this build?)"))?
        .map_err(|e| anyhow!("creating a CUDA context on GPU {ordinal} failed: {e}"))
}

/// (free, total) bytes of the device behind `ctx`.
fn context_memory(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<(u64, u64)> {
    let (free, total) = ctx.mem_get_info().map_err(|e| anyhow!("reading GPU {ordinal}'s free memory failed: {e}"))?;
    Ok((free as u64, total as u64))
}

/// A fault of an earlier kernel, reported by the download or synchronisation that found it.
fn running_error(e: DriverError) -> anyhow::Error {
    anyhow!("a CUDA kernel failed while running: {e} (run with NEURAL_STYLE_SYNC_LAUNCHES=1 to name it)")
}

/// Which GEMM main loop the convolution and Gram kernels run: `NEURAL_STYLE_CUDA_GEMM=wmma|mma`.
///   - `Wmma` (default): kernels/tile_mma.cuh, 64x64 tiles, 4 warps, WMMA (plain FFMA for fp32);
///     the readable reference, and the only one for fp32.
///   - `Mma`: kernels/tile_mma_sync.cuh, 128x128x32 tiles (128x64 for conv GEMMs with N <= 64),
///     8 warps, a 3-stage cp.async pipeline, swizzled shared memory, ldmatrix/LDS + mma.sync
///     (m16n8k8 tf32, m16n8k16 bf16); tf32 and bf16.
/// The default stays `Wmma` until a GPU run has verified `Mma` (docs/GPU.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    Wmma,
    Mma,
}

impl Gemm {
    /// The variable's value: unset or empty -> Wmma; anything but `wmma` / `mma` is an error.
    pub fn parse(value: Option<&str>) -> Result<Gemm> {
        match value.map(str::trim) {
            None | Some("") | Some("wmma") => Ok(Gemm::Wmma),
            Some("mma") => Ok(Gemm::Mma),
            Some(other) => bail!("NEURAL_STYLE_CUDA_GEMM={other:?}: expected `wmma` (the default) or `mma`"),
        }
    }

    /// From NEURAL_STYLE_CUDA_GEMM.
    pub fn from_env() -> Result<Gemm> {
        Gemm::parse(std::env::var("NEURAL_STYLE_CUDA_GEMM").ok().as_deref())
    }

    /// The main loop that runs for `precision`: the mma.sync kernels exist for tf32 and bf16.
    pub fn for_precision(self, precision: Precision) -> Gemm {
        if self == Gemm::Mma && precision != Precision::Fp32 {
            Gemm::Mma
        } else {
            Gemm::Wmma
        }
    }

    fn name(self) -> &'static str {
        match self {
            Gemm::Wmma => "wmma",
            Gemm::Mma => "mma",
        }
    }
}

/// Why the GPU cannot be used here, or Ok if it can. Never panics: it checks that the kernels
/// were built and that libcuda can be loaded before it touches the driver.
pub fn probe() -> Result<()> {
    device_count().map(|_| ())
}

fn device_count() -> Result<usize> {
    if !KERNELS_BUILT {
        bail!(
            "this binary was built without CUDA kernels ({}). Install NVRTC and the CUDA headers with \
             .ci/install_cuda_tools.sh (pip wheels nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12, \
             nvidia-cuda-nvcc-cu12) or put nvcc on PATH, then rebuild",
            kernels::KERNELS_MISSING_REASON
        );
    }
    driver::select()?;
    // cudarc's dynamic loader panics on first use when libcuda is absent: ask first.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("no NVIDIA driver (libcuda.so) on this machine");
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| anyhow!("the CUDA driver library could not be used (a symbol is missing: driver too old?)"))?
        .map_err(|e| anyhow!("the CUDA driver failed to start: {e}"))?;
    if count < 1 {
        bail!("the CUDA driver reports no GPU");
    }
    Ok(count as usize)
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    precision: Precision,
    /// The GEMM main loop of the conv and Gram kernels (already resolved for the precision).
    gemm: Gemm,
    device_name: String,
    /// What the driver was given: the cubin it runs, or the PTX to JIT.
    kernel_image: KernelImage,
    k: Kernels,
    /// First-stage block sums of a reduction (MAX_PARTIALS).
    partials: CudaSlice<f64>,
    /// The reduced value (1), downloaded by the caller.
    result: CudaSlice<f64>,
    /// Gram split-K partial tiles (splits, c, c), grown on demand.
    gram_partials: Mutex<CudaSlice<f32>>,
    /// (dg + dgᵀ) / (c hw) of gram_bwd_acc (c, c), grown on demand.
    gram_sym: Mutex<CudaSlice<f32>>,
    /// Split-K partial products of the mma conv kernels (splits, m, n), grown on demand (at most
    /// MMA_BLOCKS_PER_SM x SMs x 128² floats: 17 MB on an H200).
    conv_partials: Mutex<CudaSlice<f32>>,
    /// The GPU's SM count, which conv_split_k fills.
    sm_count: usize,
    /// Device memory in use when the backend was ready, and the most seen since (bytes).
    baseline_used: u64,
    peak_used: AtomicU64,
    /// (free, total) device memory before the run allocated anything, for out-of-memory errors.
    memory_at_start: (u64, u64),
    /// Synchronise after every launch, so that a fault is reported by the kernel that made it
    /// (NEURAL_STYLE_SYNC_LAUNCHES=1; slower).
    sync_launches: bool,
}

fn i32_of(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("{what} = {n} exceeds the kernels' 32-bit indexing"))
}

impl CudaBackend {
    /// Opens GPU `ordinal` and loads every kernel for `precision`. A clean error (never a panic)
    /// when there is no GPU, no driver, or no kernels in this build.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        Self::with_gemm(ordinal, precision, Gemm::from_env()?)
    }

    /// `new` with the GEMM main loop given instead of read from NEURAL_STYLE_CUDA_GEMM (the parity
    /// tests compare both on one GPU). `Mma` with fp32 runs WMMA (see `Gemm::for_precision`).
    pub fn with_gemm(ordinal: usize, precision: Precision, gemm: Gemm) -> Result<Self> {
        let gemm = gemm.for_precision(precision);
        let count = device_count()?;
        ensure!(ordinal < count, "GPU {ordinal} requested but the driver reports {count} GPU(s)");
        let ctx = open_context(ordinal)?;
        let memory_at_start = context_memory(&ctx, ordinal)?;
        let device_name = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        let stream = ctx.default_stream();
        let (major, minor) = ctx.compute_capability().map_err(|e| anyhow!("reading GPU {ordinal}'s compute capability failed: {e}"))?;
        let (k, kernel_image) = Kernels::load(&ctx, precision, gemm, (major * 10 + minor) as u32)?;
        let partials = stream.alloc_zeros::<f64>(MAX_PARTIALS)?;
        let result = stream.alloc_zeros::<f64>(1)?;
        let gram_partials = Mutex::new(stream.alloc_zeros::<f32>(1)?);
        let gram_sym = Mutex::new(stream.alloc_zeros::<f32>(1)?);
        let conv_partials = Mutex::new(stream.alloc_zeros::<f32>(1)?);
        let sm_count = sm_count(&ctx, ordinal)?;
        stream.synchronize()?;
        let baseline_used = Self::used_bytes(&ctx).unwrap_or(0);
        Ok(CudaBackend {
            ctx,
            stream,
            precision,
            gemm,
            device_name,
            kernel_image,
            k,
            partials,
            result,
            gram_partials,
            gram_sym,
            conv_partials,
            sm_count,
            baseline_used,
            peak_used: AtomicU64::new(0),
            memory_at_start,
            sync_launches: std::env::var_os("NEURAL_STYLE_SYNC_LAUNCHES").is_some_and(|v| !v.is_empty() && v != "0"),
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The GEMM main loop the conv and Gram kernels run.
    pub fn gemm(&self) -> Gemm {
        self.gemm
    }

    /// The GPU's SM count (what conv_split_k fills).
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    pub fn kernel_image(&self) -> KernelImage {
        self.kernel_image
    }

    fn used_bytes(ctx: &Arc<CudaContext>) -> Option<u64> {
        ctx.mem_get_info().ok().map(|(free, total)| (total - free) as u64)
    }

    /// Samples device memory in use after an allocation (the driver's view, so it includes the
    /// allocator's slack; other processes on the same GPU would count too).
    fn note_allocation(&self) {
        if let Some(used) = Self::used_bytes(&self.ctx) {
            self.peak_used.fetch_max(used.saturating_sub(self.baseline_used), Ordering::Relaxed);
        }
    }

    /// Scratch of at least `len` floats from `slot`, reallocated (larger) when too small.
    fn scratch<'a>(&self, slot: &'a Mutex<CudaSlice<f32>>, len: usize) -> Result<std::sync::MutexGuard<'a, CudaSlice<f32>>> {
        let mut guard = slot.lock().map_err(|_| anyhow!("scratch lock poisoned"))?;
        if guard.len() < len {
            // The old contents are not needed: free them first, so the peak is the larger buffer alone.
            *guard = self.stream.alloc_zeros::<f32>(1)?;
            *guard = self.stream.alloc_zeros::<f32>(len).map_err(|e| self.allocation_error(e, len))?;
            self.note_allocation();
        }
        Ok(guard)
    }

    /// Second stage of a sum over `blocks` partials, and the one scalar download.
    fn finish_sum(&self, blocks: usize) -> Result<f64> {
        self.finish(&self.k.reduce_partials_f64, blocks)
    }

    fn finish(&self, f: &CudaFunction, blocks: usize) -> Result<f64> {
        let n = blocks as i32;
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut l = self.stream.launch_builder(f);
        l.arg(&self.partials).arg(&n).arg(&self.result);
        self.launch(&mut l, "reduce_partials", cfg, || format!("{blocks} partials"))?;
        Ok(self.stream.clone_dtoh(&self.result).map_err(running_error)?[0])
    }

    /// Launches kernel `name` on `shape`. A configuration the driver refuses fails here, naming
    /// the kernel, its shape and its grid; a fault while it runs surfaces at the next download
    /// or synchronisation, which with NEURAL_STYLE_SYNC_LAUNCHES=1 is this launch.
    fn launch(&self, l: &mut LaunchArgs, name: &str, cfg: LaunchConfig, shape: impl FnOnce() -> String) -> Result<()> {
        let failed = |when: &str, e: DriverError| anyhow!("CUDA kernel {name} ({}; grid {:?}, block {:?}) {when}: {e}", shape(), cfg.grid_dim, cfg.block_dim);
        // SAFETY: every caller pushed the kernel's arguments in its signature's order, with the
        // buffer lengths checked against the shape first.
        if let Err(e) = unsafe { l.launch(cfg) } {
            return Err(failed("failed to launch", e));
        }
        if self.sync_launches {
            self.stream.synchronize().map_err(|e| failed("failed while running", e))?;
        }
        Ok(())
    }

    /// An allocation of `len` floats that failed: out of memory becomes `OutOfDeviceMemory`.
    fn allocation_error(&self, e: DriverError, len: usize) -> anyhow::Error {
        let requested = 4 * len as u64;
        if e.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
            let (free_at_start, total) = self.memory_at_start;
            OutOfDeviceMemory { requested, free_at_start, total }.into()
        } else {
            anyhow!("allocating {requested} bytes on the GPU failed: {e}")
        }
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;

    fn name(&self) -> String {
        let p = match self.precision {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        };
        format!("cuda: {} ({p}, {}, {})", self.device_name, self.kernel_image, self.gemm.name())
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        let b = self.stream.alloc_zeros::<f32>(len).map_err(|e| self.allocation_error(e, len))?;
        self.note_allocation();
        Ok(b)
    }
    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        let b = self.stream.clone_htod(host).map_err(|e| self.allocation_error(e, host.len()))?;
        self.note_allocation();
        Ok(b)
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.stream.clone_dtoh(buf).map_err(running_error)
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(running_error)
    }
    fn peak_bytes(&self) -> Option<u64> {
        Some(self.peak_used.load(Ordering::Relaxed))
    }

    fn conv3x3_fwd(&self, s: ConvShape, x: &CudaSlice<f32>, w: &CudaSlice<f32>, b: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        conv::conv3x3_fwd(self, s, x, w, b, y)
    }
    fn conv3x3_bwd_input(&self, s: ConvShape, dy: &CudaSlice<f32>, _w: &CudaSlice<f32>, w_flip: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
        conv::conv3x3_bwd_input(self, s, dy, w_flip, dx)
    }
    fn conv3x3_bwd_input_masked(&self, s: ConvShape, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>, w: &CudaSlice<f32>, w_flip: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
        conv::conv3x3_bwd_input_masked(self, s, y, dy, w, w_flip, dx)
    }
    fn relu_bwd(&self, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>) -> Result<()> {
        pool::relu_bwd(self, y, dy)
    }
    fn pool_fwd(&self, kind: PoolKind, s: PoolShape, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        pool::pool_fwd(self, kind, s, x, y)
    }
    fn pool_bwd(&self, kind: PoolKind, s: PoolShape, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
        pool::pool_bwd(self, kind, s, x, dy, dx)
    }

    fn gram(&self, hw: usize, c: usize, f: &CudaSlice<f32>, g: &mut CudaSlice<f32>) -> Result<()> {
        gram::gram(self, hw, c, f, g)
    }
    fn gram_bwd_acc(&self, hw: usize, c: usize, f: &CudaSlice<f32>, dg: &CudaSlice<f32>, df: &mut CudaSlice<f32>) -> Result<()> {
        gram::gram_bwd_acc(self, hw, c, f, dg, df)
    }
    fn content_loss_acc(&self, weight: f32, f: &CudaSlice<f32>, p: &CudaSlice<f32>, df: &mut CudaSlice<f32>) -> Result<f64> {
        loss::content_loss_acc(self, weight, f, p, df)
    }
    fn style_loss(&self, weight: f32, g: &CudaSlice<f32>, a: &CudaSlice<f32>, dg: &mut CudaSlice<f32>) -> Result<f64> {
        loss::style_loss(self, weight, g, a, dg)
    }
    fn tv_loss_acc(&self, weight: f32, h: usize, w: usize, c: usize, x: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<f64> {
        loss::tv_loss_acc(self, weight, h, w, c, x, dx)
    }
    fn tv_pow_loss_acc(&self, weight: f32, power: f32, h: usize, w: usize, c: usize, x: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<f64> {
        loss::tv_pow_loss_acc(self, weight, power, h, w, c, x, dx)
    }

    fn fill(&self, x: &mut CudaSlice<f32>, value: f32) -> Result<()> {
        vector::fill(self, x, value)
    }
    fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
        ensure!(src.len() == dst.len(), "copy: lengths differ ({} vs {})", src.len(), dst.len());
        Ok(self.stream.memcpy_dtod(src, dst)?)
    }
    fn dot(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<f64> {
        vector::dot(self, a, b)
    }
    fn asum(&self, x: &CudaSlice<f32>) -> Result<f64> {
        vector::asum(self, x)
    }
    fn amax(&self, x: &CudaSlice<f32>) -> Result<f64> {
        vector::amax(self, x)
    }
    fn axpy(&self, alpha: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        vector::axpy(self, alpha, x, y)
    }
    fn scale(&self, alpha: f32, x: &mut CudaSlice<f32>) -> Result<()> {
        vector::scale(self, alpha, x)
    }
    fn adam_step(&self, s: AdamStep, param: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
        vector::adam_step(self, s, param, grad, m, v)
    }

    fn project_to_box(&self, bx: &PixelBox, x: &mut CudaSlice<f32>) -> Result<()> {
        vector::project_to_box(self, bx, x)
    }
    fn zero_outward(&self, bx: &PixelBox, x: &CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
        vector::zero_outward(self, bx, x, v)
    }
    fn hold_at_bounds(&self, bx: &PixelBox, x: &CudaSlice<f32>, g: &CudaSlice<f32>, v: &mut CudaSlice<f32>) -> Result<()> {
        vector::hold_at_bounds(self, bx, x, g, v)
    }
}

/// Gemm's selection from NEURAL_STYLE_CUDA_GEMM, checked without a GPU (the launch arithmetic's
/// tests are in launch.rs).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_selection_parses_and_falls_back_to_wmma_for_fp32() {
        assert_eq!(Gemm::parse(None).unwrap(), Gemm::Wmma);
        assert_eq!(Gemm::parse(Some("")).unwrap(), Gemm::Wmma);
        assert_eq!(Gemm::parse(Some("wmma")).unwrap(), Gemm::Wmma);
        assert_eq!(Gemm::parse(Some(" mma ")).unwrap(), Gemm::Mma);
        assert!(Gemm::parse(Some("cutlass")).unwrap_err().to_string().contains("NEURAL_STYLE_CUDA_GEMM"));
        assert_eq!(Gemm::Mma.for_precision(Precision::Tf32), Gemm::Mma);
        assert_eq!(Gemm::Mma.for_precision(Precision::Fp32), Gemm::Wmma);
        assert_eq!(Gemm::Mma.for_precision(Precision::Bf16), Gemm::Mma);
        assert_eq!(Gemm::Wmma.for_precision(Precision::Tf32), Gemm::Wmma);
    }
}
