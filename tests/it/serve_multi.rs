//! `--serve` on `grid`, `sheet` and `batch` (docs/serve.md): the page gets one `run` event per
//! cell or frame, the contact sheet after every cell, a batch's frames (written, with a
//! thumbnail that is the result, or skipped), and the end; Stop stops a grid as SIGINT does.

use crate::interrupt::{png, tiny_inputs};
use crate::serve::{read_events, request, Run};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// `sub` (grid, sheet or batch) on tiny inputs written into `dir`, embedded model, serving on a
/// free port; each optimisation is `iterations` Adam steps (every one an iteration).
fn served(dir: &Path, sub: &str, iterations: &str) -> Command {
    let (mut c, content, style) = tiny_inputs(dir);
    c.env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX").arg(sub);
    if sub != "batch" {
        c.args(["--content-image", content.to_str().unwrap()]);
    }
    c.args(["--style-image", style.to_str().unwrap(), "--image-size", "32", "--device", "cpu", "--print-iter", "0"])
        .args(["--content-layers", "relu2_2", "--style-layers", "relu1_1,relu2_1", "--optimizer", "adam", "--learning-rate", "0.05"])
        .args(["--num-iterations", iterations, "--serve", "127.0.0.1:0", "--serve-every", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The address and token of the URL the run printed.
fn url(run: &Run) -> (String, String) {
    let (line, _) = run.wait_for(|l| l.starts_with("serving http://"));
    let (addr, token) = line.strip_prefix("serving http://").unwrap().split_once("/?token=").unwrap();
    (addr.to_string(), token.to_string())
}

fn data<'e>(events: &'e [(String, String)], name: &str) -> Vec<Value> {
    events.iter().filter(|(n, _)| n == name).map(|(_, d)| serde_json::from_str(d).unwrap()).collect()
}

/// The PNG at `url` on the server, as pixels.
fn fetch_png(addr: &str, url: &str) -> image::RgbImage {
    let (status, head, body) = request(addr, "GET", url);
    assert_eq!(status, 200, "GET {url}: {head}");
    image::load_from_memory_with_format(&body, image::ImageFormat::Png).expect("a PNG").to_rgb8()
}

#[test]
fn a_grid_fills_its_sheet_cell_by_cell_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = served(d, "grid", "150");
    c.args(["--ratios", "1e-4,1e-2", "--output-image", "grid.png", "--serve-linger", "30"]);
    let run = Run::start(c);
    let (addr, token) = url(&run);
    let events = read_events(&addr, &token, |e| e.iter().any(|(n, _)| n == "done"));

    let info = &data(&events, "info")[0];
    assert_eq!((info["command"].as_str(), info["runs"].as_u64(), info["iterations"].as_u64()), (Some("grid"), Some(4), Some(150)), "{info}");
    // Connected before the first cell ended (each takes 150 iterations): every later cell's
    // start and every sheet from then on, in order.
    let runs = data(&events, "run");
    let sheets = data(&events, "sheet");
    let first = sheets[0]["filled"].as_u64().unwrap();
    assert!(first <= 1, "the page connected late: {sheets:?}");
    let filled: Vec<u64> = sheets.iter().map(|s| s["filled"].as_u64().unwrap()).collect();
    assert_eq!(filled, (first..=4).collect::<Vec<_>>(), "one sheet per cell, in order");
    assert!(sheets.iter().all(|s| s["cells"] == 4));
    assert_eq!(runs.last().unwrap()["index"], 3);
    assert!(runs.last().unwrap()["label"].as_str().unwrap().contains("cell 4/4"), "{runs:?}");
    let last_run = events.iter().rposition(|(n, _)| n == "run").unwrap();
    let progress_after: Vec<Value> = data(&events[last_run..], "progress");
    assert_eq!(progress_after.first().unwrap()["iteration"], 1, "the last cell's curve starts at 1");
    assert_eq!(progress_after.len(), 150);

    // The last sheet and the final image are the file written; an earlier one (two cells done;
    // the last four are kept) differs from it.
    let done = &data(&events, "done")[0];
    assert_eq!(done["state"], "finished", "{done}");
    let written = image::open(d.join("grid.png")).unwrap().to_rgb8();
    assert_eq!(fetch_png(&addr, done["image"].as_str().unwrap()), written);
    assert_eq!(fetch_png(&addr, sheets.last().unwrap()["url"].as_str().unwrap()), written);
    let early = fetch_png(&addr, sheets[sheets.len() - 3]["url"].as_str().unwrap());
    assert_eq!(early.dimensions(), written.dimensions());
    assert_ne!(early, written, "the sheet with two cells done has empty cells");
    // A page that connects now (the run lingers) gets the finished sheet at once.
    let late = read_events(&addr, &token, |e| e.iter().any(|(n, _)| n == "done"));
    assert_eq!(data(&late, "sheet").len(), 1);
    assert_eq!(data(&late, "sheet")[0]["filled"], 4);
}

#[test]
fn a_batch_shows_frames_written_and_skipped_with_their_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("frames")).unwrap();
    for k in 1..=3 {
        png(&d.join("frames"), &format!("f{k}.png"), 32 + 4 * k, 24);
    }
    std::fs::create_dir(d.join("out")).unwrap();
    png(&d.join("out"), "f2.png", 8, 8); // already there: skipped
    let mut c = served(d, "batch", "100");
    c.args(["frames", "-o", "out", "--serve-linger", "30"]);
    let run = Run::start(c);
    let (addr, token) = url(&run);
    let events = read_events(&addr, &token, |e| e.iter().any(|(n, _)| n == "done"));

    let info = &data(&events, "info")[0];
    assert_eq!((info["command"].as_str(), info["runs"].as_u64()), (Some("batch"), Some(3)), "{info}");
    let frames = data(&events, "frame");
    let states: Vec<(&str, &str)> = frames.iter().map(|f| (f["name"].as_str().unwrap(), f["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("f1.png", "written"), ("f2.png", "skipped"), ("f3.png", "written")]);
    let last = frames.last().unwrap();
    assert_eq!((last["done"].as_u64(), last["skipped"].as_u64(), last["total"].as_u64()), (Some(2), Some(1), Some(3)));
    assert!(frames[1].get("url").is_none(), "a skipped frame has no thumbnail");
    for f in [&frames[0], &frames[2]] {
        // Frames this small are their own thumbnails: the page shows the very result written.
        let written = image::open(d.join("out").join(f["name"].as_str().unwrap())).unwrap().to_rgb8();
        assert_eq!(fetch_png(&addr, f["url"].as_str().unwrap()), written, "{f}");
    }
    let runs = data(&events, "run");
    assert_eq!(runs.iter().map(|r| r["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 2], "one run per frame stylised");
    let done = &data(&events, "done")[0];
    assert_eq!(done["state"], "finished");
    assert!(done["message"].as_str().unwrap().contains("2 stylised, 1 skipped"), "{done}");
}

#[test]
fn stop_on_a_sheet_page_stops_it_as_sigint_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = served(d, "sheet", "1000000");
    c.args(["--output-image", "sheet.png"]);
    let run = Run::start(c);
    let (addr, token) = url(&run);
    let events = read_events(&addr, &token, |e| e.iter().filter(|(n, _)| n == "progress").count() >= 3);
    assert_eq!(data(&events, "info")[0]["command"], "sheet");
    assert_eq!(data(&events, "sheet")[0]["filled"], 0, "the sheet's layout (content and styles) comes first");
    assert_eq!(request(&addr, "POST", "/stop").0, 403);
    assert_eq!(request(&addr, "POST", &format!("/stop?token={token}")).0, 202);
    let mut run = run;
    assert_eq!(run.child.wait().unwrap().code(), Some(130));
    assert!(!d.join("sheet.png").exists(), "a stopped sheet writes nothing");
}

/// Without --serve-every the page gets about one image a second, the optimisation copying the
/// image out only for those iterations (the snapshot gate).
#[test]
fn without_serve_every_frames_come_about_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::interrupt::tiny_run(dir.path(), "out.png");
    c.args(["--print-iter", "0", "--optimizer", "adam", "--learning-rate", "0.05", "--num-iterations", "1000000", "--serve", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let run = Run::start(c);
    let (addr, token) = url(&run);
    let count = |e: &[(String, String)], name: &str| e.iter().filter(|(n, _)| n == name).count();
    // Bounded: a run that sends no images ends the wait after 20000 iterations.
    let events = read_events(&addr, &token, |e| count(e, "image") >= 3 || count(e, "progress") >= 20_000);
    let images = data(&events, "image");
    assert!(images.len() >= 3, "{} images in {} iterations", images.len(), count(&events, "progress"));
    let elapsed_at = |iteration: &Value| {
        let p = data(&events, "progress").into_iter().find(|p| p["iteration"] == *iteration).expect("its progress event");
        p["elapsed"].as_f64().unwrap()
    };
    for pair in images.windows(2) {
        let gap = elapsed_at(&pair[1]["iteration"]) - elapsed_at(&pair[0]["iteration"]);
        assert!(gap >= 0.95, "frames {:?} only {gap:.3} s apart", (&pair[0]["iteration"], &pair[1]["iteration"]));
        assert!(pair[1]["iteration"].as_u64() > pair[0]["iteration"].as_u64().map(|i| i + 1), "{images:?}");
    }
    assert_eq!(request(&addr, "POST", &format!("/stop?token={token}")).0, 202);
}
