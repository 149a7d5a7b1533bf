//! Issue 19's hostile inputs on the command line, batch, grid, make-examples and fetch-model
//! surfaces (the resume-state and --from-png records have their own files: tests/it/resume.rs,
//! tests/it/from_png_records.rs). Each case was a panic, an abort, a hang, a silent wrong result
//! or an unclear message before; now each is refused up front with one line naming the flag or
//! file, or (the batch rerun) does the right thing.

use crate::common;

use common::{output_within, refused, stderr, Env};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A tiny, fast run: 32 px, shallow layers, one iteration, CPU.
const TINY: [&str; 10] = ["--image-size", "32", "--num-iterations", "1", "--device", "cpu", "--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1"];

/// Under a 1.5 GB address-space limit (`ulimit -v`): an input that makes the program allocate
/// gigabytes aborts or fails instead of passing.
fn capped(env: &Env, args: &[&str]) -> Output {
    let mut c = common::command_in(env.dir.path(), Some(1_500_000));
    c.args(args).env("RAYON_NUM_THREADS", "2");
    output_within(c, Duration::from_secs(120))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---- item 5: absurd iteration counts ---------------------------------------------------------

#[test]
fn absurd_iteration_counts_are_refused_naming_the_flag() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    for n in ["1000000000000", "9223372036854775807"] {
        let o = capped(&env, &[&["--content-image", c.to_str().unwrap(), "--style-image", s.to_str().unwrap(), "--output-image", "out.png"][..], &TINY[..2], &["--num-iterations", n, "--device", "cpu"]].concat());
        refused(&o, &["--num-iterations must be at most 1000000000", n]);
    }
    let o = capped(&env, &[&["--content-image", c.to_str().unwrap(), "--style-image", s.to_str().unwrap()][..], &["--scales", "32,48", "--scale-iterations", "1,99999999999", "--device", "cpu"]].concat());
    refused(&o, &["--scale-iterations must be at most"]);
    assert!(!env.path("out.png").exists());
}

// ---- item 7: endless streams and FIFOs as inputs -------------------------------------------

#[test]
fn a_device_or_fifo_as_an_input_is_refused_at_once() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    assert!(Command::new("mkfifo").arg(env.path("fifo.png")).status().unwrap().success());
    let fifo = env.path("fifo.png");
    let fifo = fifo.to_str().unwrap();
    let (c, s) = (c.to_str().unwrap(), s.to_str().unwrap());
    for (flag, args) in [
        ("/dev/zero", vec!["--content-image", "/dev/zero", "--style-image", s]),
        ("fifo.png", vec!["--content-image", c, "--style-image", fifo]),
        ("fifo.png", vec!["--content-image", fifo, "--style-image", s]),
        ("fifo.png", vec!["--content-image", c, "--style-image", s, "--init-image", fifo]),
        ("fifo.png", vec!["--from-png", fifo]), // (needs settings.rs to open it with image_io::open_input)
    ] {
        let mut cmd = env.cmd();
        cmd.args(&args).args(TINY);
        let o = output_within(cmd, Duration::from_secs(30));
        refused(&o, &[flag, "not a regular file"]);
    }
    let mut cmd = env.cmd();
    cmd.args(["batch", fifo, "--style-image", s, "-o", "outs"]).args(TINY);
    let o = output_within(cmd, Duration::from_secs(30));
    refused(&o, &["fifo.png"]);
    assert_eq!(files_in(env.dir.path()), ["c.png", "fifo.png", "s.png"]);
}

// ---- items 8-11: batch -----------------------------------------------------------------------

/// A shard index and count near 2^64 / 3 (index * 3 overflowed): no panic, the last frame.
#[test]
fn batch_shards_at_the_extremes_of_u64() {
    let env = Env::new();
    for k in 0..3 {
        env.png(&format!("frames/f{k}.png"), 32, 24);
    }
    let s = env.png("s.png", 24, 24);
    let (i, n) = ("6148914691236517205", "6148914691236517206");
    let shard = format!("{i}/{n}");
    let via: [(&str, Vec<(&str, &str)>, Vec<&str>); 3] = [
        ("--shard", vec![], vec!["--shard", &shard]),
        ("Slurm", vec![("SLURM_ARRAY_TASK_ID", i), ("SLURM_ARRAY_TASK_COUNT", n)], vec![]),
        ("Kubernetes", vec![("JOB_COMPLETION_INDEX", i), ("NEURAL_STYLE_SHARD_COUNT", n)], vec![]),
    ];
    for (what, vars, args) in via {
        let out = env.path(&format!("out-{what}"));
        let o = env.cmd().args(["batch", "frames", "--style-image", s.to_str().unwrap(), "-o", out.to_str().unwrap()]).args(&args).args(TINY).envs(vars).output().unwrap();
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("takes inputs 3..3 of 3 (1 frames)"), "{what}: {}", stderr(&o));
        assert_eq!(files_in(&out), ["f2.png"], "{what}");
    }
    // The shard before it takes none ([floor(i * 3 / count), floor((i + 1) * 3 / count)) =
    // [2, 2) in exact arithmetic), and shard 0 the first frame.
    for (shard, takes) in [("6148914691236517204/6148914691236517206", "takes none of the 3 inputs"), ("0/6148914691236517206", "takes none of the 3 inputs"), ("2049638230412172401/6148914691236517206", "takes inputs 1..1 of 3 (1 frames)"), ("4099276460824344803/6148914691236517206", "takes inputs 2..2 of 3 (1 frames)")] {
        let o = env.cmd().args(["batch", "frames", "--style-image", s.to_str().unwrap(), "-o", "prev", "--shard", shard]).args(TINY).output().unwrap();
        assert!(o.status.success() && stderr(&o).contains(takes), "{shard}: {}", stderr(&o));
    }
}

/// The output folder holds the style image under a frame's name: refused before any frame is
/// skipped (it used to say "nothing to do" and exit 0, never stylising the frame).
#[test]
fn batch_output_equal_to_the_style_image_or_model_is_refused() {
    let env = Env::new();
    env.png("frames/x.png", 32, 24);
    let style = env.png("sty/x.png", 24, 24);
    let o = env.cmd().args(["batch", "frames", "--style-image", style.to_str().unwrap(), "-o", "sty/"]).args(TINY).output().unwrap();
    refused(&o, &["sty/x.png", "--output must not overwrite the --style-image file"]);
    let model = env.path("m/x.png");
    std::fs::create_dir(env.path("m")).unwrap();
    std::fs::copy(&style, &model).unwrap();
    let other = env.png("s.png", 24, 24);
    let o = env.cmd().args(["batch", "frames", "--style-image", other.to_str().unwrap(), "--model", model.to_str().unwrap(), "-o", "m/"]).args(TINY).output().unwrap();
    refused(&o, &["m/x.png", "--model"]);
}

/// Output folder = the folder of JPEG frames: the rerun does only the missing frames (it
/// failed: "f0.jpg and f0.png would both be written").
#[test]
fn batch_rerun_into_its_own_folder_of_jpeg_frames_does_only_the_missing_frames() {
    let env = Env::new();
    let frames = env.path("frames");
    std::fs::create_dir(&frames).unwrap();
    for k in 0..3 {
        let p = env.png(&format!("frames/f{k}.png"), 32, 24);
        image::open(&p).unwrap().save(frames.join(format!("f{k}.jpg"))).unwrap();
        std::fs::remove_file(p).unwrap();
    }
    let s = env.png("s.png", 24, 24);
    let batch = |shard: &str| env.cmd().args(["batch", "frames", "--style-image", s.to_str().unwrap(), "-o", "frames", "--shard", shard]).args(TINY).output().unwrap();
    // The first run writes frames 0 and 1 (two shards of three), the rerun of all only frame 2.
    for shard in ["0/3", "1/3"] {
        let o = batch(shard);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(files_in(&frames), ["f0.jpg", "f0.png", "f1.jpg", "f1.png", "f2.jpg"]);
    let before: Vec<Vec<u8>> = ["f0.png", "f1.png"].iter().map(|n| std::fs::read(frames.join(n)).unwrap()).collect();
    let o = batch("0/1");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 file(s) in the input folders are this batch's earlier results"), "{err}");
    assert!(err.contains("batch: 1 stylised, 2 skipped"), "{err}");
    assert_eq!(files_in(&frames), ["f0.jpg", "f0.png", "f1.jpg", "f1.png", "f2.jpg", "f2.png"]);
    let after: Vec<Vec<u8>> = ["f0.png", "f1.png"].iter().map(|n| std::fs::read(frames.join(n)).unwrap()).collect();
    assert!(before == after, "an earlier result was rewritten");
    // And once more: nothing to do.
    let o = batch("0/1");
    assert!(stderr(&o).contains("nothing to do: all 3 outputs of this shard exist"), "{}", stderr(&o));
}

/// An input named `...png` (stem `..`) would put its output at `o/../000000.png`.
#[test]
fn batch_output_pattern_cannot_escape_its_folder() {
    let env = Env::new();
    let dots = env.png("in/...png", 32, 24);
    let s = env.png("s.png", 24, 24);
    let o = env.cmd().args(["batch", dots.to_str().unwrap(), "--style-image", s.to_str().unwrap(), "-o", "o/{stem}/{index}.png"]).args(TINY).output().unwrap();
    refused(&o, &["...png", "\"..\"", "cannot name an output file"]);
    assert!(!env.path("o").exists() && !env.path("000000.png").exists());
}

// ---- item 12: grid ratios whose style weight overflows ---------------------------------------

#[test]
fn grid_ratios_whose_style_weight_overflows_are_refused() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    for (ratio, why) in [("1e-300", "more than an f32 holds"), ("1e-39", "more than an f32 holds"), ("1e300", "rounds to 0 in f32")] {
        let o = env.cmd().args(["grid", "--content-image", c.to_str().unwrap(), "--style-image", s.to_str().unwrap(), &format!("--ratios=1e-3,{ratio}")]).args(TINY).output().unwrap();
        refused(&o, &["--ratios", why]);
    }
    assert!(!env.path("grid.png").exists());
}

// ---- item 14: make-examples --figure with a tall result ---------------------------------------

#[test]
fn make_examples_figure_of_a_1x10000_result_stays_small() {
    let env = Env::new();
    let o = env.cmd().args(["make-examples", "--out-dir", "ex", "--width", "64"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let tall = env.png("tall.png", 1, 10000);
    assert!(std::fs::metadata(&tall).unwrap().len() < 4 << 20);
    let o = capped(&env, &["make-examples", "--out-dir", "ex", "--figure", tall.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fig = image::open(env.path("ex/figure.png")).unwrap();
    assert!(fig.height() <= 2048 && fig.width() <= 3 * 2048 + 8, "{}x{}", fig.width(), fig.height());
}

// ---- item 16: messages -------------------------------------------------------------------------

#[test]
fn out_of_range_numbers_name_the_flag_and_its_range() {
    let env = Env::new();
    let o = env.cmd().args(["--content-image", "c.png", "--style-image", "s.png", "--seed", "18446744073709551615"]).output().unwrap();
    refused(&o, &["--seed", "18446744073709551615 is out of range", "9223372036854775807"]);
    let o = env.cmd().args(["bench", "--sizes", "-1"]).output().unwrap();
    refused(&o, &["--sizes", "'-1' is not a size"]);
    let o = env.cmd().args(["bench", "--sizes", "64", "--evals", "99999999999"]).output().unwrap();
    refused(&o, &["--evals"]);
}

/// A newline in a path is shown escaped, so the error stays one line and says which file.
#[test]
fn control_characters_in_paths_are_escaped() {
    let env = Env::new();
    let s = env.png("s.png", 24, 24);
    let o = env.cmd().args(["--content-image", "a\nb\x1b[2J.png", "--style-image", s.to_str().unwrap()]).args(TINY).output().unwrap();
    let line = refused(&o, &["a\\nb\\u{1b}[2J.png"]);
    assert_eq!(stderr(&o).lines().filter(|l| !l.starts_with("using the CPU") && !l.starts_with("note:")).count(), 1, "{line}");
}

/// `fetch-model --dest` in a folder that takes no file names --dest, before any download.
#[test]
fn fetch_model_dest_that_cannot_be_written_names_the_dest() {
    let env = Env::new();
    // Nothing listens on port 9: had the download been tried first, the error would be about it.
    let o = env.cmd().args(["fetch-model", "--url", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth", "--dest", "/proc/x.pth"]).output().unwrap();
    refused(&o, &["/proc/x.pth: --dest cannot be written there"]);
}

// ---- the output's file system has no room -----------------------------------------------------

/// A billion snapshots of 512 px cannot fit on any disk: refused before the run, naming the
/// folder and the flags (a full disk was found only after the whole run).
#[test]
fn outputs_that_cannot_fit_on_the_disk_are_refused_up_front() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    let o = env
        .cmd()
        .args(["--content-image", c.to_str().unwrap(), "--style-image", s.to_str().unwrap(), "--image-size", "512", "--num-iterations", "1000000000", "--save-iter", "1", "--device", "cpu", "--output-image", "out.png"])
        .output()
        .unwrap();
    refused(&o, &["the file system has", "free", "--save-iter"]);
    assert_eq!(files_in(env.dir.path()), ["c.png", "s.png"]);
}

// ---- found by this round's own attack: sizes that overflow before the memory check ----------

/// `--style-scale 1e30` made style images of usize::MAX pixels a side, and the size arithmetic
/// wrapped past the memory check: "memory allocation of 1649267441280 bytes failed" (an abort).
/// `--scales 1000000000000 --scale-factor 2` made a list of 10^12 sizes first. Each is refused,
/// naming its flag, under the 1.5 GB cap.
#[test]
fn sizes_past_any_memory_are_refused_before_the_arithmetic_overflows() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    let (c, s) = (c.to_str().unwrap(), s.to_str().unwrap());
    let base = ["--content-image", c, "--style-image", s, "--num-iterations", "1", "--device", "cpu", "--output-image", "out.png"];
    for (args, needles) in [
        (vec!["--style-scale", "1e30"], vec!["--style-scale", "more than the 1048576"]),
        (vec!["--style-scale", "40000"], vec!["--style-scale", "more than the 1048576"]),
        (vec!["--image-size", "1048577"], vec!["--image-size must be at most 1048576"]),
        (vec!["--image-size", "32", "--image-height", "99999999999"], vec!["--image-height must be at most 1048576"]),
        (vec!["--scales", "1000000000000", "--scale-factor", "2", "--image-size", "64"], vec!["--scales 1000000000000", "at most 64 scales"]),
        (vec!["--scales", "32,48", "--scale-iterations", "999999999,999999999"], vec!["add up to more than 1000000000"]),
    ] {
        let o = capped(&env, &[&base[..], &args[..]].concat());
        refused(&o, &needles);
    }
    // A 4000x1 PNG at --image-height 1000 would be 4,000,000 pixels wide.
    let wide = env.png("wide.png", 4000, 1);
    let o = capped(&env, &["--content-image", wide.to_str().unwrap(), "--style-image", s, "--image-height", "1000", "--device", "cpu"]);
    refused(&o, &["wide.png", "4000000x1000", "--image-height 1000"]);
    assert_eq!(files_in(env.dir.path()), ["c.png", "s.png", "wide.png"]);
}

/// A device as an output (`--log-json /dev/null`) is named as such, not as a folder.
#[test]
fn a_device_as_an_output_is_named_as_one() {
    let env = Env::new();
    let (c, s) = (env.png("c.png", 32, 24), env.png("s.png", 24, 24));
    let o = env.cmd().args(["--content-image", c.to_str().unwrap(), "--style-image", s.to_str().unwrap(), "--log-json", "/dev/null"]).args(TINY).output().unwrap();
    refused(&o, &["/dev/null", "--log-json names a FIFO, socket or device"]);
}
