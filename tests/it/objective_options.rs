//! `normalize_gradients` (jcjohnson's -normalize_gradients): the loss is unchanged and each
//! term's gradient is its plain gradient divided by the L1 norm of that term's gradient w.r.t.
//! its layer's features (a positive scalar per term), so with one term the image gradient is the
//! plain one times a single constant, and terms add.

use crate::common::nets::narrow_vgg;
use neural_style::network::Network;
use neural_style::PoolKind;
use neural_style::rng::Rng;
use neural_style::{CpuBackend, Image, Objective, ObjectiveSpec};

fn evaluate(spec: ObjectiveSpec, content: &Image, style: &Image, x: &[f32]) -> (f64, Vec<f32>) {
    let be = CpuBackend::new();
    let mut obj = Objective::new(&be, &narrow_vgg(), spec, content, &[(style.clone(), 1.0)]).unwrap();
    let mut g = vec![0.0; x.len()];
    let l = obj.evaluate(&x.to_vec(), &mut g).unwrap();
    (l.total, g)
}

#[test]
fn normalized_gradients_rescale_each_term_and_keep_the_loss() {
    let mut rng = Rng::new(9);
    let (h, w) = (20, 22);
    let img = |rng: &mut Rng| Image { h, w, data: rng.normal_vec(h * w * 3, 1.0) };
    let (content, style, x) = (img(&mut rng), img(&mut rng), img(&mut rng).data);
    let base = ObjectiveSpec { tv_weight: 0.0, ..Default::default() };
    let only_content = ObjectiveSpec { style_layers: vec![], style_weight: 0.0, content_weight: 3.0, ..base.clone() };
    let only_style = ObjectiveSpec { content_layers: vec![], content_weight: 0.0, style_layers: vec!["relu2_1".into()], ..base.clone() };
    let both = ObjectiveSpec { content_weight: 3.0, style_layers: vec!["relu2_1".into()], ..base.clone() };
    let normalized = |s: &ObjectiveSpec| ObjectiveSpec { normalize_gradients: true, ..s.clone() };

    let mut per_term = Vec::new();
    for spec in [&only_content, &only_style] {
        let (l_plain, g_plain) = evaluate(spec.clone(), &content, &style, &x);
        let (l_norm, g_norm) = evaluate(normalized(spec), &content, &style, &x);
        assert_eq!(l_plain, l_norm, "the loss does not change");
        // g_plain = c · g_norm for one constant c = ‖term gradient‖₁ (> 0), element by element.
        let (k, _) = g_norm.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        let c = g_plain[k] / g_norm[k];
        assert!(c > 0.0 && (c - 1.0).abs() > 1e-3, "the gradient was rescaled (c = {c})");
        let scale = g_plain.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in g_plain.iter().zip(&g_norm) {
            approx::assert_abs_diff_eq!(*a, c * b, epsilon = 1e-4 * scale);
        }
        if spec.content_weight > 0.0 {
            // The constant is the L1 norm of the unweighted term gradient at relu4_2,
            // 2 (F - P) / N, computed here from the layer's activations.
            let be = CpuBackend::new();
            let net = Network::new(&be, &narrow_vgg(), PoolKind::Max, &["relu4_2".to_string()]).unwrap();
            let at = |img: &[f32]| {
                let mut acts = net.alloc_activations(&be, h, w).unwrap();
                net.forward(&be, &img.to_vec(), h, w, &mut acts).unwrap();
                acts[net.index_of("relu4_2").unwrap()].clone()
            };
            let (f, p) = (at(&x), at(&content.data));
            let l1: f64 = f.iter().zip(&p).map(|(a, b)| 2.0 * (a - b).abs() as f64 / f.len() as f64).sum();
            approx::assert_relative_eq!(c as f64, l1, max_relative = 1e-3);
        }
        per_term.push(g_norm);
    }
    // Terms normalise separately, then add.
    let (_, g_both) = evaluate(normalized(&both), &content, &style, &x);
    let scale = g_both.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for ((a, b), c) in g_both.iter().zip(&per_term[0]).zip(&per_term[1]) {
        approx::assert_abs_diff_eq!(*a, b + c, epsilon = 1e-4 * scale);
    }
}
