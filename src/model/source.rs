//! Where the weights come from: `--model PATH`, then `$NEURAL_STYLE_MODEL`, then torchvision's
//! cache file, then the embedded random VGG-19.

use super::Vgg;
use crate::preprocess::Convention;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// torchvision's VGG-19 weights (ImageNet), as `torchvision.models.vgg19(weights=...)` fetches them.
pub const TORCHVISION_VGG19_URL: &str = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth";
pub const TORCHVISION_VGG19_FILE: &str = "vgg19-dcbb9e9d.pth";

/// How the model was chosen, for the log line and the JSON summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Flag(PathBuf),
    Env(PathBuf),
    TorchCache(PathBuf),
    Embedded { seed: u64 },
}

impl ModelSource {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ModelSource::Flag(p) | ModelSource::Env(p) | ModelSource::TorchCache(p) => Some(p),
            ModelSource::Embedded { .. } => None,
        }
    }

    /// The input convention these weights expect. torchvision files and the embedded model use
    /// torchvision's; the Caffe conversions known by name (neural-style-pt's) use Caffe's.
    pub fn convention(&self) -> Convention {
        let name = self.path().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if CAFFE_FILES.iter().any(|c| name.contains(c)) {
            Convention::Caffe
        } else {
            Convention::Torchvision
        }
    }
}

/// Name fragments of Caffe-converted VGG files (neural-style-pt's `vgg19-d01eb7cb.pth`,
/// `vgg16-00b39a1b.pth`, and anything the user names "caffe").
const CAFFE_FILES: [&str; 3] = ["d01eb7cb", "00b39a1b", "caffe"];

/// `$TORCH_HOME`, or `~/.cache/torch` (`$XDG_CACHE_HOME/torch` when that is set), as torch.hub does.
pub fn torch_home() -> Option<PathBuf> {
    if let Some(t) = std::env::var_os("TORCH_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(t));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("torch"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache").join("torch"))
}

/// torch.hub's checkpoint folder.
pub fn torch_checkpoints_dir() -> Option<PathBuf> {
    torch_home().map(|t| t.join("hub").join("checkpoints"))
}

/// Picks the model source without reading it.
pub fn resolve(flag: Option<&Path>, seed: u64) -> ModelSource {
    if let Some(p) = flag {
        return ModelSource::Flag(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("NEURAL_STYLE_MODEL").filter(|v| !v.is_empty()) {
        return ModelSource::Env(PathBuf::from(p));
    }
    if let Some(p) = torch_checkpoints_dir().map(|d| d.join(TORCHVISION_VGG19_FILE)).filter(|p| p.is_file()) {
        return ModelSource::TorchCache(p);
    }
    ModelSource::Embedded { seed }
}

/// Loads the weights a source names.
pub fn load(source: &ModelSource) -> Result<Vgg> {
    match source {
        ModelSource::Embedded { seed } => Ok(super::random::random_vgg19(*seed)),
        ModelSource::Flag(p) | ModelSource::Env(p) | ModelSource::TorchCache(p) => {
            let via = match source {
                ModelSource::Env(_) => " (from $NEURAL_STYLE_MODEL)",
                _ => "",
            };
            if !p.exists() {
                bail!("model file {}{via} does not exist", p.display());
            }
            if !p.is_file() {
                bail!("model file {}{via} is not a file", p.display());
            }
            super::load_file(p)
        }
    }
}

/// The sha256 prefix torch.hub puts in file names (`vgg19-dcbb9e9d.pth` -> `dcbb9e9d`):
/// the hex run after the last '-' of the stem.
pub fn hash_prefix_of(file_name: &str) -> Option<&str> {
    let stem = file_name.split('.').next()?;
    let prefix = stem.rsplit_once('-')?.1;
    (prefix.len() >= 6 && prefix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_prefixes() {
        assert_eq!(hash_prefix_of("vgg19-dcbb9e9d.pth"), Some("dcbb9e9d"));
        assert_eq!(hash_prefix_of("vgg19.pth"), None);
        assert_eq!(hash_prefix_of("my-model.pth"), None);
        // Both conditions: six or more characters, all of them hex digits.
        assert_eq!(hash_prefix_of("vgg19-pretrained.pth"), None, "long enough, not hex");
        assert_eq!(hash_prefix_of("vgg19-beef.pth"), None, "hex, too short");
        assert_eq!(hash_prefix_of("my-vgg-0123ab.tar.gz"), Some("0123ab"), "after the last '-', before the first '.'");
    }

    #[test]
    fn conventions_by_name() {
        assert_eq!(ModelSource::Flag("x/vgg19-d01eb7cb.pth".into()).convention(), Convention::Caffe);
        assert_eq!(ModelSource::Flag("x/vgg19-dcbb9e9d.pth".into()).convention(), Convention::Torchvision);
        assert_eq!(ModelSource::Embedded { seed: 0 }.convention(), Convention::Torchvision);
    }
}
