//! The host-side arithmetic of the ops: the scale factors a loss or Gram kernel is handed and
//! the way a reduction's sum becomes the loss value, and Adam's bias corrections. The CPU
//! backend (src/cpu/) and the CUDA backend's launch code (src/cuda/gram.rs, loss.rs, vector.rs) both call these, so
//! the CPU tests (tests/it/cpu_ops.rs, tests/it/golden.rs against PyTorch, the unit tests below) check
//! the numbers the GPU is given even on a machine without one.
//!
//! Each function is written exactly as the backends computed it before it moved here (f32 where
//! the kernel takes a float, f64 where it takes a double), so no result changed by a bit.

/// The gradient factor of weight * mean((a - b)²) over n entries: d/da = 2 weight (a - b) / n.
/// (content_loss_acc's `g`, style_loss's `k`; computed in f32, as the kernels take it.)
pub fn mean_sq_grad_scale(weight: f32, n: usize) -> f32 {
    2.0 * weight / n as f32
}

/// weight * mean((a - b)²) from the reduction's Σ (a - b)² over n entries, in f64.
pub fn mean_sq_loss(weight: f32, sum_sq: f64, n: usize) -> f64 {
    weight as f64 * sum_sq / n as f64
}

/// The gradient factor of the total variation weight * Σ d²: 2 weight (tv_loss_acc's `k`).
pub fn tv_grad_scale(weight: f32) -> f32 {
    2.0 * weight
}

/// weight * Σ from a total variation's reduction (tv_loss_acc and tv_pow_loss_acc), in f64.
pub fn weighted_sum(weight: f32, sum: f64) -> f64 {
    weight as f64 * sum
}

/// The Gram normalisation 1 / (c hw) in f64: the CUDA gram_reduce's `scale` (its sums are f64)
/// and the naive CPU reference's.
pub fn gram_scale_f64(hw: usize, c: usize) -> f64 {
    1.0 / (c * hw) as f64
}

/// The Gram normalisation 1 / (c hw) in f32: the CPU GEMM's output factor and, for the
/// backward pass, the factor of sym = (dg + dgᵀ) / (c hw) on both backends.
pub fn gram_scale_f32(hw: usize, c: usize) -> f32 {
    1.0 / (c * hw) as f32
}

/// What one Adam update needs beyond the moments' decay rates: the step lr / (1 - β1ᵗ) and
/// √(1 - β2ᵗ), in f32 (both backends pass them to the update as is).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamFactors {
    pub step: f32,
    pub bc2_sqrt: f32,
}

/// torch.optim.Adam's bias corrections for 1-based step t: p -= step · m / (√v / bc2_sqrt + eps).
pub fn adam_factors(lr: f32, beta1: f32, beta2: f32, t: u32) -> AdamFactors {
    let bc1 = 1.0 - beta1.powi(t as i32);
    let bc2 = 1.0 - beta2.powi(t as i32);
    AdamFactors { step: lr / bc1, bc2_sqrt: bc2.sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_scales() {
        // 2 weight / n, and weight * sum / n: exact in binary for these values.
        assert_eq!(mean_sq_grad_scale(3.0, 4), 1.5);
        assert_eq!(mean_sq_grad_scale(1e4, 64 * 64), 2e4 / 4096.0);
        assert_eq!(mean_sq_loss(3.0, 10.0, 4), 7.5);
        assert_eq!(tv_grad_scale(0.25), 0.5);
        assert_eq!(weighted_sum(0.5, 6.0), 3.0);
    }

    #[test]
    fn gram_scales() {
        assert_eq!(gram_scale_f64(16, 4), 1.0 / 64.0);
        assert_eq!(gram_scale_f32(16, 4), 1.0 / 64.0);
        // Not a power of two: the f64 scale is the correctly rounded double, the f32 one the
        // correctly rounded float (these differ from a narrowed double only by double rounding).
        assert_eq!(gram_scale_f64(49, 3), 1.0 / 147.0);
        assert_eq!(gram_scale_f32(49, 3), 1.0f32 / 147.0f32);
    }

    #[test]
    fn adam_bias_corrections() {
        // t = 1: step = lr / (1 - β1) = 10 lr; √(1 - β2) = √0.001.
        let f = adam_factors(0.1, 0.9, 0.999, 1);
        assert!((f.step - 1.0).abs() < 1e-6, "{f:?}");
        assert!((f.bc2_sqrt - 0.001f32.sqrt()).abs() < 1e-6, "{f:?}");
        // t = 2: 1 - 0.81 = 0.19, 1 - 0.998001 = 0.001999.
        let f = adam_factors(0.1, 0.9, 0.999, 2);
        assert!((f.step - 0.1 / 0.19).abs() < 1e-6, "{f:?}");
        assert!((f.bc2_sqrt - 0.001999f32.sqrt()).abs() < 1e-6, "{f:?}");
        // Late: both corrections tend to 1.
        let f = adam_factors(0.1, 0.9, 0.999, 100_000);
        assert_eq!((f.step, f.bc2_sqrt), (0.1, 1.0));
        // Against the f64 formula over a run's first thousand steps.
        for t in 1..=1000 {
            let f = adam_factors(1e-2, 0.9, 0.999, t);
            let step = 1e-2 / (1.0 - 0.9f64.powi(t as i32));
            let bc2 = (1.0 - 0.999f64.powi(t as i32)).sqrt();
            assert!((f.step as f64 - step).abs() <= 1e-5 * step, "t {t}: {f:?}");
            assert!((f.bc2_sqrt as f64 - bc2).abs() <= 2e-4 * bc2, "t {t}: {f:?}");
        }
    }
}
