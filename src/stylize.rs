//! The optimisation loop, written once against `Backend`.

use crate::backend::Backend;
use crate::model::Vgg;
use crate::objective::{Image, LossParts, Objective, ObjectiveSpec};
use crate::optim::lbfgs::StepOutcome;
use crate::optim::{Adam, Lbfgs};
use crate::rng::Rng;
use anyhow::Result;
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
    Lbfgs { history: usize },
    Adam { learning_rate: f32 },
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
    /// Loss of the last evaluation.
    pub loss: LossParts,
    pub evaluations: usize,
    /// Time spent in the optimisation loop (after setup).
    pub elapsed: Duration,
    pub flops_per_evaluation: u64,
}

/// What watches a run: called after every iteration, with the current image (preprocessed,
/// (h, w, 3)) at snapshot iterations.
pub type Observer<'a> = dyn FnMut(&Progress, Option<&[f32]>) -> Result<()> + 'a;

/// Runs the job; `observer` sees every iteration, and the current image at snapshot iterations.
pub fn stylize<B: Backend>(backend: &B, vgg: &Vgg, job: &Job, observer: &mut Observer) -> Result<Output> {
    let mut objective = Objective::new(backend, vgg, job.spec.clone(), &job.content, &job.styles)?;
    optimize(backend, &mut objective, job, observer)
}

/// The optimisation loop over an objective that is already built, so that commands running many
/// optimisations (contact sheets, grids, batches) compute the content and style targets once and
/// only re-weight or re-target the objective between runs. Of `job` it reads the run settings
/// (init, optimizer, iterations, seed, snapshot_every); the objective fixes the image size.
pub fn optimize<B: Backend>(backend: &B, objective: &mut Objective<B>, job: &Job, observer: &mut Observer) -> Result<Output> {
    let (h, w) = (objective.height(), objective.width());
    let n = h * w * 3;
    let init = match &job.init {
        Init::Random => Rng::new(job.seed).normal_vec(n, 0.001),
        Init::Image(data) => {
            anyhow::ensure!(data.len() == n, "the init image must have the content image's size after resizing");
            data.clone()
        }
    };
    let mut x = backend.upload(&init)?;
    let mut g = backend.zeros(n)?;
    let mut lbfgs = None;
    let mut adam = None;
    match job.optimizer {
        Optimizer::Lbfgs { history } => lbfgs = Some(Lbfgs::new(backend, n, history, 1.0)?),
        Optimizer::Adam { learning_rate } => adam = Some(Adam::new(backend, n, learning_rate)?),
    }
    let start = Instant::now();
    let mut loss = LossParts::default();
    let mut evaluations = 0;
    for iteration in 1..=job.iterations {
        loss = objective.evaluate(&x, &mut g)?;
        evaluations += 1;
        anyhow::ensure!(loss.total.is_finite(), "the loss became {} at iteration {iteration}; try a smaller learning rate or weights", loss.total);
        let progress = Progress { iteration, evaluations, loss, elapsed: start.elapsed() };
        let snapshot = if job.snapshot_every > 0 && iteration % job.snapshot_every == 0 && iteration < job.iterations {
            Some(backend.download(&x)?)
        } else {
            None
        };
        observer(&progress, snapshot.as_deref())?;
        if let Some(opt) = lbfgs.as_mut() {
            if opt.step(backend, &mut x, &g)? == StepOutcome::NotDescent {
                break;
            }
        }
        if let Some(opt) = adam.as_mut() {
            opt.step(backend, &mut x, &g)?;
        }
    }
    backend.synchronize()?;
    let elapsed = start.elapsed();
    Ok(Output { image: backend.download(&x)?, h, w, loss, evaluations, elapsed, flops_per_evaluation: objective.flops_per_evaluation() })
}
