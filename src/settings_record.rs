//! The settings a PNG result records (an iTXt chunk `neural-style:settings`, JSON: the program,
//! its version, the model and its sha256, and `args`, every flag that decides the image) read
//! back for `--from-png`, up to the flags they stand for.
//!
//! Everything in the PNG is untrusted: the text is inflated at most to [`MAX_RECORD_BYTES`] (a
//! record is a few KB; a 1 MB zTXt can inflate to 1 GiB), no other text chunk is inflated at
//! all, and each recorded value must fit the kind of its flag (a switch takes true or false, a
//! value a string or a number, a list an array of them). Each value becomes one token
//! `--flag=value`, so that a value that looks like a flag (`"--model=/etc/passwd"`) stays a
//! value. Errors name the record's key and value; the caller names the PNG.

use anyhow::{anyhow, bail, ensure, Result};
use serde_json::Value;
use std::io::{BufRead, Seek};

/// PNG text keyword of the recorded settings.
pub const SETTINGS_KEY: &str = "neural-style:settings";
/// The most bytes a settings record may hold, inflated (a record is a few KB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Flags that say where results go or how progress is shown, not what the image is: never
/// recorded, never taken from a PNG.
pub const NOT_RECORDED: [&str; 8] = ["output_image", "log_json", "print_iter", "save_iter", "from_png", "preset", "plot", "resume"];

/// How a flag takes its value, which decides what a recorded value may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// `--flag` alone: recorded as true or false.
    Switch,
    /// `--flag=VALUE`: recorded as a string or a number.
    Value,
    /// `--flag=A,B,...`: recorded as an array of strings or numbers.
    List,
}

/// A flag of the command a record is read for.
#[derive(Clone, Copy, Debug)]
pub struct Flag<'a> {
    /// Its id: the record's key (`image_size`).
    pub id: &'a str,
    /// Its long name (`image-size`).
    pub long: &'a str,
    pub kind: FlagKind,
}

/// One recorded setting as a flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFlag {
    /// The flag's id, the record's key.
    pub id: String,
    /// The value as recorded (JSON, cut to 100 characters), for messages.
    pub shown: String,
    /// The one command-line token it stands for: `--flag` or `--flag=value`.
    pub token: String,
    /// Its value (the part after `=`; each entry of a list), None for a switch.
    pub values: Option<Vec<String>>,
}

/// A record's settings as flags, with the keys it holds that are no flag taken from a PNG.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// In the order of the `flags` given.
    pub flags: Vec<RecordedFlag>,
    /// (key, why it is ignored), in the record's order.
    pub ignored: Vec<(String, &'static str)>,
}

/// The settings text recorded in a PNG (the first `neural-style:settings` iTXt, zTXt or tEXt
/// chunk before the image data), None when it has none. Only that chunk is inflated, and only
/// up to MAX_RECORD_BYTES.
pub fn settings_text<R: BufRead + Seek>(png: R) -> Result<Option<String>> {
    let mut decoder = png::Decoder::new(png);
    decoder.set_ignore_text_chunk(false);
    let reader = decoder.read_info().map_err(|e| anyhow!("not a readable PNG ({e})"))?;
    let info = reader.info();
    let too_big = || anyhow!("the settings chunk holds more than {} MiB once inflated (a settings record is a few KB)", MAX_RECORD_BYTES >> 20);
    let damaged = |kind: &str, e: png::DecodingError| anyhow!("a damaged {kind} settings chunk ({e})");
    if let Some(t) = info.utf8_text.iter().find(|t| t.keyword == SETTINGS_KEY) {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_RECORD_BYTES).map_err(|e| if is_out_of_space(&e) { too_big() } else { damaged("iTXt", e) })?;
        let text = t.get_text().map_err(|e| damaged("iTXt", e))?;
        ensure!(text.len() <= MAX_RECORD_BYTES, too_big());
        return Ok(Some(text));
    }
    if let Some(t) = info.compressed_latin1_text.iter().find(|t| t.keyword == SETTINGS_KEY) {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_RECORD_BYTES).map_err(|e| if is_out_of_space(&e) { too_big() } else { damaged("zTXt", e) })?;
        let text = t.get_text().map_err(|e| damaged("zTXt", e))?;
        // Latin-1 to UTF-8 may double the bytes.
        ensure!(text.len() <= 2 * MAX_RECORD_BYTES, too_big());
        return Ok(Some(text));
    }
    if let Some(t) = info.uncompressed_latin1_text.iter().find(|t| t.keyword == SETTINGS_KEY) {
        ensure!(t.text.len() <= 2 * MAX_RECORD_BYTES, too_big());
        return Ok(Some(t.text.clone()));
    }
    Ok(None)
}

fn is_out_of_space(e: &png::DecodingError) -> bool {
    matches!(e, png::DecodingError::Format(_)) && e.to_string().contains("decompression space")
}

/// The record's JSON, which must be an object with an object `args`.
pub fn parse(text: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("the recorded settings are not valid JSON ({e})"))?;
    ensure!(v.is_object(), "the recorded settings are not a JSON object");
    ensure!(v.get("args").is_some_and(Value::is_object), "the recorded settings have no \"args\" object");
    Ok(v)
}

/// A JSON value as shown in messages: as written, cut to 100 characters.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// One recorded scalar as a flag's value: a string as it is, a number as JSON writes it.
fn scalar(key: &str, long: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => {
            // A number too large for an f32 fits no flag (integers are left to the flag's parser).
            if let (None, None, Some(f)) = (n.as_i64(), n.as_u64(), n.as_f64()) {
                ensure!(f.abs() <= f32::MAX as f64, "the recorded {key} {} is out of range for --{long} (no flag takes a number beyond ±3.4e38)", shown(v));
            }
            Ok(n.to_string())
        }
        _ => bail!("the recorded {key} {} is not a value for --{long} (a string or a number)", shown(v)),
    }
}

/// The flags `settings` (from `parse`) records, for a command whose flags are `flags`: each
/// recorded key that is one of them (and not NOT_RECORDED) as its token, null and false left
/// out. A key that is no flag is listed in `ignored`; a value of the wrong kind is an error
/// naming the key.
pub fn flags(settings: &Value, flags: &[Flag]) -> Result<Recorded> {
    let args = settings.get("args").and_then(Value::as_object).ok_or_else(|| anyhow!("the recorded settings have no \"args\" object"))?;
    let mut out = Recorded::default();
    for (key, _) in args {
        if NOT_RECORDED.contains(&key.as_str()) {
            out.ignored.push((key.clone(), "it says where results go, which is never taken from a PNG"));
        } else if !flags.iter().any(|f| f.id == key) {
            out.ignored.push((key.clone(), "no flag of this version has that name"));
        }
    }
    for flag in flags {
        let Some(value) = args.get(flag.id) else { continue };
        if NOT_RECORDED.contains(&flag.id) {
            continue;
        }
        let (key, long) = (flag.id, flag.long);
        let values = match (flag.kind, value) {
            (_, Value::Null) | (FlagKind::Switch, Value::Bool(false)) => continue,
            (FlagKind::Switch, Value::Bool(true)) => None,
            (FlagKind::Switch, v) => bail!("the recorded {key} {} is not true or false (--{long} is a switch)", shown(v)),
            (FlagKind::Value, v) => Some(vec![scalar(key, long, v)?]),
            (FlagKind::List, Value::Array(items)) if items.is_empty() => continue,
            (FlagKind::List, Value::Array(items)) => {
                let mut entries = Vec::with_capacity(items.len());
                for item in items {
                    let entry = match item {
                        Value::String(_) | Value::Number(_) => scalar(key, long, item)?,
                        _ => bail!("the recorded {key} {} holds {}, not a string or a number", shown(value), shown(item)),
                    };
                    ensure!(!entry.contains(','), "the recorded {key} entry {} holds a comma, which --{long} takes as a separator", shown(item));
                    entries.push(entry);
                }
                Some(entries)
            }
            (FlagKind::List, v) => {
                let entry = scalar(key, long, v)?;
                ensure!(!entry.contains(','), "the recorded {key} {} holds a comma, which --{long} takes as a separator", shown(v));
                Some(vec![entry])
            }
        };
        let token = match &values {
            None => format!("--{long}"),
            Some(v) => format!("--{long}={}", v.join(",")),
        };
        out.flags.push(RecordedFlag { id: key.to_string(), shown: shown(value), token, values });
    }
    Ok(out)
}

/// `settings_text`, `parse` and `flags` in one: the flags a PNG's bytes record, None when it
/// records no settings.
pub fn read<R: BufRead + Seek>(png: R, known: &[Flag]) -> Result<Option<(Value, Recorded)>> {
    let Some(text) = settings_text(png)? else { return Ok(None) };
    let settings = parse(&text)?;
    let recorded = flags(&settings, known)?;
    Ok(Some((settings, recorded)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FLAGS: [Flag; 3] = [
        Flag { id: "image_size", long: "image-size", kind: FlagKind::Value },
        Flag { id: "original_colors", long: "original-colors", kind: FlagKind::Switch },
        Flag { id: "style_image", long: "style-image", kind: FlagKind::List },
    ];

    fn tokens(args: Value) -> Result<Vec<String>> {
        Ok(flags(&json!({ "args": args }), &FLAGS)?.flags.into_iter().map(|f| f.token).collect())
    }

    #[test]
    fn values_become_single_tokens_and_kinds_are_checked() {
        assert_eq!(tokens(json!({"image_size": 64, "original_colors": true, "style_image": ["/a.png", "/b.png"]})).unwrap(), ["--image-size=64", "--original-colors", "--style-image=/a.png,/b.png"]);
        assert_eq!(tokens(json!({"image_size": "--model=/etc/passwd"})).unwrap(), ["--image-size=--model=/etc/passwd"]);
        assert_eq!(tokens(json!({"image_size": null, "original_colors": false, "style_image": []})).unwrap(), Vec::<String>::new());
        for (args, needle) in [
            (json!({"image_size": true}), "the recorded image_size true is not a value for --image-size"),
            (json!({"image_size": {"a": 1}}), "the recorded image_size {\"a\":1} is not a value"),
            (json!({"image_size": 1e300}), "the recorded image_size 1e+300 is out of range"),
            (json!({"original_colors": "yes"}), "the recorded original_colors \"yes\" is not true or false"),
            (json!({"style_image": ["/a.png", [1]]}), "holds [1], not a string"),
            (json!({"style_image": ["/a,b.png"]}), "holds a comma"),
        ] {
            let e = tokens(args).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn unknown_and_output_keys_are_listed_as_ignored() {
        let r = flags(&json!({"args": {"a": 1, "output_image": "x.png", "image_size": 8}}), &FLAGS).unwrap();
        let ignored: Vec<&str> = r.ignored.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ignored, ["a", "output_image"]);
        assert_eq!(r.flags.len(), 1);
    }
}
