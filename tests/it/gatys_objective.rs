//! The paper's objective (`--preset gatys2015`: ½Σ content, unnormalised Grams over 4N_l²M_l²
//! with w_l = 1/L, average pooling) against a PyTorch re-implementation of Gatys, Ecker and
//! Bethge's formulas (tests/fixtures/make_gatys_fixture.py, float64) on a narrow network: each
//! term, the image gradient, the 1/L weighting with fewer layers in use (as `grid`'s rows), and
//! a style image of another size.

use neural_style::model::file::load_file;
use neural_style::{CpuBackend, GramNormalization, Image, Objective, ObjectiveSpec, PoolKind, Reduction};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gatys_golden.safetensors")
}

fn array(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f64>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect();
    (t.shape().to_vec(), data)
}

const STYLE: [&str; 5] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];

fn paper_spec() -> ObjectiveSpec {
    ObjectiveSpec {
        content_layers: vec!["relu4_2".into()],
        style_layers: STYLE.map(String::from).to_vec(),
        content_weight: 1.0,
        style_weight: 1e3,
        tv_weight: 0.0,
        pooling: PoolKind::Avg,
        content_reduction: Reduction::HalfSum,
        gram_normalization: GramNormalization::Gatys2015,
        tv_power: None,
        normalize_gradients: false,
    }
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    let e = (got - want).abs() / want.abs();
    println!("{what}: {got} vs PyTorch {want} (relative {e:.1e})");
    assert!(e < tol, "{what}: {got} vs PyTorch {want} (relative {e:e})");
}

#[test]
fn the_papers_objective_matches_pytorch() {
    let bytes = std::fs::read(fixture()).unwrap();
    let vgg = load_file(&fixture()).unwrap();
    let image = |name: &str| {
        let (shape, data) = array(&bytes, name);
        Image { h: shape[0], w: shape[1], data: data.into_iter().map(|v| v as f32).collect() }
    };
    let (content, style, x) = (image("golden.content"), image("golden.style"), image("golden.x"));
    let be = CpuBackend::new();
    let mut obj = Objective::new(&be, &vgg, paper_spec(), &content, &[(style, 1.0)]).unwrap();
    let mut grad = vec![0.0f32; x.data.len()];
    let parts = obj.evaluate(&x.data, &mut grad).unwrap();
    let (_, want) = array(&bytes, "golden.loss");
    for (name, got, want) in [("total", parts.total, want[0]), ("content", parts.content, want[1]), ("style", parts.style, want[2])] {
        assert_close(name, got, want, 2e-5);
    }
    assert_eq!(parts.tv, 0.0);
    let check = |what: &str, got: &[f32], tensor: &str| {
        let (_, want) = array(&bytes, tensor);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale;
        println!("{what} gradient: max |ours - PyTorch| / max |PyTorch| = {worst:.1e}");
        assert!(worst < 1e-4, "{what} gradient: relative error {worst:e}");
    };
    check("total", &grad, "golden.grad");
    obj.set_weights(1.0, 0.0, 0.0);
    let mut g = vec![0.0f32; x.data.len()];
    obj.evaluate(&x.data, &mut g).unwrap();
    check("content", &g, "golden.grad_content");

    // Two style layers in use: each weighs 1/2 (grid's rows use prefixes of the layers).
    obj.set_weights(1.0, 1e3, 0.0);
    obj.set_style_layers(&STYLE[..2].iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let first2 = obj.evaluate(&x.data, &mut g).unwrap().style;
    assert_close("style with relu1_1, relu2_1", first2, array(&bytes, "golden.loss_first2").1[0], 2e-5);

    // A style image of another size: its Grams count per position.
    let small = image("golden.style_small");
    let content = image("golden.content");
    let mut obj = Objective::new(&be, &vgg, paper_spec(), &content, &[(small, 1.0)]).unwrap();
    let style = obj.evaluate(&x.data, &mut g).unwrap().style;
    assert_close("style against a 36x32 style image", style, array(&bytes, "golden.loss_small").1[0], 2e-5);
}
