//! `--serve` in a real browser (docs/serve.md#the-browser-test): headless Chromium, driven over
//! WebDriver (common/webdriver.rs), watches a real run of the repository's example inputs with
//! the embedded model. The page must show new frames as the run saves them, pixel for pixel,
//! draw the loss curves, and stop the run with its Stop button as SIGINT does.
//!
//! Without `chromedriver` and `chromium` on the PATH the test writes "SKIPPED browser::<test>:
//! <why>" to stderr and passes, unless NEURAL_STYLE_REQUIRE_BROWSER is set (.ci/run sets it when
//! it installed them): then, as whenever a browser is found, failing to drive it fails the test.
//! With NEURAL_STYLE_SCREENSHOT=FILE it also writes a screenshot of the page there, after a
//! longer run (scripts/make_serve_screenshot.sh: docs/serve-page.png).

use crate::common::webdriver::{find_chromium, find_on_path, Browser};
use crate::serve::Run;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A frame for the page, and a `--save-iter` snapshot beside the output, every this many
/// iterations (about one a second at 128 px on 2 cores).
const EVERY: usize = 4;
/// Distinct frames the page must have shown: the first and two changes.
const FRAMES: usize = 3;
/// The largest difference of a channel allowed between the page's pixels and the snapshot's.
/// The browser gets the same 8-bit RGB the snapshot holds (one deprocessing, two PNG
/// encodings); with the sRGB colour profile forced and the image at 1:1 it should draw them
/// unchanged (0 is what is seen), and 2 leaves room for a colour conversion's rounding only:
/// another frame or a resampled image differs by far more.
const TOLERANCE: u8 = 2;

/// What the page shows now: its image's URL (and whether it has loaded), the points its curves
/// were drawn with, its status line.
const PAGE_STATE: &str = r#"
const img = document.getElementById("img"), plot = document.getElementById("plot");
return { src: img.getAttribute("src"), loaded: img.complete && img.naturalWidth > 0,
         width: img.naturalWidth, height: img.naturalHeight,
         points: Number(plot.dataset.points || 0), state: document.getElementById("state").textContent };
"#;

/// Shows the image at its own size (the page scales small images up to 256 px wide), without
/// its border, so that an element screenshot is the image's pixels.
const ONE_TO_ONE: &str = r#"
const img = document.getElementById("img");
Object.assign(img.style, { width: img.naturalWidth + "px", height: img.naturalHeight + "px", minWidth: "0", maxWidth: "none", border: "0" });
"#;

fn required() -> bool {
    std::env::var_os("NEURAL_STYLE_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The iteration of the frame the page shows, once it has loaded (`/image/N?token=...`).
fn shown_frame(state: &Value) -> Option<usize> {
    let src = state["src"].as_str()?;
    state["loaded"].as_bool()?.then_some(())?;
    src.strip_prefix("/image/")?.split('?').next()?.parse().ok()
}

fn max_difference(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// The snapshot the run saved at `iteration` (waiting a little: the run writes it just after
/// handing the frame to the server).
fn snapshot(dir: &Path, iteration: usize) -> image::RgbImage {
    let path = dir.join(format!("out_{iteration}.png"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.is_file() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

#[test]
fn chromium_watches_a_run_sees_its_saved_frames_and_stops_it() {
    let (Some(chromedriver), Some(chromium)) = (find_on_path("chromedriver"), find_chromium()) else {
        let why = "no chromedriver and chromium on the PATH (Debian: apt-get install chromium chromium-driver)";
        assert!(!required(), "NEURAL_STYLE_REQUIRE_BROWSER is set, but {why}");
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED browser::chromium_watches_a_run_sees_its_saved_frames_and_stops_it: {why}");
        return;
    };
    let started = Instant::now();
    let screenshot_to = std::env::var_os("NEURAL_STYLE_SCREENSHOT").filter(|p| !p.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // README's inputs under README's names: the page shows the recorded settings.
    std::fs::create_dir(d.join("examples")).unwrap();
    for name in ["content.png", "style.png"] {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name), d.join("examples").join(name)).unwrap();
    }
    let every = EVERY.to_string();
    let mut command = crate::common::command_in(d, None);
    command
        .args(["--content-image", "examples/content.png", "--style-image", "examples/style.png", "--output-image", "out.png"])
        .args(["--image-size", "128", "--num-iterations", "300", "--device", "cpu", "--print-iter", "0"])
        .args(["--serve", "127.0.0.1:0", "--serve-every", &every, "--save-iter", &every])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let run = Run::start(command);
    // The browser starts while the run sets up.
    let browser = Browser::start(&chromedriver, &chromium, (1280, 900)).unwrap_or_else(|e| panic!("driving {} with {}: {e}", chromium.display(), chromedriver.display()));
    let (line, _) = run.wait_for(|l| l.starts_with("serving http://"));
    let url = line.strip_prefix("serving ").unwrap();
    let (base, token) = url.split_once("/?token=").expect("the URL holds the token");
    browser.goto(url).unwrap();

    // The page's image changes (new frames, pushed by the run) and its curves get points.
    let deadline = Instant::now() + Duration::from_secs(60);
    // A longer run for the screenshot, whose curves then say more.
    let last_wanted = if screenshot_to.is_some() { 80 } else { 0 };
    let mut frames = BTreeSet::new();
    loop {
        let state = browser.execute(PAGE_STATE, json!([])).unwrap();
        frames.extend(shown_frame(&state));
        let points = state["points"].as_u64().unwrap_or(0);
        if frames.len() >= FRAMES && points >= 2 && frames.last() >= Some(&last_wanted) {
            break;
        }
        assert!(Instant::now() < deadline, "after 60 s the page showed frames {frames:?} (wanted {FRAMES}), now {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(path) = &screenshot_to {
        // The whole page, in a window as wide as its image and curves and as tall as the document.
        browser.set_window_size(1000, 900).unwrap();
        let size = browser.execute("return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]", json!([])).unwrap();
        let height = size[0].as_u64().unwrap() + size[1].as_u64().unwrap();
        browser.set_window_size(1000, height.min(4000) as u32).unwrap();
        std::fs::write(path, browser.screenshot().unwrap()).unwrap();
    }

    // The image as the page shows it, at 1:1, against the snapshot saved at that iteration. A
    // new frame may arrive between the two reads of the state: then again.
    browser.execute(ONE_TO_ONE, json!([])).unwrap();
    let img = browser.find("#img").unwrap();
    let (iteration, shown) = (0..20)
        .find_map(|_| {
            let before = browser.execute(PAGE_STATE, json!([])).unwrap();
            let shot = browser.element_screenshot(&img).unwrap();
            let after = browser.execute(PAGE_STATE, json!([])).unwrap();
            match (shown_frame(&before), before["src"] == after["src"]) {
                (Some(k), true) => Some((k, image::load_from_memory(&shot).unwrap().to_rgb8())),
                _ => None,
            }
        })
        .expect("the page's image kept changing while it was photographed");
    let saved = snapshot(d, iteration);
    assert_eq!(shown.dimensions(), saved.dimensions(), "the page's image at 1:1 against out_{iteration}.png");
    let difference = max_difference(&shown, &saved);
    assert!(difference <= TOLERANCE, "the page shows frame {iteration} with a channel {difference} away from out_{iteration}.png");
    // The comparison can tell frames apart: the first frame the page showed is another image.
    let first = *frames.first().unwrap();
    let apart = max_difference(&shown, &snapshot(d, first));
    assert!(apart > TOLERANCE, "frames {first} and {iteration} look the same");

    // The curves are on the canvas: pixels of the content, style and TV colours.
    let plot = image::load_from_memory(&browser.element_screenshot(&browser.find("#plot").unwrap()).unwrap()).unwrap().to_rgb8();
    for (term, colour) in [("content", [0x1f, 0x77, 0xb4]), ("style", [0xd6, 0x27, 0x28]), ("tv", [0x2c, 0xa0, 0x2c])] {
        let near = plot.pixels().filter(|p| p.0.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 40)).count();
        assert!(near >= 10, "the {term} curve: {near} pixels of its colour on the canvas");
    }

    // Without the token (or with a wrong one) every route is refused; with it the page is served.
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    let status = |method: &str, target: &str| {
        let url = format!("{base}{target}");
        let response = if method == "POST" { agent.post(&url).send_empty() } else { agent.get(&url).call() };
        response.unwrap_or_else(|e| panic!("{method} {target}: {e}")).status().as_u16()
    };
    assert_eq!(status("GET", &format!("/?token={token}")), 200);
    for query in ["", "?token=", "?token=0123456789abcdef0123456789abcdef"] {
        for (method, path) in [("GET", "/".to_string()), ("GET", "/events".into()), ("GET", format!("/image/{iteration}")), ("POST", "/stop".into())] {
            assert_eq!(status(method, &format!("{path}{query}")), 403, "{method} {path}{query}");
        }
    }

    // Stop: what SIGINT does, the image and the resume state saved, exit 130.
    browser.click(&browser.find("#stop").unwrap()).unwrap();
    let (line, _) = run.wait_for(|l| l.starts_with("interrupted by SIGINT"));
    assert!(line.contains("continue with: "), "{line}");
    let mut run = run;
    assert_eq!(run.child.wait().unwrap().code(), Some(130));
    assert!(d.join("out.png").is_file(), "the image so far is written");
    assert!(d.join("out.png.resume").is_file(), "the resume state is written");
    drop(browser);
    println!(
        "browser test: frames shown {frames:?}; frame {iteration}: largest channel difference {difference} from its snapshot, {apart} from frame {first}'s; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
