//! The one trait that the optimisation loop is written against.
//!
//! Every tensor is a flat `f32` buffer in channels-last layout: an activation of `c` channels on an
//! `h x w` grid is `(h, w, c)`, so a 3x3 convolution is an implicit GEMM with M = h*w, N = c_out,
//! K = 9*c_in and contiguous K, on the CPU and on the GPU alike.
//! Weights are `(3, 3, c_in, c_out)` (ky, kx, ci, co); the backward pass uses the same layout with
//! the taps flipped and the channels swapped, `(3, 3, c_out, c_in)`, prepared once at load time.
//!
//! Conventions: ops named `*_acc` or documented "adds" accumulate into their output; the others
//! overwrite it. Losses return their value as `f64` (a host scalar) and add their gradient.

use anyhow::Result;

pub mod scales;

/// A 3x3, stride 1, zero-padding 1 convolution over an `h x w` grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub c_out: usize,
}

impl ConvShape {
    /// Multiply-adds of the forward pass, times two (FLOPs).
    pub fn flops(&self) -> u64 {
        2 * (self.h * self.w * self.c_out * 9 * self.c_in) as u64
    }
}

/// A 2x2, stride 2 pooling of an `(h, w, c)` input into `(h/2, w/2, c)` (floor, as PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl PoolShape {
    pub fn out_h(&self) -> usize {
        self.h / 2
    }
    pub fn out_w(&self) -> usize {
        self.w / 2
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum PoolKind {
    #[default]
    Max,
    Avg,
}

/// One Adam update (PyTorch's `torch.optim.Adam`, no weight decay, no amsgrad).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step number, for the bias corrections.
    pub t: u32,
}

impl AdamStep {
    /// The bias-corrected step and √(1 - β2ᵗ) that the update is given (`scales::adam_factors`).
    pub fn factors(&self) -> scales::AdamFactors {
        scales::adam_factors(self.lr, self.beta1, self.beta2, self.t)
    }
}

/// The box of displayable pixels in the model's convention, per channel of a channels-last
/// `(h, w, 3)` image: value i belongs to channel i % 3. What bounded optimisation (issue 20) keeps
/// every evaluated image inside, so that saving it clamps nothing (`Convention::pixel_box`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelBox {
    pub lo: [f32; 3],
    pub hi: [f32; 3],
}

impl PixelBox {
    /// Whether every x_i lies inside its channel's bounds, channel i % 3 (NaN does not).
    pub fn contains(&self, x: &[f32]) -> bool {
        self.first_outside(x).is_none()
    }

    /// The index of the first x_i outside its channel's bounds (a NaN is outside).
    pub fn first_outside(&self, x: &[f32]) -> Option<usize> {
        x.iter().enumerate().position(|(i, v)| !(*v >= self.lo[i % 3] && *v <= self.hi[i % 3]))
    }
}

/// Arithmetic used by the convolutions and Gram products. The CPU computes in fp32, or with
/// Bf16 in bf16 where it has AVX512_BF16 (cpu::bf16); it has no tf32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum Precision {
    Fp32,
    #[default]
    Tf32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "tf32" => Ok(Self::Tf32),
            "bf16" => Ok(Self::Bf16),
            _ => anyhow::bail!("unknown precision '{s}' (expected fp32, tf32 or bf16)"),
        }
    }
}

/// A device allocation that did not fit, so that the caller can say which size would.
#[derive(Debug, thiserror::Error)]
#[error("the GPU ran out of memory allocating {} ({} of {} free when the run began)", crate::memory::human_bytes(*.requested), crate::memory::human_bytes(*.free_at_start), crate::memory::human_bytes(*.total))]
pub struct OutOfDeviceMemory {
    pub requested: u64,
    /// Device memory free before the run allocated anything.
    pub free_at_start: u64,
    pub total: u64,
}

/// Everything one loss-and-gradient evaluation and the optimisers need from a device.
pub trait Backend {
    /// `Vec<f32>` on the CPU, a device allocation on CUDA.
    type Buf;

    /// Short description for logs, e.g. "cpu (2 threads)" or "cuda: NVIDIA H200 (tf32)".
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;
    /// Whether `resize` keeps a buffer's allocation when it shrinks and regrows up to its
    /// first length (the CPU: a Vec within its capacity), so that one buffer can serve layers
    /// of different sizes in turn. The objective then keeps two gradient buffers instead of one
    /// per layer.
    fn resizes_in_place(&self) -> bool {
        false
    }
    /// Makes buf hold len floats; their values are unspecified. The default allocates a new
    /// buffer when the length differs.
    fn resize(&self, buf: &mut Self::Buf, len: usize) -> Result<()> {
        if self.len(buf) != len {
            *buf = self.zeros(len)?;
        }
        Ok(())
    }
    /// Peak bytes this backend has held in buffers, if it tracks them.
    fn peak_bytes(&self) -> Option<u64> {
        None
    }

    // ---- network ------------------------------------------------------------------------
    /// Uploads one conv's frozen weights, w (3, 3, c_in, c_out) and w_flip (3, 3, c_out, c_in),
    /// as the pair of buffers conv3x3_fwd (the first) and conv3x3_bwd_input (both) take. A
    /// backend may keep a form it precomputes once instead (the CPU: the Winograd transform U
    /// in the first buffer, used by both directions, and an empty second one; see cpu::winograd);
    /// the default uploads them as they are.
    fn upload_conv_weights(&self, c_in: usize, c_out: usize, w: &[f32], w_flip: &[f32]) -> Result<(Self::Buf, Self::Buf)> {
        let _ = (c_in, c_out);
        Ok((self.upload(w)?, self.upload(w_flip)?))
    }
    /// y = relu(conv3x3(x, w) + b).  x (h, w, c_in), w (3, 3, c_in, c_out) (or the form
    /// upload_conv_weights kept instead, if it came from there), b (c_out), y (h, w, c_out).
    fn conv3x3_fwd(&self, s: ConvShape, x: &Self::Buf, w: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx = conv3x3(dy, w_flip): the gradient w.r.t. the input of a conv whose output gradient is dy.
    /// dy (h, w, c_out), w_flip (3, 3, c_out, c_in) = w[2-ky][2-kx][ci][co] transposed, dx (h, w, c_in).
    /// w and w_flip are the pair upload_conv_weights returned (or plain uploads of both layouts);
    /// a backend reads whichever holds its backward form.
    fn conv3x3_bwd_input(&self, s: ConvShape, dy: &Self::Buf, w: &Self::Buf, w_flip: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// dy *= (y > 0), where y is the ReLU's output.
    fn relu_bwd(&self, y: &Self::Buf, dy: &mut Self::Buf) -> Result<()>;
    /// dx = conv3x3(dy ⊙ (y > 0), w_flip): the input gradient of a conv followed by its ReLU, whose
    /// output is y (h, w, c_out) and output gradient dy (h, w, c_out). dy's values afterwards are
    /// unspecified: the default (`relu_then_conv3x3_bwd_input`) masks it in place with relu_bwd,
    /// and a backend may instead fold the mask into the convolution and leave dy as it was (CUDA's
    /// mma path does for c_in <= 4: conv1_1).
    fn conv3x3_bwd_input_masked(&self, s: ConvShape, y: &Self::Buf, dy: &mut Self::Buf, w: &Self::Buf, w_flip: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        relu_then_conv3x3_bwd_input(self, s, y, dy, w, w_flip, dx)
    }
    /// y (h/2, w/2, c) = 2x2 pool of x (h, w, c).
    fn pool_fwd(&self, kind: PoolKind, s: PoolShape, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx (h, w, c) = gradient of the pool given dy (h/2, w/2, c); max: the first maximum in
    /// row-major window order takes it. Overwrites dx (also the rows/columns the pool dropped).
    fn pool_bwd(&self, kind: PoolKind, s: PoolShape, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;

    // ---- Gram and losses ----------------------------------------------------------------
    /// g (c, c) = fᵀ f / (c * hw), f (hw, c).
    fn gram(&self, hw: usize, c: usize, f: &Self::Buf, g: &mut Self::Buf) -> Result<()>;
    /// df (hw, c) += f (dg + dgᵀ) / (c * hw).
    fn gram_bwd_acc(&self, hw: usize, c: usize, f: &Self::Buf, dg: &Self::Buf, df: &mut Self::Buf) -> Result<()>;
    /// Returns weight * mean((f - p)²) and adds 2 weight (f - p) / n into df.
    fn content_loss_acc(&self, weight: f32, f: &Self::Buf, p: &Self::Buf, df: &mut Self::Buf) -> Result<f64>;
    /// Returns weight * mean((g - a)²) over the c² entries and writes dg = 2 weight (g - a) / c².
    fn style_loss(&self, weight: f32, g: &Self::Buf, a: &Self::Buf, dg: &mut Self::Buf) -> Result<f64>;
    /// Total variation of x (h, w, c): weight * Σ (x[i+1,j]-x[i,j])² + (x[i,j+1]-x[i,j])²; adds its gradient into dx.
    fn tv_loss_acc(&self, weight: f32, h: usize, w: usize, c: usize, x: &Self::Buf, dx: &mut Self::Buf) -> Result<f64>;
    /// The Keras example's total variation of x (h, w, c): weight * Σ_{i<h-1, j<w-1} s^power,
    /// s = (x[i,j]-x[i+1,j])² + (x[i,j]-x[i,j+1])² per channel; adds its gradient into dx.
    fn tv_pow_loss_acc(&self, weight: f32, power: f32, h: usize, w: usize, c: usize, x: &Self::Buf, dx: &mut Self::Buf) -> Result<f64>;

    // ---- vectors (optimisers) -------------------------------------------------------------
    fn fill(&self, x: &mut Self::Buf, value: f32) -> Result<()>;
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// Σ a_i b_i, accumulated in a fixed order (deterministic).
    fn dot(&self, a: &Self::Buf, b: &Self::Buf) -> Result<f64>;
    /// Σ |x_i|.
    fn asum(&self, x: &Self::Buf) -> Result<f64>;
    /// max |x_i|.
    fn amax(&self, x: &Self::Buf) -> Result<f64>;
    /// y += alpha x.
    fn axpy(&self, alpha: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// y += alpha x, then returns Σ y_i z_i: axpy then dot, as L-BFGS's two-loop recursion
    /// takes them. A backend may do both in one pass over the vectors, with the same values.
    fn axpy_dot(&self, alpha: f32, x: &Self::Buf, y: &mut Self::Buf, z: &Self::Buf) -> Result<f64> {
        self.axpy(alpha, x, y)?;
        self.dot(y, z)
    }
    /// x *= alpha.
    fn scale(&self, alpha: f32, x: &mut Self::Buf) -> Result<()>;
    /// One Adam update of `param` from `grad`, with moment buffers m and v.
    fn adam_step(&self, step: AdamStep, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf) -> Result<()>;

    // ---- the pixel box (bounded optimisation) ----------------------------------------------
    /// x (h, w, 3) = clamp(x, lo, hi) per channel (a NaN becomes lo, as fmaxf makes it).
    fn project_to_box(&self, bx: &PixelBox, x: &mut Self::Buf) -> Result<()>;
    /// v (h, w, 3): zero the components that would take x (h, w, 3) out of the box, where x_i is
    /// at (or past) lo and v_i < 0, or at (or past) hi and v_i > 0. Applied to -g it gives the
    /// projected steepest descent; applied to a direction d, the part of d that can move.
    fn zero_outward(&self, bx: &PixelBox, x: &Self::Buf, v: &mut Self::Buf) -> Result<()>;
    /// v (h, w, 3): zero the components of the values the gradient g holds at their bound, where
    /// x_i is at (or past) lo and g_i > 0, or at (or past) hi and g_i < 0 (descent would push them
    /// out): bounded L-BFGS's fixed variables, which its direction and curvature pairs leave out.
    fn hold_at_bounds(&self, bx: &PixelBox, x: &Self::Buf, g: &Self::Buf, v: &mut Self::Buf) -> Result<()>;
}

/// `Backend::conv3x3_bwd_input_masked` as two ops: relu_bwd(y, dy), then conv3x3_bwd_input(dy).
/// The trait's default, and the fallback of backends that fuse only some shapes.
pub fn relu_then_conv3x3_bwd_input<B: Backend + ?Sized>(be: &B, s: ConvShape, y: &B::Buf, dy: &mut B::Buf, w: &B::Buf, w_flip: &B::Buf, dx: &mut B::Buf) -> Result<()> {
    be.relu_bwd(y, dy)?;
    be.conv3x3_bwd_input(s, dy, w, w_flip, dx)
}
