//! The optimisation loop, written once against `Backend`.

use crate::backend::{Backend, PixelBox};
use crate::model::Vgg;
use crate::objective::{Image, LossParts, Objective, ObjectiveSpec};
use crate::optim::lbfgs::LineSearch;
use crate::optim::{Adam, Lbfgs};
use crate::preprocess::Convention;
use crate::resume::{LbfgsRound, OptimizerState, RunState};
use crate::rng::Rng;
use anyhow::{bail, ensure, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Init {
    /// Gaussian noise of std 0.001 (jcjohnson/neural-style's `-init random`), from the job's seed.
    Random,
    /// Start from this preprocessed image (the content image for `--init image`).
    Image(Vec<f32>),
}

#[derive(Clone, Copy, Debug)]
pub enum Optimizer {
    /// L-BFGS with `history` curvature pairs. With `round` > 0 the run is split into rounds of at
    /// most that many evaluations, each starting a fresh history from the current image (the
    /// Keras example calls scipy's fmin_l_bfgs_b(maxfun=20) ten times); 0: one round.
    Lbfgs { history: usize, line_search: LineSearch, round: usize },
    Adam { learning_rate: f32 },
}

impl Optimizer {
    /// jcjohnson/neural-style's and torch.optim.LBFGS's default: fixed step, one round.
    pub fn lbfgs(history: usize) -> Optimizer {
        Optimizer::Lbfgs { history, line_search: LineSearch::None, round: 0 }
    }
}

/// Whether the observer wants the image at an iteration, besides `snapshot_every`'s.
#[derive(Clone)]
pub struct SnapshotGate(pub Arc<dyn Fn(usize) -> bool + Send + Sync>);

impl std::fmt::Debug for SnapshotGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotGate")
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub content: Image,
    /// Style images with their blend weights.
    pub styles: Vec<(Image, f32)>,
    pub spec: ObjectiveSpec,
    pub init: Init,
    pub optimizer: Optimizer,
    /// Evaluations (= iterations, as in neural-style).
    pub iterations: usize,
    pub seed: u64,
    /// Hand the current image to the observer every this many iterations (0: never).
    pub snapshot_every: usize,
    /// And whenever this says so (a live page's frames, paced by time): the image is copied
    /// from the backend only for the iterations that want it.
    pub snapshot_gate: Option<SnapshotGate>,
    /// Keep every evaluated image inside this box (the model convention's displayable pixels,
    /// `Convention::pixel_box`), so that saving clamps nothing (issue 20); None optimises
    /// unbounded and saving clamps, as torch.optim.LBFGS and jcjohnson/neural-style do.
    pub bounds: Option<PixelBox>,
}

/// One iteration, as the observer sees it.
#[derive(Clone, Debug)]
pub struct Progress {
    pub iteration: usize,
    pub evaluations: usize,
    pub loss: LossParts,
    pub elapsed: Duration,
}

pub struct Output {
    /// The optimised preprocessed image (h, w, 3).
    pub image: Vec<f32>,
    pub h: usize,
    pub w: usize,
    /// Loss at the final image where it was evaluated there (the strong-Wolfe search ends on an
    /// evaluated point), else of the last evaluation (the fixed step moves once more after it).
    pub loss: LossParts,
    pub evaluations: usize,
    /// Time spent in the optimisation loop (after setup), over all sessions of a resumed run.
    pub elapsed: Duration,
    pub flops_per_evaluation: u64,
}

/// Why a run stopped early: its loss or its gradient stopped being finite at `iteration`. The
/// run's last image whose loss and gradient were finite comes with it, so that it can be kept.
#[derive(Debug)]
pub struct NonFinite {
    pub iteration: usize,
    /// What became non-finite: "the loss became inf", "the gradient became NaN".
    pub what: String,
    /// The last good image (preprocessed, (h, w, 3)): that of iteration `last_good_iteration`,
    /// or the starting image when that is 0.
    pub last_good: Vec<f32>,
    pub last_good_iteration: usize,
    pub h: usize,
    pub w: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at iteration {}", self.what, self.iteration)
    }
}

impl std::error::Error for NonFinite {}

/// What watches a run: called after every iteration, with the current image (preprocessed,
/// (h, w, 3)) at snapshot iterations.
pub type Observer<'a> = dyn FnMut(&Progress, Option<&[f32]>) -> Result<()> + 'a;

/// Runs the job; `observer` sees every iteration, and the current image at snapshot iterations.
pub fn stylize<B: Backend>(backend: &B, vgg: &Vgg, job: &Job, observer: &mut Observer) -> Result<Output> {
    let mut objective = Objective::new(backend, vgg, job.spec.clone(), &job.content, &job.styles)?;
    optimize(backend, &mut objective, job, observer)
}

/// The objective at an 8-bit RGB image (h, w, 3) as it is written to a file, rather than at the
/// optimiser's float image: saving clamps every value to the pixel range and rounds it, which
/// can raise the loss several times over (issue 20), so the loss a user is told is this one.
pub fn loss_of_saved<B: Backend>(backend: &B, objective: &mut Objective<B>, convention: Convention, rgb: &[u8]) -> Result<LossParts> {
    let n = objective.height() * objective.width() * 3;
    ensure!(rgb.len() == n, "the saved image has {} values, the objective's {n}", rgb.len());
    let x = backend.upload(&convention.preprocess(rgb))?;
    let mut g = backend.zeros(n)?;
    objective.evaluate(&x, &mut g)
}

/// How `optimize_from` ended: the run finished, or it stopped early on request and can go on.
pub enum Run {
    Finished(Output),
    Stopped(RunState),
}

/// `stylize` as `optimize_from`: builds the objective, then runs (or resumes) the job.
pub fn stylize_from<B: Backend>(backend: &B, vgg: &Vgg, job: &Job, from: Option<&RunState>, stop: &mut dyn FnMut() -> bool, observer: &mut Observer) -> Result<Run> {
    let mut objective = Objective::new(backend, vgg, job.spec.clone(), &job.content, &job.styles)?;
    optimize_from(backend, &mut objective, job, from, stop, observer)
}

/// The optimisation loop over an objective that is already built, so that commands running many
/// optimisations (contact sheets, grids, batches) compute the content and style targets once and
/// only re-weight or re-target the objective between runs. Of `job` it reads the run settings
/// (init, optimizer, iterations, seed, snapshot_every); the objective fixes the image size.
pub fn optimize<B: Backend>(backend: &B, objective: &mut Objective<B>, job: &Job, observer: &mut Observer) -> Result<Output> {
    match optimize_from(backend, objective, job, None, &mut || false, observer)? {
        Run::Finished(out) => Ok(out),
        Run::Stopped(_) => bail!("internal: a run stopped without being asked to"),
    }
}

/// `optimize`, stoppable and resumable. `stop` is polled before each iteration (an L-BFGS
/// iteration with strong Wolfe is a whole line search; with `--lbfgs-round`, a round's first
/// evaluation is an iteration of its own); when it returns true the run ends with
/// `Run::Stopped`, its state downloaded from the backend. Given that state as `from` (with the
/// same job and objective), the run goes on from there and finishes on exactly the bits the
/// uninterrupted run would have (the backend being deterministic, as the CPU's is). The
/// observer sees only the iterations made in this call; `Output` counts them all.
pub fn optimize_from<B: Backend>(
    backend: &B,
    objective: &mut Objective<B>,
    job: &Job,
    from: Option<&RunState>,
    stop: &mut dyn FnMut() -> bool,
    observer: &mut Observer,
) -> Result<Run> {
    let (h, w) = (objective.height(), objective.width());
    let n = h * w * 3;
    let init = match (from, &job.init) {
        (Some(state), _) => {
            ensure!(state.x.len() == n, "the saved image has {} values, this run's {n}", state.x.len());
            ensure!(state.history.len() <= job.iterations, "the saved run made {} evaluations, more than this run's {}", state.history.len(), job.iterations);
            state.x.clone()
        }
        (None, Init::Random) => Rng::new(job.seed).normal_vec(n, 0.001),
        (None, Init::Image(data)) => {
            ensure!(data.len() == n, "the init image must have the content image's size after resizing");
            data.clone()
        }
    };
    let mut x = backend.upload(&init)?;
    if let Some(pixel_box) = &job.bounds {
        // The start inside the box (a resumed x is there already: projecting it again is a no-op).
        backend.project_to_box(pixel_box, &mut x)?;
    }
    let mut g = backend.zeros(n)?;
    let start = Instant::now();
    // Run time before this call (earlier sessions of a resumed run).
    let before = from.map(|s| s.elapsed).unwrap_or_default();
    // Every evaluation's loss, in order, with the run time it ended at: the run's result is the
    // loss at the final image.
    let mut losses: Vec<(LossParts, Duration)> = from.map(|s| s.history.clone()).unwrap_or_default();
    // (Not reserved from the iteration count, which may be far more than will ever run.)
    let done_before = losses.len();
    // The last image whose loss and gradient were finite (the start until one was).
    let mut good = backend.zeros(n)?;
    backend.copy(&x, &mut good)?;
    let mut good_iteration = done_before;
    let mut evaluate = |x: &B::Buf, g: &mut B::Buf| -> Result<f64> {
        let loss = objective.evaluate(x, g)?;
        let elapsed = before + start.elapsed();
        losses.push((loss, elapsed));
        let iteration = losses.len();
        // One reduction tells: a NaN anywhere makes Σ|g| NaN, an Inf makes it Inf.
        let gsum = backend.asum(g)?;
        let what = if !loss.total.is_finite() {
            Some(format!("the loss became {}", loss.total))
        } else if !gsum.is_finite() {
            Some(format!("the gradient became {}", if gsum.is_nan() { "NaN" } else { "inf" }))
        } else {
            None
        };
        if let Some(what) = what {
            let last_good = backend.download(&good)?;
            return Err(NonFinite { iteration, what, last_good, last_good_iteration: good_iteration, h, w }.into());
        }
        backend.copy(x, &mut good)?;
        good_iteration = iteration;
        let progress = Progress { iteration, evaluations: iteration, loss, elapsed };
        let wanted = (job.snapshot_every > 0 && iteration % job.snapshot_every == 0) || job.snapshot_gate.as_ref().is_some_and(|gate| (gate.0)(iteration));
        let snapshot = if wanted && iteration < job.iterations {
            Some(backend.download(x)?)
        } else {
            None
        };
        observer(&progress, snapshot.as_deref())?;
        Ok(loss.total)
    };
    // Index of the evaluation at the final x; None: the last one, after which x moved once more
    // (L-BFGS's fixed step and Adam step after their last evaluation, as torch does).
    let mut final_evaluation = None;
    // Set when the run stops early.
    let mut stopped = None;
    match job.optimizer {
        Optimizer::Lbfgs { history, line_search, round } => {
            let round = if round == 0 { job.iterations } else { round };
            let (mut done, mut within) = match from.map(|s| &s.optimizer) {
                None => (0, None),
                Some(OptimizerState::Lbfgs { round_start, within }) => {
                    let made = round_start.checked_add(within.as_ref().map_or(0, |r| r.minimized.evaluations));
                    ensure!(made == Some(done_before), "the saved L-BFGS state does not match its loss history");
                    (*round_start, within.as_ref())
                }
                Some(OptimizerState::Adam(_)) => bail!("the saved state is Adam's; this run uses L-BFGS"),
            };
            while done < job.iterations {
                let budget = round.min(job.iterations - done);
                // A round under way goes on; a new one starts from x with a fresh history.
                let (mut lbfgs, resumed) = match within.take() {
                    Some(r) => {
                        // A round that made its whole budget has ended: going on would never stop.
                        ensure!(r.minimized.evaluations < budget, "the saved L-BFGS round made {} evaluations, not fewer than its {budget}", r.minimized.evaluations);
                        g = backend.upload(&r.g)?;
                        (Lbfgs::import(backend, n, history, 1.0, job.bounds, &r.optimizer)?, Some(r.minimized))
                    }
                    None => {
                        if stop() {
                            stopped = Some(OptimizerState::Lbfgs { round_start: done, within: None });
                            break;
                        }
                        (Lbfgs::new(backend, n, history, 1.0, job.bounds)?, None)
                    }
                };
                let r = lbfgs.minimize_from(backend, line_search, &mut x, &mut g, budget, resumed, stop, &mut evaluate)?;
                if r.stopped {
                    let round = LbfgsRound { optimizer: lbfgs.export(backend)?, minimized: r, g: backend.download(&g)? };
                    stopped = Some(OptimizerState::Lbfgs { round_start: done, within: Some(round) });
                    break;
                }
                final_evaluation = r.final_evaluation.map(|k| done + k);
                done += r.evaluations;
                if r.evaluations < budget {
                    break; // no descent direction left
                }
            }
        }
        Optimizer::Adam { learning_rate } => {
            let mut adam = match from.map(|s| &s.optimizer) {
                None => Adam::new(backend, n, learning_rate, job.bounds)?,
                Some(OptimizerState::Adam(state)) => {
                    ensure!(state.t as usize == done_before, "the saved Adam state does not match its loss history");
                    Adam::import(backend, n, learning_rate, job.bounds, state)?
                }
                Some(OptimizerState::Lbfgs { .. }) => bail!("the saved state is L-BFGS's; this run uses Adam"),
            };
            for _ in done_before..job.iterations {
                if stop() {
                    stopped = Some(OptimizerState::Adam(adam.export(backend)?));
                    break;
                }
                evaluate(&x, &mut g)?;
                adam.step(backend, &mut x, &g)?;
            }
        }
    }
    backend.synchronize()?;
    let elapsed = before + start.elapsed();
    if let Some(optimizer) = stopped {
        return Ok(Run::Stopped(RunState { x: backend.download(&x)?, history: losses, elapsed, optimizer }));
    }
    let evaluations = losses.len();
    let loss = final_evaluation.or(evaluations.checked_sub(1)).map(|k| losses[k].0).unwrap_or_default();
    Ok(Run::Finished(Output { image: backend.download(&x)?, h, w, loss, evaluations, elapsed, flops_per_evaluation: objective.flops_per_evaluation() }))
}
