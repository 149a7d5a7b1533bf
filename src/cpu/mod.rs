//! The CPU backend: rayon over every core, f32, channels-last. Each file mirrors one .cu file.
//! With `Precision::Bf16` on a CPU with AVX512_BF16 (bf16.rs), the Winograd tile GEMMs and the
//! Grams take bf16 operands with f32 accumulation; everything else stays f32.

pub mod bf16;
pub mod conv;
pub mod gram;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod vector;
pub mod winograd;

use crate::backend::{AdamStep, Backend, ConvShape, PixelBox, PoolKind, PoolShape, Precision};
use anyhow::Result;

/// Runs f with the calling thread's buffers in `key`, each grown to at least its length in
/// `lens` and reused across calls (no page faults in the hot loop); fresh ones if they are in
/// use (a rayon worker that calls this may steal another such call while it waits on its own
/// tasks).
pub(crate) fn with_reused<T: Copy + Default, const N: usize, R>(key: &'static std::thread::LocalKey<std::cell::RefCell<[Vec<T>; N]>>, lens: [usize; N], f: impl FnOnce(&mut [Vec<T>; N]) -> R) -> R {
    key.with(|cell| {
        let mut fresh = std::array::from_fn(|_| Vec::new());
        let mut borrowed = cell.try_borrow_mut();
        let bufs = match borrowed.as_deref_mut() {
            Ok(bufs) => bufs,
            Err(_) => &mut fresh,
        };
        for (buf, &len) in bufs.iter_mut().zip(&lens) {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
        }
        f(bufs)
    })
}

/// The CPU backend; `new()` computes in fp32 (the reference), `with_precision(Bf16)` in bf16
/// where the CPU can.
#[derive(Default)]
pub struct CpuBackend {
    bf16: bool,
}

/// The algorithm of the CPU's 3x3 convolutions, from `NEURAL_STYLE_CPU_CONV` (read once):
/// `direct` (conv.rs: banded implicit GEMM), `winograd` (winograd.rs, for every conv whose
/// weights carry the transform: c_in >= 64 and c_out >= 16, both directions),
/// or `auto` (the default: Winograd where winograd::pays says so, direct elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    Direct,
    Winograd,
    Auto,
}

impl ConvAlgo {
    pub const ENV: &'static str = "NEURAL_STYLE_CPU_CONV";

    /// The process's choice; panics on a value other than direct, winograd, auto or empty.
    pub fn from_env() -> Self {
        static ALGO: std::sync::OnceLock<ConvAlgo> = std::sync::OnceLock::new();
        *ALGO.get_or_init(|| match std::env::var(Self::ENV).unwrap_or_default().as_str() {
            "" | "auto" => ConvAlgo::Auto,
            "direct" => ConvAlgo::Direct,
            "winograd" => ConvAlgo::Winograd,
            other => panic!("{}='{other}': expected direct, winograd or auto", Self::ENV),
        })
    }
}

/// Whether a (c_in, c_out) conv's weights are kept in the Winograd form only: the GEMM depth of
/// the forward (c_in) >= 64 and its width (c_out) >= 16 (conv1_1 keeps the direct path).
fn carries_winograd(c_in: usize, c_out: usize) -> bool {
    ConvAlgo::from_env() != ConvAlgo::Direct && c_in >= 64 && c_out >= 16
}

/// Floats `upload_conv_weights` keeps for a (c_in, c_out) conv in fp32 (for the memory estimate).
pub fn conv_weight_floats(c_in: usize, c_out: usize) -> usize {
    conv_weight_floats_in(false, c_in, c_out)
}

/// Floats `upload_conv_weights` keeps for a (c_in, c_out) conv, with bf16 tile GEMMs or not.
pub fn conv_weight_floats_in(bf16: bool, c_in: usize, c_out: usize) -> usize {
    match (carries_winograd(c_in, c_out), bf16) {
        (true, false) => winograd::transformed_len(c_in, c_out),
        (true, true) => winograd::transformed_len(c_in, c_out) + winograd::bf16_weight_words(c_in, c_out),
        (false, _) => 2 * 9 * c_in * c_out,
    }
}

/// U of conv s, if w is the Winograd form (forward orientation: c_in the GEMM depth), and the
/// bf16 packs of U that follow it in the buffer when the backend computes in bf16.
fn as_winograd(s: ConvShape, w: &[f32]) -> Option<(&[f32], Option<&[u32]>)> {
    let (len, words) = (winograd::transformed_len(s.c_in, s.c_out), winograd::bf16_weight_words(s.c_in, s.c_out));
    if w.len() == 9 * s.c_in * s.c_out {
        None
    } else if w.len() == len {
        Some((w, None))
    } else if w.len() == len + words {
        let (u, packed) = w.split_at(len);
        // SAFETY: f32 and u32 have the same size and alignment; the words were stored as f32 bits.
        Some((u, Some(unsafe { std::slice::from_raw_parts(packed.as_ptr() as *const u32, packed.len()) })))
    } else {
        None
    }
}

/// Whether conv s (in the orientation of its GEMM: c_in the depth) runs as Winograd, given
/// weights in the Winograd form.
fn use_winograd(s: ConvShape) -> bool {
    match ConvAlgo::from_env() {
        ConvAlgo::Direct => false,
        ConvAlgo::Winograd => true,
        ConvAlgo::Auto => winograd::pays(s),
    }
}

impl CpuBackend {
    /// fp32 throughout.
    pub fn new() -> Self {
        CpuBackend { bf16: false }
    }

    /// `Precision::Bf16` where bf16::available() (else fp32, silently: the CLI says so once,
    /// see bf16::note_fallback_once); fp32 and tf32 (which CPUs do not have) compute in fp32.
    pub fn with_precision(precision: Precision) -> Self {
        CpuBackend { bf16: precision == Precision::Bf16 && bf16::available() }
    }

    /// The precision the convolutions and Grams run in: Fp32 or Bf16.
    pub fn precision(&self) -> Precision {
        if self.bf16 {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    }
}

/// An empty vector with room for `len` floats, or an error (not an abort) when the allocator
/// refuses: the memory check before a run estimates, this is what makes a miss recoverable.
fn host_vec(len: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    reserve_total(&mut v, len)?;
    Ok(v)
}

/// Grows v's capacity to at least `len` floats (nothing if it has them), or an error.
fn reserve_total(v: &mut Vec<f32>, len: usize) -> Result<()> {
    v.try_reserve_exact(len.saturating_sub(v.len())).map_err(|_| anyhow::anyhow!("out of memory allocating {:.2} GiB", len as f64 * 4.0 / (1u64 << 30) as f64))
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        let precision = if self.bf16 { "bf16" } else { "fp32" };
        format!("cpu ({} threads, {precision})", rayon::current_num_threads())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        let mut v = host_vec(len)?;
        v.resize(len, 0.0);
        Ok(v)
    }
    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        let mut v = host_vec(host.len())?;
        v.extend_from_slice(host);
        Ok(v)
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn resizes_in_place(&self) -> bool {
        true
    }
    fn resize(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        reserve_total(buf, len)?;
        buf.resize(len, 0.0);
        Ok(())
    }

    fn upload_conv_weights(&self, c_in: usize, c_out: usize, w: &[f32], w_flip: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        // Where the conv carries Winograd, U (36, c_in, c_out) alone: the backward-input runs the
        // transposed algorithm on it, and the rare direct fallback recovers the direct layout
        // from it. Elsewhere both direct layouts.
        if carries_winograd(c_in, c_out) && w.len() == 9 * c_in * c_out {
            let mut u = winograd::transform_weights(c_in, c_out, w);
            if self.bf16 {
                // The packs ride in the same buffer as f32 bit patterns (copied, never computed on).
                let packed = winograd::pack_weights_bf16(c_in, c_out, &u);
                let total = u.len() + packed.len();
                reserve_total(&mut u, total)?;
                u.extend(packed.into_iter().map(f32::from_bits));
            }
            return Ok((u, Vec::new()));
        }
        Ok((self.upload(w)?, self.upload(w_flip)?))
    }
    fn conv3x3_fwd(&self, s: ConvShape, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        match as_winograd(s, w) {
            Some((u, Some(packed))) if use_winograd(s) => winograd::conv3x3_fwd_bf16(s, x, u, packed, b, y),
            Some((u, _)) if use_winograd(s) => winograd::conv3x3_fwd(s, x, u, b, y),
            Some((u, _)) => conv::conv3x3_fwd(s, x, &winograd::recover_weights(s.c_in, s.c_out, u), b, y),
            None => conv::conv3x3_fwd(s, x, w, b, y),
        }
        Ok(())
    }
    fn conv3x3_bwd_input(&self, s: ConvShape, dy: &Vec<f32>, w: &Vec<f32>, w_flip: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        let swapped = ConvShape { h: s.h, w: s.w, c_in: s.c_out, c_out: s.c_in };
        match as_winograd(s, w) {
            Some((u, Some(packed))) if w_flip.is_empty() && use_winograd(swapped) => winograd::conv3x3_bwd_input_bf16(s, dy, u, packed, dx),
            Some((u, _)) if w_flip.is_empty() && use_winograd(swapped) => winograd::conv3x3_bwd_input(s, dy, u, dx),
            Some((u, _)) if w_flip.is_empty() => {
                let flipped = conv::fwd_layout_to_bwd_layout(s.c_in, s.c_out, &winograd::recover_weights(s.c_in, s.c_out, u));
                conv::conv3x3_bwd_input(s, dy, &flipped, dx)
            }
            _ => conv::conv3x3_bwd_input(s, dy, w_flip, dx),
        }
        Ok(())
    }
    fn relu_bwd(&self, y: &Vec<f32>, dy: &mut Vec<f32>) -> Result<()> {
        pool::relu_bwd(y, dy);
        Ok(())
    }
    fn pool_fwd(&self, kind: PoolKind, s: PoolShape, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        pool::pool_fwd(kind, s, x, y);
        Ok(())
    }
    fn pool_bwd(&self, kind: PoolKind, s: PoolShape, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        pool::pool_bwd(kind, s, x, dy, dx);
        Ok(())
    }

    fn gram(&self, hw: usize, c: usize, f: &Vec<f32>, g: &mut Vec<f32>) -> Result<()> {
        if self.bf16 {
            gram::gram_bf16(hw, c, f, g);
        } else {
            gram::gram(hw, c, f, g);
        }
        Ok(())
    }
    fn gram_bwd_acc(&self, hw: usize, c: usize, f: &Vec<f32>, dg: &Vec<f32>, df: &mut Vec<f32>) -> Result<()> {
        if self.bf16 {
            gram::gram_bwd_acc_bf16(hw, c, f, dg, df);
        } else {
            gram::gram_bwd_acc(hw, c, f, dg, df);
        }
        Ok(())
    }
    fn content_loss_acc(&self, weight: f32, f: &Vec<f32>, p: &Vec<f32>, df: &mut Vec<f32>) -> Result<f64> {
        Ok(loss::content_loss_acc(weight, f, p, df))
    }
    fn style_loss(&self, weight: f32, g: &Vec<f32>, a: &Vec<f32>, dg: &mut Vec<f32>) -> Result<f64> {
        Ok(loss::style_loss(weight, g, a, dg))
    }
    fn tv_loss_acc(&self, weight: f32, h: usize, w: usize, c: usize, x: &Vec<f32>, dx: &mut Vec<f32>) -> Result<f64> {
        Ok(loss::tv_loss_acc(weight, h, w, c, x, dx))
    }
    fn tv_pow_loss_acc(&self, weight: f32, power: f32, h: usize, w: usize, c: usize, x: &Vec<f32>, dx: &mut Vec<f32>) -> Result<f64> {
        Ok(loss::tv_pow_loss_acc(weight, power, h, w, c, x, dx))
    }

    fn fill(&self, x: &mut Vec<f32>, value: f32) -> Result<()> {
        x.fill(value);
        Ok(())
    }
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn dot(&self, a: &Vec<f32>, b: &Vec<f32>) -> Result<f64> {
        Ok(vector::dot(a, b))
    }
    fn asum(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(vector::asum(x))
    }
    fn amax(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(vector::amax(x))
    }
    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        vector::axpy(alpha, x, y);
        Ok(())
    }
    fn axpy_dot(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>, z: &Vec<f32>) -> Result<f64> {
        Ok(vector::axpy_dot(alpha, x, y, z))
    }
    fn scale(&self, alpha: f32, x: &mut Vec<f32>) -> Result<()> {
        vector::scale(alpha, x);
        Ok(())
    }
    fn adam_step(&self, step: AdamStep, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        vector::adam_step(step, param, grad, m, v);
        Ok(())
    }

    fn project_to_box(&self, bx: &PixelBox, x: &mut Vec<f32>) -> Result<()> {
        vector::project_to_box(bx, x);
        Ok(())
    }
    fn zero_outward(&self, bx: &PixelBox, x: &Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        anyhow::ensure!(x.len() == v.len(), "zero_outward: lengths differ");
        vector::zero_outward(bx, x, v);
        Ok(())
    }
    fn hold_at_bounds(&self, bx: &PixelBox, x: &Vec<f32>, g: &Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        anyhow::ensure!(x.len() == v.len() && g.len() == v.len(), "hold_at_bounds: lengths differ");
        vector::hold_at_bounds(bx, x, g, v);
        Ok(())
    }
}
