//! The Keras example's objective (`--preset keras-example`: sum content loss, unnormalised Grams
//! over 4·3²·(H·W)², powered TV) against a PyTorch re-implementation of the example's formulas
//! (tests/fixtures/make_keras_fixture.py, float64) on a narrow network that reaches relu5_2:
//! each loss term and the image gradient, on the CPU backend.

use neural_style::model::file::load_file;
use neural_style::{CpuBackend, GramNormalization, Image, Objective, ObjectiveSpec, PoolKind, Reduction};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_golden.safetensors")
}

fn array(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f64>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect();
    (t.shape().to_vec(), data)
}

fn keras_spec() -> ObjectiveSpec {
    ObjectiveSpec {
        content_layers: vec!["relu5_2".into()],
        style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(String::from).to_vec(),
        content_weight: 0.025,
        style_weight: 1.0 / 5.0,
        tv_weight: 1.0,
        pooling: PoolKind::Max,
        content_reduction: Reduction::Sum,
        gram_normalization: GramNormalization::KerasExample,
        tv_power: Some(1.25),
        normalize_gradients: false,
    }
}

#[test]
fn keras_example_objective_matches_pytorch() {
    let bytes = std::fs::read(fixture()).unwrap();
    let vgg = load_file(&fixture()).unwrap();
    let image = |name: &str| {
        let (shape, data) = array(&bytes, name);
        Image { h: shape[0], w: shape[1], data: data.into_iter().map(|v| v as f32).collect() }
    };
    let (content, style, x) = (image("golden.content"), image("golden.style"), image("golden.x"));
    let be = CpuBackend::new();
    let mut obj = Objective::new(&be, &vgg, keras_spec(), &content, &[(style, 1.0)]).unwrap();
    let mut grad = vec![0.0f32; x.data.len()];
    let parts = obj.evaluate(&x.data, &mut grad).unwrap();
    let (_, want) = array(&bytes, "golden.loss");
    for (name, got, want) in [("total", parts.total, want[0]), ("content", parts.content, want[1]), ("style", parts.style, want[2]), ("tv", parts.tv, want[3])] {
        let e = (got - want).abs() / want.abs();
        println!("{name}: {got} vs PyTorch {want} (relative {e:.1e})");
        assert!(e < 2e-5, "{name}: {got} vs PyTorch {want} (relative {e:e})");
    }
    let check = |what: &str, got: &[f32], tensor: &str| {
        let (_, want) = array(&bytes, tensor);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale;
        println!("{what} gradient: max |ours - PyTorch| / max |PyTorch| = {worst:.1e}");
        assert!(worst < 1e-4, "{what} gradient: relative error {worst:e}");
    };
    check("total", &grad, "golden.grad");
    // Each term alone (the TV gradient is much the largest in the total's).
    for (what, weights) in [("content", (0.025, 0.0, 0.0)), ("style", (0.0, 0.2, 0.0)), ("tv", (0.0, 0.0, 1.0))] {
        obj.set_weights(weights.0, weights.1, weights.2);
        let mut g = vec![0.0f32; x.data.len()];
        obj.evaluate(&x.data, &mut g).unwrap();
        check(what, &g, &format!("golden.grad_{what}"));
    }
}
