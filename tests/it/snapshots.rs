//! When the observer gets the image: every `snapshot_every` iterations and whenever the
//! snapshot gate asks (a live page's frames, paced by time), never at the last iteration (the
//! output holds that image); the gate is asked at the other iterations only.

use crate::common::nets::{pattern_pixels, tiny_spec, tiny_vgg};
use neural_style::{stylize, CpuBackend, Image, Init, Job, Optimizer, SnapshotGate};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn snapshots_come_every_n_iterations_and_when_the_gate_asks() {
    let image = |w, h, k| Image { w, h, data: pattern_pixels(w, h, k).into_iter().map(|v| v as f32 / 64.0 - 2.0).collect() };
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let gate = SnapshotGate(Arc::new(move |iteration| {
        counter.fetch_add(1, Ordering::SeqCst);
        iteration == 3 || iteration == 10
    }));
    let job = Job {
        content: image(16, 12, 1),
        styles: vec![(image(12, 12, 2), 1.0)],
        spec: tiny_spec(),
        init: Init::Random,
        optimizer: Optimizer::lbfgs(5),
        iterations: 10,
        seed: 3,
        snapshot_every: 4,
        snapshot_gate: Some(gate),
        bounds: None,
    };
    let mut got = Vec::new();
    let out = stylize(&CpuBackend::new(), &tiny_vgg(), &job, &mut |p, snapshot| {
        if let Some(x) = snapshot {
            assert_eq!(x.len(), 16 * 12 * 3);
            got.push(p.iteration);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(got, [3, 4, 8], "snapshot_every 4 and the gate's 3 (its 10 is the last iteration: the output)");
    assert_eq!(out.evaluations, 10);
    assert_eq!(asked.load(Ordering::SeqCst), 10 - 2, "asked at every iteration but 4 and 8");
}
