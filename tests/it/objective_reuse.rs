//! An objective built once and then re-weighted, re-targeted or narrowed to fewer style layers
//! (what sheets, grids and batches do) evaluates exactly as one built from scratch that way.

use crate::common::nets::{narrow_vgg, normal_image as image};
use neural_style::rng::Rng;
use neural_style::{CpuBackend, Objective, ObjectiveSpec, PoolKind};

fn spec(style_layers: &[&str], (c, s, t): (f32, f32, f32)) -> ObjectiveSpec {
    ObjectiveSpec {
        content_layers: vec!["relu4_2".into()],
        style_layers: style_layers.iter().map(|s| s.to_string()).collect(),
        content_weight: c,
        style_weight: s,
        tv_weight: t,
        pooling: PoolKind::Max,
        ..Default::default()
    }
}

/// Loss and gradient bits of one evaluation at x.
fn eval(obj: &mut Objective<CpuBackend>, x: &[f32]) -> (u64, Vec<u32>) {
    let mut g = vec![0.0; x.len()];
    let l = obj.evaluate(&x.to_vec(), &mut g).unwrap();
    (l.total.to_bits(), g.iter().map(|v| v.to_bits()).collect())
}

#[test]
fn reused_objective_matches_a_fresh_one() {
    let be = CpuBackend::new();
    let vgg = narrow_vgg();
    let mut rng = Rng::new(5);
    let (h, w) = (20, 18);
    let (content, content2, style) = (image(&mut rng, h, w), image(&mut rng, h, w), image(&mut rng, 17, 21));
    let x = image(&mut rng, h, w).data;
    let all = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];
    let styles = [(style, 1.0)];
    let mut reused = Objective::new(&be, &vgg, spec(&all, (1.0, 1e3, 1e-3)), &content, &styles).unwrap();

    reused.set_weights(2.0, 50.0, 0.5);
    reused.set_style_layers(&["relu1_1".into(), "relu2_1".into()]).unwrap();
    let mut fresh = Objective::new(&be, &vgg, spec(&all[..2], (2.0, 50.0, 0.5)), &content, &styles).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut fresh, &x));

    reused.set_content(&content2).unwrap();
    let mut fresh2 = Objective::new(&be, &vgg, spec(&all[..2], (2.0, 50.0, 0.5)), &content2, &styles).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut fresh2, &x));

    // Back to every layer: the narrowed-away targets were kept.
    reused.set_style_layers(&all.map(String::from)).unwrap();
    let mut fresh3 = Objective::new(&be, &vgg, spec(&all, (2.0, 50.0, 0.5)), &content2, &styles).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut fresh3, &x));

    assert!(reused.set_style_layers(&["relu4_2".into()]).is_err(), "a layer the objective was not built with");
    assert!(reused.set_content(&image(&mut rng, h + 1, w)).is_err(), "a different size");
}

#[test]
fn set_styles_matches_a_fresh_objective_with_those_styles() {
    let be = CpuBackend::new();
    let vgg = narrow_vgg();
    let mut rng = Rng::new(9);
    let (h, w) = (18, 20);
    let content = image(&mut rng, h, w);
    let (s1, s2) = (image(&mut rng, 17, 21), image(&mut rng, 22, 16));
    let x = image(&mut rng, h, w).data;
    let layers = ["relu1_1", "relu2_1", "relu3_1"];
    let weights = (1.0, 1e3, 1e-3);
    let mut reused = Objective::new(&be, &vgg, spec(&layers, weights), &content, &[(s1.clone(), 1.0)]).unwrap();
    reused.set_styles(&[(s2.clone(), 1.0)]).unwrap();
    let mut fresh = Objective::new(&be, &vgg, spec(&layers, weights), &content, &[(s2.clone(), 1.0)]).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut fresh, &x));
    // A blend, then back to the first style alone: the old targets are cleared, not added to.
    reused.set_styles(&[(s1.clone(), 1.0), (s2.clone(), 3.0)]).unwrap();
    let mut blend = Objective::new(&be, &vgg, spec(&layers, weights), &content, &[(s1.clone(), 1.0), (s2, 3.0)]).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut blend, &x));
    reused.set_styles(&[(s1.clone(), 1.0)]).unwrap();
    let mut first = Objective::new(&be, &vgg, spec(&layers, weights), &content, &[(s1, 1.0)]).unwrap();
    assert_eq!(eval(&mut reused, &x), eval(&mut first, &x));
    assert!(reused.set_styles(&[]).is_err());
}
