//! `neural-style fetch-model`: download torchvision's VGG-19 into torch.hub's cache.

use crate::cli::FetchArgs;
use anyhow::Result;
use neural_style::model::source;
use std::io::IsTerminal;

pub fn fetch_model(a: FetchArgs) -> Result<()> {
    let url = a
        .url
        .or_else(|| std::env::var("NEURAL_STYLE_MODEL_URL").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| source::TORCHVISION_VGG19_URL.to_string());
    let dest = match a.dest {
        Some(d) => d,
        None => neural_style::fetch::default_dest(&url)?,
    };
    neural_style::fetch::fetch(&url, &dest, std::io::stderr().is_terminal())
}
