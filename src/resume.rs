//! The state of a stopped run ([`RunState`], from [`crate::stylize::optimize_from`]) and its
//! file, so that the run can go on later and end on the very bits an uninterrupted run ends on.
//!
//! The file is a safetensors file: the image `x`, the gradient `g` where the optimiser needs it,
//! the optimiser's vectors (L-BFGS: `lbfgs.d`, `lbfgs.prev_g`, the curvature pairs `lbfgs.y.K`,
//! `lbfgs.s.K` and their `lbfgs.rho`, `lbfgs.scalars` = [h_diag, t, f], and a bounded run's
//! `lbfgs.prev_x`, the point the last direction was computed at; Adam: `adam.m`,
//! `adam.v`), every evaluation's losses (`history`, (total, content, style, tv, seconds into
//! the run) each), all as little-endian f32 / f64 so that nothing is rounded, and one JSON
//! metadata record under the key `neural-style:resume`: the [`Header`] that names the run (its
//! settings' fingerprint) and the layout of the optimiser's state (counters).
//!
//! Its size: a few image-sized vectors, plus two per L-BFGS curvature pair, so with L-BFGS's
//! default history of 100 it is about 200 times the image as f32 (a 512x384 image: ~470 MB).

use crate::backend::PixelBox;
use crate::objective::LossParts;
use crate::optim::adam::AdamState;
use crate::optim::lbfgs::{LbfgsState, LineSearch, Minimized};
use crate::stylize::Optimizer;
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the file layout; other versions are refused.
pub const FORMAT: u32 = 1;
/// The safetensors metadata key of the JSON record.
pub const META_KEY: &str = "neural-style:resume";

/// Where a stopped run stands: with the job it came from, all it takes to go on.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// The image (preprocessed, (h, w, 3)).
    pub x: Vec<f32>,
    /// Every evaluation's losses so far, with the run time (over all its sessions) it ended at.
    pub history: Vec<(LossParts, Duration)>,
    /// Run time so far, over all sessions.
    pub elapsed: Duration,
    pub optimizer: OptimizerState,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerState {
    /// The L-BFGS round under way started after `round_start` evaluations; `within` is None
    /// between rounds (the next one starts afresh from x).
    Lbfgs { round_start: usize, within: Option<LbfgsRound> },
    Adam(AdamState),
}

/// A stopped L-BFGS round.
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsRound {
    pub optimizer: LbfgsState,
    /// Where `minimize_from` stopped (`stopped` set).
    pub minimized: Minimized,
    /// The gradient at x (the strong-Wolfe search reuses it; the fixed step evaluates anew).
    pub g: Vec<f32>,
}

/// What names the run a state belongs to: a resume whose header differs is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// sha256 (hex) of everything that decides the result (see [`fingerprint`]).
    pub fingerprint: String,
    /// The recorded settings (for saying which differ), as the output PNG records them.
    pub settings: Value,
    pub width: usize,
    pub height: usize,
    pub iterations: usize,
}

impl Header {
    /// Ok when `self` (from a state file) names the run `expected` describes, else a one-line
    /// reason naming what differs.
    pub fn check(&self, expected: &Header) -> Result<()> {
        if self.fingerprint == expected.fingerprint {
            return Ok(());
        }
        let mut differ = Vec::new();
        let (mine, theirs) = (self.settings.get("args"), expected.settings.get("args"));
        if let (Some(Value::Object(mine)), Some(Value::Object(theirs))) = (mine, theirs) {
            let mut keys: Vec<&String> = mine.keys().chain(theirs.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (a, b) = (mine.get(k).unwrap_or(&Value::Null), theirs.get(k).unwrap_or(&Value::Null));
                if a != b {
                    differ.push(format!("--{} {} there, {} here", k.replace('_', "-"), a, b));
                }
            }
        }
        for key in ["version", "model", "model_sha256"] {
            let (a, b) = (self.settings.get(key), expected.settings.get(key));
            if a != b {
                differ.push(format!("{key} {} there, {} here", a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)));
            }
        }
        if (self.width, self.height) != (expected.width, expected.height) {
            differ.push(format!("size {}x{} there, {}x{} here", self.width, self.height, expected.width, expected.height));
        }
        if differ.is_empty() {
            differ.push("the input images' contents differ".into());
        }
        bail!("it was saved by a run with other settings ({}); resume with the same settings, or start afresh without --resume", differ.join("; "))
    }
}

/// sha256 (hex) of `parts`, each length-prefixed so that no two lists of parts collide.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The state file of a run writing `output`: `<output>.resume` beside it.
pub fn state_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".resume");
    output.with_file_name(name)
}

/// The counters of the state, the JSON record's `state`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "optimizer", rename_all = "kebab-case")]
enum Layout {
    Lbfgs { round_start: usize, within: Option<RoundLayout> },
    Adam { t: u32 },
}

#[derive(Serialize, Deserialize)]
struct RoundLayout {
    pairs: usize,
    iteration: usize,
    evaluations: usize,
    final_evaluation: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    header: Header,
    evaluations: usize,
    state: Layout,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The state file's bytes.
pub fn to_bytes(header: &Header, state: &RunState) -> Result<Vec<u8>> {
    // (name, dtype, shape, bytes)
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut f32s = |name: String, v: &[f32]| tensors.push((name, Dtype::F32, vec![v.len()], f32_bytes(v)));
    f32s("x".into(), &state.x);
    let layout = match &state.optimizer {
        OptimizerState::Lbfgs { round_start, within } => {
            let within = match within {
                None => None,
                Some(r) => {
                    f32s("g".into(), &r.g);
                    f32s("lbfgs.d".into(), &r.optimizer.d);
                    f32s("lbfgs.prev_g".into(), &r.optimizer.prev_g);
                    if !r.optimizer.prev_x.is_empty() {
                        f32s("lbfgs.prev_x".into(), &r.optimizer.prev_x);
                    }
                    for (k, (y, s, _)) in r.optimizer.pairs.iter().enumerate() {
                        f32s(format!("lbfgs.y.{k:04}"), y);
                        f32s(format!("lbfgs.s.{k:04}"), s);
                    }
                    Some(RoundLayout {
                        pairs: r.optimizer.pairs.len(),
                        iteration: r.optimizer.iteration,
                        evaluations: r.minimized.evaluations,
                        final_evaluation: r.minimized.final_evaluation,
                    })
                }
            };
            Layout::Lbfgs { round_start: *round_start, within }
        }
        OptimizerState::Adam(a) => {
            f32s("adam.m".into(), &a.m);
            f32s("adam.v".into(), &a.v);
            Layout::Adam { t: a.t }
        }
    };
    if let OptimizerState::Lbfgs { within: Some(r), .. } = &state.optimizer {
        let rho: Vec<f64> = r.optimizer.pairs.iter().map(|p| p.2).collect();
        tensors.push(("lbfgs.rho".into(), Dtype::F64, vec![rho.len()], f64_bytes(&rho)));
        let scalars = [r.optimizer.h_diag, r.optimizer.t, r.minimized.f];
        tensors.push(("lbfgs.scalars".into(), Dtype::F64, vec![3], f64_bytes(&scalars)));
    }
    let history: Vec<f64> = state.history.iter().flat_map(|(l, t)| [l.total, l.content, l.style, l.tv, t.as_secs_f64()]).collect();
    tensors.push(("history".into(), Dtype::F64, vec![state.history.len(), 5], f64_bytes(&history)));
    tensors.push(("elapsed".into(), Dtype::F64, vec![1], f64_bytes(&[state.elapsed.as_secs_f64()])));
    let record = Record { format: FORMAT, header: header.clone(), evaluations: state.history.len(), state: layout };
    let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&record)?)]);
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// The longest time a state may record, in seconds (100 years): no run takes longer, and past
/// ~5.8e11 years `Duration` could not even hold it (`from_secs_f64` panics there).
pub const MAX_SECONDS: f64 = 100.0 * 365.25 * 86400.0;

/// The largest |value| of a saved image (L-BFGS; Adam's bound adds 10 lr t, see
/// [`RunState::validate`]). Preprocessed pixels lie in -123.7..151.1 (Caffe: 0..255 less the
/// ImageNet mean) or -2.2..2.7 (torchvision: 0..1 less the mean, over the std). The optimiser is
/// unconstrained, so a run may step outside those, but deprocessing clips everything past them to
/// 0 or 255: a value beyond ±1e4 (40 times the wider range) saves as the same pixel ±255 does and
/// carries no image. The content and total-variation terms pull x back and the style term grows
/// as |x|⁴, so no run comes near it; a state past it is damaged or crafted (1e30 overflows the
/// loss at the first evaluation, and the run would then stop with "wrote the last finite image").
pub const MAX_PIXEL: f32 = 1e4;

/// The largest 1 / yᵀs of an L-BFGS curvature pair: a pair is kept only when yᵀs > 1e-10.
const MAX_RHO: f64 = 1e10;

/// x's length for `header`'s size (width x height x 3), or why the size is not an image's.
fn image_values(header: &Header) -> Result<usize> {
    header
        .width
        .checked_mul(header.height)
        .and_then(|p| p.checked_mul(3))
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow!("the recorded size {}x{} is not an image's", header.width, header.height))
}

/// A number as messages show it: 1e300, not its 301 digits.
fn show(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A run time of the file as a `Duration`, refused unless finite and within 0..MAX_SECONDS.
fn seconds(what: &str, s: f64) -> Result<Duration> {
    ensure!(s.is_finite() && (0.0..=MAX_SECONDS).contains(&s), "{what} is {} s: not a time a run took (0 s to 100 years)", show(s));
    Duration::try_from_secs_f64(s).map_err(|e| anyhow!("{what} is {} s: {e}", show(s)))
}

/// Ok when every value of `v` is finite and within ±`bound`, and there are `n` of them.
fn check_values(name: &str, v: &[f32], n: usize, bound: f32) -> Result<()> {
    ensure!(v.len() == n, "{name} has {} values, not the image's {n}", v.len());
    if let Some((k, x)) = v.iter().enumerate().find(|(_, x)| !(x.abs() <= bound)) {
        if x.is_finite() {
            bail!("{name}[{k}] is {x:e}, outside ±{bound:e}");
        }
        bail!("{name}[{k}] is {x} (a state holds only finite values)");
    }
    Ok(())
}

/// A state from `to_bytes`' bytes, with its header; every vector has `n` values where `n` is x's.
/// Everything the file alone can tell is checked (`RunState::validate` with its own header):
/// a damaged or crafted file is refused with one line naming the field at fault.
pub fn from_bytes(bytes: &[u8]) -> Result<(Header, RunState)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a state file ({e})"))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a state file ({e})"))?;
    let text = meta.metadata().as_ref().and_then(|m| m.get(META_KEY)).ok_or_else(|| anyhow!("not a neural-style state file (no {META_KEY} record)"))?;
    let record: Record = serde_json::from_str(text).map_err(|e| anyhow!("a damaged state record ({e})"))?;
    ensure!(record.format == FORMAT, "a state file of format {} (this program reads format {FORMAT})", record.format);
    let Record { header, evaluations, state: layout, .. } = record;
    let n = image_values(&header)?;
    // The tensors read, to refuse any other.
    let read = std::cell::RefCell::new(HashSet::new());
    let tensor = |name: &str, dtype: Dtype, dims: usize| -> Result<Vec<u8>> {
        let t = st.tensor(name).map_err(|_| anyhow!("a damaged state file: no {name}"))?;
        ensure!(t.dtype() == dtype, "a damaged state file: {name} is {:?}", t.dtype());
        ensure!(t.shape().len() == dims, "a damaged state file: {name} has shape {:?}", t.shape());
        read.borrow_mut().insert(name.to_string());
        Ok(t.data().to_vec())
    };
    let f32s = |name: &str| -> Result<Vec<f32>> { Ok(tensor(name, Dtype::F32, 1)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()) };
    let f64s = |name: &str, dims: usize| -> Result<Vec<f64>> { Ok(tensor(name, Dtype::F64, dims)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()) };
    let x = f32s("x")?;
    ensure!(x.len() == n, "x (the image) has {} values, not the {n} of the recorded {}x{} image", x.len(), header.width, header.height);
    let sized = |name: &str| -> Result<Vec<f32>> {
        let v = f32s(name)?;
        ensure!(v.len() == n, "a damaged state file: {name} has {} values, x {n}", v.len());
        Ok(v)
    };
    let optimizer = match layout {
        Layout::Lbfgs { round_start, within } => {
            let within = match within {
                None => None,
                Some(r) => {
                    let rho = f64s("lbfgs.rho", 1)?;
                    ensure!(rho.len() == r.pairs, "a damaged state file: {} rho values for {} pairs", rho.len(), r.pairs);
                    let mut pairs = Vec::with_capacity(r.pairs);
                    for (k, rho) in rho.into_iter().enumerate() {
                        pairs.push((sized(&format!("lbfgs.y.{k:04}"))?, sized(&format!("lbfgs.s.{k:04}"))?, rho));
                    }
                    let scalars = f64s("lbfgs.scalars", 1)?;
                    let &[h_diag, t, f] = scalars.as_slice() else { bail!("a damaged state file: lbfgs.scalars holds {} values, not 3", scalars.len()) };
                    // A bounded run's (issue 20); an unbounded run's state has none.
                    let prev_x = if st.names().contains(&"lbfgs.prev_x") { sized("lbfgs.prev_x")? } else { Vec::new() };
                    Some(LbfgsRound {
                        optimizer: LbfgsState { pairs, h_diag, d: sized("lbfgs.d")?, prev_g: sized("lbfgs.prev_g")?, t, iteration: r.iteration, prev_x },
                        minimized: Minimized { evaluations: r.evaluations, final_evaluation: r.final_evaluation, f, stopped: true },
                        g: sized("g")?,
                    })
                }
            };
            OptimizerState::Lbfgs { round_start, within }
        }
        Layout::Adam { t } => OptimizerState::Adam(AdamState { m: sized("adam.m")?, v: sized("adam.v")?, t }),
    };
    let history_raw = f64s("history", 2)?;
    ensure!(
        evaluations.checked_mul(5) == Some(history_raw.len()),
        "a damaged state file: the loss history does not hold {evaluations} evaluations"
    );
    let mut history = Vec::with_capacity(evaluations);
    for (k, c) in history_raw.chunks_exact(5).enumerate() {
        let t = seconds(&format!("history[{k}]'s time (of evaluation {})", k + 1), c[4])?;
        history.push((LossParts { total: c[0], content: c[1], style: c[2], tv: c[3] }, t));
    }
    let elapsed = f64s("elapsed", 1)?;
    let &[elapsed] = elapsed.as_slice() else { bail!("a damaged state file: elapsed holds {} values, not 1", elapsed.len()) };
    let elapsed = seconds("elapsed (the run time so far)", elapsed)?;
    let read = read.into_inner();
    if let Some(other) = st.names().into_iter().find(|name| !read.contains(*name)) {
        bail!("a damaged state file: it holds a tensor {other:?} that this state has no place for");
    }
    let state = RunState { x, history, elapsed, optimizer };
    state.validate(&header, None)?;
    Ok((header, state))
}

impl RunState {
    /// Checks the state against the run `header` names (its size and iteration budget) and, given
    /// the run's optimiser settings, against those too (L-BFGS's history size, rounds and line
    /// search; Adam's learning rate), with the optimiser's invariants: every value finite and in
    /// range, every counter consistent with the others and with the evaluations made. A state
    /// `optimize_from` saved always passes; anything else is refused with one line naming the
    /// field. `from_bytes` calls it with the file's own header and no settings; `--resume` calls
    /// it again with the run's.
    pub fn validate(&self, header: &Header, optimizer: Option<&Optimizer>) -> Result<()> {
        let n = image_values(header)?;
        let made = self.history.len();
        // A run saves its state only while evaluations are left to make (the stop is asked for
        // before an evaluation), so a state never holds the whole budget.
        ensure!(
            made < header.iterations,
            "the state holds {made} evaluations of a {}-iteration run: a run that has made them all leaves no state",
            header.iterations
        );
        let mut last = Duration::ZERO;
        for (k, (loss, t)) in self.history.iter().enumerate() {
            for (what, v) in [("total", loss.total), ("content", loss.content), ("style", loss.style), ("tv", loss.tv)] {
                ensure!(v.is_finite(), "history[{k}] (evaluation {}) has a {what} loss of {v} (a run stops at a non-finite loss)", k + 1);
            }
            ensure!(
                *t >= last,
                "history[{k}]'s time (of evaluation {}) is {} s, before the previous evaluation's {} s",
                k + 1,
                t.as_secs_f64(),
                last.as_secs_f64()
            );
            last = *t;
        }
        ensure!(self.elapsed.as_secs_f64() <= MAX_SECONDS, "elapsed (the run time so far) is {} s: more than 100 years", self.elapsed.as_secs_f64());
        ensure!(
            self.elapsed >= last,
            "elapsed (the run time so far) is {} s, less than the last evaluation's time {} s",
            self.elapsed.as_secs_f64(),
            last.as_secs_f64()
        );
        match &self.optimizer {
            OptimizerState::Lbfgs { round_start, within } => {
                check_values("x (the image)", &self.x, n, MAX_PIXEL)?;
                let in_round = within.as_ref().map_or(0, |r| r.minimized.evaluations);
                ensure!(
                    round_start.checked_add(in_round) == Some(made),
                    "round_start {round_start} and the round's {in_round} evaluations do not add up to the history's {made}"
                );
                if let Some(r) = within {
                    let (o, m) = (&r.optimizer, &r.minimized);
                    ensure!(m.evaluations >= 1, "the L-BFGS round under way has made no evaluation (a round starts with one)");
                    if let Some(k) = m.final_evaluation {
                        ensure!(k < m.evaluations, "final_evaluation {k} is not one of the round's {} evaluations", m.evaluations);
                    }
                    ensure!(o.iteration <= m.evaluations, "iteration {} (directions computed) is more than the round's {} evaluations", o.iteration, m.evaluations);
                    ensure!(
                        o.pairs.len() < o.iteration.max(1),
                        "{} curvature pairs after {} directions (at most one per direction after the first)",
                        o.pairs.len(),
                        o.iteration
                    );
                    // f is the loss of the evaluation at x (strong Wolfe), else of the last one.
                    let at = round_start + m.final_evaluation.unwrap_or(m.evaluations - 1);
                    let loss = self.history[at].0.total;
                    ensure!(m.f.to_bits() == loss.to_bits(), "lbfgs.scalars' f ({}) is not the loss of evaluation {} ({loss})", show(m.f), at + 1);
                    ensure!(o.h_diag.is_finite() && o.h_diag > 0.0, "lbfgs.scalars' h_diag is {} (yᵀs / yᵀy of a kept pair, or 1: finite and positive)", show(o.h_diag));
                    ensure!(o.t.is_finite() && o.t >= 0.0, "lbfgs.scalars' t (the step length) is {} (a step: finite, 0 or more)", show(o.t));
                    check_values("g (the gradient)", &r.g, n, f32::MAX)?;
                    check_values("lbfgs.d", &o.d, n, f32::MAX)?;
                    check_values("lbfgs.prev_g", &o.prev_g, n, f32::MAX)?;
                    if !o.prev_x.is_empty() {
                        check_values("lbfgs.prev_x", &o.prev_x, n, MAX_PIXEL)?;
                    }
                    for (k, (y, s, rho)) in o.pairs.iter().enumerate() {
                        check_values(&format!("lbfgs.y.{k:04}"), y, n, f32::MAX)?;
                        check_values(&format!("lbfgs.s.{k:04}"), s, n, f32::MAX)?;
                        ensure!(*rho > 0.0 && *rho <= MAX_RHO, "lbfgs.rho[{k}] is {} (1 / yᵀs of a kept pair, yᵀs > 1e-10: in (0, 1e10])", show(*rho));
                    }
                }
                match optimizer {
                    None => {}
                    Some(Optimizer::Adam { .. }) => bail!("the state is L-BFGS's; this run uses Adam"),
                    Some(&Optimizer::Lbfgs { history, line_search, round }) => {
                        // Rounds of `round` evaluations (0: one round of the whole budget) start
                        // after whole rounds only.
                        let round = if round == 0 { header.iterations } else { round };
                        ensure!(round_start % round == 0, "round_start {round_start} is not a multiple of the round length {round} (--lbfgs-round; the whole run when 0)");
                        if let Some(r) = within {
                            let (o, m) = (&r.optimizer, &r.minimized);
                            let history = history.max(1);
                            ensure!(o.pairs.len() <= history, "{} curvature pairs, more than --lbfgs-num-correction {history}", o.pairs.len());
                            let budget = round.min(header.iterations - round_start);
                            ensure!(m.evaluations < budget, "the L-BFGS round under way made {} evaluations, not fewer than its {budget}", m.evaluations);
                            match line_search {
                                // Every evaluation is followed by a step, and a stop comes after one.
                                LineSearch::None => ensure!(
                                    m.final_evaluation.is_none() && o.iteration == m.evaluations,
                                    "iteration {} and final_evaluation {:?} are not those of a fixed-step round stopped after {} evaluations",
                                    o.iteration,
                                    m.final_evaluation,
                                    m.evaluations
                                ),
                                // x is always an evaluated point.
                                LineSearch::StrongWolfe => ensure!(m.final_evaluation.is_some(), "final_evaluation is missing (a strong-Wolfe round ends on an evaluated point)"),
                            }
                        }
                    }
                }
            }
            OptimizerState::Adam(a) => {
                ensure!(a.t as usize == made, "adam t (steps taken) is {}, not the history's {made} evaluations", a.t);
                check_values("adam.m", &a.m, n, f32::MAX)?;
                check_values("adam.v", &a.v, n, f32::MAX)?;
                if let Some(k) = a.v.iter().position(|v| *v < 0.0) {
                    bail!("adam.v[{k}] is {} (a mean of squares: 0 or more)", a.v[k]);
                }
                // Adam moves a value by at most about 3.2 lr per step ((1 - β1) / √(1 - β2)).
                let bound = match optimizer {
                    None => f32::MAX,
                    Some(Optimizer::Lbfgs { .. }) => bail!("the state is Adam's; this run uses L-BFGS"),
                    Some(&Optimizer::Adam { learning_rate }) => MAX_PIXEL + 10.0 * learning_rate * a.t as f32,
                };
                check_values("x (the image)", &self.x, n, bound)?;
            }
        }
        Ok(())
    }
}

impl RunState {
    /// Checks the state against the run's bounds (`Job::bounds`): a bounded run's image (and
    /// L-BFGS's prev_x, which a bounded state has and an unbounded one has not) lies inside the
    /// box, since every point such a run reaches does.
    pub fn validate_bounds(&self, bounds: Option<&PixelBox>) -> Result<()> {
        let prev_x = match &self.optimizer {
            OptimizerState::Lbfgs { within: Some(r), .. } => Some((&r.optimizer.prev_x, r.optimizer.iteration)),
            _ => None,
        };
        let Some(pixel_box) = bounds else {
            if let Some((p, _)) = prev_x {
                ensure!(p.is_empty(), "the state is a bounded run's (it has lbfgs.prev_x); this run is --unbounded");
            }
            return Ok(());
        };
        let outside = |name: &str, v: &[f32]| -> Result<()> {
            if let Some(k) = pixel_box.first_outside(v) {
                bail!("{name}[{k}] is {}, outside the pixel box [{}, {}] a bounded run stays in", v[k], pixel_box.lo[k % 3], pixel_box.hi[k % 3]);
            }
            Ok(())
        };
        outside("x (the image)", &self.x)?;
        if let Some((p, iteration)) = prev_x {
            ensure!(!p.is_empty(), "the state is an unbounded run's (it has no lbfgs.prev_x); this run is bounded (add --unbounded to go on with it)");
            if iteration > 0 {
                outside("lbfgs.prev_x", p)?;
            }
        }
        Ok(())
    }
}

/// Writes the state file atomically (temp file beside it, renamed into place).
pub fn save(path: &Path, header: &Header, state: &RunState) -> Result<()> {
    crate::image_io::write_atomic(path, &to_bytes(header, state)?)
}

/// Reads a state file written by `save`.
pub fn load(path: &Path) -> Result<(Header, RunState)> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::image_io::open_input(path)?.read_to_end(&mut bytes).with_context(|| format!("{}: cannot read", path.display()))?;
    from_bytes(&bytes).with_context(|| path.display().to_string())
}
