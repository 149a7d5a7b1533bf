//! Details of the objective that the golden and finite-difference tests do not pin: the FLOP
//! count a run reports, the spec and size an objective hands back, and jcjohnson's `+ 1e-8` in
//! `-normalize_gradients` where a term's gradient is as small as that epsilon.

use neural_style::model::random::random_vgg;
use neural_style::network::Network;
use neural_style::rng::Rng;
use neural_style::{CpuBackend, Image, Objective, ObjectiveSpec, PoolKind};

fn image(rng: &mut Rng, h: usize, w: usize) -> Image {
    Image { h, w, data: rng.normal_vec(h * w * 3, 1.0) }
}

/// Forward FLOPs (2 multiply-adds) of a 3x3 convolution at h x w.
fn conv(h: usize, w: usize, c_in: usize, c_out: usize) -> u64 {
    2 * (h * w * 9 * c_in * c_out) as u64
}

#[test]
fn flops_are_twice_the_forward_convolutions_up_to_the_deepest_layer_used() {
    let be = CpuBackend::new();
    // conv1_1 3->4, conv1_2 4->4, pool, conv2_1 4->6, conv2_2 6->6 (unused: relu2_1 is the deepest).
    let vgg = random_vgg(&[4, 4, 0, 6, 6], 3, "tiny".into());
    let mut rng = Rng::new(1);
    let (h, w) = (12, 10);
    let spec = ObjectiveSpec {
        content_layers: vec!["relu2_1".into()],
        style_layers: vec!["relu1_1".into()],
        content_weight: 2.0,
        style_weight: 30.0,
        tv_weight: 0.25,
        ..Default::default()
    };
    let obj = Objective::new(&be, &vgg, spec, &image(&mut rng, h, w), &[(image(&mut rng, 9, 11), 1.0)]).unwrap();
    let forward = conv(h, w, 3, 4) + conv(h, w, 4, 4) + conv(h / 2, w / 2, 4, 6);
    assert_eq!(obj.flops_per_evaluation(), 2 * forward, "forward plus the input gradient");
    assert_eq!((obj.height(), obj.width()), (h, w));
    let s = obj.spec();
    assert_eq!((s.content_weight, s.style_weight, s.tv_weight), (2.0, 30.0, 0.25));
    assert_eq!((s.content_layers.as_slice(), s.style_layers.as_slice()), (&["relu2_1".to_string()][..], &["relu1_1".to_string()][..]));
}

/// jcjohnson: `gradInput:div(torch.norm(gradInput, 1) + 1e-8)`. Near the content image the
/// content term's gradient has an L1 norm of the order of the epsilon, and the divisor is then
/// visibly ‖g‖₁ + 1e-8 (and positive: the direction is kept, never flipped).
#[test]
fn normalization_divides_by_the_l1_norm_plus_1e_8() {
    let be = CpuBackend::new();
    let vgg = random_vgg(&[4, 4, 0, 6, 6], 5, "tiny".into());
    let mut rng = Rng::new(2);
    let (h, w) = (10, 12);
    let content = image(&mut rng, h, w);
    // x a hair away from the content image: the term gradient 2 (F - P) / N is tiny.
    let x: Vec<f32> = content.data.iter().map(|v| v + 2e-7 * rng.normal()).collect();
    let spec = ObjectiveSpec { content_layers: vec!["relu2_2".into()], style_layers: vec![], style_weight: 0.0, content_weight: 1.0, tv_weight: 0.0, ..Default::default() };
    let eval = |spec: ObjectiveSpec| {
        let mut obj = Objective::new(&be, &vgg, spec, &content, &[]).unwrap();
        let mut g = vec![0.0; x.len()];
        obj.evaluate(&x, &mut g).unwrap();
        g
    };
    let plain = eval(spec.clone());
    let normalized = eval(ObjectiveSpec { normalize_gradients: true, ..spec });
    // ‖2 (F - P) / N‖₁ at relu2_2, from the same forward pass the objective makes.
    let net = Network::new(&be, &vgg, PoolKind::Max, &["relu2_2".to_string()]).unwrap();
    let at = |img: &[f32]| {
        let mut acts = net.alloc_activations(&be, h, w).unwrap();
        net.forward(&be, &img.to_vec(), h, w, &mut acts).unwrap();
        acts[net.index_of("relu2_2").unwrap()].clone()
    };
    let (f, p) = (at(&x), at(&content.data));
    let l1: f64 = f.iter().zip(&p).map(|(a, b)| 2.0 * (a - b).abs() as f64 / f.len() as f64).sum();
    assert!(l1 > 1e-9 && l1 < 1e-6, "the term gradient's L1 norm {l1} is of the order of the epsilon");
    let (k, _) = normalized.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
    let c = plain[k] as f64 / normalized[k] as f64;
    approx::assert_relative_eq!(c, l1 + 1e-8, max_relative = 1e-3);
}

/// The Keras example's style term with a style image of another size than x: its unnormalised
/// Gram is taken at its own size, and the term is Σ (G(x) − G(s))² / (4 · 3² · (H W)²) with H W
/// x's pixels (the example's quirk), here against Grams computed by hand from the activations.
#[test]
fn keras_style_term_with_a_style_image_of_another_size() {
    use neural_style::GramNormalization;
    let be = CpuBackend::new();
    let vgg = random_vgg(&[4, 4, 0, 6, 6], 11, "tiny".into());
    let mut rng = Rng::new(4);
    let (h, w) = (12, 10);
    let (content, style) = (image(&mut rng, h, w), image(&mut rng, 9, 11));
    let x = image(&mut rng, h, w).data;
    for layer in ["relu1_1", "relu2_1"] {
        let spec = ObjectiveSpec {
            content_layers: vec![],
            content_weight: 0.0,
            style_layers: vec![layer.into()],
            style_weight: 3.0,
            tv_weight: 0.0,
            gram_normalization: GramNormalization::KerasExample,
            ..Default::default()
        };
        let mut obj = Objective::new(&be, &vgg, spec, &content, &[(style.clone(), 1.0)]).unwrap();
        let mut g = vec![0.0; x.len()];
        let got = obj.evaluate(&x, &mut g).unwrap().style;

        let net = Network::new(&be, &vgg, PoolKind::Max, &[layer.to_string()]).unwrap();
        let gram = |img: &[f32], ih: usize, iw: usize| {
            let mut acts = net.alloc_activations(&be, ih, iw).unwrap();
            net.forward(&be, &img.to_vec(), ih, iw, &mut acts).unwrap();
            let f = &acts[net.index_of(layer).unwrap()];
            let c = if layer == "relu1_1" { 4 } else { 6 };
            let mut g = vec![0.0f64; c * c];
            for px in f.chunks_exact(c) {
                for i in 0..c {
                    for j in 0..c {
                        g[i * c + j] += px[i] as f64 * px[j] as f64;
                    }
                }
            }
            g
        };
        let (gx, gs) = (gram(&x, h, w), gram(&style.data, 9, 11));
        let want = 3.0 * gx.iter().zip(&gs).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (4.0 * 9.0 * ((h * w) as f64).powi(2));
        approx::assert_relative_eq!(got, want, max_relative = 1e-4);
    }
}
