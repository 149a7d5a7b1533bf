//! Batches of content images (video frames) spread over machines: which inputs, in which order,
//! which share of them this process takes, where each result goes and which are already done.
//!
//! Shards are contiguous blocks of the naturally sorted input list, so a chain of frames that
//! starts from the previous frame's result (`--temporal-init`) stays within one shard.

use anyhow::{bail, ensure, Context, Result};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// File extensions a folder listing picks up (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Compares names with runs of digits taken as numbers: `frame2` < `frame10`. Ties between
/// equal numbers written differently (`01` vs `1`) and everything else fall back to bytes.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let (dx, rx) = split_digits(x);
                let (dy, ry) = split_digits(y);
                let (tx, ty) = (trim_zeros(dx), trim_zeros(dy));
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                (x, y) = (rx, ry);
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The inputs in order: a folder contributes its PNG/JPEG files (not subfolders, not hidden
/// files) sorted naturally by name; a file is taken as it is. Named twice is an error.
pub fn list_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    ensure!(!args.is_empty(), "no content images given: name a folder or image files");
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .with_context(|| format!("{}: cannot list the folder", a.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p) && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect();
            ensure!(!files.is_empty(), "{}: the folder holds no .png, .jpg or .jpeg files", a.display());
            files.sort_by(|p, q| natural_cmp(&p.file_name().unwrap().to_string_lossy(), &q.file_name().unwrap().to_string_lossy()));
            out.extend(files);
        } else {
            ensure!(a.exists(), "{}: no such file or folder", a.display());
            ensure!(a.is_file(), "{}: not a regular file (a FIFO, socket or device): give image files or folders", a.display());
            out.push(a.clone());
        }
    }
    let mut seen = HashMap::new();
    for p in &out {
        let canon = p.canonicalize().with_context(|| format!("{}: cannot resolve", p.display()))?;
        if let Some(prev) = seen.insert(canon, p) {
            bail!("{} is named twice (also as {})", p.display(), prev.display());
        }
    }
    Ok(out)
}

/// Share `index` of `count` (0-based, like Slurm's and Kubernetes' indexes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// This shard's contiguous block of `n` items: `[index*n/count, (index+1)*n/count)`. The
    /// blocks of shards 0..count tile 0..n in order: with `b(i) = floor(i*n/count)`, shard i
    /// is `[b(i), b(i+1))`, `b` never decreases, `b(0) = 0` and `b(count) = n`, so every item
    /// lies in exactly one block. Sizes differ by at most one; with more shards than items
    /// some blocks are empty.
    /// (The products are taken in u128: `index * n` overflows usize for counts near 2^64.)
    pub fn range(&self, n: usize) -> Range<usize> {
        let bound = |i: usize| (i as u128 * n as u128 / self.count as u128) as usize; // <= n
        bound(self.index)..bound(self.index + 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `i/n` with 0 <= i < n.
pub fn parse_shard(s: &str) -> Result<Shard> {
    let (i, n) = s.split_once('/').with_context(|| format!("--shard must look like INDEX/COUNT, e.g. 0/4 (got '{s}')"))?;
    let index: usize = i.trim().parse().with_context(|| format!("--shard: '{i}' is not a shard index"))?;
    let count: usize = n.trim().parse().with_context(|| format!("--shard: '{n}' is not a shard count"))?;
    shard(index, count, "--shard")
}

fn shard(index: usize, count: usize, from: &str) -> Result<Shard> {
    ensure!(count >= 1, "{from}: the shard count must be at least 1");
    ensure!(index < count, "{from}: shard index {index} is not below the count {count} (indexes start at 0)");
    Ok(Shard { index, count })
}

/// Environment variable that gives the shard count beside Kubernetes' `JOB_COMPLETION_INDEX`
/// (set it to the Job's `completions`); `--shard-count` overrides it.
pub const SHARD_COUNT_VAR: &str = "NEURAL_STYLE_SHARD_COUNT";

/// The shard when `--shard` is not given, from the scheduler's environment (`var` looks a name
/// up): a Slurm job array (`SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` of
/// `SLURM_ARRAY_TASK_COUNT`), else a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of
/// `shard_count`, or of `$NEURAL_STYLE_SHARD_COUNT`), else everything (0/1). Also returns where
/// it came from, for the report.
pub fn shard_from_env(var: impl Fn(&str) -> Option<String>, shard_count: Option<usize>) -> Result<(Shard, &'static str)> {
    let num = |name: &str| -> Result<Option<usize>> {
        match var(name) {
            None => Ok(None),
            Some(v) => Ok(Some(v.trim().parse().with_context(|| format!("${name} is '{v}', not a number"))?)),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let count = num("SLURM_ARRAY_TASK_COUNT")?.context("$SLURM_ARRAY_TASK_ID is set but $SLURM_ARRAY_TASK_COUNT is not")?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        ensure!(id >= min, "$SLURM_ARRAY_TASK_ID ({id}) is below $SLURM_ARRAY_TASK_MIN ({min})");
        let index = id - min;
        ensure!(
            index < count,
            "$SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN = {index} is not below $SLURM_ARRAY_TASK_COUNT ({count}): use a contiguous array without a step (e.g. --array=0-{})",
            count.saturating_sub(1)
        );
        return Ok((shard(index, count, "Slurm array")?, "Slurm array"));
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let count = match shard_count {
            Some(c) => c,
            None => num(SHARD_COUNT_VAR)?.with_context(|| {
                format!("$JOB_COMPLETION_INDEX is set: give the number of shards (the Job's completions) with --shard-count or ${SHARD_COUNT_VAR}")
            })?,
        };
        return Ok((shard(index, count, "Kubernetes indexed job")?, "Kubernetes indexed job"));
    }
    if let Some(c) = shard_count {
        ensure!(c == 1, "--shard-count needs $JOB_COMPLETION_INDEX (or use --shard INDEX/COUNT)");
    }
    Ok((Shard::ALL, "no scheduler"))
}

/// Where each input's result goes. `output` is a folder (results are `<stem>.<ext>` in it) or a
/// pattern holding `{stem}` (the input's name without extension) and/or `{index}` (its 0-based
/// position in the whole, unsharded list, zero-padded to 6 digits), e.g. `out/{index}.jpg`.
pub fn output_paths(inputs: &[PathBuf], output: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let is_pattern = is_pattern(output);
    if !is_pattern && is_image(output) && !output.is_dir() {
        bail!("{}: the output must be a folder or a pattern with {{stem}} or {{index}} (e.g. out/{{stem}}.png)", output.display());
    }
    let outs = substituted(inputs, output, ext)?;
    let mut seen: HashMap<&Path, &Path> = HashMap::new();
    for (o, i) in outs.iter().zip(inputs) {
        if let Some(prev) = seen.insert(o, i) {
            bail!("{} and {} would both be written to {}; use an output pattern with {{index}}", prev.display(), i.display(), o.display());
        }
    }
    for o in &outs {
        let c = canonical(o);
        if let Some(i) = inputs.iter().find(|i| canonical(i) == c) {
            bail!("the output {} is the input {}: refusing to overwrite an input", o.display(), i.display());
        }
    }
    Ok(outs)
}

/// Whether `output` is a pattern (holds `{stem}` or `{index}`) rather than a folder.
fn is_pattern(output: &Path) -> bool {
    let s = output.to_string_lossy();
    s.contains("{stem}") || s.contains("{index}")
}

/// Each input's output path (see `output_paths`), before any check between them. An input
/// whose name would take the output out of the pattern's folder (a stem `..`, `.` or empty,
/// e.g. the input `...png`) is refused.
fn substituted(inputs: &[PathBuf], output: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let (pattern, is_pattern) = (output.to_string_lossy(), is_pattern(output));
    inputs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            // A stem holds no separator (it is part of one file name), so only these three can
            // make a component that leaves its folder or vanishes.
            if matches!(stem.as_str(), "" | "." | "..") {
                bail!("{:?}: the input's name without its extension is {stem:?}, which cannot name an output file (rename the input)", p);
            }
            Ok(if is_pattern {
                PathBuf::from(pattern.replace("{stem}", &stem).replace("{index}", &format!("{i:06}")))
            } else {
                output.join(format!("{stem}.{ext}"))
            })
        })
        .collect()
}

/// The inputs less the results an earlier run of the same batch wrote among them (an output
/// folder that is also an input folder: a rerun lists `f0.png` beside `f0.jpg`). An input is
/// taken for an earlier result when `listed(input)` (it came from a folder listing, not from the
/// command line), it has the outputs' extension, and it is the output of another input once
/// such results are set aside. Returns (frames, earlier results).
pub fn without_earlier_results(inputs: &[PathBuf], output: &Path, ext: &str, listed: impl Fn(&Path) -> bool) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let out_ext = if is_pattern(output) { output.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()) } else { Some(ext.to_ascii_lowercase()) };
    let has_out_ext = |p: &Path| out_ext.is_some() && p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()) == out_ext;
    // Start with every candidate set aside, then return each one that no remaining frame writes,
    // until none changes (each pass returns at least one, so at most `inputs.len()` passes).
    let mut aside: Vec<bool> = inputs.iter().map(|p| listed(p) && has_out_ext(p)).collect();
    // The candidates' canonical paths, resolved once (not once per pass).
    let candidates: Vec<Option<PathBuf>> = inputs.iter().zip(&aside).map(|(p, a)| a.then(|| canonical(p))).collect();
    loop {
        let frames: Vec<PathBuf> = inputs.iter().zip(&aside).filter(|(_, a)| !**a).map(|(p, _)| p.clone()).collect();
        let written: std::collections::HashSet<PathBuf> = substituted(&frames, output, ext)?.iter().map(|o| canonical(o)).collect();
        let mut changed = false;
        for (c, a) in candidates.iter().zip(aside.iter_mut()) {
            if *a && !c.as_ref().is_some_and(|c| written.contains(c)) {
                *a = false;
                changed = true;
            }
        }
        if !changed {
            let earlier = inputs.iter().zip(&aside).filter(|(_, a)| **a).map(|(p, _)| p.clone()).collect();
            return Ok((frames, earlier));
        }
    }
}

/// The canonical path, also for a file that does not exist yet (its folder canonicalised).
pub fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (dir.canonicalize(), p.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => p.to_path_buf(),
    }
}

/// The frames a shard at `range` optimises before its own with `--temporal-overlap K`: the K
/// inputs just before its block (fewer where the block starts earlier than K), so that its first
/// frame starts from a warm `--temporal-init` chain as in an unsharded run. Their results are not
/// written (another shard writes them).
pub fn warm_up_range(range: &Range<usize>, overlap: usize) -> Range<usize> {
    if range.is_empty() {
        return range.clone();
    }
    range.start.saturating_sub(overlap)..range.start
}

/// What to do with one input of this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The output exists (outputs are written atomically, so it is complete).
    Skip,
    Run,
}

/// Resume decisions: an input whose output file exists is skipped.
pub fn steps(outputs: &[PathBuf]) -> Vec<Step> {
    outputs.iter().map(|o| if o.is_file() { Step::Skip } else { Step::Run }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_inputs_exactly_once_in_order() {
        for n in 0..60 {
            for count in 1..=70 {
                let mut owner = vec![None; n];
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(n);
                    assert_eq!(r.start, next, "n={n} count={count}: shard {index} is not contiguous with the previous one");
                    assert!(r.len() <= n / count + 1 && r.len() >= n / count, "n={n} count={count}: unbalanced {r:?}");
                    for i in r.clone() {
                        assert_eq!(owner[i], None, "n={n} count={count}: input {i} in two shards");
                        owner[i] = Some(index);
                    }
                    next = r.end;
                }
                assert!(owner.iter().all(Option::is_some), "n={n} count={count}: an input is in no shard");
            }
        }
        assert_eq!(Shard { index: 1, count: 3 }.range(10), 3..6);
        assert_eq!(Shard::ALL.range(7), 0..7);
    }

    #[test]
    fn warm_up_frames_are_the_ones_just_before_the_block() {
        assert_eq!(warm_up_range(&(6..9), 2), 4..6);
        assert_eq!(warm_up_range(&(6..9), 0), 6..6, "K = 0: none");
        assert_eq!(warm_up_range(&(3..6), 5), 0..3, "K beyond the first input: from the first");
        assert_eq!(warm_up_range(&(0..3), 4), 0..0, "the first shard has none");
        assert_eq!(warm_up_range(&(7..9), usize::MAX), 0..7, "huge K");
        assert_eq!(warm_up_range(&(7..7), 3), 7..7, "an empty shard has none");
    }

    #[test]
    fn parses_shards() {
        assert_eq!(parse_shard("2/5").unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1/0", "x/2", "3", "-1/4", "1/2/3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn shard_from_slurm_array() {
        let s = shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "5")]), None).unwrap();
        assert_eq!(s, (Shard { index: 2, count: 4 }, "Slurm array"));
        let s = shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "3")]), None).unwrap();
        assert_eq!(s.0, Shard { index: 0, count: 3 });
        // A stepped array (--array=0-8:4: ids 0, 4, 8, count 3) cannot be mapped.
        assert!(shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "8"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "0")]), None).is_err());
        assert!(shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "1")]), None).is_err());
        assert!(shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "a"), ("SLURM_ARRAY_TASK_COUNT", "3")]), None).is_err());
        // Slurm wins over Kubernetes.
        let both = env(&[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "2"), ("JOB_COMPLETION_INDEX", "0"), (SHARD_COUNT_VAR, "9")]);
        assert_eq!(shard_from_env(both, None).unwrap().0, Shard { index: 1, count: 2 });
    }

    #[test]
    fn shard_from_kubernetes_indexed_job() {
        let s = shard_from_env(env(&[("JOB_COMPLETION_INDEX", "3"), (SHARD_COUNT_VAR, "8")]), None).unwrap();
        assert_eq!(s, (Shard { index: 3, count: 8 }, "Kubernetes indexed job"));
        // --shard-count overrides the variable.
        let s = shard_from_env(env(&[("JOB_COMPLETION_INDEX", "3"), (SHARD_COUNT_VAR, "8")]), Some(4)).unwrap();
        assert_eq!(s.0, Shard { index: 3, count: 4 });
        assert!(shard_from_env(env(&[("JOB_COMPLETION_INDEX", "3")]), None).is_err(), "no count");
        assert!(shard_from_env(env(&[("JOB_COMPLETION_INDEX", "4"), (SHARD_COUNT_VAR, "4")]), None).is_err());
        assert_eq!(shard_from_env(env(&[]), None).unwrap().0, Shard::ALL);
        assert!(shard_from_env(env(&[]), Some(3)).is_err());
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["f10.png", "f2.png", "f1.png", "f02.png", "g.png", "f.png", "F3.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["F3.png", "f.png", "f1.png", "f02.png", "f2.png", "f10.png", "g.png"]);
        assert_eq!(natural_cmp("frame_000009", "frame_000010"), Ordering::Less);
    }

    #[test]
    fn lists_folders_naturally_outputs_and_resume_steps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for n in ["f10.png", "f2.jpg", "f1.PNG", "notes.txt", ".hidden.png"] {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let inputs = list_inputs(&[d.to_path_buf()]).unwrap();
        let names: Vec<_> = inputs.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["f1.PNG", "f2.jpg", "f10.png"]);
        assert!(list_inputs(&[d.to_path_buf(), d.join("f2.jpg")]).is_err(), "named twice");
        assert!(list_inputs(&[d.join("missing.png")]).is_err());

        let out = d.join("out");
        std::fs::create_dir(&out).unwrap();
        let outs = output_paths(&inputs, &out, "png").unwrap();
        assert_eq!(outs[2], out.join("f10.png"));
        let pat = output_paths(&inputs, &d.join("o/{index}_{stem}.jpg"), "png").unwrap();
        assert_eq!(pat[1], d.join("o/000001_f2.jpg"));
        // Writing into the input folder over an input is refused; a clash between two inputs too.
        assert!(output_paths(&inputs, d, "png").is_err());
        assert!(output_paths(&inputs, &d.join("x.png"), "png").is_err());

        std::fs::write(&outs[1], b"done").unwrap();
        assert_eq!(steps(&outs), [Step::Run, Step::Skip, Step::Run]);
    }
}
