//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with `cargo +nightly fuzz`),
//! here so that `tests/fuzz_corpus.rs` can replay the committed corpus on stable Rust.
//!
//! Each takes the bytes of a file, goes through the same reader and checks as loading it from
//! disk would, and returns its result: `Err` for bad input is expected; a panic, an abort, a
//! timeout or more than 2 GB of memory is a finding. A success is checked for the invariants the
//! rest of the program relies on (and panics if one does not hold).

use crate::model::file::{one_line, read_format, vgg_from_tensors, Format};
use crate::model::{Layer, Vgg, MAX_CHANNELS};
use anyhow::Result;
use std::io::Cursor;
use std::path::Path;

/// The name errors are reported under, as a path would be.
const NAME: &str = "fuzz-input";

fn model(data: &[u8], format: Format) -> Result<Vgg> {
    let path = Path::new(NAME);
    let tensors = read_format(Cursor::new(data), format).map_err(|e| one_line(path, e))?;
    let vgg = vgg_from_tensors(tensors, NAME.into()).map_err(|e| one_line(path, e.context("wrong layout")))?;
    check_vgg(&vgg);
    Ok(vgg)
}

/// What `Vgg::from_features` promises the network code.
fn check_vgg(vgg: &Vgg) {
    let mut c = 3;
    let mut convs = 0;
    for l in &vgg.layers {
        if let Layer::Conv(l) = l {
            assert_eq!(l.c_in, c, "{}: channels do not chain", l.name);
            assert!((1..=MAX_CHANNELS).contains(&l.c_out), "{}: {} output channels", l.name, l.c_out);
            assert_eq!(l.weight.len(), l.c_out * l.c_in * 9, "{}: weight length", l.name);
            assert_eq!(l.bias.len(), l.c_out, "{}: bias length", l.name);
            assert!(l.weight.iter().chain(&l.bias).all(|v| v.is_finite()), "{}: non-finite weight", l.name);
            c = l.c_out;
            convs += 1;
        }
    }
    assert!(convs > 0, "a network without convs");
}

/// A PyTorch zip `.pth` (`model::pth::load_zip`), then the layer table.
pub fn model_pth_zip(data: &[u8]) -> Result<Vgg> {
    model(data, Format::Zip)
}

/// A legacy PyTorch `.pth` (`model::pth::load_legacy`), then the layer table.
pub fn model_pth_legacy(data: &[u8]) -> Result<Vgg> {
    model(data, Format::Legacy)
}

/// A `.safetensors` file (`model::safetensors_file::load`), then the layer table.
pub fn model_safetensors(data: &[u8]) -> Result<Vgg> {
    model(data, Format::Safetensors)
}

/// An image file, as `--content-image` reads one for `--image-size 512` (`image_io::decode`
/// keeping at least twice 512 pixels per side, so that large PNGs take the reduced-read path).
/// The first finding, a 126-byte PNG declaring 12 x 2147483657 pixels that made the old
/// `image_io::load` abort allocating 77 GB, is refused by `decode`'s limits (issue 9 item 2)
/// and kept in the corpus (fuzz/corpus/image/crash-947d77276bcdc07b90e0d68004e61033cc18bdba).
pub fn image(data: &[u8]) -> Result<crate::image_io::Rgb8> {
    let (img, (sw, sh)) = crate::image_io::decode(data, NAME, |(w, h)| crate::image_io::fit_size(w, h, 512))?;
    assert!(img.w > 0 && img.h > 0, "an empty image");
    assert!(sw > 0 && sh > 0, "an empty source size");
    assert!(img.w <= sw && img.h <= sh, "{}x{} decoded from a {sw}x{sh} source", img.w, img.h);
    assert_eq!(img.data.len(), img.w * img.h * 3, "buffer length");
    Ok(img)
}
