//! `--serve` (docs/serve.md), through the binary and a bare HTTP client: the token guards every
//! route, the event stream brings progress and images, an image is the run's PNG, POST /stop
//! does what SIGINT does, and a port in use is an error before the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A tiny run (32x24, embedded model) long enough to be stopped: Adam makes every iteration.
fn command(dir: &Path, output: &str, serve: &str) -> Command {
    let mut c = crate::interrupt::tiny_run(dir, output);
    c.args(["--print-iter", "0", "--optimizer", "adam", "--learning-rate", "0.05", "--num-iterations", "1000000"])
        .args(["--serve", serve, "--serve-every", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A child killed if the test fails while it runs (also used by browser.rs).
pub(crate) struct Run {
    pub(crate) child: Child,
    /// stderr's lines as they come.
    lines: mpsc::Receiver<String>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    pub(crate) fn start(mut c: Command) -> Run {
        let mut child = c.spawn().unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, lines }
    }

    /// The first stderr line that `f` accepts (within 60 s), and the lines before it.
    pub(crate) fn wait_for(&self, f: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if f(&line) {
                return (line, seen);
            }
            seen.push(line);
        }
        panic!("no such line in:\n{}", seen.join("\n"));
    }
}

/// One request on a fresh connection: (status, headers, body), the body read to the end.
fn request(addr: &str, method: &str, target: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[end + 2 + n + 2..];
    }
}

/// Reads the event stream until `want` holds for the events so far: (name, data) pairs.
fn read_events(addr: &str, token: &str, want: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /events?token={token} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut head = String::new();
    while r.read_line(&mut line).unwrap() > 0 && line.trim() != "" {
        head.push_str(&line);
        line.clear();
    }
    let mut events = Vec::new();
    let mut name = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended early: {events:?}");
        let l = line.trim_end();
        if let Some(n) = l.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            events.push((std::mem::take(&mut name), d.to_string()));
            if want(&events) {
                return events;
            }
        }
    }
}

#[test]
fn the_page_streams_the_run_guards_every_route_and_stops_it_as_sigint_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = Run::start(command(d, "out.png", "127.0.0.1:0"));
    let (line, _) = run.wait_for(|l| l.starts_with("serving http://"));
    let url = line.strip_prefix("serving http://").unwrap();
    let (addr, token) = url.split_once("/?token=").expect("the URL holds the token");
    assert_eq!(token.len(), 32, "{line}");

    let (status, head, body) = request(addr, "GET", &format!("/?token={token}"));
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("<canvas"));
    for target in ["/", "/events", "/stop", "/image/5", "/image/final", "/?token=wrong", &format!("/{token}")] {
        assert_eq!(request(addr, "GET", target).0, 403, "GET {target}");
    }
    assert_eq!(request(addr, "POST", "/stop").0, 403, "POST /stop without the token");
    assert_eq!(request(addr, "GET", &format!("/stop?token={token}")).0, 405);
    assert_eq!(request(addr, "GET", &format!("/etc/passwd?token={token}")).0, 404);

    let events = read_events(addr, token, |e| e.iter().filter(|(n, _)| n == "progress").count() >= 2 && e.iter().any(|(n, _)| n == "image"));
    let info: serde_json::Value = serde_json::from_str(&events.iter().find(|(n, _)| n == "info").expect("an info event").1).unwrap();
    assert_eq!(info["width"], 32);
    assert!(info["settings"]["args"]["style_layers"].is_array(), "the recorded settings: {info}");
    let progress: serde_json::Value = serde_json::from_str(&events.iter().find(|(n, _)| n == "progress").unwrap().1).unwrap();
    for key in ["iteration", "total", "content", "style", "tv", "elapsed"] {
        assert!(progress[key].is_number(), "{key} in {progress}");
    }
    let image: serde_json::Value = serde_json::from_str(&events.iter().find(|(n, _)| n == "image").unwrap().1).unwrap();
    let (status, head, body) = request(addr, "GET", image["url"].as_str().unwrap());
    assert_eq!(status, 200, "{head}");
    let frame = image::load_from_memory_with_format(&body, image::ImageFormat::Png).expect("a PNG");
    assert_eq!((frame.width(), frame.height()), (32, 24));

    // A second run on the same port fails before its run starts.
    let o = command(d, "other.png", addr).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("error: --serve {addr}: cannot listen there")), "{err}");
    assert!(!err.contains("stylising") && !d.join("other.png").exists(), "{err}");

    let (status, _, _) = request(addr, "POST", &format!("/stop?token={token}"));
    assert_eq!(status, 202);
    let (line, _) = run.wait_for(|l| l.starts_with("interrupted by SIGINT"));
    assert!(line.contains("continue with: "), "{line}");
    let mut run = run;
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(d.join("out.png").is_file() && d.join("out.png.resume").is_file());
    assert_eq!(image::open(d.join("out.png")).unwrap().width(), 32);
}

/// `--serve-linger` takes a number of seconds from 0 up: NaN, infinities, negative, huge and
/// non-numbers are command-line errors (exit 2) naming the flag, before any work.
#[test]
fn bad_linger_values_are_command_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["nan", "inf", "-1", "1e300", "abc"] {
        let mut c = crate::interrupt::tiny_run(dir.path(), "out.png");
        let o = c.args(["--num-iterations", "2", "--serve", "127.0.0.1:0", "--serve-linger", bad]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--serve-linger {bad}: {err}");
        assert!(err.contains("--serve-linger") && err.contains("is not a number of seconds"), "--serve-linger {bad}: {err}");
        assert!(!err.contains("serving http") && !dir.path().join("out.png").exists(), "--serve-linger {bad}: {err}");
    }
}
