//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with `cargo +nightly fuzz`),
//! here so that `tests/it/fuzz_corpus.rs` can replay the committed corpus on stable Rust.
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

/// A `--resume` state file (`resume::from_bytes`, which checks everything the file alone tells),
/// then `RunState::validate` against its own header under each optimiser's settings (as
/// `--resume` checks it against the run's; refusals are expected, a panic is a finding). A state
/// that loads must hold what the optimisers rely on, and write back to the same state.
pub fn resume_state(data: &[u8]) -> Result<(crate::resume::Header, crate::resume::RunState)> {
    use crate::optim::lbfgs::LineSearch;
    use crate::resume::{self, OptimizerState};
    use crate::stylize::Optimizer;
    let (header, state) = resume::from_bytes(data)?;
    for optimizer in [
        Optimizer::Lbfgs { history: 5, line_search: LineSearch::None, round: 0 },
        Optimizer::Lbfgs { history: 100, line_search: LineSearch::StrongWolfe, round: 7 },
        Optimizer::Adam { learning_rate: 10.0 },
    ] {
        let _ = state.validate(&header, Some(&optimizer));
    }
    for bounds in [None, Some(crate::preprocess::Convention::Caffe.pixel_box())] {
        let _ = state.validate_bounds(bounds.as_ref());
    }
    let n = header.width * header.height * 3;
    assert_eq!(state.x.len(), n, "x's length");
    assert!(state.history.len() < header.iterations, "a state of a finished run");
    assert!(state.x.iter().all(|v| v.is_finite()), "a non-finite x");
    assert!(state.history.iter().all(|(l, t)| l.total.is_finite() && *t <= state.elapsed), "history");
    match &state.optimizer {
        OptimizerState::Lbfgs { round_start, within } => {
            let made = round_start + within.as_ref().map_or(0, |r| r.minimized.evaluations);
            assert_eq!(made, state.history.len(), "L-BFGS counters");
            if let Some(r) = within {
                assert!(r.optimizer.h_diag > 0.0 && r.optimizer.h_diag.is_finite(), "h_diag");
                assert!(r.optimizer.pairs.iter().all(|(y, s, rho)| y.len() == n && s.len() == n && *rho > 0.0), "pairs");
            }
        }
        OptimizerState::Adam(a) => {
            assert_eq!(a.t as usize, state.history.len(), "Adam's t");
            assert!(a.v.iter().all(|v| *v >= 0.0), "Adam's v");
        }
    }
    let (h2, s2) = resume::from_bytes(&resume::to_bytes(&header, &state)?).expect("a loaded state writes back to a loadable file");
    // The same state, times to within their f64 seconds' rounding (nanoseconds past 2^53 ns).
    let close = |a: std::time::Duration, b: std::time::Duration| a.abs_diff(b).as_secs_f64() <= 1e-6;
    assert!(h2 == header && s2.x == state.x && s2.optimizer == state.optimizer, "a loaded state writes back to the same state");
    assert!(close(s2.elapsed, state.elapsed), "elapsed changed on the way back");
    assert!(s2.history.len() == state.history.len() && s2.history.iter().zip(&state.history).all(|(a, b)| a.0 == b.0 && close(a.1, b.1)), "history changed on the way back");
    Ok((header, state))
}

/// The main command's flags of each kind, as the PNG settings reader sees them (a sample:
/// `src/cmd/settings.rs`' tests check that each is the binary's flag of that kind).
pub const SETTINGS_FLAGS: [crate::settings_record::Flag<'static>; 9] = {
    use crate::settings_record::{Flag, FlagKind};
    [
        Flag { id: "content_image", long: "content-image", kind: FlagKind::Value },
        Flag { id: "style_image", long: "style-image", kind: FlagKind::List },
        Flag { id: "style_blend_weights", long: "style-blend-weights", kind: FlagKind::List },
        Flag { id: "image_size", long: "image-size", kind: FlagKind::Value },
        Flag { id: "num_iterations", long: "num-iterations", kind: FlagKind::Value },
        Flag { id: "style_weight", long: "style-weight", kind: FlagKind::Value },
        Flag { id: "optimizer", long: "optimizer", kind: FlagKind::Value },
        Flag { id: "original_colors", long: "original-colors", kind: FlagKind::Switch },
        Flag { id: "output_image", long: "output-image", kind: FlagKind::Value },
    ]
};

/// A PNG given to `--from-png`: its settings record found (only that text chunk inflated, at
/// most `settings_record::MAX_RECORD_BYTES`), parsed and turned into flags
/// (`settings_record::read`, with `SETTINGS_FLAGS`). Ok(None): no record.
pub fn png_settings(data: &[u8]) -> Result<Option<crate::settings_record::Recorded>> {
    use crate::settings_record::{self, FlagKind, NOT_RECORDED};
    let Some((_, recorded)) = settings_record::read(Cursor::new(data), &SETTINGS_FLAGS)? else { return Ok(None) };
    for f in &recorded.flags {
        let flag = SETTINGS_FLAGS.iter().find(|k| k.id == f.id).expect("a flag of the table");
        assert!(!NOT_RECORDED.contains(&flag.id), "{}: an output flag taken from a PNG", f.id);
        let head = format!("--{}", flag.long);
        match (flag.kind, &f.values) {
            (FlagKind::Switch, None) => assert_eq!(f.token, head),
            (FlagKind::Value, Some(v)) => {
                assert_eq!(v.len(), 1, "{}: one value", f.id);
                assert_eq!(f.token, format!("{head}={}", v[0]), "{}: one token", f.id);
            }
            (FlagKind::List, Some(v)) => {
                assert!(!v.is_empty() && v.iter().all(|e| !e.contains(',')), "{}: list entries", f.id);
                assert_eq!(f.token, format!("{head}={}", v.join(",")), "{}: one token", f.id);
            }
            (kind, values) => panic!("{}: a {kind:?} flag with values {values:?}", f.id),
        }
    }
    Ok(Some(recorded))
}
