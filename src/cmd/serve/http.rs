//! `--serve`'s HTTP/1.1: `std::net` and `httparse`, one request per connection (every answer
//! says `Connection: close`).
//!
//! It replaces tiny_http 0.12, which read a request's head with no size bound and no time limit
//! before any handler (and so the token check) saw it: a 200 MB request line on a connection kept
//! open grew the process by 213 MB. Its last release, 0.12.0, is from 2022. Here:
//! - one thread (`serve-accept`) accepts connections and reads every request with poll(2),
//!   without blocking: head and body together at most MAX_REQUEST bytes (431 or 413 beyond,
//!   never buffering more), complete within HEAD_TIMEOUT of the connection (then 408 and
//!   closed), so a slowloris client costs one buffer and no thread;
//! - at most MAX_CONNECTIONS connections are open in all; one more closes the oldest one still
//!   sending its request (the slowest: slow clients cannot lock out a proper one), or gets 503
//!   when all are being answered;
//! - WORKERS threads answer complete requests, with a write timeout; each `/events` stream gets a
//!   thread of its own, at most MAX_CLIENTS of them.

use super::{authorized, split_target, take_slot, Client, Hub, Slot, CLIENT_QUEUE, MAX_CLIENTS, PAGE};
use neural_style::interrupt;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request's head and body together; none of the routes takes a body.
const MAX_REQUEST: usize = 8 * 1024;
/// Headers parsed per request; more is 431.
const MAX_HEADERS: usize = 32;
/// From a connection's accept to its complete request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A response, or an event, that a client does not take in this long ends its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections in all: requests being read or answered, and event streams.
const MAX_CONNECTIONS: usize = 64;
/// Threads answering complete requests (the `/events` streams have their own).
const WORKERS: usize = 4;
/// The page may run only its own script and style, and show images from this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'";

/// An accepted connection, holding one of the MAX_CONNECTIONS slots until it is dropped (closed).
struct Connection {
    stream: TcpStream,
    _slot: Slot,
}

/// What the bytes of a request so far make.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    Complete(Head),
    /// Answer this status and close.
    Refuse(u16),
}

/// What the routes need of a request.
#[derive(Debug, PartialEq)]
struct Head {
    method: String,
    target: String,
    x_token: Option<String>,
}

/// Parses the request at the start of `buf`: complete once its head and the body its
/// `Content-Length` announces are there (the body is read so that closing the connection does not
/// reset it before the client has the answer, and then ignored).
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => return Parsed::Refuse(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(431),
        Err(_) => return Parsed::Refuse(400),
    };
    let mut body: Option<usize> = None;
    let mut x_token = None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("Transfer-Encoding") {
            // Chunked bodies are not read: no route takes a body.
            return Parsed::Refuse(411);
        } else if h.name.eq_ignore_ascii_case("Content-Length") {
            let Some(digits) = std::str::from_utf8(h.value).ok().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) else {
                return Parsed::Refuse(400);
            };
            // All digits: an error is a number too large.
            let Ok(n) = digits.parse::<usize>() else { return Parsed::Refuse(413) };
            if body.is_some_and(|b| b != n) {
                return Parsed::Refuse(400);
            }
            if n > MAX_REQUEST.saturating_sub(head_len) {
                return Parsed::Refuse(413);
            }
            body = Some(n);
        } else if h.name.eq_ignore_ascii_case("X-Token") {
            x_token = std::str::from_utf8(h.value).ok().map(str::to_string);
        }
    }
    let body = body.unwrap_or(0);
    if buf.len() < head_len + body {
        return Parsed::Partial;
    }
    let (Some(method), Some(target)) = (request.method, request.path) else { return Parsed::Refuse(400) };
    Parsed::Complete(Head { method: method.to_string(), target: target.to_string(), x_token })
}

/// A connection whose request is still coming.
struct Pending {
    connection: Connection,
    buf: Vec<u8>,
    accepted: Instant,
}

impl Pending {
    /// Reads what has arrived (the socket is non-blocking) into the buffer, never past
    /// MAX_REQUEST. None: the client closed or the connection failed.
    fn read_more(&mut self) -> Option<Parsed> {
        let start = self.buf.len();
        // A buffer of MAX_REQUEST is refused by `parse`, so there is room for at least a byte.
        self.buf.resize(MAX_REQUEST, 0);
        let got = self.connection.stream.read(&mut self.buf[start..]);
        self.buf.truncate(start + *got.as_ref().unwrap_or(&0));
        match got {
            Ok(0) => None,
            Ok(_) => Some(parse(&self.buf)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Some(Parsed::Partial),
            Err(_) => None,
        }
    }
}

/// Starts the accepting thread and the workers on `listener` (already bound).
pub(super) fn spawn(listener: TcpListener, hub: Arc<Hub>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let (work, jobs) = mpsc::sync_channel::<(Connection, Head)>(MAX_CONNECTIONS);
    let jobs = Arc::new(Mutex::new(jobs));
    for k in 0..WORKERS {
        let (jobs, hub) = (jobs.clone(), hub.clone());
        std::thread::Builder::new().name(format!("serve-{k}")).spawn(move || loop {
            let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok((connection, head)) = next else { return };
            handle(&hub, connection, head);
        })?;
    }
    std::thread::Builder::new().name("serve-accept".into()).spawn(move || accept_loop(&listener, &work))?;
    Ok(())
}

/// The accepting thread: waits with poll(2) for new connections and for the bytes of requests
/// not yet complete, and hands complete ones to the workers.
fn accept_loop(listener: &TcpListener, work: &SyncSender<(Connection, Head)>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut pending: Vec<Pending> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        let now = Instant::now();
        pending.retain_mut(|p| {
            let late = now.duration_since(p.accepted) >= HEAD_TIMEOUT;
            if late {
                refuse(&mut p.connection.stream, 408);
            }
            !late
        });
        let wait = pending.iter().map(|p| HEAD_TIMEOUT.saturating_sub(now.duration_since(p.accepted))).min();
        // -1: no deadline; else whole milliseconds rounded up, so that the deadline has passed.
        let timeout = wait.map_or(-1, |d| d.as_millis().min(i32::MAX as u128 - 1) as i32 + 1);
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(pending.iter().map(|p| libc::pollfd { fd: p.connection.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: `fds` is an array of fds.len() initialised pollfd, alive and unaliased for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        // In reverse, so that swap_remove moves only entries already looked at.
        for i in (0..pending.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            match pending[i].read_more() {
                Some(Parsed::Partial) => {}
                None => drop(pending.swap_remove(i)),
                Some(Parsed::Refuse(status)) => refuse(&mut pending.swap_remove(i).connection.stream, status),
                Some(Parsed::Complete(head)) => {
                    let connection = pending.swap_remove(i).connection;
                    dispatch(work, connection, head);
                }
            }
        }
        if fds[0].revents != 0 {
            accept_all(listener, &open, &mut pending);
        }
    }
}

/// Hands a complete request to the workers, or answers 503 when they are all behind.
fn dispatch(work: &SyncSender<(Connection, Head)>, connection: Connection, head: Head) {
    let ready = connection.stream.set_nonblocking(false).and_then(|_| connection.stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if ready.is_err() {
        return;
    }
    if let Err(TrySendError::Full((mut connection, _)) | TrySendError::Disconnected((mut connection, _))) = work.try_send((connection, head)) {
        let _ = connection.stream.set_nonblocking(true);
        refuse(&mut connection.stream, 503);
    }
}

/// Accepts what is waiting. At MAX_CONNECTIONS, the oldest connection still sending its request
/// is closed to make room; when there is none, the new one gets 503.
fn accept_all(listener: &TcpListener, open: &Arc<AtomicUsize>, pending: &mut Vec<Pending>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
            Err(_) => {
                // Out of file descriptors, say: the connections waiting stay in the backlog.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let slot = take_slot(open, MAX_CONNECTIONS).or_else(|| {
            let oldest = (0..pending.len()).min_by_key(|&i| pending[i].accepted)?;
            refuse(&mut pending.swap_remove(oldest).connection.stream, 503);
            take_slot(open, MAX_CONNECTIONS)
        });
        match slot {
            Some(slot) => pending.push(Pending { connection: Connection { stream, _slot: slot }, buf: Vec::new(), accepted: Instant::now() }),
            None => refuse(&mut stream, 503),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A whole response, closing the connection.
fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n", reason(status), body.len());
    for (name, value) in headers {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    [r.as_bytes(), body].concat()
}

fn text(status: u16, body: &str) -> Vec<u8> {
    response(status, &[("Content-Type", "text/plain; charset=utf-8")], format!("{body}\n").as_bytes())
}

/// The answer to a request refused before it reached the routes, written without waiting (the
/// socket is non-blocking: a client that does not read loses it) before the connection closes.
fn refuse(stream: &mut TcpStream, status: u16) {
    let why = match status {
        408 => "the request took too long",
        411 | 413 => "no request here takes a body",
        431 => "the request's head is too large",
        503 => "busy: too many connections",
        _ => "malformed request",
    };
    let _ = stream.write_all(&text(status, why));
}

/// Answers one request. Errors writing a response (the client went away) are ignored: the
/// next request is unaffected, and a browser closing a tab is no news.
fn handle(hub: &Arc<Hub>, connection: Connection, head: Head) {
    let Head { method, target, x_token } = head;
    if !authorized(&target, x_token.as_deref(), &hub.token) {
        let _ = (&connection.stream).write_all(&text(403, "forbidden: this page needs the token printed by neural-style --serve"));
        return;
    }
    let (path, _) = split_target(&target);
    let answer = match (path, method.as_str()) {
        ("/", "GET") => response(200, &[("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"), ("Content-Security-Policy", CSP)], PAGE.as_bytes()),
        ("/events", "GET") => {
            let Some(slot) = take_slot(&hub.streams, MAX_CLIENTS) else {
                let _ = (&connection.stream).write_all(&text(503, &format!("busy: {MAX_CLIENTS} pages are already watching this run")));
                return;
            };
            let hub = hub.clone();
            // A thread per stream: it lives as long as the page does.
            let spawned = std::thread::Builder::new().name("serve-events".into()).spawn(move || {
                let _slot = slot;
                let _ = stream(&hub, &connection.stream);
            });
            if let Err(e) = spawned {
                eprintln!("serve: cannot start a thread for a page ({e}); it gets no updates");
            }
            return;
        }
        ("/stop", "POST") => {
            // Exactly what SIGINT does: the run stops after this iteration and saves its state.
            interrupt::request(interrupt::SIGINT);
            text(202, "stopping after the current iteration")
        }
        ("/stop", _) => response(405, &[("Content-Type", "text/plain; charset=utf-8"), ("Allow", "POST")], b"use POST to stop the run\n"),
        (p, "GET") if p.starts_with("/image/") => match hub.frame(&p["/image/".len()..]) {
            Some(png) => response(200, &[("Content-Type", "image/png"), ("Cache-Control", "no-store")], &png),
            None => text(404, "no such image (only the last few frames are kept)"),
        },
        ("/" | "/events", _) => text(405, "use GET"),
        _ => text(404, "not found"),
    };
    let _ = (&connection.stream).write_all(&answer);
}

/// One `/events` stream: what happened so far, then the events as they come, until the run's
/// `done` or the client goes away. A keep-alive comment every 15 s finds a dead client.
fn stream(hub: &Hub, socket: &TcpStream) -> io::Result<()> {
    let (tx, rx): (_, Receiver<Arc<str>>) = mpsc::sync_channel(CLIENT_QUEUE);
    // The backlog and the subscription under one lock: no event is missed or sent twice.
    let backlog: Vec<Arc<str>> = {
        let mut s = hub.lock();
        let b = s.backlog(&hub.info);
        if s.done.is_none() {
            s.clients.push(Client { events: tx });
        }
        b
    };
    let mut w = BufWriter::new(socket);
    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")?;
    for e in &backlog {
        w.write_all(e.as_bytes())?;
    }
    w.flush()?;
    loop {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(e) => w.write_all(e.as_bytes())?,
            Err(RecvTimeoutError::Timeout) => w.write_all(b": keep-alive\n\n")?,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        w.flush()?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(method: &str, target: &str, x_token: Option<&str>) -> Parsed {
        Parsed::Complete(Head { method: method.into(), target: target.into(), x_token: x_token.map(str::to_string) })
    }

    #[test]
    fn requests_parse_once_their_head_and_body_are_in() {
        assert_eq!(parse(b"GET /?token=abc HTTP/1.1\r\nHost: x\r\n\r\n"), complete("GET", "/?token=abc", None));
        assert_eq!(parse(b"GET /events HTTP/1.0\r\nx-token: t0\r\n\r\n"), complete("GET", "/events", Some("t0")), "header names in any case");
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse(b"GE"), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
        let post = b"POST /stop HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(parse(post), Parsed::Partial, "the body is still coming");
        assert_eq!(parse(&[post.as_slice(), b"cde"].concat()), complete("POST", "/stop", None));
        assert_eq!(parse(b"POST /stop HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), complete("POST", "/stop", None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nX-Token: \xff\r\n\r\n"), complete("GET", "/", None), "a non-UTF-8 token is no token");
    }

    #[test]
    fn malformed_requests_are_refused() {
        for (bad, status) in [
            (b"\x00\x01garbage\r\n\r\n".as_slice(), 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            (b"POST /stop HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST /stop HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400),
            (b"POST /stop HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
            (b"POST /stop HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST /stop HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
            (b"POST /stop HTTP/1.1\r\nContent-Length: 8192\r\n\r\n", 413),
            (b"POST /stop HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        ] {
            assert_eq!(parse(bad), Parsed::Refuse(status), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_head_is_capped() {
        // A request line that never ends: partial below the cap, 431 at it.
        let mut line = b"GET /".to_vec();
        line.resize(MAX_REQUEST - 1, b'a');
        assert_eq!(parse(&line), Parsed::Partial);
        line.push(b'a');
        assert_eq!(parse(&line), Parsed::Refuse(431));
        // A head that fits exactly is fine; too many headers are 431 at any size.
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_REQUEST - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&head), complete("GET", "/", None));
        let many: String = (0..=MAX_HEADERS).map(|k| format!("X-{k}: 1\r\n")).collect();
        assert_eq!(parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), Parsed::Refuse(431));
    }

    #[test]
    fn reading_never_buffers_past_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let mut p = Pending { connection: Connection { stream, _slot: take_slot(&open, 1).unwrap() }, buf: Vec::new(), accepted: Instant::now() };
        // A request line four times the cap, all sent before the server reads.
        client.write_all(b"GET /").unwrap();
        client.write_all(&vec![b'a'; 4 * MAX_REQUEST]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            match p.read_more() {
                Some(Parsed::Partial) if Instant::now() < deadline => {
                    assert!(p.buf.len() < MAX_REQUEST);
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => break other,
            }
        };
        assert_eq!(outcome, Some(Parsed::Refuse(431)));
        assert_eq!((p.buf.len(), p.buf.capacity()), (MAX_REQUEST, MAX_REQUEST), "read up to the cap and no further");
        // A client that closes half-way is just gone.
        let mut leaving = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        leaving.write_all(b"GET / HT").unwrap();
        drop(leaving);
        let mut p = Pending { connection: Connection { stream: server_side, _slot: take_slot(&open, 2).unwrap() }, buf: Vec::new(), accepted: Instant::now() };
        let outcome = loop {
            match p.read_more() {
                Some(Parsed::Partial) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                other => break other,
            }
        };
        assert_eq!(outcome, None);
    }
}
