//! The state of a stopped run ([`RunState`], from [`crate::stylize::optimize_from`]) and its
//! file, so that the run can go on later and end on the very bits an uninterrupted run ends on.
//!
//! The file is a safetensors file: the image `x`, the gradient `g` where the optimiser needs it,
//! the optimiser's vectors (L-BFGS: `lbfgs.d`, `lbfgs.prev_g`, the curvature pairs `lbfgs.y.K`,
//! `lbfgs.s.K` and their `lbfgs.rho`, and `lbfgs.scalars` = [h_diag, t, f]; Adam: `adam.m`,
//! `adam.v`), every evaluation's losses (`history`, (total, content, style, tv, seconds into
//! the run) each), all as little-endian f32 / f64 so that nothing is rounded, and one JSON
//! metadata record under the key `neural-style:resume`: the [`Header`] that names the run (its
//! settings' fingerprint) and the layout of the optimiser's state (counters).
//!
//! Its size: a few image-sized vectors, plus two per L-BFGS curvature pair, so with L-BFGS's
//! default history of 100 it is about 200 times the image as f32 (a 512x384 image: ~470 MB).

use crate::objective::LossParts;
use crate::optim::adam::AdamState;
use crate::optim::lbfgs::{LbfgsState, Minimized};
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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

/// A state from `to_bytes`' bytes, with its header; every vector has `n` values where `n` is x's.
pub fn from_bytes(bytes: &[u8]) -> Result<(Header, RunState)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a state file ({e})"))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a state file ({e})"))?;
    let text = meta.metadata().as_ref().and_then(|m| m.get(META_KEY)).ok_or_else(|| anyhow!("not a neural-style state file (no {META_KEY} record)"))?;
    let record: Record = serde_json::from_str(text).map_err(|e| anyhow!("a damaged state record ({e})"))?;
    ensure!(record.format == FORMAT, "a state file of format {} (this program reads format {FORMAT})", record.format);
    let tensor = |name: &str, dtype: Dtype| -> Result<Vec<u8>> {
        let t = st.tensor(name).map_err(|_| anyhow!("a damaged state file: no {name}"))?;
        ensure!(t.dtype() == dtype, "a damaged state file: {name} is {:?}", t.dtype());
        Ok(t.data().to_vec())
    };
    let f32s = |name: &str| -> Result<Vec<f32>> { Ok(tensor(name, Dtype::F32)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()) };
    let f64s = |name: &str| -> Result<Vec<f64>> { Ok(tensor(name, Dtype::F64)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()) };
    let x = f32s("x")?;
    let n = x.len();
    let sized = |name: &str| -> Result<Vec<f32>> {
        let v = f32s(name)?;
        ensure!(v.len() == n, "a damaged state file: {name} has {} values, x {n}", v.len());
        Ok(v)
    };
    let optimizer = match record.state {
        Layout::Lbfgs { round_start, within } => {
            let within = match within {
                None => None,
                Some(r) => {
                    let rho = f64s("lbfgs.rho")?;
                    ensure!(rho.len() == r.pairs, "a damaged state file: {} rho values for {} pairs", rho.len(), r.pairs);
                    let mut pairs = Vec::with_capacity(r.pairs);
                    for (k, rho) in rho.into_iter().enumerate() {
                        pairs.push((sized(&format!("lbfgs.y.{k:04}"))?, sized(&format!("lbfgs.s.{k:04}"))?, rho));
                    }
                    let scalars = f64s("lbfgs.scalars")?;
                    let &[h_diag, t, f] = scalars.as_slice() else { bail!("a damaged state file: lbfgs.scalars") };
                    Some(LbfgsRound {
                        optimizer: LbfgsState { pairs, h_diag, d: sized("lbfgs.d")?, prev_g: sized("lbfgs.prev_g")?, t, iteration: r.iteration },
                        minimized: Minimized { evaluations: r.evaluations, final_evaluation: r.final_evaluation, f, stopped: true },
                        g: sized("g")?,
                    })
                }
            };
            OptimizerState::Lbfgs { round_start, within }
        }
        Layout::Adam { t } => OptimizerState::Adam(AdamState { m: sized("adam.m")?, v: sized("adam.v")?, t }),
    };
    let history_raw = f64s("history")?;
    ensure!(history_raw.len() == 5 * record.evaluations, "a damaged state file: the loss history does not hold {} evaluations", record.evaluations);
    let history = history_raw
        .chunks_exact(5)
        .map(|c| (LossParts { total: c[0], content: c[1], style: c[2], tv: c[3] }, Duration::from_secs_f64(c[4].max(0.0))))
        .collect();
    let elapsed = Duration::from_secs_f64(f64s("elapsed")?.first().copied().unwrap_or(0.0).max(0.0));
    Ok((record.header, RunState { x, history, elapsed, optimizer }))
}

/// Writes the state file atomically (temp file beside it, renamed into place).
pub fn save(path: &Path, header: &Header, state: &RunState) -> Result<()> {
    crate::image_io::write_atomic(path, &to_bytes(header, state)?)
}

/// Reads a state file written by `save`.
pub fn load(path: &Path) -> Result<(Header, RunState)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    from_bytes(&bytes).with_context(|| path.display().to_string())
}
