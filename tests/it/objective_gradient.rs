//! Finite-difference check of the whole objective (every op composed) on a narrow VGG.

use crate::common::nets::{narrow_vgg, normal_image as random_image};
use neural_style::rng::Rng;
use neural_style::{Backend, CpuBackend, Objective, ObjectiveSpec, PoolKind};

fn check(pooling: PoolKind, weights: (f32, f32, f32)) {
    check_spec(ObjectiveSpec { pooling, ..Default::default() }, weights)
}

fn check_spec(base: ObjectiveSpec, (content_weight, style_weight, tv_weight): (f32, f32, f32)) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(3);
    let (h, w) = (18, 20);
    let content = random_image(&mut rng, h, w);
    let style = random_image(&mut rng, 16, 22);
    let spec = ObjectiveSpec {
        content_layers: vec!["relu4_2".into()],
        style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(String::from).to_vec(),
        content_weight,
        style_weight,
        tv_weight,
        ..base
    };
    let mut obj = Objective::new(&be, &narrow_vgg(), spec, &content, &[(style, 1.0)]).unwrap();
    let x0 = random_image(&mut rng, h, w).data;
    let mut g = vec![0.0; x0.len()];
    let base = obj.evaluate(&x0, &mut g).unwrap();
    assert!(base.total > 0.0);
    let g_max = g.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    // Per coordinate (a sample of them), central differences at two step sizes. Where the two
    // disagree, the step crossed a ReLU or max-pool kink and the coordinate says nothing about
    // the gradient; a few such are expected, the rest must match tightly.
    let fd_at = |obj: &mut Objective<CpuBackend>, k: usize, eps: f32| {
        let mut xp = x0.clone();
        xp[k] += eps;
        let mut xm = x0.clone();
        xm[k] -= eps;
        let mut scratch = vec![0.0; x0.len()];
        let fp = obj.evaluate(&xp, &mut scratch).unwrap().total;
        let fm = obj.evaluate(&xm, &mut scratch).unwrap().total;
        (fp - fm) / (2.0 * eps as f64)
    };
    // Relative to the coordinate's own size, floored at 1% of the largest gradient entry so
    // that near-zero entries (where f32 round-off dominates) do not decide the verdict.
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs()).max(1e-2 * g_max);
    let (mut checked, mut kinked, mut errors) = (0, 0, Vec::new());
    for k in (0..x0.len()).step_by(37) {
        let (fd1, fd2) = (fd_at(&mut obj, k, 1e-2), fd_at(&mut obj, k, 5e-3));
        checked += 1;
        if rel(fd1, fd2) > 1e-2 {
            kinked += 1;
            continue;
        }
        errors.push(rel(fd2, g[k] as f64));
    }
    // f32 round-off in a loss summed over every activation limits a single coordinate's finite
    // difference to about 1% here, so the median is held to 0.5% and the directional checks
    // below (well conditioned: they aggregate the whole gradient) to 1%.
    errors.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = errors[errors.len() / 2];
    assert!(kinked * 3 <= checked, "{kinked} of {checked} coordinates straddle a kink");
    assert!(median < 5e-3, "median relative gradient error {median}");

    // Along directions that mix the gradient with noise: gᵀv against (f(x+εv) - f(x-εv)) / 2ε.
    // (A purely random direction makes gᵀv a cancelling sum, dominated by round-off and kinks.)
    let g_norm = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32;
    for mix in [0.0f32, 0.5, 1.0] {
        let noise = rng.normal_vec(x0.len(), 1.0 / (x0.len() as f32).sqrt());
        let v: Vec<f32> = g.iter().zip(&noise).map(|(gv, n)| gv / g_norm + mix * n).collect();
        let gv: f64 = g.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
        let step = 1e-3f32;
        let xp: Vec<f32> = x0.iter().zip(&v).map(|(a, b)| a + step * b).collect();
        let xm: Vec<f32> = x0.iter().zip(&v).map(|(a, b)| a - step * b).collect();
        let mut scratch = vec![0.0; x0.len()];
        let fd = (obj.evaluate(&xp, &mut scratch).unwrap().total - obj.evaluate(&xm, &mut scratch).unwrap().total) / (2.0 * step as f64);
        let err = (fd - gv).abs() / fd.abs().max(gv.abs());
        assert!(err < 1e-2, "directional derivative {gv} vs finite difference {fd}");
    }
    let _ = be.name();
}

/// Each term alone (so that a wrong factor in one is not hidden by a larger one), then all three.
const TERMS: [(f32, f32, f32); 4] = [(1.0, 0.0, 0.0), (0.0, 1e3, 0.0), (0.0, 0.0, 1e-2), (1.0, 1e3, 1e-2)];

#[test]
fn whole_objective_matches_finite_differences_max_pool() {
    for t in TERMS {
        check(PoolKind::Max, t);
    }
}

#[test]
fn whole_objective_matches_finite_differences_avg_pool() {
    for t in TERMS {
        check(PoolKind::Avg, t);
    }
}

/// The paper's objective (`--preset gatys2015`): ½Σ content, unnormalised Grams over 4N²M²
/// with 1/L per layer, average pooling; each term alone, then both.
#[test]
fn the_papers_objective_matches_finite_differences() {
    let paper = || ObjectiveSpec {
        pooling: PoolKind::Avg,
        content_reduction: neural_style::Reduction::HalfSum,
        gram_normalization: neural_style::GramNormalization::Gatys2015,
        ..Default::default()
    };
    for t in [(1.0, 0.0, 0.0), (0.0, 1e3, 0.0), (1.0, 1e3, 0.0)] {
        check_spec(paper(), t);
    }
}
