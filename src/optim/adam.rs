//! Adam as torch.optim.Adam (betas 0.9, 0.999, eps 1e-8), as neural-style's `-optimizer adam`.

use crate::backend::{AdamStep, Backend};
use anyhow::Result;

pub struct Adam<B: Backend> {
    lr: f32,
    m: B::Buf,
    v: B::Buf,
    t: u32,
}

impl<B: Backend> Adam<B> {
    pub fn new(backend: &B, n: usize, lr: f32) -> Result<Self> {
        Ok(Adam { lr, m: backend.zeros(n)?, v: backend.zeros(n)?, t: 0 })
    }

    pub fn step(&mut self, backend: &B, x: &mut B::Buf, g: &B::Buf) -> Result<()> {
        self.t += 1;
        let step = AdamStep { lr: self.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: self.t };
        backend.adam_step(step, x, g, &mut self.m, &mut self.v)
    }
}
