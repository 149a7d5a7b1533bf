//! Reading VGG feature weights (`features.N.weight` (c_out, c_in, 3, 3), `features.N.bias`
//! (c_out)) from PyTorch `.pth` (zip or legacy serialisation) or `.safetensors` files. The format
//! is told by the first bytes, not the extension; other tensors (classifier.*) are never read.

use super::{pth, safetensors_file, Vgg};
use anyhow::{anyhow, bail, ensure, Result};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

/// A tensor read from a file, converted to f32, in its file's (row-major) layout.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Most elements the wanted tensors may hold together, checked before any of their bytes are read
/// (a zip entry inflates up to ~1000x, so a 1 MB file can claim a gigabyte): VGG-19's feature
/// convs hold 20M; 2^27 (512 MB as f32) is over 6x that and keeps a hostile file's load under 2 GB.
pub const MAX_ELEMENTS: usize = 1 << 27;

/// Refuses, before reading their bytes, wanted tensors that hold more than [`MAX_ELEMENTS`] in all.
pub fn check_sizes<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> Result<()> {
    let mut total = 0usize;
    for (name, shape) in tensors {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match n.and_then(|n| total.checked_add(n)) {
            Some(t) if t <= MAX_ELEMENTS => total = t,
            _ => bail!("{name} (shape {shape:?}) takes the feature tensors past {MAX_ELEMENTS} elements; VGG-19's hold 20M"),
        }
    }
    Ok(())
}

/// `features.N.weight` -> (N, true), `features.N.bias` -> (N, false).
pub fn feature_key(name: &str) -> Option<(usize, bool)> {
    let rest = name.strip_prefix("features.")?;
    let (n, kind) = rest.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let weight = match kind {
        "weight" => true,
        "bias" => false,
        _ => return None,
    };
    Some((n.parse().ok()?, weight))
}

/// The serialisation of a model file, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PyTorch's zip serialisation (torch >= 1.6).
    Zip,
    /// PyTorch's legacy serialisation (consecutive pickles, then raw storages).
    Legacy,
    Safetensors,
}

fn detect(head: &[u8]) -> Result<Format> {
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::Zip);
    }
    if head.len() >= 2 && head[0] == 0x80 && head[1] <= 5 {
        return Ok(Format::Legacy);
    }
    // A safetensors header length, then its JSON. (A length past the end is a truncated file,
    // which the reader reports as such.)
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if n <= safetensors_file::MAX_HEADER {
            return Ok(Format::Safetensors);
        }
    }
    ensure!(head.len() >= 9, "a {}-byte file is too short to be a model file", head.len());
    bail!("not a model file (expected a PyTorch .pth or a .safetensors file)")
}

/// One printable line of at most ~300 characters: messages may quote names read from a damaged
/// file (control characters, megabytes of garbage).
pub(crate) fn one_line(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let msg: String = format!("{e:#}").chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect();
    let short: String = msg.chars().take(300).collect();
    let ellipsis = if short.len() < msg.len() { "…" } else { "" };
    anyhow!("{}: {short}{ellipsis}", path.display())
}

/// Reads the feature tensors of any supported file.
pub fn read_features(path: &Path) -> Result<Vec<RawTensor>> {
    let read = || -> Result<Vec<RawTensor>> {
        let mut file = crate::image_io::open_regular(path)?;
        let mut head = Vec::with_capacity(9);
        (&mut file).take(9).read_to_end(&mut head)?;
        let format = detect(&head)?;
        file.rewind()?;
        read_format(file, format)
    };
    read().map_err(|e| one_line(path, e))
}

/// Reads the feature tensors of a file (or bytes: a `Cursor`) of the given format, from its
/// start, and refuses non-finite weights. Messages are not yet prefixed by a path.
pub fn read_format<R: Read + Seek>(file: R, format: Format) -> Result<Vec<RawTensor>> {
    let want = |k: &str| feature_key(k).is_some();
    let tensors = match format {
        Format::Zip => pth::load_zip(file, &want),
        Format::Legacy => pth::load_legacy(file, &want),
        Format::Safetensors => safetensors_file::load(file, &want),
    }?;
    for t in &tensors {
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            bail!("{} holds {} at element {i}; weights must be finite", t.name, t.data[i]);
        }
    }
    Ok(tensors)
}

/// Pairs weights with biases by N and builds the layer table.
pub fn vgg_from_tensors(tensors: Vec<RawTensor>, source: String) -> Result<Vgg> {
    // N -> (weight, bias), each (shape, values)
    type Slot = Option<(Vec<usize>, Vec<f32>)>;
    let mut by_index: BTreeMap<usize, (Slot, Slot)> = BTreeMap::new();
    for t in tensors {
        let (n, is_weight) = feature_key(&t.name).ok_or_else(|| anyhow!("unexpected tensor {}", t.name))?;
        let slot = by_index.entry(n).or_default();
        let target = if is_weight { &mut slot.0 } else { &mut slot.1 };
        ensure!(target.is_none(), "{} appears twice", t.name);
        *target = Some((t.shape, t.data));
    }
    ensure!(!by_index.is_empty(), "no features.N.weight tensors found: not a VGG feature stack");
    let mut entries = Vec::new();
    for (n, (w, b)) in by_index {
        let (shape, weight) = w.ok_or_else(|| anyhow!("features.{n}.bias has no features.{n}.weight"))?;
        let (bshape, bias) = b.ok_or_else(|| anyhow!("features.{n}.weight has no features.{n}.bias"))?;
        ensure!(bshape.len() == 1, "features.{n}.bias has shape {bshape:?}; expected (c_out)");
        entries.push((n, shape, weight, bias));
    }
    Vgg::from_features(entries, source)
}

/// Loads `.pth` (zip or legacy serialisation) or `.safetensors` VGG feature weights.
pub fn load_file(path: &Path) -> Result<Vgg> {
    let tensors = read_features(path)?;
    let source = path.display().to_string();
    vgg_from_tensors(tensors, source).map_err(|e| one_line(path, e.context("wrong layout")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_keys() {
        assert_eq!(feature_key("features.0.weight"), Some((0, true)));
        assert_eq!(feature_key("features.28.bias"), Some((28, false)));
        for k in ["classifier.0.weight", "features.x.weight", "features.0.running_mean", "features..bias", "module.features.0.weight"] {
            assert_eq!(feature_key(k), None, "{k}");
        }
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"PK\x03\x04abcde").unwrap(), Format::Zip);
        assert_eq!(detect(b"\x80\x02\x8a\x0a").unwrap(), Format::Legacy);
        assert_eq!(detect(b"\x10\0\0\0\0\0\0\0{").unwrap(), Format::Safetensors);
        assert!(detect(b"\x10\0\0\0\0\0\xff\0{").is_err());
        assert!(detect(b"GIF89a...").unwrap_err().to_string().contains("not a model file"));
        assert!(detect(b"").unwrap_err().to_string().contains("too short"));
    }

    #[test]
    fn missing_file() {
        let e = load_file(Path::new("/nonexistent/vgg.pth")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vgg.pth: cannot open"), "{e}");
    }

    #[test]
    fn unpaired_and_unchained_tensors() {
        let t = |name: &str, shape: Vec<usize>| RawTensor { name: name.into(), data: vec![0.0; shape.iter().product()], shape };
        let e = vgg_from_tensors(vec![t("features.0.weight", vec![4, 3, 3, 3])], "x".into()).unwrap_err().to_string();
        assert!(e.contains("no features.0.bias"), "{e}");
        let e = vgg_from_tensors(
            vec![t("features.0.weight", vec![4, 3, 3, 3]), t("features.0.bias", vec![4]), t("features.2.weight", vec![4, 5, 3, 3]), t("features.2.bias", vec![4])],
            "x".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("takes 5 channels"), "{e}");
        assert!(vgg_from_tensors(vec![], "x".into()).unwrap_err().to_string().contains("no features.N.weight"));
    }
}
