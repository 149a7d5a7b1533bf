//! The figures are true (issue 21 item 2): README's figure of its first command
//! (examples/figure.png, from examples/result.png) is what that command makes today, and every
//! committed figure has the record of the commands that made it, which scripts/make_figures.sh
//! writes beside it (examples/<name>.txt).
//!
//! The first command is run as README gives it, its output put in a temp folder, with every GPU
//! hidden (`CUDA_VISIBLE_DEVICES=-1`: the figures are made on the CPU), and its pixels must be
//! those of the committed result, exactly. The CPU path gives the same bits whatever the thread
//! count, but not whatever the instruction set: the matrix kernels accumulate in another order
//! with AVX-512 than with AVX2, and 100 L-BFGS steps carry that far (a mean difference of 8.5
//! levels of 255 between the two; the outdated figure this test replaced differed in 87% of its
//! pixels, by up to 79). So there is a result per kind: examples/result.png (and the figure
//! README shows) where the AVX-512 kernels run, examples/result-avx2.png where the AVX2 ones do.

use super::common::{command_in, output_within};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which committed result this machine's CPU path must reproduce: (file, kernels), or None
/// where neither kind runs (another architecture, or x86-64 without AVX2 and FMA).
fn reference_for_this_cpu() -> Option<(&'static str, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        // gemm's AVX-512 kernels need all five (pulp's x86-v4); the Winograd transforms need avx512f.
        let avx512 = cfg!(feature = "avx512")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl");
        if avx512 {
            return Some(("result", "AVX-512"));
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(("result-avx2", "AVX2"));
        }
    }
    None
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of README's first command (the first `cargo run --release -- ...` line), after
/// the `--`.
fn readme_first_command() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find_map(|l| l.trim().strip_prefix("cargo run --release -- "))
        .expect("README.md gives a `cargo run --release -- ...` command");
    line.split_whitespace().map(String::from).collect()
}

/// The commands of examples/<name>.txt (lines that are not comments), each without its leading
/// `neural-style`.
fn recorded_commands(name: &str) -> Vec<Vec<String>> {
    let path = repo().join("examples").join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (scripts/make_figures.sh writes it)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let words: Vec<String> = l.split_whitespace().map(String::from).collect();
            assert_eq!(words.first().map(String::as_str), Some("neural-style"), "{}: {l}", path.display());
            words[1..].to_vec()
        })
        .collect()
}

/// `args` with the value of `flag` replaced.
fn with_value(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in {args:?}"));
    let mut out = args.to_vec();
    out[at + 1] = value.to_string();
    out
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn assert_same_pixels(committed: &Path, made: &Path, kernels: &str) {
    let (a, b) = (rgb(committed), rgb(made));
    assert_eq!(a.dimensions(), b.dimensions(), "{}: not the size README's first command makes today", committed.display());
    let diffs: Vec<u8> = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| x.abs_diff(y)).collect();
    let differing = diffs.iter().filter(|&&d| d > 0).count();
    assert!(
        differing == 0,
        "{} is not what README's first command makes today with the {kernels} kernels: {differing} of {} values differ, \
         by up to {} (mean {:.3}); remake it with scripts/make_figures.sh",
        committed.display(),
        diffs.len(),
        diffs.iter().max().unwrap(),
        diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64
    );
}

#[test]
fn first_command_makes_the_committed_figure() {
    let args = readme_first_command();
    for name in ["result", "result-avx2"] {
        assert_eq!(
            recorded_commands(name),
            vec![with_value(&args, "--output-image", &format!("examples/{name}.png"))],
            "examples/{name}.txt does not record README's first command (with --output-image examples/{name}.png): rerun scripts/make_figures.sh"
        );
    }
    let figure_commands = recorded_commands("figure");
    assert_eq!(figure_commands.last().map(Vec::as_slice), Some(&["make-examples", "--out-dir", "examples", "--figure", "examples/result.png"].map(String::from)[..]));

    let Some((reference, kernels)) = reference_for_this_cpu() else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED figures::first_command_makes_the_committed_figure: no committed result for this CPU's kernels (neither AVX-512 nor AVX2)");
        return;
    };
    // README's command, in the repository (its inputs are examples/...), writing to a temp folder.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let mut c = command_in(&repo(), None);
    c.args(with_value(&args, "--output-image", out.to_str().unwrap())).env("CUDA_VISIBLE_DEVICES", "-1");
    let o = output_within(c, Duration::from_secs(600));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_pixels(&repo().join(format!("examples/{reference}.png")), &out, kernels);
    if reference != "result" {
        return; // README's figure is the AVX-512 result's: checked where those kernels run
    }

    // The figure beside it: content | style | result, composed from today's result.
    for input in ["content.png", "style.png"] {
        std::fs::copy(repo().join("examples").join(input), tmp.path().join(input)).unwrap();
    }
    let mut c = command_in(tmp.path(), None);
    c.args(["make-examples", "--out-dir", ".", "--figure", "out.png"]);
    let o = output_within(c, Duration::from_secs(60));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_pixels(&repo().join("examples/figure.png"), &tmp.path().join("figure.png"), kernels);
}

/// examples/content.png and style.png are what `make-examples` draws today, pixel for pixel.
#[test]
fn example_inputs_are_what_make_examples_draws() {
    assert_eq!(recorded_commands("content"), vec![vec!["make-examples".to_string(), "--out-dir".into(), "examples".into()]]);
    let tmp = tempfile::tempdir().unwrap();
    let mut c = command_in(tmp.path(), None);
    c.args(["make-examples", "--out-dir", "."]);
    let o = output_within(c, Duration::from_secs(60));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["content.png", "style.png"] {
        assert!(rgb(&repo().join("examples").join(name)) == rgb(&tmp.path().join(name)), "examples/{name} is not what make-examples draws today");
    }
}

/// Every image README.md and docs/ show from examples/ has its record, and every PNG under
/// examples/ is shown somewhere or is an input of a figure (no stale figure lies about).
#[test]
fn every_figure_has_the_record_of_its_commands() {
    let mut shown = Vec::new();
    let mut pages = vec![repo().join("README.md")];
    pages.extend(std::fs::read_dir(repo().join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap();
            if let Some(name) = target.rsplit("examples/").next().filter(|_| target.contains("examples/")).and_then(|n| n.strip_suffix(".png")) {
                shown.push(name.to_string());
            }
        }
    }
    shown.sort();
    shown.dedup();
    assert!(shown.contains(&"figure".to_string()) && shown.contains(&"real-vgg16".to_string()), "{shown:?}");
    for name in &shown {
        assert!(!recorded_commands(name).is_empty(), "examples/{name}.txt records no command");
    }
    // A command the pages show for a figure (`neural-style ... --output-image examples/X.png`, in
    // a code span) is the one its record holds.
    let mut quoted = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for span in text.split('`').skip(1).step_by(2).filter(|s| s.starts_with("neural-style ") && s.contains("--output-image examples/")) {
            let words: Vec<String> = span.split_whitespace().skip(1).map(String::from).collect();
            let output = &words[words.iter().position(|w| w == "--output-image").unwrap() + 1];
            let name = output.trim_start_matches("examples/").trim_end_matches(".png");
            assert!(recorded_commands(name).contains(&words), "{}: `{span}` is not what examples/{name}.txt records", page.display());
            quoted += 1;
        }
    }
    assert!(quoted >= 2, "the sheet and grid commands of docs/commands.md were not found");
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            assert!(
                shown.contains(&name) || ["content", "style", "result", "result-avx2"].contains(&name.as_str()),
                "examples/{name}.png is shown nowhere in README.md or docs/"
            );
            assert!(repo().join("examples").join(format!("{name}.txt")).is_file(), "examples/{name}.png has no examples/{name}.txt");
        }
    }
}
