//! CUDA backend (placeholder until the kernels land): reports that it is unavailable.

use crate::backend::{AdamStep, Backend, ConvShape, PoolKind, PoolShape, Precision};
use anyhow::{bail, Result};

/// Why the GPU cannot be used here, or Ok if it can.
pub fn probe() -> Result<()> {
    bail!("this build has no CUDA backend yet")
}

pub struct CudaBackend;

impl CudaBackend {
    pub fn new(_ordinal: usize, _precision: Precision) -> Result<Self> {
        probe()?;
        Ok(CudaBackend)
    }
}

// Placeholder so that code generic over `Backend` (the CLI's device dispatch) compiles against
// the agreed API; `new` never succeeds, so none of these runs. The real backend replaces it.
macro_rules! unavailable {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty;)*) => {
        $(fn $name(&self, $(_: $ty),*) -> $ret { unreachable!("placeholder CUDA backend") })*
    };
}

impl Backend for CudaBackend {
    type Buf = ();
    fn name(&self) -> String {
        "cuda (placeholder)".into()
    }
    unavailable! {
        zeros(len: usize) -> Result<()>;
        upload(host: &[f32]) -> Result<()>;
        download(buf: &()) -> Result<Vec<f32>>;
        len(buf: &()) -> usize;
        synchronize() -> Result<()>;
        conv3x3_fwd(s: ConvShape, x: &(), w: &(), b: &(), y: &mut ()) -> Result<()>;
        conv3x3_bwd_input(s: ConvShape, dy: &(), w: &(), dx: &mut ()) -> Result<()>;
        relu_bwd(y: &(), dy: &mut ()) -> Result<()>;
        pool_fwd(k: PoolKind, s: PoolShape, x: &(), y: &mut ()) -> Result<()>;
        pool_bwd(k: PoolKind, s: PoolShape, x: &(), dy: &(), dx: &mut ()) -> Result<()>;
        gram(hw: usize, c: usize, f: &(), g: &mut ()) -> Result<()>;
        gram_bwd_acc(hw: usize, c: usize, f: &(), dg: &(), df: &mut ()) -> Result<()>;
        content_loss_acc(w: f32, f: &(), p: &(), df: &mut ()) -> Result<f64>;
        style_loss(w: f32, g: &(), a: &(), dg: &mut ()) -> Result<f64>;
        tv_loss_acc(w: f32, h: usize, wd: usize, c: usize, x: &(), dx: &mut ()) -> Result<f64>;
        fill(x: &mut (), v: f32) -> Result<()>;
        copy(s: &(), d: &mut ()) -> Result<()>;
        dot(a: &(), b: &()) -> Result<f64>;
        asum(x: &()) -> Result<f64>;
        amax(x: &()) -> Result<f64>;
        axpy(a: f32, x: &(), y: &mut ()) -> Result<()>;
        scale(a: f32, x: &mut ()) -> Result<()>;
        adam_step(st: AdamStep, p: &mut (), g: &(), m: &mut (), v: &mut ()) -> Result<()>;
    }
}
