//! Multi-scale runs: each scale starts from the previous scale's result, resized up in floats,
//! and runs its own number of iterations.

use neural_style::image_io::Rgb8;
use crate::common::nets::{pattern_pixels, tiny_spec, tiny_vgg};
use neural_style::multiscale::{scales_from, upscaled_init, MultiScale};
use neural_style::{Convention, CpuBackend, Image, Init, Job, ObjectiveSpec, Optimizer, Progress};

fn rgb(w: usize, h: usize, k: usize) -> Rgb8 {
    Rgb8 { w, h, data: pattern_pixels(w, h, k) }
}

fn setup() -> (neural_style::Vgg, ObjectiveSpec, Rgb8, Vec<(Rgb8, f32)>) {
    let vgg = tiny_vgg();
    let spec = tiny_spec();
    (vgg, spec, rgb(40, 30, 1), vec![(rgb(28, 36, 2), 1.0)])
}

fn job(spec: &ObjectiveSpec, content: &Image, init: Init) -> Job {
    Job { content: content.clone(), styles: vec![], spec: spec.clone(), init, optimizer: Optimizer::lbfgs(10), iterations: 0, seed: 1, snapshot_every: 0, snapshot_gate: None, bounds: None }
}

#[test]
fn each_scale_starts_from_the_previous_result_and_runs_its_iterations() {
    let be = CpuBackend::new();
    let (vgg, spec, content, styles) = setup();
    let conv = Convention::Torchvision;
    let scales = scales_from(&content, &styles, conv, &[(20, 4), (40, 3)]);
    assert_eq!((scales[0].content.w, scales[0].content.h, scales[1].content.w, scales[1].content.h), (20, 15, 40, 30));
    // The style image is scaled per scale like the content (longer side = the scale).
    assert_eq!((scales[0].styles[0].0.w, scales[0].styles[0].0.h), (16, 20));
    // Noise from the job's seed starts the first scale, in both runs below.
    let init = Init::Random;

    let mut losses = Vec::new();
    let mut obs = |p: &Progress, _: Option<&[f32]>| -> anyhow::Result<()> {
        losses.push((p.iteration, p.loss.total));
        Ok(())
    };
    let out = MultiScale::new(&be, &vgg, &spec, &scales).unwrap().run(&be, &job(&spec, &scales[1].content, init.clone()), &mut obs).unwrap();
    assert_eq!((out.w, out.h), (40, 30));
    assert_eq!(losses.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7], "4 + 3 iterations, numbered overall");
    assert_eq!(out.evaluations, 7);

    // Scale 1 alone, then the scale-2 loss at its result resized up: the multi-scale run's first
    // scale-2 evaluation is exactly that.
    let mut none = |_: &Progress, _: Option<&[f32]>| -> anyhow::Result<()> { Ok(()) };
    let first = MultiScale::new(&be, &vgg, &spec, &scales[..1]).unwrap().run(&be, &job(&spec, &scales[1].content, init), &mut none).unwrap();
    assert_eq!((first.w, first.h), (20, 15));
    let mut obj = neural_style::Objective::new(&be, &vgg, spec.clone(), &scales[1].content, &scales[1].styles).unwrap();
    let mut g = vec![0.0; 40 * 30 * 3];
    let Init::Image(up) = upscaled_init(&first, 30, 40) else { panic!() };
    let from_previous = obj.evaluate(&up, &mut g).unwrap().total;
    let from_content = obj.evaluate(&scales[1].content.data, &mut g).unwrap().total;
    let start_of_scale_2 = losses[4].1;
    assert!((start_of_scale_2 - from_previous).abs() <= 1e-9 * from_previous.abs(), "{start_of_scale_2} vs {from_previous}");
    assert!((start_of_scale_2 - from_content).abs() > 1e-3 * from_content.abs(), "scale 2 started from the content image");
    // The upscaled start is a float resize: not rounded to 8-bit levels.
    let levels = up.iter().filter(|v| conv.preprocess(&conv.deprocess(&[**v, **v, **v]))[0] == **v).count();
    assert!(levels < up.len() / 10, "{levels} of {} values sit on 8-bit levels", up.len());
}

/// A bounded multi-scale run (issue 20): the last scale's evaluated images (snapshots of every
/// iteration; earlier scales take none) and the result lie in a box the run presses against.
#[test]
fn a_bounded_multiscale_run_stays_in_the_box() {
    let be = CpuBackend::new();
    let (vgg, spec, content, styles) = setup();
    let scales = scales_from(&content, &styles, Convention::Torchvision, &[(20, 4), (40, 4)]);
    let bx = neural_style::backend::PixelBox { lo: [-0.004, -0.01, -0.002], hi: [0.005, 0.01, 0.003] };
    let job = Job { bounds: Some(bx), snapshot_every: 1, ..job(&spec, &scales[1].content, Init::Random) };
    let mut seen = 0;
    let mut inside = |_: &Progress, x: Option<&[f32]>| -> anyhow::Result<()> {
        if let Some(x) = x {
            seen += 1;
            assert!(bx.contains(x), "an evaluated image left the box");
        }
        Ok(())
    };
    let out = MultiScale::new(&be, &vgg, &spec, &scales).unwrap().run(&be, &job, &mut inside).unwrap();
    assert!(seen >= 3, "{seen} snapshots");
    assert!(bx.contains(&out.image));
    assert!(out.image.iter().enumerate().any(|(k, &v)| v == bx.lo[k % 3] || v == bx.hi[k % 3]), "nothing pressed on the box");
}
