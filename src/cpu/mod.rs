//! The CPU backend: rayon over every core, f32, channels-last. Each file mirrors one .cu file.

pub mod conv;
pub mod gram;
pub mod loss;
pub mod pool;
pub mod vector;

use crate::backend::{AdamStep, Backend, ConvShape, PoolKind, PoolShape};
use anyhow::Result;

#[derive(Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

/// An empty vector with room for `len` floats, or an error (not an abort) when the allocator
/// refuses: the memory check before a run estimates, this is what makes a miss recoverable.
fn host_vec(len: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| anyhow::anyhow!("out of memory allocating {:.2} GiB", len as f64 * 4.0 / (1u64 << 30) as f64))?;
    Ok(v)
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
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

    fn conv3x3_fwd(&self, s: ConvShape, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        conv::conv3x3_fwd(s, x, w, b, y);
        Ok(())
    }
    fn conv3x3_bwd_input(&self, s: ConvShape, dy: &Vec<f32>, w_flip: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        conv::conv3x3_bwd_input(s, dy, w_flip, dx);
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
        gram::gram(hw, c, f, g);
        Ok(())
    }
    fn gram_bwd_acc(&self, hw: usize, c: usize, f: &Vec<f32>, dg: &Vec<f32>, df: &mut Vec<f32>) -> Result<()> {
        gram::gram_bwd_acc(hw, c, f, dg, df);
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
    fn scale(&self, alpha: f32, x: &mut Vec<f32>) -> Result<()> {
        vector::scale(alpha, x);
        Ok(())
    }
    fn adam_step(&self, step: AdamStep, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        vector::adam_step(step, param, grad, m, v);
        Ok(())
    }
}
