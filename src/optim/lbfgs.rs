//! L-BFGS with torch.optim.LBFGS's semantics for `line_search_fn=None` (and so jcjohnson's
//! optim.lbfgs): first step min(1, 1/|g|₁)·lr along -g, then lr along the two-loop direction;
//! a curvature pair is kept only when yᵀs > 1e-10; the oldest pair is dropped at `history`.
//! Early stopping is off (tolerances -1), as neural-style runs it: one evaluation per iteration.

use crate::backend::Backend;
use anyhow::Result;
use std::collections::VecDeque;

pub struct Lbfgs<B: Backend> {
    lr: f32,
    history: usize,
    /// Pairs (y, s, 1 / yᵀs), oldest first.
    pairs: VecDeque<(B::Buf, B::Buf, f64)>,
    h_diag: f64,
    d: B::Buf,
    prev_g: B::Buf,
    t: f64,
    iteration: usize,
    /// Dropped pairs' buffers, reused for new ones.
    spare: Vec<B::Buf>,
}

/// What `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Moved,
    /// gᵀd was not negative enough to make progress (torch's `gtd > -tolerance_change`).
    NotDescent,
}

impl<B: Backend> Lbfgs<B> {
    pub fn new(backend: &B, n: usize, history: usize, lr: f32) -> Result<Self> {
        Ok(Lbfgs {
            lr,
            history: history.max(1),
            pairs: VecDeque::new(),
            h_diag: 1.0,
            d: backend.zeros(n)?,
            prev_g: backend.zeros(n)?,
            t: 0.0,
            iteration: 0,
            spare: Vec::new(),
        })
    }

    fn take_buf(&mut self, backend: &B, n: usize) -> Result<B::Buf> {
        match self.spare.pop() {
            Some(b) => Ok(b),
            None => backend.zeros(n),
        }
    }

    /// Given the gradient g at x (just evaluated), moves x one step. The caller then evaluates
    /// the new x and calls `step` again.
    pub fn step(&mut self, backend: &B, x: &mut B::Buf, g: &B::Buf) -> Result<StepOutcome> {
        let n = backend.len(g);
        self.iteration += 1;
        if self.iteration == 1 {
            backend.copy(g, &mut self.d)?;
            backend.scale(-1.0, &mut self.d)?;
            self.h_diag = 1.0;
        } else {
            // y = g - prev_g, s = t d
            let mut y = self.take_buf(backend, n)?;
            backend.copy(g, &mut y)?;
            backend.axpy(-1.0, &self.prev_g, &mut y)?;
            let mut s = self.take_buf(backend, n)?;
            backend.copy(&self.d, &mut s)?;
            backend.scale(self.t as f32, &mut s)?;
            let ys = backend.dot(&y, &s)?;
            if ys > 1e-10 {
                if self.pairs.len() == self.history {
                    let (oy, os, _) = self.pairs.pop_front().expect("history is not empty");
                    self.spare.push(oy);
                    self.spare.push(os);
                }
                self.h_diag = ys / backend.dot(&y, &y)?;
                self.pairs.push_back((y, s, 1.0 / ys));
            } else {
                self.spare.push(y);
                self.spare.push(s);
            }
            // Two-loop recursion: d = -H g, computed in place in d.
            backend.copy(g, &mut self.d)?;
            backend.scale(-1.0, &mut self.d)?;
            let mut al = vec![0.0f64; self.pairs.len()];
            for (i, (y, s, ro)) in self.pairs.iter().enumerate().rev() {
                al[i] = backend.dot(s, &self.d)? * ro;
                backend.axpy(-al[i] as f32, y, &mut self.d)?;
            }
            backend.scale(self.h_diag as f32, &mut self.d)?;
            for (i, (y, s, ro)) in self.pairs.iter().enumerate() {
                let be_i = backend.dot(y, &self.d)? * ro;
                backend.axpy((al[i] - be_i) as f32, s, &mut self.d)?;
            }
        }
        backend.copy(g, &mut self.prev_g)?;
        self.t = if self.iteration == 1 { (1.0f64).min(1.0 / backend.asum(g)?) * self.lr as f64 } else { self.lr as f64 };
        let gtd = backend.dot(g, &self.d)?;
        // torch breaks when gtd > -tolerance_change; neural-style runs with tolerance -1.
        if gtd > 1.0 {
            return Ok(StepOutcome::NotDescent);
        }
        backend.axpy(self.t as f32, &self.d, x)?;
        Ok(StepOutcome::Moved)
    }
}
