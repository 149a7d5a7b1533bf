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
/// Encoded images kept per kind (iteration frames `/image/N`, contact sheets `/image/sheet-K`,
/// batch thumbnails `/image/thumb-K`): a page that was just told of one can still fetch it after
/// a newer one arrived, and a page that connects late gets the last few thumbnails.
const FRAMES_KEPT: usize = 4;
const THUMBS_KEPT: usize = 8;
/// A batch's thumbnails fit in this many pixels on their longer side.
const THUMB_SIZE: usize = 160;
/// Without `--serve-every`, frames are at least this far apart.
const FRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Progress events kept for pages that connect late (about 1.5 MB); beyond, they are thinned.
const HISTORY_KEPT: usize = 10_000;

/// What the page shows of the run besides its progress.
pub struct Info {
    /// The command: "stylize", "sheet", "grid" or "batch" (the page's layout follows it).
    pub command: &'static str,
    /// The settings record the output PNG gets (settings::record), as JSON.
    pub settings: String,
    /// The output file, or a batch's output folder or pattern.
    pub output: String,
    pub width: usize,
    pub height: usize,
    /// Iterations of one optimisation (one cell of a sheet or grid, one frame of a batch).
    pub iterations: usize,
    /// Optimisations in the run: 1, a sheet's or grid's cells, a batch shard's frames.
    pub runs: usize,
}

/// Float image (the optimiser's layout) to 8-bit RGB as the output would be written.
pub type Deprocess = Box<dyn Fn(&[f32]) -> neural_style::image_io::Rgb8 + Send>;

/// The running server, owned by the command; dropping it does not stop the listening threads
/// (the process ends soon after).
pub struct Serve {
    hub: Arc<Hub>,
    frames: SyncSender<ToEncoder>,
    every: Option<usize>,
    /// When the encoder last took a frame (shared with the snapshot gate).
    last_frame: Arc<Mutex<Option<Instant>>>,
    linger: Duration,
}

/// Without `--serve-every`: whether a second has passed since the last frame.
fn frame_due(last: &Mutex<Option<Instant>>) -> bool {
    last.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|t| t.elapsed() >= FRAME_INTERVAL)
}

/// A client's bounded event queue, as the optimisation feeds it.
struct Client {
    events: SyncSender<Arc<str>>,
}

/// What the optimisation hands the encoder thread.
enum ToEncoder {
    /// The optimiser's float image at this iteration: deprocessed, encoded, announced as `image`.
    Frame(usize, Vec<f32>),
    /// An 8-bit picture (a contact sheet so far, a batch thumbnail) kept as `/image/KEY` and
    /// announced as the event `event` with `data` plus its `url`; without a picture (a skipped
    /// frame), the event alone, in its turn among the others.
    Picture { key: String, image: Option<neural_style::image_io::Rgb8>, event: &'static str, data: serde_json::Value },
    /// How later frames are deprocessed (a batch frame's own content, for --original-colors).
    Deprocess(Deprocess),
    /// Answered once everything sent before is announced.
    Flush(SyncSender<()>),
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    /// The current optimisation's `run` event (sheet, grid and batch: which cell or frame).
    run: Option<Arc<str>>,
    /// The current optimisation's progress events, for a page that connects late (its curves
    /// start at 1).
    history: Vec<Arc<str>>,
    /// The latest image event, and the `done` event once there is one.
    image: Option<Arc<str>>,
    /// The latest contact sheet's event (sheet and grid).
    sheet: Option<Arc<str>>,
    /// A batch's latest `frame` events (written or skipped), oldest first.
    batch: VecDeque<Arc<str>>,
    done: Option<Arc<str>>,
    /// Encoded images by key (`12`, `final`, `sheet-3`, `thumb-7`), oldest first.
    frames: VecDeque<(String, Arc<Vec<u8>>)>,
}

impl State {
    /// Everything a page that connects now must see first, in order.
    fn backlog(&self, info: &Arc<str>) -> Vec<Arc<str>> {
        let mut b = vec![info.clone()];
        b.extend(self.batch.iter().cloned());
        b.extend(self.sheet.clone());
        b.extend(self.run.clone());
        b.extend(self.history.iter().cloned());
        b.extend(self.image.clone());
        b.extend(self.done.clone());
        b
    }
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
        "command": info.command,
        "settings": serde_json::from_str::<serde_json::Value>(&info.settings).unwrap_or_default(),
        "output": info.output,
        "width": info.width,
        "height": info.height,
        "iterations": info.iterations,
        "runs": info.runs,
    });
    let hub = Arc::new(Hub { token, info: sse("info", &info.to_string()), state: Mutex::default(), streams: Arc::default() });
    http::spawn(listener, hub.clone())?;
    let (frames, rx) = mpsc::sync_channel(1);
    let encoder_hub = hub.clone();
    std::thread::Builder::new().name("serve-encode".into()).spawn(move || encode_frames(&encoder_hub, rx, deprocess))?;
    eprintln!("serving http://{bound}/?token={}", hub.token);
    Ok(Serve { hub, frames, every: every.filter(|&n| n > 0), last_frame: Arc::default(), linger })
}

impl Serve {
    /// The snapshot period the optimisation must use so that this server gets its images, given
    /// `--save-iter`'s (0: none): `--serve-every`'s, or with no `--serve-every` --save-iter's
    /// alone (the frames between come through `snapshot_gate`).
    pub fn snapshot_every(&self, save_iter: usize) -> usize {
        match (self.every, save_iter) {
            (None, s) => s,
            (Some(n), 0) => n,
            (Some(n), s) => gcd(n, s),
        }
    }

    /// Without `--serve-every`: asks for the image when a frame is due (a second since the last
    /// one the encoder took), so that the optimisation copies it out of the backend about once a
    /// second, not every iteration.
    pub fn snapshot_gate(&self) -> Option<neural_style::SnapshotGate> {
        if self.every.is_some() {
            return None;
        }
        let last = self.last_frame.clone();
        Some(neural_style::SnapshotGate(Arc::new(move |_| frame_due(&last))))
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
            None => frame_due(&self.last_frame),
        };
        if due && self.offer(p.iteration, image) {
            *self.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// Hands the image to the encoder unless it is busy (then the frame is skipped).
    fn offer(&self, iteration: usize, image: &[f32]) -> bool {
        self.frames.try_send(ToEncoder::Frame(iteration, image.to_vec())).is_ok()
    }

    /// Sheet, grid and batch: optimisation `index` (0-based) of the run's `runs` begins. Pages
    /// start its curves afresh and show `label` (the cell, or the frame's file name).
    pub fn begin_run(&self, index: usize, label: &str) {
        let event = sse("run", &serde_json::json!({ "index": index, "label": label }).to_string());
        let mut s = self.hub.lock();
        broadcast(&mut s.clients, &event);
        s.run = Some(event);
        s.history.clear();
        s.image = None;
        drop(s);
        *self.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Sheet and grid: the contact sheet with `filled` of its `cells` done. Waits for the encoder
    /// to take it (at most one frame's encoding: once per cell), so no sheet is dropped.
    pub fn show_sheet(&self, sheet: neural_style::image_io::Rgb8, filled: usize, cells: usize) {
        let data = serde_json::json!({ "filled": filled, "cells": cells });
        self.picture(format!("sheet-{filled}"), Some(sheet), "sheet", data);
    }

    /// Batch: frame `index` (0-based, of the shard's `total`) was written (`image`, its
    /// result) or skipped (its output already existed: `image` is None), with `done` written
    /// and `skipped` so far. A written frame's thumbnail follows its event.
    pub fn batch_frame(&self, index: usize, name: &str, output: &str, image: Option<&neural_style::image_io::Rgb8>, done: usize, skipped: usize, total: usize) {
        let data = serde_json::json!({
            "index": index, "name": name, "output": output, "state": if image.is_some() { "written" } else { "skipped" },
            "done": done, "skipped": skipped, "total": total,
        });
        self.picture(format!("thumb-{index}"), image.map(|img| thumbnail(img, THUMB_SIZE)), "frame", data);
    }

    /// Batch: later frames are deprocessed with this (the next frame's content image).
    pub fn set_deprocess(&self, deprocess: Deprocess) {
        let _ = self.frames.send(ToEncoder::Deprocess(deprocess));
    }

    fn picture(&self, key: String, image: Option<neural_style::image_io::Rgb8>, event: &'static str, data: serde_json::Value) {
        // A blocking send: the encoder takes it after the frame it is encoding, if any.
        let _ = self.frames.send(ToEncoder::Picture { key, image, event, data });
    }

    /// The run ended: `image` (the file written, PNG-encoded, if any) and a `done` event saying
    /// how (`state`: finished, stopped or failed) go to every page; then the streams close and
    /// the server stays up for `--serve-linger`.
    pub fn finish(&self, state: &str, message: &str, output: Option<&str>, image: Option<&neural_style::image_io::Rgb8>) {
        // The last sheet or thumbnail is announced before the end (bounded: an encoder stuck on
        // a huge picture does not hold the exit).
        let (ack, acked) = mpsc::sync_channel(1);
        if self.frames.send(ToEncoder::Flush(ack)).is_ok() {
            let _ = acked.recv_timeout(Duration::from_secs(10));
        }
        let url = image.and_then(|img| encode_png(img).ok()).map(|png| self.hub.store_frame("final".into(), png));
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

/// Batch frame events a late page is shown (its thumbnails and skipped frames).
fn remember_frame_event(kept: &mut VecDeque<Arc<str>>, event: Arc<str>) {
    kept.push_back(event);
    while kept.len() > THUMBS_KEPT {
        kept.pop_front();
    }
}

/// `img` shrunk (nearest pixel) to fit `size` x `size`; a smaller image is kept as it is.
fn thumbnail(img: &neural_style::image_io::Rgb8, size: usize) -> neural_style::image_io::Rgb8 {
    let scale = (size as f64 / img.w.max(img.h).max(1) as f64).min(1.0);
    let (w, h) = (((img.w as f64 * scale).round() as usize).max(1), ((img.h as f64 * scale).round() as usize).max(1));
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = (x * img.w / w, y * img.h / h);
            data.extend_from_slice(&img.data[(sy * img.w + sx) * 3..][..3]);
        }
    }
    neural_style::image_io::Rgb8 { w, h, data }
}

/// The kind of an image key (`12` and `final`: iteration frames; `sheet-3`, `thumb-7`), and how
/// many of that kind are kept.
fn kept_of_kind(key: &str) -> (&str, usize) {
    match key.split_once('-') {
        Some(("thumb", _)) => ("thumb", THUMBS_KEPT),
        Some((kind, _)) => (kind, FRAMES_KEPT),
        None => ("", FRAMES_KEPT),
    }
}

impl Hub {
    /// Keeps an encoded image under `key` and returns its URL (`/image/KEY?token=...`); the
    /// oldest of its kind goes when more than its kind's quota are kept.
    fn store_frame(&self, key: String, png: Vec<u8>) -> String {
        let url = format!("/image/{key}?token={}", self.token);
        let (kind, quota) = kept_of_kind(&key);
        let kind = kind.to_string();
        let mut s = self.lock();
        s.frames.retain(|(k, _)| *k != key);
        s.frames.push_back((key, Arc::new(png)));
        while s.frames.iter().filter(|(k, _)| kept_of_kind(k).0 == kind).count() > quota {
            let oldest = s.frames.iter().position(|(k, _)| kept_of_kind(k).0 == kind).expect("one of its kind");
            s.frames.remove(oldest);
        }
        url
    }

    /// The image kept under `key` (the part of `/image/KEY` after the slash), if any.
    fn frame(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.lock().frames.iter().rev().find(|(k, _)| k == key).map(|(_, png)| png.clone())
    }
}

/// The encoder thread: float images → 8-bit → PNG → `/image/N`, then an `image` event; pictures
/// → PNG → `/image/KEY`, then their event.
fn encode_frames(hub: &Hub, rx: Receiver<ToEncoder>, mut deprocess: Deprocess) {
    while let Ok(message) = rx.recv() {
        match message {
            ToEncoder::Frame(iteration, x) => {
                let Ok(png) = encode_png(&deprocess(&x)) else { continue };
                let url = hub.store_frame(iteration.to_string(), png);
                let event = sse("image", &serde_json::json!({ "iteration": iteration, "url": url }).to_string());
                let mut s = hub.lock();
                if s.done.is_none() {
                    broadcast(&mut s.clients, &event);
                    s.image = Some(event);
                }
            }
            ToEncoder::Picture { key, image, event, mut data } => {
                if let Some(image) = image {
                    let Ok(png) = encode_png(&image) else { continue };
                    data["url"] = hub.store_frame(key, png).into();
                }
                let message = sse(event, &data.to_string());
                let mut s = hub.lock();
                broadcast(&mut s.clients, &message);
                match event {
                    "sheet" => s.sheet = Some(message),
                    _ => remember_frame_event(&mut s.batch, message),
                }
            }
            ToEncoder::Deprocess(d) => deprocess = d,
            ToEncoder::Flush(ack) => {
                let _ = ack.try_send(());
            }
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
        let serve = Serve { hub, frames, every: None, last_frame: Arc::default(), linger: Duration::ZERO };
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
            last_frame: Arc::default(),
            linger: Duration::ZERO,
        };
        assert_eq!(serve(None).snapshot_every(100), 100, "--save-iter's; the page's frames come through the gate");
        assert_eq!(serve(None).snapshot_every(0), 0);
        let gate = serve(None).snapshot_gate().expect("a gate without --serve-every");
        assert!((gate.0)(1), "the first frame is due at once");
        assert!(serve(Some(10)).snapshot_gate().is_none());
        assert_eq!(serve(Some(10)).snapshot_every(0), 10);
        assert_eq!(serve(Some(10)).snapshot_every(25), 5);
    }
}
