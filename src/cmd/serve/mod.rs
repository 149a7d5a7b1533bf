//! `--serve`: a live page for watching one stylisation run (docs/serve.md).
//!
//! Threads: the optimisation never waits on this module. Per iteration it hands a progress line
//! to `Serve::progress` (a lock held for a few `try_send`s, no I/O); at most one image a second
//! (or every `--serve-every` iterations) it offers the float image to the encoder thread over a
//! channel of one, dropped when the encoder is still busy. The encoder deprocesses and
//! PNG-encodes it, keeps it for `/image/N` and announces it. The HTTP layer (http.rs: bounded
//! requests, connections and threads) answers requests; each `/events` client gets a thread of
//! its own and a bounded queue, and events that do not fit in it are dropped, so a slow or
//! stalled browser only loses updates.
//!
//! Security: every request must carry the run's random token (`?token=` or an `X-Token`
//! header), or it gets 403; the routes are fixed (no file paths); loopback unless another
//! address is given, with a warning.

mod http;

use anyhow::{anyhow, Result};
use neural_style::Progress;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The page, compiled in: no files are read at run time.
const PAGE: &str = include_str!("page.html");
/// Concurrent `/events` clients; one more gets 503.
pub const MAX_CLIENTS: usize = 16;
/// Events queued per client before new ones are dropped (a few seconds of fast iterations).
const CLIENT_QUEUE: usize = 256;
/// Encoded frames kept for `/image/N`: a page that was just told of frame N can still fetch it
/// after a newer one arrived.
const FRAMES_KEPT: usize = 4;
/// Without `--serve-every`, frames are at least this far apart.
const FRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Progress events kept for pages that connect late (about 1.5 MB); beyond, they are thinned.
const HISTORY_KEPT: usize = 10_000;

/// What the page shows of the run besides its progress.
pub struct Info {
    /// The settings record the output PNG gets (settings::record), as JSON.
    pub settings: String,
    pub output: String,
    pub width: usize,
    pub height: usize,
    pub iterations: usize,
}

/// Float image (the optimiser's layout) to 8-bit RGB as the output would be written.
pub type Deprocess = Box<dyn Fn(&[f32]) -> neural_style::image_io::Rgb8 + Send>;

/// The running server, owned by the command; dropping it does not stop the listening threads
/// (the process ends soon after).
pub struct Serve {
    hub: Arc<Hub>,
    frames: SyncSender<(usize, Vec<f32>)>,
    every: Option<usize>,
    last_frame: Mutex<Option<Instant>>,
    linger: Duration,
}

/// A client's bounded event queue, as the optimisation feeds it.
struct Client {
    events: SyncSender<Arc<str>>,
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    /// Every progress event so far, for a page that connects late (its curves start at 1).
    history: Vec<Arc<str>>,
    /// The latest image event, and the `done` event once there is one.
    image: Option<Arc<str>>,
    done: Option<Arc<str>>,
    frames: VecDeque<(usize, Arc<Vec<u8>>)>,
}

struct Hub {
    token: String,
    info: Arc<str>,
    state: Mutex<State>,
    /// Open `/events` streams.
    streams: Arc<AtomicUsize>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A server-sent event: `event: NAME` and one `data:` line (JSON never holds a raw newline).
fn sse(name: &str, data: &str) -> Arc<str> {
    format!("event: {name}\ndata: {data}\n\n").into()
}

/// Offers `event` to every client without waiting: a full queue drops it, a closed one (the
/// client went away) is forgotten.
fn broadcast(clients: &mut Vec<Client>, event: &Arc<str>) {
    clients.retain(|c| match c.events.try_send(event.clone()) {
        Ok(()) | Err(TrySendError::Full(_)) => true,
        Err(TrySendError::Disconnected(_)) => false,
    });
}

/// 32 hex digits from the OS's random source.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| anyhow!("--serve: cannot read /dev/urandom for the access token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The path of a request target and its `token` query value, if any.
fn split_target(url: &str) -> (&str, Option<&str>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let token = query.split('&').find_map(|kv| kv.strip_prefix("token="));
    (path, token)
}

/// Equal strings, compared in time independent of where they differ (the token is a secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request with this target and `X-Token` header carries `token`. Only the query
/// parameter or the header count: a token elsewhere in the path is not accepted.
fn authorized(url: &str, header: Option<&str>, token: &str) -> bool {
    let (_, query) = split_target(url);
    query.is_some_and(|q| same(q, token)) || header.is_some_and(|h| same(h.trim(), token))
}

/// Takes an `/events` slot, or None when MAX_CLIENTS are open; the slot is freed on drop.
struct Slot(Arc<AtomicUsize>);

fn take_slot(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok().map(|_| Slot(count.clone()))
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Listens on `addr` and starts the threads. The error (an address in use, say) comes before
/// the run starts. Prints the page's URL, with the token, on stderr.
pub fn start(addr: SocketAddr, info: Info, every: Option<usize>, linger: Duration, deprocess: Deprocess) -> Result<Serve> {
    let listener = TcpListener::bind(addr).map_err(|e| anyhow!("--serve {addr}: cannot listen there: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !addr.ip().is_loopback() {
        eprintln!("warning: --serve {addr} is reachable from other machines: anyone who learns the URL's token can watch and stop this run");
    }
    let token = new_token()?;
    let info = serde_json::json!({
        "settings": serde_json::from_str::<serde_json::Value>(&info.settings).unwrap_or_default(),
        "output": info.output,
        "width": info.width,
        "height": info.height,
        "iterations": info.iterations,
    });
    let hub = Arc::new(Hub { token, info: sse("info", &info.to_string()), state: Mutex::default(), streams: Arc::default() });
    http::spawn(listener, hub.clone())?;
    let (frames, rx) = mpsc::sync_channel(1);
    let encoder_hub = hub.clone();
    std::thread::Builder::new().name("serve-encode".into()).spawn(move || encode_frames(&encoder_hub, rx, deprocess))?;
    eprintln!("serving http://{bound}/?token={}", hub.token);
    Ok(Serve { hub, frames, every: every.filter(|&n| n > 0), last_frame: Mutex::new(None), linger })
}

impl Serve {
    /// The snapshot period the optimisation must use so that this server gets its images, given
    /// `--save-iter`'s (0: none): with no `--serve-every`, every iteration (the frames are then
    /// picked by time; a download is a copy of the image, small beside an evaluation).
    pub fn snapshot_every(&self, save_iter: usize) -> usize {
        match (self.every, save_iter) {
            (None, _) => 1,
            (Some(n), 0) => n,
            (Some(n), s) => gcd(n, s),
        }
    }

    /// One iteration: its losses to every page, and the image when a frame is due (`image` is
    /// the snapshot the optimisation downloaded, if it did). Never blocks.
    pub fn progress(&self, p: &Progress, image: Option<&[f32]>) {
        let l = p.loss;
        let data = serde_json::json!({
            "iteration": p.iteration,
            "total": l.total,
            "content": l.content,
            "style": l.style,
            "tv": l.tv,
            "elapsed": p.elapsed.as_secs_f64(),
        });
        let event = sse("progress", &data.to_string());
        {
            let mut state = self.hub.lock();
            broadcast(&mut state.clients, &event);
            state.history.push(event);
            if state.history.len() >= HISTORY_KEPT {
                // A long run: keep every other event, so a late page still gets the whole curve.
                let mut k = 0;
                state.history.retain(|_| {
                    k += 1;
                    k % 2 == 1
                });
            }
        }
        let Some(image) = image else { return };
        let due = match self.every {
            Some(n) => p.iteration % n == 0,
            None => {
                let last = self.last_frame.lock().unwrap_or_else(|e| e.into_inner());
                last.is_none_or(|t| t.elapsed() >= FRAME_INTERVAL)
            }
        };
        if due && self.offer(p.iteration, image) {
            *self.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// Hands the image to the encoder unless it is busy (then the frame is skipped).
    fn offer(&self, iteration: usize, image: &[f32]) -> bool {
        self.frames.try_send((iteration, image.to_vec())).is_ok()
    }

    /// The run ended: `image` (the file written, PNG-encoded, if any) and a `done` event saying
    /// how (`state`: finished, stopped or failed) go to every page; then the streams close and
    /// the server stays up for `--serve-linger`.
    pub fn finish(&self, state: &str, message: &str, output: Option<&str>, image: Option<&neural_style::image_io::Rgb8>) {
        let url = image.and_then(|img| encode_png(img).ok()).map(|png| self.hub.store_frame(usize::MAX, png));
        let done = serde_json::json!({ "state": state, "message": message, "output": output, "image": url });
        let event = sse("done", &done.to_string());
        let mut s = self.hub.lock();
        broadcast(&mut s.clients, &event);
        s.done = Some(event);
        // Each stream ends once it has written what is queued.
        s.clients.clear();
        drop(s);
        if !self.linger.is_zero() {
            std::thread::sleep(self.linger);
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn encode_png(img: &neural_style::image_io::Rgb8) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    // Fast compression: a frame is looked at once.
    let encoder = image::codecs::png::PngEncoder::new_with_quality(&mut png, image::codecs::png::CompressionType::Fast, image::codecs::png::FilterType::Sub);
    encoder.write_image(&img.data, img.w as u32, img.h as u32, image::ExtendedColorType::Rgb8)?;
    Ok(png)
}

impl Hub {
    /// Keeps an encoded frame and returns its URL (`usize::MAX`: the final image, `/image/final`).
    fn store_frame(&self, iteration: usize, png: Vec<u8>) -> String {
        let name = if iteration == usize::MAX { "final".to_string() } else { iteration.to_string() };
        let url = format!("/image/{name}?token={}", self.token);
        let mut s = self.lock();
        s.frames.push_back((iteration, Arc::new(png)));
        while s.frames.len() > FRAMES_KEPT {
            s.frames.pop_front();
        }
        url
    }

    fn frame(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        let iteration = if name == "final" { usize::MAX } else { name.parse().ok()? };
        self.lock().frames.iter().rev().find(|(k, _)| *k == iteration).map(|(_, png)| png.clone())
    }
}

/// The encoder thread: float image → 8-bit → PNG → `/image/N`, then an `image` event.
fn encode_frames(hub: &Hub, rx: Receiver<(usize, Vec<f32>)>, deprocess: Deprocess) {
    while let Ok((iteration, x)) = rx.recv() {
        let Ok(png) = encode_png(&deprocess(&x)) else { continue };
        let url = hub.store_frame(iteration, png);
        let event = sse("image", &serde_json::json!({ "iteration": iteration, "url": url }).to_string());
        let mut s = hub.lock();
        if s.done.is_none() {
            broadcast(&mut s.clients, &event);
            s.image = Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_token_is_needed_in_the_query_or_the_header() {
        assert!(authorized(&format!("/?token={T}"), None, T));
        assert!(authorized(&format!("/events?x=1&token={T}"), None, T));
        assert!(authorized("/events", Some(T), T));
        assert!(!authorized("/", None, T), "missing");
        assert!(!authorized("/?token=", None, T), "empty");
        assert!(!authorized(&format!("/?token={}", &T[..31]), None, T), "a prefix");
        assert!(!authorized("/?token=fedcba9876543210fedcba9876543210", None, T), "wrong");
        assert!(!authorized("/", Some("wrong"), T), "wrong header");
        assert!(!authorized(&format!("/{T}"), None, T), "in the path");
        assert!(!authorized(&format!("/image/token={T}"), None, T), "in the path, as if a query");
        assert!(!authorized(&format!("/?tokens={T}"), None, T), "another parameter");
        assert_eq!(split_target(&format!("/image/3?token={T}")), ("/image/3", Some(T)));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_client_cap_refuses_the_one_too_many_and_frees_slots() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut slots: Vec<Slot> = (0..MAX_CLIENTS).map(|_| take_slot(&count, MAX_CLIENTS).expect("a free slot")).collect();
        assert!(take_slot(&count, MAX_CLIENTS).is_none(), "client {} is refused", MAX_CLIENTS + 1);
        slots.pop();
        slots.push(take_slot(&count, MAX_CLIENTS).expect("a slot freed is taken again"));
        assert!(take_slot(&count, MAX_CLIENTS).is_none());
        drop(slots);
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_full_client_queue_drops_and_the_sender_never_waits() {
        let (tx, rx) = mpsc::sync_channel(2);
        let (gone, gone_rx) = mpsc::sync_channel(2);
        drop(gone_rx);
        let mut clients = vec![Client { events: tx }, Client { events: gone }];
        let start = Instant::now();
        for k in 0..1000 {
            broadcast(&mut clients, &sse("progress", &k.to_string()));
        }
        assert!(start.elapsed() < Duration::from_secs(1), "broadcast waited on a stalled client");
        assert_eq!(clients.len(), 1, "the disconnected client is forgotten, the stalled one kept");
        let got: Vec<Arc<str>> = rx.try_iter().collect();
        assert_eq!(got, vec![sse("progress", "0"), sse("progress", "1")], "the queue holds the first events; later ones were dropped");
    }

    #[test]
    fn frames_are_offered_never_waited_for() {
        // An encoder that never reads: the optimisation's offers fail at once instead of blocking.
        let (frames, _rx) = mpsc::sync_channel(1);
        let hub = Arc::new(Hub { token: T.into(), info: sse("info", "{}"), state: Mutex::default(), streams: Arc::default() });
        let serve = Serve { hub, frames, every: None, last_frame: Mutex::new(None), linger: Duration::ZERO };
        let start = Instant::now();
        assert!(serve.offer(1, &[0.0; 12]));
        for k in 2..100 {
            assert!(!serve.offer(k, &[0.0; 12]));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn snapshot_periods_serve_both_the_page_and_save_iter() {
        let serve = |every| Serve {
            hub: Arc::new(Hub { token: T.into(), info: sse("info", "{}"), state: Mutex::default(), streams: Arc::default() }),
            frames: mpsc::sync_channel(1).0,
            every,
            last_frame: Mutex::new(None),
            linger: Duration::ZERO,
        };
        assert_eq!(serve(None).snapshot_every(100), 1);
        assert_eq!(serve(Some(10)).snapshot_every(0), 10);
        assert_eq!(serve(Some(10)).snapshot_every(25), 5);
    }
}
