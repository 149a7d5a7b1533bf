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
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

/// PNG text keyword of the recorded settings (JSON: version, model sha256, args).
pub use neural_style::settings_record::SETTINGS_KEY;
use neural_style::settings_record::{self, Flag, FlagKind, NOT_RECORDED};
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
    let from_png = layered.len();
    // Recorded flags a preset replaces are dropped.
    let mut recorded_used = vec![true; from_png];
    if let Some(preset) = args.preset {
        for (long, value) in presets::flags(preset) {
            let id = id_of(long)?;
            if let Some(i) = layered[..from_png].iter().position(|(i, _)| *i == id) {
                recorded_used[i] = false; // the preset is above the PNG
            }
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
    let mut used_inputs = Vec::new();
    for (k, (id, tokens)) in layered.into_iter().enumerate() {
        if recorded_used.get(k) != Some(&false) && !explicit.contains(&id) && !overridden_by_explicit(&id, &explicit) && !batch_owned(&id) {
            if k < from_png {
                used_inputs.push((id.clone(), tokens.clone()));
            }
            full.extend(tokens.into_iter().map(OsString::from));
        }
    }
    if let Some(png) = &args.from_png {
        check_recorded_inputs(png, &used_inputs)?;
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

/// The recorded settings and flags of `png` (see `record`), each error one line naming the PNG.
fn read_record(png: &Path) -> Result<(Value, settings_record::Recorded)> {
    let at = || format!("{}: --from-png", png.display());
    // A FIFO or device is refused rather than read (it would block or never end).
    let file = neural_style::image_io::open_regular(png).with_context(at)?;
    let known = style_flags();
    let flags: Vec<Flag> = known.iter().map(|(id, long, kind)| Flag { id, long, kind: *kind }).collect();
    match settings_record::read(std::io::BufReader::new(file), &flags).with_context(at)? {
        Some(r) => Ok(r),
        None => bail!("{}: no settings recorded in this PNG (it was not written by neural-style)", at()),
    }
}

/// The main command's flags as the settings reader sees them: (id, long name, kind).
fn style_flags() -> Vec<(String, String, FlagKind)> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let kind = match a.get_action() {
                ArgAction::SetTrue => FlagKind::Switch,
                ArgAction::Set | ArgAction::Append if a.get_value_delimiter().is_some() => FlagKind::List,
                ArgAction::Set | ArgAction::Append => FlagKind::Value,
                _ => return None,
            };
            Some((a.get_id().to_string(), a.get_long()?.to_string(), kind))
        })
        .collect()
}

/// The settings recorded in `png` as flags: (id, tokens) per recorded flag, each checked alone
/// by the command line's parser first, so that a value it refuses is named with the PNG and the
/// record's key. Keys that are no flag are ignored with a warning naming them.
fn recorded_flags(png: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let (_, recorded) = read_record(png)?;
    for (key, why) in &recorded.ignored {
        eprintln!("warning: {}: --from-png: ignored the recorded {key:?} ({why})", png.display());
    }
    let mut out = Vec::new();
    for f in recorded.flags {
        if let Err(e) = Cli::command().try_get_matches_from(["neural-style", f.token.as_str()]) {
            let long = f.token.split('=').next().unwrap_or_default();
            bail!("{}: --from-png: the recorded {} {} is not accepted by {long}: {}", png.display(), f.id, f.shown, first_line(&e.to_string()));
        }
        if let Err(e) = check_recorded_range(&f.id, f.values.as_deref().unwrap_or_default()) {
            bail!("{}: --from-png: the recorded {} {} is out of range: {e}", png.display(), f.id, f.shown);
        }
        out.push((f.id, vec![f.token]));
    }
    Ok(out)
}

/// The range checks `plan` makes of a number flag, on a recorded value alone (which the
/// parser accepted), so that one out of range is named with the PNG and its key (`plan` names
/// only the flag).
fn check_recorded_range(id: &str, values: &[String]) -> Result<()> {
    let long = id.replace('_', "-");
    for v in values {
        let int = || v.trim().parse::<i64>().map_err(|e| anyhow!("{e}"));
        match id {
            "num_iterations" | "scale_iterations" => drop(super::iteration_count(&long, int()?)?),
            "image_size" | "image_height" | "scales" => drop(super::image_side(&long, int()?)?),
            "lbfgs_num_correction" => drop(super::positive(&long, int()?)?),
            "seed" | "lbfgs_round" => drop(super::non_negative(&long, int()?)?),
            "content_weight" | "style_weight" | "tv_weight" | "style_blend_weights" => super::check_weight(&long, v.trim().parse::<f32>()?)?,
            _ => {}
        }
    }
    Ok(())
}

/// The recorded input files of `flags` (from `recorded_flags`) that are used must exist: the
/// PNG may come from another machine.
fn check_recorded_inputs(png: &Path, flags: &[(String, Vec<String>)]) -> Result<()> {
    for (id, tokens) in flags {
        if !INPUT_PATHS.contains(&id.as_str()) {
            continue;
        }
        let Some((_, value)) = tokens[0].split_once('=') else { continue };
        // A list's entries (style images); no recorded path holds a comma (see settings_record).
        let paths: Vec<&str> = if id == "style_image" { value.split(',').collect() } else { vec![value] };
        for p in paths {
            ensure!(Path::new(p).exists(), "{}: --from-png: the recorded {id} {p:?} names no file (give --{} to use another)", png.display(), id.replace('_', "-"));
        }
    }
    Ok(())
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
    read_record(png).ok()?.0.get("model_sha256")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    /// The fuzz target's sample of flags (`neural_style::fuzzing::SETTINGS_FLAGS`) is this
    /// command's, each of the kind the reader gives it here.
    #[test]
    fn the_fuzz_targets_flags_are_the_commands() {
        let flags = super::style_flags();
        for f in neural_style::fuzzing::SETTINGS_FLAGS {
            assert!(flags.iter().any(|(id, long, kind)| id == f.id && long == f.long && *kind == f.kind), "{f:?} is not a flag of the command");
        }
        let kind = |id: &str| flags.iter().find(|f| f.0 == id).map(|f| f.2);
        use neural_style::settings_record::FlagKind;
        assert_eq!(kind("normalize_gradients"), Some(FlagKind::Switch));
        assert_eq!(kind("style_layers"), Some(FlagKind::List));
        assert_eq!(kind("scales"), Some(FlagKind::List));
        assert_eq!(kind("tv_power"), Some(FlagKind::Value));
        assert_eq!(kind("help"), None);
    }
}
