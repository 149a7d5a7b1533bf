//! Issue 23: the repository's own `examples/batch/slurm-array.sh`, submitted with `sbatch` to a
//! real Slurm as users submit it (only paths and options passed through the environment, and
//! `--array`/`--time` overrides on sbatch's command line), and the faults a scheduler makes:
//! a task cancelled in the middle of its shard, the same array submitted twice at once, a task
//! killed at its time limit.
//!
//! `.ci/slurm/up.sh` brings up a one-node Slurm on this machine (`.ci/run` does, then runs
//! these tests with NEURAL_STYLE_REQUIRE_SLURM=1 and stops it with `.ci/slurm/down.sh`). Where no
//! Slurm answers and NEURAL_STYLE_REQUIRE_SLURM is unset, each test prints `SKIPPED: ...` and
//! passes, so a plain `cargo test` runs on machines without one.
//!
//! The tests take turns (one lock): they share the node, and the cancel and time-limit tests
//! need their tasks to run at a known pace.

use crate::common::{stderr, Env, BIN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Layers that make a 32 px frame cheap (as tests/it/cli.rs's FAST).
const FAST: &str = "--content-layers relu2_2 --style-layers relu1_1,relu2_1,relu3_1";
const FRAMES: u32 = 12;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/batch/slurm-array.sh")
}

struct Slurm {
    /// `SLURM_CONF` for the client commands: `$SLURM_CONF`, else up.sh's runtime folder's, else
    /// none (the system's /etc/slurm).
    conf: Option<PathBuf>,
}

/// The Slurm to submit to, or None (after printing why) when none answers and none is required.
/// Asked once per test binary: sinfo takes about 9 s to give up on a controller that is down.
fn slurm(test: &str) -> Option<Slurm> {
    static PROBE: OnceLock<(Option<PathBuf>, Result<(), String>)> = OnceLock::new();
    let (conf, answer) = PROBE.get_or_init(|| {
        let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from).or_else(|| {
            let dir = std::env::var_os("NEURAL_STYLE_SLURM_DIR").map_or_else(|| PathBuf::from("/tmp/neural-style-slurm"), PathBuf::from);
            Some(dir.join("slurm.conf")).filter(|c| c.is_file())
        });
        let state = Slurm { conf: conf.clone() }.cmd("sinfo").args(["-h", "-o", "%t"]).output();
        let answer = match &state {
            Err(e) => Err(format!("sinfo cannot be run ({e})")),
            Ok(o) if !o.status.success() => Err(format!("sinfo failed: {}", stderr(o).trim())),
            Ok(o) => {
                let states = String::from_utf8_lossy(&o.stdout).into_owned();
                if states.lines().any(|l| matches!(l.trim(), "idle" | "mix" | "alloc")) {
                    Ok(())
                } else {
                    Err(format!("no node is up (sinfo: {:?})", states.trim()))
                }
            }
        };
        (conf, answer)
    });
    let why = match answer {
        Ok(()) => return Some(Slurm { conf: conf.clone() }),
        Err(why) => why,
    };
    let required = std::env::var_os("NEURAL_STYLE_REQUIRE_SLURM").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "{test}: NEURAL_STYLE_REQUIRE_SLURM is set but no Slurm is reachable: {why} (SLURM_CONF {conf:?})");
    eprintln!("SKIPPED: {test}: no Slurm reachable: {why}; .ci/slurm/up.sh starts one");
    None
}

/// Job ids submitted by a test, cancelled when it ends (also when it fails).
struct Jobs<'a>(&'a Slurm, Vec<String>);

impl Drop for Jobs<'_> {
    fn drop(&mut self) {
        if !self.1.is_empty() {
            let _ = self.0.cmd("scancel").args(&self.1).output();
        }
    }
}

impl Slurm {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(conf) = &self.conf {
            c.env("SLURM_CONF", conf);
        }
        c
    }

    /// `sbatch` of the example script from `env`'s folder, with `sbatch_args` before the script
    /// and the script's variables; returns the job id.
    fn submit(&self, env: &Env, jobs: &mut Jobs, sbatch_args: &[&str], iterations: u32) -> String {
        let mut c = self.cmd("sbatch");
        c.current_dir(env.dir.path())
            .arg("--parsable")
            .args(sbatch_args)
            .arg(script())
            .env("NEURAL_STYLE_BIN", BIN)
            .env("FRAMES", "frames/")
            .env("OUTPUT", "styled/")
            .env("STYLE", "style.png")
            .env("NEURAL_STYLE_ARGS", args(iterations))
            // sbatch passes its environment on to the tasks: the same model (the embedded one)
            // and no shard from elsewhere.
            .env("TORCH_HOME", env.path("torch-home"))
            .env_remove("NEURAL_STYLE_MODEL")
            .env_remove("NEURAL_STYLE_MODEL_URL")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("NEURAL_STYLE_SHARD_COUNT");
        let o = c.output().expect("sbatch runs");
        assert!(o.status.success(), "sbatch {sbatch_args:?} failed: {}", stderr(&o));
        let id = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap().to_string();
        assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "sbatch printed {id:?}");
        jobs.1.push(id.clone());
        id
    }

    /// Each array task's state (`JOBID_INDEX` -> COMPLETED, CANCELLED, TIMEOUT, ...).
    fn states(&self, job: &str) -> BTreeMap<String, String> {
        let o = self.cmd("squeue").args(["-h", "-r", "--states=all", "-j", job, "-o", "%i %T"]).output().expect("squeue runs");
        assert!(o.status.success(), "squeue: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split_once(' ')).map(|(i, s)| (i.to_string(), s.trim().to_string())).collect()
    }

    /// Waits (squeue, every 0.5 s) until every task of `job` has ended; fails after `limit`,
    /// showing the tasks' logs from `env`.
    fn wait(&self, env: &Env, job: &str, tasks: usize, limit: Duration) -> BTreeMap<String, String> {
        let start = Instant::now();
        loop {
            let states = self.states(job);
            let ended = |s: &str| !matches!(s, "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING" | "SIGNALING" | "STAGE_OUT");
            if states.len() == tasks && states.values().all(|s| ended(s)) {
                return states;
            }
            assert!(start.elapsed() < limit, "job {job} still not done after {limit:?}: {states:?}\n{}", logs(env));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The options after the script's paths: 32 px, `iterations`, the CPU, cheap layers.
fn args(iterations: u32) -> String {
    format!("--image-size 32 --num-iterations {iterations} --device cpu {FAST}")
}

/// `n` distinct 32x24 frames f1..fn (natural and byte order differ past f9), a style, logs/.
fn setup(n: u32) -> Env {
    let env = Env::new();
    let dir = env.path("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=n {
        image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([((x * 8 + i * 40) % 256) as u8, ((y * 10 + i * 25) % 256) as u8, (i * 20 % 256) as u8]))
            .save(dir.join(format!("f{i}.png")))
            .unwrap();
    }
    env.png("style.png", 20, 28);
    std::fs::create_dir(env.path("logs")).unwrap(); // the script's #SBATCH --output folder
    env
}

fn names(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("f{i}.png")).collect()
}

/// The frames a single process writes with the same options, into `reference/` (same folder,
/// same inputs: the settings recorded in each PNG name the inputs by their absolute paths).
fn reference(env: &Env, iterations: u32) {
    let mut c = env.cmd();
    c.args(["batch", "frames/", "--output", "reference/", "--style-image", "style.png"])
        .args(args(iterations).split(' '))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    let o = c.output().unwrap();
    assert!(o.status.success(), "the single-process batch: {}", stderr(&o));
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort_by(|a, b| neural_style::batch::natural_cmp(a, b));
    v
}

/// Every task log of the folder, for failure messages.
fn logs(env: &Env) -> String {
    files_in(&env.path("logs")).iter().map(|n| format!("--- {n}\n{}", std::fs::read_to_string(env.path("logs").join(n)).unwrap_or_default())).collect()
}

/// The frames each task log says it wrote (`[k/n] NAME: wrote ...`), log by log.
fn written_by_log(env: &Env, job: &str) -> BTreeMap<String, Vec<String>> {
    files_in(&env.path("logs"))
        .into_iter()
        .filter(|n| n.starts_with(&format!("neural-style-{job}_")))
        .map(|n| {
            let text = std::fs::read_to_string(env.path("logs").join(&n)).unwrap();
            let wrote = text.lines().filter(|l| l.contains(": wrote ")).map(|l| l.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string()).collect();
            (n, wrote)
        })
        .collect()
}

/// Each output equals the single-process run's, byte for byte.
fn assert_same_as_reference(env: &Env, frames: &[String]) {
    for n in frames {
        let (got, want) = (std::fs::read(env.path("styled").join(n)), std::fs::read(env.path("reference").join(n)).unwrap());
        assert!(got.as_ref().is_ok_and(|g| *g == want), "styled/{n} differs from the single-process result ({:?} bytes vs {})", got.map(|g| g.len()), want.len());
    }
}

fn mtimes(dir: &Path) -> BTreeMap<String, SystemTime> {
    files_in(dir).into_iter().map(|n| (n.clone(), std::fs::metadata(dir.join(&n)).unwrap().modified().unwrap())).collect()
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_example_array_of_4_tasks_writes_each_frame_once_as_one_process_would() {
    let _turn = lock();
    let Some(slurm) = slurm("slurm::the_example_array_of_4_tasks_writes_each_frame_once_as_one_process_would") else { return };
    let started = Instant::now();
    let env = setup(FRAMES);
    reference(&env, 3);
    let mut jobs = Jobs(&slurm, Vec::new());
    let job = slurm.submit(&env, &mut jobs, &["--array=0-3"], 3);
    let states = slurm.wait(&env, &job, 4, Duration::from_secs(300));
    assert!(states.values().all(|s| s == "COMPLETED"), "{states:?}\n{}", logs(&env));
    // Each task took its own quarter, named from Slurm's variables.
    let by_log = written_by_log(&env, &job);
    assert_eq!(by_log.len(), 4, "{}", logs(&env));
    for (i, (log, wrote)) in by_log.iter().enumerate() {
        let text = std::fs::read_to_string(env.path("logs").join(log)).unwrap();
        assert!(text.contains(&format!("batch: shard {i}/4 (from Slurm array)")), "{log}: {text}");
        assert_eq!(wrote.len(), 3, "{log}: {text}");
    }
    // Every frame written exactly once, in order across the tasks, and nothing else (no .tmp).
    let all: Vec<String> = by_log.into_values().flatten().collect();
    assert_eq!(all, names(FRAMES));
    assert_eq!(files_in(&env.path("styled")), names(FRAMES));
    assert_same_as_reference(&env, &names(FRAMES));
    eprintln!("slurm: 4-task array over {FRAMES} frames: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_task_cancelled_mid_shard_is_finished_by_resubmitting_without_redoing_frames() {
    let _turn = lock();
    let Some(slurm) = slurm("slurm::a_task_cancelled_mid_shard_is_finished_by_resubmitting_without_redoing_frames") else { return };
    let started = Instant::now();
    // Enough iterations that a frame takes seconds: task 1 is cancelled after its first frame.
    let iterations = 400;
    let env = setup(FRAMES);
    let mut jobs = Jobs(&slurm, Vec::new());
    let job = slurm.submit(&env, &mut jobs, &["--array=0-3"], iterations);
    // Task 1 has frames 4..6: cancel it once f4 is written.
    let first = env.path("styled/f4.png");
    let wait_start = Instant::now();
    while !first.exists() {
        assert!(wait_start.elapsed() < Duration::from_secs(300), "f4.png not written after 300 s\n{}", logs(&env));
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = slurm.cmd("scancel").arg(format!("{job}_1")).output().unwrap();
    assert!(o.status.success(), "scancel: {}", stderr(&o));
    let states = slurm.wait(&env, &job, 4, Duration::from_secs(300));
    assert_eq!(states.get(&format!("{job}_1")).map(String::as_str), Some("CANCELLED"), "{states:?}");
    assert!(states.iter().filter(|(t, _)| **t != format!("{job}_1")).all(|(_, s)| s == "COMPLETED"), "{states:?}\n{}", logs(&env));
    let after_cancel = mtimes(&env.path("styled"));
    let missing: Vec<String> = names(FRAMES).into_iter().filter(|n| !after_cancel.contains_key(n)).collect();
    assert!(!missing.is_empty() && missing.iter().all(|n| ["f5.png", "f6.png"].contains(&n.as_str())), "the cancelled task left {missing:?} missing, expected f5 and/or f6: {:?}", after_cancel.keys());
    assert!(after_cancel.keys().all(|n| names(FRAMES).contains(n)), "a partial or temp file was left: {:?}", after_cancel.keys());

    // Resubmit the same array: only the missing frames are done, nothing finished is rewritten.
    std::thread::sleep(Duration::from_millis(20));
    let again = slurm.submit(&env, &mut jobs, &["--array=0-3"], iterations);
    let states = slurm.wait(&env, &again, 4, Duration::from_secs(300));
    assert!(states.values().all(|s| s == "COMPLETED"), "{states:?}\n{}", logs(&env));
    let redone: Vec<String> = written_by_log(&env, &again).into_values().flatten().collect();
    assert_eq!(redone, missing, "the resubmitted array wrote other frames than the missing ones\n{}", logs(&env));
    assert_eq!(files_in(&env.path("styled")), names(FRAMES), "{}", logs(&env));
    let after = mtimes(&env.path("styled"));
    for (n, t) in &after_cancel {
        assert_eq!(after[n], *t, "{n} was rewritten by the resubmitted array");
    }
    eprintln!("slurm: cancel mid-shard and resubmit ({} frame(s) redone): {:.1} s", missing.len(), started.elapsed().as_secs_f64());
}

#[test]
fn two_arrays_over_one_output_folder_at_once_leave_only_whole_frames() {
    let _turn = lock();
    let Some(slurm) = slurm("slurm::two_arrays_over_one_output_folder_at_once_leave_only_whole_frames") else { return };
    let started = Instant::now();
    let env = setup(FRAMES);
    reference(&env, 3);
    let mut jobs = Jobs(&slurm, Vec::new());
    // A double submission: both arrays run at once (the node has room for eight tasks).
    let (a, b) = (slurm.submit(&env, &mut jobs, &["--array=0-3"], 3), slurm.submit(&env, &mut jobs, &["--array=0-3"], 3));
    for job in [&a, &b] {
        let states = slurm.wait(&env, job, 4, Duration::from_secs(300));
        assert!(states.values().all(|s| s == "COMPLETED"), "{job}: {states:?}\n{}", logs(&env));
    }
    // Each frame is whole (the same bytes as one process writes), whichever task renamed last.
    assert_eq!(files_in(&env.path("styled")), names(FRAMES), "a temp or stray file was left");
    assert_same_as_reference(&env, &names(FRAMES));
    let wrote: usize = [&a, &b].iter().map(|j| written_by_log(&env, j).values().map(Vec::len).sum::<usize>()).sum();
    assert!(wrote >= FRAMES as usize, "{}", logs(&env));
    eprintln!("slurm: double submission ({wrote} writes of {FRAMES} frames): {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_task_killed_at_its_time_limit_leaves_only_complete_frames() {
    let _turn = lock();
    let Some(slurm) = slurm("slurm::a_task_killed_at_its_time_limit_leaves_only_complete_frames") else { return };
    let started = Instant::now();
    // One task over 24 frames at 3000 iterations each needs several minutes; --time=1 ends it
    // after 60 to 90 s (slurmctld checks time limits every 30 s), with SIGTERM and at once
    // SIGKILL (KillWait=0 in .ci/slurm/slurm.conf).
    let n = 24;
    let env = setup(n);
    let mut jobs = Jobs(&slurm, Vec::new());
    let job = slurm.submit(&env, &mut jobs, &["--array=0-0", "--time=1"], 3000);
    let states = slurm.wait(&env, &job, 1, Duration::from_secs(240));
    assert_eq!(states.values().collect::<Vec<_>>(), ["TIMEOUT"], "{states:?}\n{}", logs(&env));
    let log = logs(&env);
    assert!(log.contains("DUE TO TIME LIMIT"), "{log}");
    // Only whole frames under their own names; a temp file a kill may leave mid-write is hidden
    // (a rerun's folder listing skips it, and the next write of that frame uses a new name).
    let styled = env.path("styled");
    let (hidden, frames): (Vec<String>, Vec<String>) = files_in(&styled).into_iter().partition(|n| n.starts_with('.'));
    assert!(frames.len() < n as usize, "the task was not cut short: {frames:?}");
    for f in &frames {
        assert!(names(n).contains(f), "a stray file {f}");
        let img = image::open(styled.join(f)).unwrap_or_else(|e| panic!("styled/{f} is not a whole image: {e}"));
        assert_eq!((img.width(), img.height()), (32, 24), "{f}");
    }
    assert!(hidden.iter().all(|h| h.ends_with(".tmp")), "{hidden:?}");
    eprintln!("slurm: time limit: {} frame(s) done before the kill, {} temp file(s) left: {:.1} s", frames.len(), hidden.len(), started.elapsed().as_secs_f64());
}
