//! SIGINT and SIGTERM, handled instead of dying (`install`):
//! - the first one is remembered (`requested`); the optimisation loop polls it and stops after
//!   the iteration under way, and the command saves what it has and exits with `exit_code`
//!   (130 for SIGINT, 143 for SIGTERM, as a shell reports a process killed by them);
//! - a second one ends the process at once with the same code, but never in the middle of a
//!   file write: every atomic write (`image_io::write_atomic`) holds `writing()`'s lock from
//!   creating its temp file until it is renamed or removed, and the exit waits for that lock,
//!   so no `.tmp` file is ever left behind.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use signal_hook::consts::{SIGINT, SIGTERM};

/// The first signal received (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// Held while a temp file exists.
static WRITING: Mutex<()> = Mutex::new(());

/// Why a command stopped early: a signal asked it to. main exits with `exit_code(signal)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub signal: i32,
    /// What was done about it, e.g. where the image and the state went (may be empty).
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", signal_name(self.signal))?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}

/// Handles SIGINT and SIGTERM from now on (see the module doc). Idempotent enough for one
/// program: call it once, early.
pub fn install() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                // A second signal: stop now, once any file being written is complete.
                let _guard = WRITING.lock();
                eprintln!("{}: stopping at once (no state saved)", signal_name(signal));
                std::process::exit(exit_code(signal) as i32);
            }
        }
    })?;
    Ok(())
}

/// The first signal received since `install`, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Acts as if `signal` had been received (tests, and callers that stop a run for their own reasons).
pub fn request(signal: i32) {
    let _ = REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The `Interrupted` error for the signal received, if one was.
pub fn check() -> Result<(), Interrupted> {
    match requested() {
        Some(signal) => Err(Interrupted { signal, message: "stopped at once; the work under way was not saved".into() }),
        None => Ok(()),
    }
}

/// The exit status for a run stopped by `signal`: 128 + its number (130 SIGINT, 143 SIGTERM).
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Held while a temp file exists (see the module doc); a poisoned lock is still a lock.
pub fn writing() -> MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}
