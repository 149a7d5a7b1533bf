//! Where the main command's settings come from, lowest first: clap's defaults, the settings
//! recorded in a PNG (`--from-png`), a preset (`--preset`), then the flags given on the command
//! line. The lower layers are turned back into flags and parsed again ahead of the user's own,
//! leaving out every flag the user gave, so one parser checks everything and explicit flags win.
//!
//! `record` writes the settings that decide the image (every flag but the output-only ones,
//! input paths made absolute) into the output PNG, with the program version and the model's
//! sha256; `--from-png` reads them back.

use super::presets;
use crate::cli::{Cli, StyleArgs};
use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use neural_style::image_io;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

/// PNG text keyword of the recorded settings (JSON: version, model sha256, args).
pub const SETTINGS_KEY: &str = "neural-style:settings";
/// Flags that say where results go or how progress is shown, not what the image is: never
/// recorded, never taken from a PNG.
const NOT_RECORDED: [&str; 8] = ["output_image", "log_json", "print_iter", "save_iter", "from_png", "preset", "plot", "resume"];
/// Flags naming input files: recorded as absolute paths.
const INPUT_PATHS: [&str; 4] = ["content_image", "style_image", "init_image", "model"];

/// The settings after --from-png and --preset, given the parsed command line (`args`, from
/// `matches`) and the raw arguments it came from (`argv`, program name first). For the main
/// command `matches` is the top level's; for a subcommand that flattens StyleArgs, its own.
pub fn resolve(args: StyleArgs, matches: &ArgMatches, argv: &[OsString]) -> Result<StyleArgs> {
    resolve_in(args, matches, argv, None)
}

/// As `resolve`, for the subcommand `sub` (argv[1]) whose arguments flatten StyleArgs.
pub fn resolve_in(args: StyleArgs, matches: &ArgMatches, argv: &[OsString], sub: Option<&str>) -> Result<StyleArgs> {
    if args.preset.is_none() && args.from_png.is_none() {
        return Ok(args);
    }
    let explicit: HashSet<String> = Cli::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    let mut layered: Vec<(String, Vec<String>)> = Vec::new(); // (id, flag + value tokens)
    if let Some(png) = &args.from_png {
        layered.extend(recorded_flags(png)?);
    }
    if let Some(preset) = args.preset {
        for (long, value) in presets::flags(preset) {
            let id = id_of(long)?;
            layered.retain(|(i, _)| *i != id); // the preset is above the PNG
            let mut tokens = vec![format!("--{long}")];
            if !value.is_empty() {
                tokens.push(value.to_string());
            }
            layered.push((id, tokens));
        }
    }
    // The lower layers go right after the program (or subcommand) name, ahead of the user's flags.
    let head = if sub.is_some() { 2 } else { 1 };
    let mut full: Vec<OsString> = argv.iter().take(head).cloned().collect();
    // batch takes its content images as arguments: a recorded one is not carried over.
    let batch_owned = |id: &str| sub == Some("batch") && ["content_image", "init_image"].contains(&id);
    for (id, tokens) in layered {
        if !explicit.contains(&id) && !overridden_by_explicit(&id, &explicit) && !batch_owned(&id) {
            full.extend(tokens.into_iter().map(OsString::from));
        }
    }
    full.extend(argv.iter().skip(head).cloned());
    let matches = Cli::command().try_get_matches_from(&full).map_err(|e| anyhow!("{}", first_line(&e.to_string())))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow!("{}", first_line(&e.to_string())))?;
    match (sub, cli.command) {
        (None, _) => Ok(cli.style),
        (Some(_), Some(crate::cli::Command::Batch(b))) => Ok(b.style),
        (Some(_), Some(crate::cli::Command::Sheet(b))) => Ok(b.style),
        (Some(_), Some(crate::cli::Command::Grid(b))) => Ok(b.style),
        (Some(name), _) => bail!("internal: settings for subcommand {name} cannot be layered"),
    }
}

/// `provenance` (from `record`) with another content image: each frame of a batch records its own.
pub fn with_content(provenance: &str, content: &Path) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(provenance) else { return provenance.to_string() };
    if let Some(args) = v.get_mut("args").and_then(Value::as_object_mut) {
        let p = std::fs::canonicalize(content).unwrap_or_else(|_| content.to_path_buf());
        args.insert("content_image".into(), Value::String(p.display().to_string()));
    }
    v.to_string()
}

/// A flag that makes a lower layer's flag meaningless: an explicit --image-size drops a
/// preset's --image-height (both set the size).
fn overridden_by_explicit(id: &str, explicit: &HashSet<String>) -> bool {
    id == "image_height" && explicit.contains("image_size")
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().trim_start_matches("error: ")
}

/// The clap id of a long flag of the main command.
fn id_of(long: &str) -> Result<String> {
    Cli::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_id().to_string())
        .ok_or_else(|| anyhow!("internal: no flag --{long}"))
}

/// The settings JSON recorded in `png` (see `record`).
fn recorded_settings(png: &Path) -> Result<Value> {
    let texts = image_io::read_png_text(png).context("--from-png")?;
    let text = texts
        .iter()
        .find(|(k, _)| k == SETTINGS_KEY)
        .map(|(_, t)| t)
        .ok_or_else(|| anyhow!("--from-png {}: no settings recorded in this PNG (it was not written by neural-style)", png.display()))?;
    serde_json::from_str(text).with_context(|| format!("--from-png {}: the recorded settings are not valid JSON", png.display()))
}

/// The settings recorded in `png` as flags: (id, tokens) per recorded flag.
fn recorded_flags(png: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let settings = recorded_settings(png)?;
    let Some(recorded) = settings.get("args").and_then(Value::as_object) else {
        bail!("--from-png {}: the recorded settings have no \"args\"", png.display());
    };
    let mut out = Vec::new();
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().to_string();
        let (Some(long), Some(value)) = (arg.get_long(), recorded.get(&id)) else { continue };
        if NOT_RECORDED.contains(&id.as_str()) {
            continue;
        }
        let flag = format!("--{long}");
        let tokens = match value {
            Value::Null | Value::Bool(false) => continue,
            Value::Bool(true) => vec![flag],
            Value::Array(items) => vec![flag, items.iter().map(scalar).collect::<Result<Vec<_>>>()?.join(",")],
            v => vec![flag, scalar(v)?],
        };
        out.push((id, tokens));
    }
    Ok(out)
}

fn scalar(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => bail!("unexpected recorded value {other}"),
    }
}

/// The settings that decide the image: every flag of `args` but the output-only ones, with input
/// paths made absolute (taken before `plan` consumes the arguments).
pub fn recorded_args(args: &StyleArgs) -> Result<Map<String, Value>> {
    let Value::Object(all) = serde_json::to_value(args)? else { bail!("internal: settings are not an object") };
    let mut kept = Map::new();
    for (id, mut value) in all {
        if NOT_RECORDED.contains(&id.as_str()) {
            continue;
        }
        if INPUT_PATHS.contains(&id.as_str()) {
            value = absolute_paths(value);
        }
        kept.insert(id, value);
    }
    Ok(kept)
}

/// The PNG text to record: the settings, the program version and the model and its hash.
pub fn record(args: Map<String, Value>, model_sha256: Option<&str>, model_label: &str) -> String {
    json!({
        "program": "neural-style",
        "version": env!("CARGO_PKG_VERSION"),
        "model": model_label,
        "model_sha256": model_sha256,
        "args": args,
    })
    .to_string()
}

fn absolute_paths(v: Value) -> Value {
    match v {
        Value::String(p) => Value::String(std::fs::canonicalize(&p).map(|a| a.display().to_string()).unwrap_or(p)),
        Value::Array(items) => Value::Array(items.into_iter().map(absolute_paths).collect()),
        other => other,
    }
}

/// The model hash recorded in `png`, if any (to warn when a rerun uses other weights).
pub fn recorded_model_sha256(png: &Path) -> Option<String> {
    recorded_settings(png).ok()?.get("model_sha256")?.as_str().map(str::to_string)
}
