//! The `neural-style` program: parses the command line and dispatches to one module per
//! command (src/cmd/). Errors print as one `error: ...` line and exit non-zero.

mod cli;
mod cmd;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use std::ffi::OsString;
use std::process::ExitCode;

/// Large buffers on cache lines (neural_style::aligned_alloc says why).
#[global_allocator]
static ALLOC: neural_style::aligned_alloc::CacheLineAligned = neural_style::aligned_alloc::CacheLineAligned;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let parsed = Cli::command().try_get_matches_from(&argv).and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            eprintln!("{}", one_line_clap_error(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    // SIGINT / SIGTERM stop the commands that optimise after their current iteration, and never
    // mid-write (neural_style::interrupt); the others keep the default (die at once).
    if !matches!(cli.command, Some(Command::FetchModel(_) | Command::Bench(_) | Command::MakeExamples(_))) {
        if let Err(e) = neural_style::interrupt::install() {
            eprintln!("note: cannot handle SIGINT / SIGTERM ({e}): an interrupted run saves nothing");
        }
    }
    let result = on_a_worker_thread(|| match cli.command {
        Some(Command::FetchModel(a)) => cmd::fetch::fetch_model(a),
        Some(Command::Bench(a)) => cmd::bench::bench(a),
        Some(Command::MakeExamples(a)) => cmd::examples::make_examples(a),
        Some(Command::Sheet(a)) => cmd::sheet::sheet(a, matches.subcommand_matches("sheet").unwrap_or(&matches), &argv),
        Some(Command::Grid(a)) => cmd::sheet::grid(a, matches.subcommand_matches("grid").unwrap_or(&matches), &argv),
        Some(Command::Batch(a)) => cmd::batch::batch(a, matches.subcommand_matches("batch").unwrap_or(&matches), &argv),
        None => cmd::stylize::stylize(cli.style, cli.serve, &matches, &argv),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<neural_style::interrupt::Interrupted>() {
                // Not an error: the run stopped as asked (exit 130 for SIGINT, 143 for SIGTERM).
                eprintln!("{i}");
                return ExitCode::from(neural_style::interrupt::exit_code(i.signal));
            }
            // anyhow's "{:#}" joins the context chain with ": " on one line; a control character
            // (a newline in a file name, an escape sequence) is shown escaped, as {:?} would.
            eprintln!("error: {}", escape_controls(&format!("{e:#}")));
            if e.downcast_ref::<cmd::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs f on a thread of rayon's global pool (8 MiB stacks, like the main thread's), where the
/// CPU backend's parallel loops start without a hand-over: called from outside the pool, each
/// of the thousands per evaluation queued its work and put the caller to sleep until the pool
/// woke it (a bf16 512² bench: 70,552 context switches against 5,299 from inside the pool).
fn on_a_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // Fails only if the pool exists already (it does not yet here); it then runs as it is.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    rayon::scope(|_| f())
}

/// `msg` with its control characters escaped (`\n`, `\t`, `\u{1b}`), so that the message stays
/// one line and a file name cannot rewrite the terminal.
fn escape_controls(msg: &str) -> String {
    msg.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// clap's messages span several lines (usage, hints); keep them to one.
fn one_line_clap_error(msg: &str) -> String {
    let parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    let line = parts.join(" ");
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}
