//! L-BFGS with torch.optim.LBFGS's semantics: first step min(1, 1/|g|₁)·lr along -g, then lr
//! along the two-loop direction; a curvature pair is kept only when yᵀs > 1e-10; the oldest pair
//! is dropped at `history`. Early stopping is off (tolerances -1), as neural-style runs it.
//!
//! Two ways to run it:
//! - `step` (torch's `line_search_fn=None`, jcjohnson's optim.lbfgs): the caller evaluates, then
//!   steps; one evaluation per iteration.
//! - `minimize` with `LineSearch::StrongWolfe` (torch's `line_search_fn="strong_wolfe"`, the
//!   cubic-interpolating bracket-and-zoom search of Nocedal & Wright, c1 = 1e-4, c2 = 0.9): the
//!   optimiser calls the evaluation itself, several times per iteration.
//!
//! A run can stop between two iterations and go on later bit for bit (`minimize_from` with a
//! stop test; `export` / `import` carry the optimiser's state through the host).
//!
//! Bounded (issue 20; `bounds` given): every iterate stays in the pixel box, so the image saved is
//! the image optimised. A projected L-BFGS over the free variables (in the manner of Kim, Sra and
//! Dhillon 2010's projected quasi-Newton):
//! - the values at a bound that the gradient pushes outward are held (`hold_at_bounds`); the
//!   others are free;
//! - the two-loop recursion starts from the projected steepest descent (-g over the free
//!   variables), and its result is cut to the free variables and to the components that do not
//!   push a value at its bound outward; where that is not a descent direction, the projected
//!   steepest descent is taken instead;
//! - each trial point is projected, x = P(x0 + t d), so every evaluated image lies in the box;
//! - the curvature pair is the step actually taken, s = x - x_prev (shorter than t d where the
//!   projection cut it), and y, both over the variables free at x: a secant pair of the problem
//!   reduced to those (with y over all variables, the two-loop would approximate the free block
//!   of the full inverse Hessian, not the inverse of the free block, and the fixed step would
//!   overshoot wherever values couple across the bounds);
//! - the strong-Wolfe search works on φ(t) = f(P(x0 + t d)), whose slope at t is gᵀd over the
//!   components of d that still move there.
//! Without bounds every op is the unbounded one above, bit for bit (the torch goldens check it).

use crate::backend::{Backend, PixelBox};
use anyhow::{ensure, Result};
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
    bounded: Option<Bounded<B>>,
}

/// A bounded L-BFGS's box, and the point the last direction was computed at (the start of the
/// step whose s = x - prev_x the next direction pairs with y).
struct Bounded<B: Backend> {
    pixel_box: PixelBox,
    prev_x: B::Buf,
}

/// The evaluation `minimize` calls: writes the gradient at x into g and returns the loss.
pub type Eval<'a, B> = dyn FnMut(&<B as Backend>::Buf, &mut <B as Backend>::Buf) -> Result<f64> + 'a;

/// L-BFGS's state on the host (`Lbfgs::export`), to carry a stopped run on (`Lbfgs::import`).
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsState {
    /// Curvature pairs (y, s, 1 / yᵀs), oldest first.
    pub pairs: Vec<(Vec<f32>, Vec<f32>, f64)>,
    pub h_diag: f64,
    /// The last search direction.
    pub d: Vec<f32>,
    /// The gradient the last direction was computed from.
    pub prev_g: Vec<f32>,
    /// The last step length.
    pub t: f64,
    /// Directions computed so far.
    pub iteration: usize,
    /// A bounded run's `prev_x` (the point the last direction was computed at); empty unbounded.
    pub prev_x: Vec<f32>,
}

/// What `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Moved,
    /// gᵀd was not negative enough to make progress (torch's `gtd > -tolerance_change`).
    NotDescent,
}

/// The line search of `minimize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineSearch {
    /// A fixed step: one evaluation per iteration, as `step`.
    #[default]
    None,
    /// torch.optim.LBFGS's `strong_wolfe`.
    StrongWolfe,
}

/// How a `minimize` run ended, or where a stopped one stands (`stopped`; handed back to
/// `minimize_from` it goes on from there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Minimized {
    /// Evaluations made (never more than the budget).
    pub evaluations: usize,
    /// 0-based index (among this run's evaluations) of the evaluation at the final x, or None
    /// when x moved after the last evaluation (the fixed step moves once more, as torch does).
    pub final_evaluation: Option<usize>,
    /// The loss of the last evaluation; with strong Wolfe, the loss at x.
    pub f: f64,
    /// The stop test asked to stop before the budget was spent.
    pub stopped: bool,
}

impl<B: Backend> Lbfgs<B> {
    /// An L-BFGS over `n` values; with `bounds`, one that keeps every iterate inside the box
    /// (the caller starts it from a point inside).
    pub fn new(backend: &B, n: usize, history: usize, lr: f32, bounds: Option<PixelBox>) -> Result<Self> {
        let bounded = match bounds {
            Some(pixel_box) => Some(Bounded { pixel_box, prev_x: backend.zeros(n)? }),
            None => None,
        };
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
            bounded,
        })
    }

    /// The state, downloaded: with x (and g, for strong Wolfe) it is all a stopped run needs.
    pub fn export(&self, backend: &B) -> Result<LbfgsState> {
        let mut pairs = Vec::with_capacity(self.pairs.len());
        for (y, s, rho) in &self.pairs {
            pairs.push((backend.download(y)?, backend.download(s)?, *rho));
        }
        let prev_x = match &self.bounded {
            Some(b) => backend.download(&b.prev_x)?,
            None => Vec::new(),
        };
        Ok(LbfgsState { pairs, h_diag: self.h_diag, d: backend.download(&self.d)?, prev_g: backend.download(&self.prev_g)?, t: self.t, iteration: self.iteration, prev_x })
    }

    /// An L-BFGS over `n` values that goes on from `state` exactly as the exported one would
    /// (bounded or not as that one was: `bounds` must agree with whether the state has prev_x).
    pub fn import(backend: &B, n: usize, history: usize, lr: f32, bounds: Option<PixelBox>, state: &LbfgsState) -> Result<Self> {
        let history = history.max(1);
        ensure!(state.pairs.len() <= history, "the saved L-BFGS state has {} curvature pairs, more than the history of {history}", state.pairs.len());
        ensure!(
            state.d.len() == n && state.prev_g.len() == n && state.pairs.iter().all(|(y, s, _)| y.len() == n && s.len() == n),
            "the saved L-BFGS vectors do not have the image's {n} values"
        );
        let bounded = match bounds {
            Some(pixel_box) => {
                ensure!(state.prev_x.len() == n, "the saved L-BFGS state is an unbounded run's (it has no prev_x); this run is bounded");
                Some(Bounded { pixel_box, prev_x: backend.upload(&state.prev_x)? })
            }
            None => {
                ensure!(state.prev_x.is_empty(), "the saved L-BFGS state is a bounded run's (it has prev_x); this run is --unbounded");
                None
            }
        };
        let mut pairs = VecDeque::with_capacity(state.pairs.len());
        for (y, s, rho) in &state.pairs {
            pairs.push_back((backend.upload(y)?, backend.upload(s)?, *rho));
        }
        Ok(Lbfgs {
            lr,
            history,
            pairs,
            h_diag: state.h_diag,
            d: backend.upload(&state.d)?,
            prev_g: backend.upload(&state.prev_g)?,
            t: state.t,
            iteration: state.iteration,
            spare: Vec::new(),
            bounded,
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
        if !is_descent(self.direction(backend, x, g)?) {
            return Ok(StepOutcome::NotDescent);
        }
        backend.axpy(self.t as f32, &self.d, x)?;
        if let Some(b) = &self.bounded {
            backend.project_to_box(&b.pixel_box, x)?;
        }
        Ok(StepOutcome::Moved)
    }

    /// The search direction d for gradient g at x (the two-loop recursion over the kept pairs,
    /// after adding the pair of the last step), the first trial step t, and gᵀd, which is returned.
    fn direction(&mut self, backend: &B, x: &B::Buf, g: &B::Buf) -> Result<f64> {
        let n = backend.len(g);
        self.iteration += 1;
        // gᵀd, when the two-loop recursion computed it with its last step.
        let mut gtd = None;
        if self.iteration == 1 {
            gtd = self.steepest_descent(backend, x, g)?;
            self.h_diag = 1.0;
        } else {
            // y = g - prev_g; s = t d, or bounded the step actually taken, x - prev_x
            let mut y = self.take_buf(backend, n)?;
            backend.copy(g, &mut y)?;
            backend.axpy(-1.0, &self.prev_g, &mut y)?;
            let mut s = self.take_buf(backend, n)?;
            match &self.bounded {
                None => {
                    backend.copy(&self.d, &mut s)?;
                    backend.scale(self.t as f32, &mut s)?;
                }
                Some(b) => {
                    // Over the free variables only: a value held at its bound has no curvature to
                    // learn, and (s, y) over the others is a secant pair of the reduced problem.
                    backend.copy(x, &mut s)?;
                    backend.axpy(-1.0, &b.prev_x, &mut s)?;
                    backend.hold_at_bounds(&b.pixel_box, x, g, &mut s)?;
                    backend.hold_at_bounds(&b.pixel_box, x, g, &mut y)?;
                }
            }
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
            // Two-loop recursion: d = -H g, computed in place in d. Each loop is
            //   al[i] = ρ_i s_iᵀd, d -= al[i] y_i   (newest pair first), then d *= h_diag,
            //   be_i = ρ_i y_iᵀd, d += (al[i] - be_i) s_i   (oldest first);
            // each dot is taken in one pass with the axpy before it (axpy_dot: the vectors are
            // read once, not twice; same values), and gᵀd with the last axpy.
            self.steepest_descent(backend, x, g)?;
            let m = self.pairs.len();
            let mut al = vec![0.0f64; m];
            for i in (0..m).rev() {
                let (_, s, ro) = &self.pairs[i];
                al[i] = ro * match self.pairs.get(i + 1) {
                    None => backend.dot(s, &self.d)?,
                    Some((y_newer, _, _)) => backend.axpy_dot(-al[i + 1] as f32, y_newer, &mut self.d, s)?,
                };
            }
            if let Some((y_oldest, _, _)) = self.pairs.front() {
                backend.axpy(-al[0] as f32, y_oldest, &mut self.d)?;
            }
            backend.scale(self.h_diag as f32, &mut self.d)?;
            let mut step_coef = 0.0f64; // al[i - 1] - be_{i - 1}, for the pair before i
            for i in 0..m {
                let (y, _, ro) = &self.pairs[i];
                let be_i = ro * match i.checked_sub(1) {
                    None => backend.dot(y, &self.d)?,
                    Some(older) => backend.axpy_dot(step_coef as f32, &self.pairs[older].1, &mut self.d, y)?,
                };
                step_coef = al[i] - be_i;
            }
            if let Some((_, s_newest, _)) = self.pairs.back() {
                gtd = Some(backend.axpy_dot(step_coef as f32, s_newest, &mut self.d, g)?);
            }
            if let Some(b) = &self.bounded {
                // Only the free variables move, and none outward; where that does not descend,
                // the projected gradient.
                backend.hold_at_bounds(&b.pixel_box, x, g, &mut self.d)?;
                backend.zero_outward(&b.pixel_box, x, &mut self.d)?;
                let cut = backend.dot(g, &self.d)?;
                gtd = if cut < 0.0 { Some(cut) } else { self.steepest_descent(backend, x, g)? };
            }
        }
        backend.copy(g, &mut self.prev_g)?;
        self.t = if self.iteration == 1 {
            // torch's min(1, 1/|g|₁) lr; bounded, with the projected gradient's |d|₁.
            let norm = if self.bounded.is_some() { backend.asum(&self.d)? } else { backend.asum(g)? };
            (1.0f64).min(1.0 / norm) * self.lr as f64
        } else {
            self.lr as f64
        };
        if let Some(b) = &mut self.bounded {
            backend.copy(x, &mut b.prev_x)?;
        }
        match gtd {
            Some(gtd) => Ok(gtd),
            None => backend.dot(g, &self.d),
        }
    }

    /// d = -g, bounded with the components that push a value at its bound outward zeroed (the
    /// projected steepest descent), and then gᵀd (unbounded, None: torch takes it later).
    fn steepest_descent(&mut self, backend: &B, x: &B::Buf, g: &B::Buf) -> Result<Option<f64>> {
        backend.copy(g, &mut self.d)?;
        backend.scale(-1.0, &mut self.d)?;
        let Some(b) = &self.bounded else { return Ok(None) };
        backend.zero_outward(&b.pixel_box, x, &mut self.d)?;
        Ok(Some(backend.dot(g, &self.d)?))
    }

    /// Runs L-BFGS from x for at most `max_evals` evaluations of `eval(x, g) -> loss` (which
    /// writes the gradient at x into g), as torch's `LBFGS.step(closure)` with tolerances -1:
    /// - fixed step: max_iter = `max_evals` and torch's default max_eval, so every evaluation is
    ///   followed by a step (x ends one step past the last evaluation);
    /// - strong Wolfe: max_eval = `max_evals`, the search cut short rather than exceed it (torch
    ///   would overshoot it within its last iteration); x ends on an evaluated point, g holds
    ///   the gradient there.
    pub fn minimize(
        &mut self,
        backend: &B,
        line_search: LineSearch,
        x: &mut B::Buf,
        g: &mut B::Buf,
        max_evals: usize,
        eval: &mut Eval<B>,
    ) -> Result<Minimized> {
        self.minimize_from(backend, line_search, x, g, max_evals, None, &mut || false, eval)
    }

    /// `minimize`, polling `stop` between iterations: before each evaluation but the first with
    /// the fixed step, before each direction and line search with strong Wolfe (a search under
    /// way is finished). When it returns true the run returns with `stopped` set; handing that
    /// result back as `from`, with the same optimiser (or one `import`ed from its `export`) and
    /// the same x (and g, for strong Wolfe), goes on exactly as if it had not stopped.
    #[allow(clippy::too_many_arguments)]
    pub fn minimize_from(
        &mut self,
        backend: &B,
        line_search: LineSearch,
        x: &mut B::Buf,
        g: &mut B::Buf,
        max_evals: usize,
        from: Option<Minimized>,
        stop: &mut dyn FnMut() -> bool,
        eval: &mut Eval<B>,
    ) -> Result<Minimized> {
        let (mut evals, mut final_evaluation, mut f) = match from {
            Some(m) => (m.evaluations, m.final_evaluation, m.f),
            None if max_evals == 0 => return Ok(Minimized { evaluations: 0, final_evaluation: None, f: f64::NAN, stopped: false }),
            None => (1, Some(0), eval(x, g)?),
        };
        let paused = |evaluations, final_evaluation, f| Ok(Minimized { evaluations, final_evaluation, f, stopped: true });
        match line_search {
            LineSearch::None => {
                // x has moved since the last evaluation (a stopped run stops right after a step).
                let mut moved = from.is_some();
                loop {
                    if moved {
                        if stop() {
                            return paused(evals, final_evaluation, f);
                        }
                        f = eval(x, g)?;
                        final_evaluation = Some(evals);
                        evals += 1;
                    }
                    if self.step(backend, x, g)? == StepOutcome::NotDescent {
                        break;
                    }
                    final_evaluation = None;
                    moved = true;
                    if evals == max_evals {
                        break;
                    }
                }
            }
            LineSearch::StrongWolfe => {
                let n = backend.len(x);
                let mut search = WolfeBuffers {
                    x0: backend.zeros(n)?,
                    g0: backend.zeros(n)?,
                    g_prev: backend.zeros(n)?,
                    g_bracket: [backend.zeros(n)?, backend.zeros(n)?],
                    moving: match &self.bounded {
                        Some(b) => Some((b.pixel_box, backend.zeros(n)?)),
                        None => None,
                    },
                };
                while evals < max_evals {
                    if stop() {
                        return paused(evals, final_evaluation, f);
                    }
                    let gtd = self.direction(backend, x, g)?;
                    if !is_descent(gtd) {
                        break;
                    }
                    backend.copy(x, &mut search.x0)?;
                    // The first trial plus at most max_ls more: never past the budget.
                    let max_ls = (max_evals - evals - 1).min(MAX_LS);
                    let before = evals;
                    let r = strong_wolfe(backend, &mut search, &self.d, self.t, f, g, gtd, max_ls, x, &mut |x, g| {
                        evals += 1;
                        eval(x, g)
                    })?;
                    // x = x0 + t d (bounded, P(x0 + t d)); g and f are at that point.
                    search.trial_point(backend, &self.d, r.t, x)?;
                    self.t = r.t;
                    f = r.f;
                    if let Some(k) = r.accepted {
                        final_evaluation = Some(before + k - 1);
                    }
                }
            }
        }
        Ok(Minimized { evaluations: evals, final_evaluation, f, stopped: false })
    }
}

/// torch stops when gᵀd > -tolerance_change; neural-style runs with tolerance_change = -1, so
/// the stop is gᵀd > 1 (a NaN gᵀd stops here too, where torch's `NaN > 1` would go on).
///
/// When can it happen? Not while every kept pair has yᵀs > 1e-10, in exact arithmetic: the
/// two-loop recursion computes d = -H g with H = Vᵀ H₀ V + Σ ρ s sᵀ (the BFGS update applied
/// pair by pair), H₀ = h_diag I and h_diag = yᵀs / yᵀy > 0, and each update keeps H positive
/// definite when ρ = 1 / yᵀs > 0; so gᵀd = -gᵀ H g ≤ 0 < 1 for every g (= 0 only at g = 0, which
/// is not a stop either: d = 0, the step moves nothing, and the next iteration sees the same g).
/// The first direction is -g, with gᵀd = -|g|² ≤ 0. What remains is round-off: the f32 axpys of
/// the recursion would have to be off by more than gᵀHg + 1, which takes an H so ill-conditioned
/// (ρ up to 1e10) that its rounding swamps the product, and a non-finite gradient (which
/// `stylize` reports as `NonFinite` before any step). The unit tests below drive the branch with
/// a crafted state instead: a pair with yᵀs < 0, which `direction` never keeps.
fn is_descent(gtd: f64) -> bool {
    gtd <= 1.0
}

/// torch's `max_ls`: evaluations a line search may make after its first trial.
const MAX_LS: usize = 25;

/// Image-sized scratch of the line search: the start point and the gradients it keeps.
struct WolfeBuffers<B: Backend> {
    x0: B::Buf,
    /// Gradient at the start point.
    g0: B::Buf,
    /// Gradient at the previous trial of the bracketing phase.
    g_prev: B::Buf,
    /// Gradients at the two ends of the bracket, by position.
    g_bracket: [B::Buf; 2],
    /// Bounded: the box, and scratch for the part of d that still moves at a trial point.
    moving: Option<(PixelBox, B::Buf)>,
}

impl<B: Backend> WolfeBuffers<B> {
    /// x = x0 + t d; bounded, projected into the box.
    fn trial_point(&self, backend: &B, d: &B::Buf, t: f64, x: &mut B::Buf) -> Result<()> {
        backend.copy(&self.x0, x)?;
        backend.axpy(t as f32, d, x)?;
        if let Some((pixel_box, _)) = &self.moving {
            backend.project_to_box(pixel_box, x)?;
        }
        Ok(())
    }

    /// The slope of the search at the trial point x with gradient g: gᵀd, bounded over the
    /// components of d that still move at x (those the projection holds at a bound do not).
    fn slope(&mut self, backend: &B, d: &B::Buf, x: &B::Buf, g: &B::Buf) -> Result<f64> {
        match &mut self.moving {
            None => backend.dot(g, d),
            Some((pixel_box, moving)) => {
                backend.copy(d, moving)?;
                backend.zero_outward(pixel_box, x, moving)?;
                backend.dot(g, moving)
            }
        }
    }
}

struct WolfeResult {
    t: f64,
    f: f64,
    /// Which of this search's evaluations (1-based) is at the returned step; None: the start.
    accepted: Option<usize>,
}

/// A point of the search: step, loss, directional derivative gᵀd, and which of the search's
/// evaluations it is (1-based; 0 = the start point).
#[derive(Clone, Copy, Debug)]
struct Point {
    t: f64,
    f: f64,
    gtd: f64,
    eval: usize,
}

/// torch's `_cubic_interpolate`: the minimiser of the cubic through (x1, f1, g1), (x2, f2, g2),
/// clamped to the bounds (default: the two points), or their midpoint when it has none.
fn cubic_interpolate(p1: (f64, f64, f64), p2: (f64, f64, f64), bounds: Option<(f64, f64)>) -> f64 {
    let ((x1, f1, g1), (x2, f2, g2)) = (p1, p2);
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 { x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2)) } else { x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2)) };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// torch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9, tolerance_change = 1e-9), step by step: a first
/// trial at t0, then at most `max_ls` more evaluations along d from `buf.x0` (where the loss is
/// f0, the gradient g, and gᵀd = gtd0). `x` is scratch for the trial points. On return g holds
/// the gradient at the returned step.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe<B: Backend>(
    backend: &B,
    buf: &mut WolfeBuffers<B>,
    d: &B::Buf,
    t0: f64,
    f0: f64,
    g: &mut B::Buf,
    gtd0: f64,
    max_ls: usize,
    x: &mut B::Buf,
    eval: &mut Eval<B>,
) -> Result<WolfeResult> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const TOLERANCE_CHANGE: f64 = 1e-9;
    let d_norm = backend.amax(d)?;
    let mut evals = 0usize;
    // Evaluates at x0 + t d, the gradient into g.
    let mut trial = |buf: &mut WolfeBuffers<B>, t: f64, g: &mut B::Buf| -> Result<Point> {
        buf.trial_point(backend, d, t, x)?;
        let f = eval(x, g)?;
        evals += 1;
        Ok(Point { t, f, gtd: buf.slope(backend, d, x, g)?, eval: evals })
    };
    let result = |p: Point| WolfeResult { t: p.t, f: p.f, accepted: (p.eval > 0).then_some(p.eval) };
    let start = Point { t: 0.0, f: f0, gtd: gtd0, eval: 0 };
    backend.copy(g, &mut buf.g0)?;
    backend.copy(g, &mut buf.g_prev)?;
    let mut prev = start;
    let mut new = trial(buf, t0, g)?;

    // Bracketing: extrapolate until the step is bracketed or satisfies the strong Wolfe conditions.
    let mut ls_iter = 0;
    let mut bracket: Option<[Point; 2]> = None;
    while ls_iter < max_ls {
        // In torch's order: sufficient decrease fails -> bracket; curvature holds -> done;
        // the slope turned -> bracket; else extrapolate.
        let rose = new.f > f0 + C1 * new.t * gtd0 || (ls_iter > 1 && new.f >= prev.f);
        if !rose && new.gtd.abs() <= -C2 * gtd0 {
            return Ok(result(new)); // g holds its gradient
        }
        if rose || new.gtd >= 0.0 {
            backend.copy(&buf.g_prev, &mut buf.g_bracket[0])?;
            backend.copy(g, &mut buf.g_bracket[1])?;
            bracket = Some([prev, new]);
            break;
        }
        let min_step = new.t + 0.01 * (new.t - prev.t);
        let max_step = new.t * 10.0;
        let t = cubic_interpolate((prev.t, prev.f, prev.gtd), (new.t, new.f, new.gtd), Some((min_step, max_step)));
        prev = new;
        backend.copy(g, &mut buf.g_prev)?;
        new = trial(buf, t, g)?;
        ls_iter += 1;
    }
    let Some(mut bracket) = bracket else {
        // Out of evaluations while extrapolating: torch takes [start, last trial] and returns
        // the one with the lower loss (the start on a tie).
        if f0 <= new.f {
            backend.copy(&buf.g0, g)?;
            return Ok(result(start));
        }
        return Ok(result(new));
    };

    // Zoom: shrink the bracket by cubic interpolation until the strong Wolfe conditions hold.
    let by_loss = |b: &[Point; 2]| if b[0].f <= b[1].f { (0, 1) } else { (1, 0) };
    let (mut low, mut high) = by_loss(&bracket);
    let mut insufficient_progress = false;
    while ls_iter < max_ls {
        if (bracket[1].t - bracket[0].t).abs() * d_norm < TOLERANCE_CHANGE {
            break;
        }
        let [a, b] = bracket;
        let mut t = cubic_interpolate((a.t, a.f, a.gtd), (b.t, b.f, b.gtd), None);
        let (lo, hi) = (a.t.min(b.t), a.t.max(b.t));
        let eps = 0.1 * (hi - lo);
        if (hi - t).min(t - lo) < eps {
            // Too close to an end: move away from it, unless the last step made progress.
            if insufficient_progress || t >= hi || t <= lo {
                t = if (t - hi).abs() < (t - lo).abs() { hi - eps } else { lo + eps };
                insufficient_progress = false;
            } else {
                insufficient_progress = true;
            }
        } else {
            insufficient_progress = false;
        }
        let p = trial(buf, t, g)?;
        ls_iter += 1;
        if p.f > f0 + C1 * p.t * gtd0 || p.f >= bracket[low].f {
            bracket[high] = p;
            backend.copy(g, &mut buf.g_bracket[high])?;
            (low, high) = by_loss(&bracket);
        } else {
            let done = p.gtd.abs() <= -C2 * gtd0;
            if !done && p.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low];
                buf.g_bracket.swap(0, 1); // the old low's gradient moves to `high`'s slot
            }
            bracket[low] = p;
            backend.copy(g, &mut buf.g_bracket[low])?;
            if done {
                break;
            }
        }
    }
    backend.copy(&buf.g_bracket[low], g)?;
    Ok(result(bracket[low]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::vector;
    use crate::CpuBackend;

    #[test]
    fn the_stop_is_torchs_with_tolerance_change_minus_one() {
        // torch: `if gtd > -tolerance_change: break`, tolerance_change = -1.
        for gtd in [-1e30, -1.0, 0.0, 0.5, 1.0] {
            assert!(is_descent(gtd), "{gtd}");
        }
        for gtd in [1.0 + 1e-12, 2.0, 1e30, f64::INFINITY] {
            assert!(!is_descent(gtd), "{gtd}");
        }
        // NaN stops here (torch would step on; stylize never gets this far with a NaN).
        assert!(!is_descent(f64::NAN));
    }

    /// A state after one iteration with one crafted pair (y, s, 1 / yᵀs) and t = 0, so that
    /// the next direction adds no pair of its own (s = t d = 0, yᵀs = 0).
    fn crafted(y: [f32; 2], s: [f32; 2]) -> LbfgsState {
        let ys = (y[0] * s[0] + y[1] * s[1]) as f64;
        LbfgsState { pairs: vec![(y.to_vec(), s.to_vec(), 1.0 / ys)], h_diag: 1.0, d: vec![0.0; 2], prev_g: vec![0.0; 2], t: 0.0, iteration: 1, prev_x: vec![] }
    }

    #[test]
    fn an_indefinite_pair_is_not_a_descent_direction_and_stops() {
        let be = CpuBackend::new();
        // yᵀs = -1: H = V H₀ Vᵀ + ρ s sᵀ with ρ = -1 turns g = (2, 0) into d = (2, 0), gᵀd = 4.
        let state = crafted([1.0, 0.0], [-1.0, 0.0]);
        let mut opt = Lbfgs::import(&be, 2, 10, 1.0, None, &state).unwrap();
        assert_eq!(opt.direction(&be, &vec![0.0; 2], &vec![2.0, 0.0]).unwrap(), 4.0);
        let mut opt = Lbfgs::import(&be, 2, 10, 1.0, None, &state).unwrap();
        let mut x = vec![5.0, 7.0];
        assert_eq!(opt.step(&be, &mut x, &vec![2.0, 0.0]).unwrap(), StepOutcome::NotDescent);
        assert_eq!(x, [5.0, 7.0], "a stop does not move x");
        // minimize (both line searches) stops after the evaluation it starts with, x unmoved.
        for ls in [LineSearch::None, LineSearch::StrongWolfe] {
            let mut opt = Lbfgs::import(&be, 2, 10, 1.0, None, &state).unwrap();
            let (mut x, mut g) = (vec![5.0, 7.0], vec![0.0; 2]);
            let mut evals = 0;
            let r = opt
                .minimize(&be, ls, &mut x, &mut g, 10, &mut |_, g| {
                    evals += 1;
                    g.copy_from_slice(&[2.0, 0.0]);
                    Ok(3.0)
                })
                .unwrap();
            assert_eq!((r.evaluations, r.final_evaluation, r.f, r.stopped), (1, Some(0), 3.0, false), "{ls:?}");
            assert_eq!((evals, x), (1, vec![5.0, 7.0]), "{ls:?}");
        }
        // The same pair with yᵀs = +1 (as kept pairs are): a descent direction, and a step.
        let mut opt = Lbfgs::import(&be, 2, 10, 1.0, None, &crafted([1.0, 0.0], [1.0, 0.0])).unwrap();
        let mut x = vec![5.0, 7.0];
        assert_eq!(opt.step(&be, &mut x, &vec![2.0, 0.0]).unwrap(), StepOutcome::Moved);
        assert!(x[0] < 5.0 && x[1] == 7.0, "{x:?}");
    }

    #[test]
    fn a_zero_gradient_is_not_a_stop() {
        // gᵀd = 0 <= 1: torch goes on too; d = 0, so x stays where it is.
        let be = CpuBackend::new();
        let mut opt = Lbfgs::import(&be, 2, 10, 1.0, None, &crafted([1.0, 0.5], [0.5, 1.0])).unwrap();
        let mut x = vec![5.0, 7.0];
        assert_eq!(opt.step(&be, &mut x, &vec![0.0, 0.0]).unwrap(), StepOutcome::Moved);
        assert_eq!(x, [5.0, 7.0]);
        // The first iteration too (d = -g = 0; 1 / |g|₁ is infinite, the step min(1, ∞) lr = lr).
        let mut opt = Lbfgs::new(&be, 2, 10, 1.0, None).unwrap();
        assert_eq!(opt.step(&be, &mut x, &vec![0.0, 0.0]).unwrap(), StepOutcome::Moved);
        assert_eq!(x, [5.0, 7.0]);
    }

    #[test]
    fn a_nan_gradient_stops() {
        let be = CpuBackend::new();
        let mut opt = Lbfgs::new(&be, 2, 10, 1.0, None).unwrap();
        let mut x = vec![5.0, 7.0];
        assert_eq!(opt.step(&be, &mut x, &vec![f32::NAN, 1.0]).unwrap(), StepOutcome::NotDescent);
        assert_eq!(x, [5.0, 7.0]);
    }

    /// Every pair `direction` keeps has yᵀs > 1e-10, and then the direction descends: runs on a
    /// non-convex function (many pairs with yᵀs <= 0 are offered and refused) never stop early,
    /// and every gᵀd is <= 0.
    #[test]
    fn kept_pairs_always_give_descent_directions() {
        let be = CpuBackend::new();
        let mut rng = crate::rng::Rng::new(7);
        for run in 0..20 {
            let n = 16;
            // f(x) = Σ a_i x_i² + b_i sin(3 x_i) + c x_i x_(i+1): indefinite in places.
            let a: Vec<f64> = (0..n).map(|_| rng.uniform() as f64 * 2.0).collect();
            let b: Vec<f64> = (0..n).map(|_| rng.uniform() as f64 * 4.0).collect();
            let c = 0.3;
            let grad = |x: &[f32], g: &mut [f32]| {
                for i in 0..n {
                    let xi = x[i] as f64;
                    let mut gi = 2.0 * a[i] * xi + 3.0 * b[i] * (3.0 * xi).cos();
                    if i + 1 < n {
                        gi += c * x[i + 1] as f64;
                    }
                    if i > 0 {
                        gi += c * x[i - 1] as f64;
                    }
                    g[i] = gi as f32;
                }
            };
            let mut x: Vec<f32> = (0..n).map(|_| rng.uniform() * 4.0 - 2.0).collect();
            let mut g = vec![0.0; n];
            let mut opt = Lbfgs::new(&be, n, 5, 0.5, None).unwrap();
            for it in 0..200 {
                grad(&x, &mut g);
                let gtd = opt.direction(&be, &x, &g).unwrap();
                assert!(opt.pairs.iter().all(|&(_, _, rho)| rho > 0.0 && rho < 1e10), "run {run} iteration {it}");
                // gᵀd = -gᵀHg <= 0, up to the round-off of the f32 recursion.
                let (gn, dn) = (vector::dot(&g, &g).sqrt(), vector::dot(&opt.d, &opt.d).sqrt());
                assert!(gtd <= 1e-5 * gn * dn && is_descent(gtd), "run {run} iteration {it}: gᵀd = {gtd}, |g| {gn}, |d| {dn}");
                be.axpy(opt.t as f32, &opt.d, &mut x).unwrap();
            }
            assert!(!opt.pairs.is_empty(), "run {run}: no pair was kept");
        }
    }
}
