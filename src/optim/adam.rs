//! Adam as torch.optim.Adam (betas 0.9, 0.999, eps 1e-8), as neural-style's `-optimizer adam`.
//! Bounded (issue 20), each step is projected into the pixel box, as
//! crowsonkb/style-transfer-pytorch clamps after each of its Adam steps.

use crate::backend::{AdamStep, Backend, PixelBox};
use anyhow::{ensure, Result};

pub struct Adam<B: Backend> {
    lr: f32,
    m: B::Buf,
    v: B::Buf,
    t: u32,
    bounds: Option<PixelBox>,
}

/// Adam's state on the host (`Adam::export`), to carry a stopped run on (`Adam::import`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u32,
}

impl<B: Backend> Adam<B> {
    /// An Adam over `n` values; with `bounds`, each step ends projected into the box.
    pub fn new(backend: &B, n: usize, lr: f32, bounds: Option<PixelBox>) -> Result<Self> {
        Ok(Adam { lr, m: backend.zeros(n)?, v: backend.zeros(n)?, t: 0, bounds })
    }

    pub fn step(&mut self, backend: &B, x: &mut B::Buf, g: &B::Buf) -> Result<()> {
        self.t += 1;
        let step = AdamStep { lr: self.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: self.t };
        backend.adam_step(step, x, g, &mut self.m, &mut self.v)?;
        match &self.bounds {
            Some(pixel_box) => backend.project_to_box(pixel_box, x),
            None => Ok(()),
        }
    }

    /// The moments and step count, downloaded.
    pub fn export(&self, backend: &B) -> Result<AdamState> {
        Ok(AdamState { m: backend.download(&self.m)?, v: backend.download(&self.v)?, t: self.t })
    }

    /// An Adam over `n` values that goes on from `state` exactly as the exported one would.
    pub fn import(backend: &B, n: usize, lr: f32, bounds: Option<PixelBox>, state: &AdamState) -> Result<Self> {
        ensure!(state.m.len() == n && state.v.len() == n, "the saved Adam moments have {} values, the image {n}", state.m.len());
        Ok(Adam { lr, m: backend.upload(&state.m)?, v: backend.upload(&state.v)?, t: state.t, bounds })
    }
}
