//! `--preset`: bundles of settings written as the flags they stand for, so a preset is data and
//! every piece of it is an option of its own. Flags given on the command line win (see
//! `settings::resolve`).

use crate::cli::PresetArg;

/// A preset's flags, as (long flag, value); a value of "" is a switch.
pub fn flags(preset: PresetArg) -> &'static [(&'static str, &'static str)] {
    match preset {
        // jcjohnson/neural-style's neural_style.lua defaults.
        PresetArg::Jcjohnson => &[
            ("preprocess", "caffe"),
            ("content-weight", "5"),
            ("style-weight", "100"),
            ("tv-weight", "1e-3"),
            ("init", "random"),
            ("image-size", "512"),
            ("num-iterations", "1000"),
        ],
        // The Keras example neural_style_transfer.py (DESIGN.md states it exactly): content
        // block5_conv2 = relu5_2 as Σ (F - P)² x 0.025; style block1..5_conv1 with unnormalised
        // Grams over 4·3²·(rows·cols)², times 1.0 / 5 layers; TV^1.25 x 1; 400 rows, the style
        // resized to the content's size; content init; 10 rounds of L-BFGS (history 10, at most
        // 20 evaluations each, strong-Wolfe line search, as scipy's fmin_l_bfgs_b(maxfun=20)).
        PresetArg::KerasExample => &[
            ("preprocess", "caffe"),
            ("content-layers", "relu5_2"),
            ("style-layers", "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"),
            ("content-weight", "0.025"),
            ("content-reduction", "sum"),
            ("style-weight", "0.2"),
            ("gram-normalization", "keras-example"),
            ("tv-weight", "1"),
            ("tv-power", "1.25"),
            ("image-height", "400"),
            ("style-resize", "match-content"),
            ("init", "image"),
            ("optimizer", "lbfgs"),
            ("lbfgs-num-correction", "10"),
            ("lbfgs-line-search", "strong-wolfe"),
            ("lbfgs-round", "20"),
            ("num-iterations", "200"),
        ],
        // Gatys, Ecker and Bethge, "A Neural Algorithm of Artistic Style" / "Image Style Transfer
        // Using Convolutional Neural Networks": content ½Σ(F - P)² at conv4_2 (its ReLU here, as
        // jcjohnson), style Σ_l w_l E_l with E_l = Σ(G - A)² / (4 N_l² M_l²), unnormalised Grams,
        // w_l = 1/5 over relu1_1..relu5_1; α/β = 1e-3 (the paper's Figure 3 spans 1e-5 .. 1e-2);
        // no TV; average pooling; Caffe inputs. The paper starts from white noise (add --init
        // random); from the content image (the default) every grid column shows from the start.
        // L-BFGS with a line search, as the paper's (Caffe's scipy L-BFGS-B): with the fixed
        // step, the unnormalised Grams' scale made grid's relu1_1..relu3_1 row oscillate between
        // 1e14 and 2e16 with real VGG-16 weights at 256 px (noise, not a picture).
        PresetArg::Gatys2015 => &[
            ("preprocess", "caffe"),
            ("content-layers", "relu4_2"),
            ("style-layers", "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"),
            ("content-weight", "1"),
            ("content-reduction", "half-sum"),
            ("style-weight", "1000"),
            ("gram-normalization", "gatys2015"),
            ("tv-weight", "0"),
            ("pooling", "avg"),
            ("lbfgs-line-search", "strong-wolfe"),
        ],
    }
}
