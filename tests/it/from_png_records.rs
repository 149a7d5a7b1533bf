//! `--from-png` with crafted PNGs (issue 19, items 5, 6 and 13): settings chunks that inflate to
//! a gigabyte, records with values of the wrong kind, values that look like flags, unknown keys
//! and absurd numbers. Each is refused before any work with one `error:` line naming the PNG and
//! the record's key (an unknown key: a warning naming it, and the run goes on), never a panic,
//! an abort or gigabytes of memory.

use crate::common;

use common::png_chunks::{png_with_chunks, zlib_bomb, zlib_stored};
use common::stderr;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const KEY: &str = "neural-style:settings";

struct Env {
    dir: tempfile::TempDir,
}

/// How a text chunk is written.
#[derive(Clone, Copy)]
enum Chunk {
    /// tEXt
    Plain,
    /// zTXt
    Compressed,
    /// iTXt, uncompressed
    Utf8,
    /// iTXt, compressed
    Utf8Compressed,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().unwrap() };
        for (name, w, h) in [("content.png", 32, 24), ("style.png", 20, 28)] {
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * y) % 251) as u8])).save(env.path(name)).unwrap();
        }
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A record a real run of the tiny job would write (paths absolute), with `args` merged in
    /// (a null removes a key).
    fn record(&self, args: Value) -> Value {
        let mut base = json!({
            "content_image": self.path("content.png").canonicalize().unwrap().display().to_string(),
            "style_image": [self.path("style.png").canonicalize().unwrap().display().to_string()],
            "image_size": 32, "num_iterations": 2, "device": "cpu", "seed": 0,
            "content_layers": ["relu2_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"],
            "original_colors": false, "style_blend_weights": null,
        });
        for (k, v) in args.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        json!({"program": "neural-style", "version": env!("CARGO_PKG_VERSION"), "model": "embedded", "model_sha256": null, "args": base})
    }

    /// A 4x4 PNG named `name` carrying `chunks` (keyword, raw chunk body) before its image data.
    fn png_with_raw_chunks(&self, name: &str, chunks: &[(&[u8; 4], Vec<u8>)]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, png_with_chunks(4, 4, chunks)).unwrap();
        path
    }

    /// A PNG whose settings chunk (of kind `chunk`) holds `text`.
    fn png_with_text(&self, name: &str, chunk: Chunk, text: &str) -> PathBuf {
        let body = match chunk {
            Chunk::Plain => [KEY.as_bytes(), b"\0", text.as_bytes()].concat(),
            Chunk::Compressed => [KEY.as_bytes(), b"\0\0", &zlib_stored(text.as_bytes())].concat(),
            Chunk::Utf8 => [KEY.as_bytes(), b"\0\0\0\0\0", text.as_bytes()].concat(),
            Chunk::Utf8Compressed => [KEY.as_bytes(), b"\0\x01\0\0\0", &zlib_stored(text.as_bytes())].concat(),
        };
        let kind = match chunk {
            Chunk::Plain => b"tEXt",
            Chunk::Compressed => b"zTXt",
            _ => b"iTXt",
        };
        self.png_with_raw_chunks(name, &[(kind, body)])
    }

    /// A PNG recording `record` as the program writes it (uncompressed iTXt).
    fn png_with_record(&self, name: &str, record: &Value) -> PathBuf {
        self.png_with_text(name, Chunk::Utf8, &record.to_string())
    }

    /// `neural-style --from-png PNG --output-image out.png --save-iter 0 EXTRA`, in a shell with
    /// `ulimit -v` at `limit_kb` (so that a gigabyte allocation fails instead of swapping the
    /// machine), killed after 120 s.
    fn from_png(&self, png: &Path, extra: &[&str], limit_kb: Option<u64>) -> Output {
        let mut c = common::command_in(self.dir.path(), limit_kb);
        c.args(["--from-png", png.to_str().unwrap(), "--output-image", "out.png", "--save-iter", "0"]).args(extra);
        common::output_within(c, Duration::from_secs(120))
    }
}

/// One `error:` line naming the PNG, `--from-png` and each of `needles`; a non-zero exit that is
/// not a signal or an abort; no panic; no output written.
fn check_refused(env: &Env, o: &Output, png: &Path, needles: &[&str]) -> Result<(), String> {
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    let name = png.file_name().unwrap().to_str().unwrap();
    let ok = o.status.code().is_some_and(|c| c == 1)
        && !err.contains("panicked")
        && !err.contains("stylising")
        && errors.len() == 1
        && errors[0].contains(name)
        && errors[0].contains("--from-png")
        && needles.iter().all(|n| errors[0].contains(n))
        && !env.path("out.png").exists();
    if ok {
        Ok(())
    } else {
        Err(format!("{name}: status {:?}, wanted one error naming it and {needles:?}; stderr:\n{}", o.status, err.trim_end()))
    }
}

/// 1 GiB of spaces, inflated.
const GIB_COPIES: usize = (1 << 30) / 258;

#[test]
fn a_settings_chunk_that_inflates_to_a_gigabyte_is_refused_within_a_small_memory() {
    let env = Env::new();
    let bomb = zlib_bomb(GIB_COPIES);
    assert!(bomb.len() < 7 << 20, "{} bytes", bomb.len());
    let mut wrong = Vec::new();
    for (name, kind, head) in [("ztxt.png", b"zTXt", &b"\0\0"[..]), ("itxt.png", b"iTXt", &b"\0\x01\0\0\0"[..])] {
        let png = env.png_with_raw_chunks(name, &[(kind, [KEY.as_bytes(), head, &bomb].concat())]);
        // 400 MB of address space: the old reader, inflating the whole gigabyte, aborted.
        let o = env.from_png(&png, &[], Some(400_000));
        wrong.extend(check_refused(&env, &o, &png, &["the settings chunk holds more than 1 MiB once inflated"]).err());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn other_text_chunks_are_never_inflated() {
    let env = Env::new();
    // A gigabyte comment beside a record with an error: the error, from a small memory (the old
    // reader inflated every text chunk, whatever its keyword, and aborted here).
    let comment = [&b"Comment\0\0"[..], &zlib_bomb(GIB_COPIES)].concat();
    let record = env.record(json!({"image_size": "big"}));
    let settings = [KEY.as_bytes(), b"\0\0\0\0\0", record.to_string().as_bytes()].concat();
    let png = env.png_with_raw_chunks("comment.png", &[(b"zTXt", comment.clone()), (b"iTXt", settings)]);
    let o = env.from_png(&png, &[], Some(400_000));
    check_refused(&env, &o, &png, &["the recorded image_size \"big\" is not accepted by --image-size"]).unwrap();
    // The same comment in a content image: loading an image inflates no text chunk either.
    let content = env.png_with_raw_chunks("content_bomb.png", &[(b"zTXt", comment)]);
    let record = env.record(json!({"content_image": content.canonicalize().unwrap().display().to_string()}));
    let png = env.png_with_record("with_bomb_content.png", &record);
    let o = env.from_png(&png, &[], Some(1_500_000));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn values_of_the_wrong_kind_are_refused_naming_the_png_and_the_key() {
    let env = Env::new();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"content_image": true}), vec!["the recorded content_image true is not a value for --content-image"]),
        (json!({"image_size": {"a": 1}}), vec!["the recorded image_size {\"a\":1} is not a value for --image-size"]),
        (json!({"image_size": 1e300}), vec!["the recorded image_size 1e+300 is out of range for --image-size"]),
        (json!({"image_size": 12.5}), vec!["the recorded image_size 12.5 is not accepted by --image-size"]),
        (json!({"image_size": [32]}), vec!["the recorded image_size [32] is not a value for --image-size"]),
        (json!({"style_weight": "heavy"}), vec!["the recorded style_weight \"heavy\" is not accepted by --style-weight"]),
        (json!({"style_weight": 1e39}), vec!["the recorded style_weight 1e+39 is out of range for --style-weight"]),
        (json!({"optimizer": "sgd"}), vec!["the recorded optimizer \"sgd\" is not accepted by --optimizer"]),
        (json!({"original_colors": "yes"}), vec!["the recorded original_colors \"yes\" is not true or false (--original-colors is a switch)"]),
        (json!({"original_colors": 1}), vec!["the recorded original_colors 1 is not true or false"]),
        (json!({"style_image": [1, [2]]}), vec!["the recorded style_image [1,[2]] holds [2], not a string or a number"]),
        (json!({"style_image": ["/a,b.png"]}), vec!["the recorded style_image entry \"/a,b.png\" holds a comma"]),
        (json!({"style_image": [""]}), vec!["the recorded style_image [\"\"] is not accepted by --style-image"]),
        (json!({"content_layers": {"relu2_2": true}}), vec!["the recorded content_layers {\"relu2_2\":true} is not a value for --content-layers"]),
        (json!({"num_iterations": 1e15}), vec!["the recorded num_iterations 1000000000000000.0 is not accepted by --num-iterations"]),
        (json!({"seed": -1}), vec!["the recorded seed -1 is out of range: --seed must be 0 or more"]),
        (json!({"image_size": 0}), vec!["the recorded image_size 0 is out of range: --image-size must be at least 1"]),
        (json!({"style_weight": -5}), vec!["the recorded style_weight -5 is out of range: --style-weight must be a finite number"]),
        (json!({"seed": "18446744073709551616"}), vec!["the recorded seed \"18446744073709551616\" is not accepted by --seed"]),
        // Values that look like flags are values: a file of that name, which does not exist.
        (json!({"model": "--model=/etc/passwd"}), vec!["the recorded model \"--model=/etc/passwd\" names no file"]),
        (json!({"content_image": "--model=/etc/passwd"}), vec!["the recorded content_image \"--model=/etc/passwd\" names no file"]),
        (json!({"init_image": "--help"}), vec!["the recorded init_image \"--help\" names no file"]),
        (json!({"style_image": ["/nonexistent/style.png"]}), vec!["the recorded style_image \"/nonexistent/style.png\" names no file"]),
    ];
    let mut wrong = Vec::new();
    for (k, (args, needles)) in cases.into_iter().enumerate() {
        let png = env.png_with_record(&format!("case{k}.png"), &env.record(args.clone()));
        let o = env.from_png(&png, &[], None);
        if let Err(e) = check_refused(&env, &o, &png, &needles) {
            wrong.push(format!("{args}: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// An absurd iteration count from a record gets the flag's range error with the PNG and the key,
/// never an allocation abort (the old program aborted: "memory allocation of ... bytes failed").
#[test]
fn a_recorded_iteration_count_of_1e15_is_refused_naming_the_png_and_the_key() {
    let env = Env::new();
    let png = env.png_with_record("iterations.png", &env.record(json!({"num_iterations": 1_000_000_000_000_000u64})));
    let o = env.from_png(&png, &[], None);
    check_refused(&env, &o, &png, &["the recorded num_iterations 1000000000000000 is out of range: --num-iterations must be at most 1000000000"]).unwrap();
}

/// Records that are no settings: not JSON, no `args`, not an object.
#[test]
fn a_record_that_is_not_a_settings_object_is_refused() {
    let env = Env::new();
    let mut wrong = Vec::new();
    for (k, (text, needle)) in [
        ("{\"args\": ", "the recorded settings are not valid JSON"),
        ("[1, 2]", "the recorded settings are not a JSON object"),
        ("{\"args\": [\"--model=/etc/passwd\"]}", "the recorded settings have no \"args\" object"),
        ("{\"a\": 1}", "the recorded settings have no \"args\" object"),
        (&"[".repeat(100_000), "the recorded settings are not valid JSON"),
    ]
    .into_iter()
    .enumerate()
    {
        let png = env.png_with_text(&format!("text{k}.png"), Chunk::Utf8, text);
        wrong.extend(check_refused(&env, &env.from_png(&png, &[], None), &png, &[needle]).err());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// A key that is no flag (or one never taken from a PNG) is ignored with a warning naming it
/// and the PNG; the run goes on. The record is read from any kind of text chunk.
#[test]
fn unknown_keys_are_ignored_with_a_warning_and_every_text_chunk_kind_is_read() {
    let env = Env::new();
    let record = env.record(json!({"a": 1, "output_image": "/etc/passwd"}));
    for (k, chunk) in [Chunk::Utf8, Chunk::Utf8Compressed, Chunk::Compressed, Chunk::Plain].into_iter().enumerate() {
        let png = env.png_with_text(&format!("kind{k}.png"), chunk, &record.to_string());
        let _ = std::fs::remove_file(env.path("out.png"));
        let o = env.from_png(&png, &[], None);
        let err = stderr(&o);
        assert!(o.status.success(), "kind {k}: {err}");
        let name = png.display().to_string();
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
        assert!(
            warnings.iter().any(|w| w.contains(&name) && w.contains("--from-png") && w.contains("ignored the recorded \"a\"")),
            "kind {k}: no warning naming \"a\": {err}"
        );
        assert!(warnings.iter().any(|w| w.contains("ignored the recorded \"output_image\"")), "kind {k}: {err}");
        assert!(err.contains("after 2 evaluations") && env.path("out.png").exists(), "kind {k}: {err}");
    }
    // An explicit flag wins over a bad recorded value, which is then not even looked at.
    let png = env.png_with_record("explicit.png", &env.record(json!({"model": "--model=/etc/passwd"})));
    let o = env.from_png(&png, &["--model", env.path("missing.pth").to_str().unwrap()], None);
    let err = stderr(&o);
    assert!(!err.contains("--model=/etc/passwd") && err.contains("missing.pth"), "{err}");
}
