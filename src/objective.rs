//! The Gatys objective (jcjohnson/neural-style's): content + style + total variation, and its
//! gradient w.r.t. the image, on any backend.

use crate::backend::{Backend, PoolKind};
use crate::model::Vgg;
use crate::network::{layer_shapes, Network};
use anyhow::{ensure, Result};
use serde::Serialize;

/// Loss terms of one evaluation.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct LossParts {
    pub total: f64,
    pub content: f64,
    pub style: f64,
    pub tv: f64,
}

/// As the progress lines and the final line print it: `1.2345e-1 (content 1.234e-2, style ...)`.
impl std::fmt::Display for LossParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4e} (content {:.3e}, style {:.3e}, tv {:.3e})", self.total, self.content, self.style, self.tv)
    }
}

/// A preprocessed (h, w, 3) image.
#[derive(Clone, Debug)]
pub struct Image {
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

/// How the content term reduces its squared differences over a layer's C·H·W entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    /// mean((F − P)²): jcjohnson/neural-style and the paper's normalised form.
    #[default]
    Mean,
    /// Σ (F − P)²: the Keras example.
    Sum,
    /// ½ Σ (F − P)²: Gatys, Ecker and Bethge's paper (2015/2016).
    HalfSum,
}

/// How a Gram matrix is normalised, and so what the style term measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GramNormalization {
    /// G = F Fᵀ / (C H W); style = w_s · mean((G − A)²) over the C² entries (jcjohnson).
    #[default]
    Chw,
    /// G = F Fᵀ unnormalised; style = w_s · Σ (G − A)² / (4 · 3² · (H_in W_in)²), with 3 and
    /// H_in W_in the *input image's* channels and pixels at every layer (the Keras example's quirk).
    KerasExample,
    /// The paper's (Gatys, Ecker and Bethge): G = F Fᵀ unnormalised; style = w_s · Σ_l E_l / L,
    /// E_l = Σ (G − A)² / (4 N_l² M_l²) with layer l's own channels N_l and positions M_l, over
    /// the L style layers in use (the paper's w_l = 1/L). A style image of another size has its
    /// Gram scaled by M_l / M_l(style): the same Gram per position.
    Gatys2015,
}

/// What the objective compares against, how each term is formed and how they are weighted.
/// `Default` is jcjohnson/neural-style's objective: content relu4_2, style relu1_1..relu5_1,
/// weights 5 / 100 / 1e-3, max pooling, mean reductions, C·H·W-normalised Grams, squared TV.
#[derive(Clone, Debug)]
pub struct ObjectiveSpec {
    pub content_layers: Vec<String>,
    pub style_layers: Vec<String>,
    pub content_weight: f32,
    pub style_weight: f32,
    pub tv_weight: f32,
    pub pooling: PoolKind,
    pub content_reduction: Reduction,
    pub gram_normalization: GramNormalization,
    /// None: jcjohnson's TV, Σ of squared neighbour differences over every pair. Some(p): the
    /// Keras example's Σ_{i<H−1, j<W−1} ((x[i,j]−x[i+1,j])² + (x[i,j]−x[i,j+1])²)^p.
    pub tv_power: Option<f32>,
    /// jcjohnson's `-normalize_gradients`: each content and style term's gradient (w.r.t. its
    /// layer's features) is divided by its L1 norm (+1e-8) before its weight is applied. The
    /// loss values are unchanged; the gradient is then no longer the objective's.
    pub normalize_gradients: bool,
}

impl Default for ObjectiveSpec {
    fn default() -> Self {
        ObjectiveSpec {
            content_layers: vec!["relu4_2".into()],
            style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(String::from).to_vec(),
            content_weight: 5.0,
            style_weight: 100.0,
            tv_weight: 1e-3,
            pooling: PoolKind::Max,
            content_reduction: Reduction::Mean,
            gram_normalization: GramNormalization::Chw,
            tv_power: None,
            normalize_gradients: false,
        }
    }
}

struct StyleTerm<B: Backend> {
    layer: usize,
    name: String,
    /// Off: the term is skipped (see `Objective::set_style_layers`).
    active: bool,
    target: B::Buf,
    gram: B::Buf,
    d_gram: B::Buf,
}

/// Everything one evaluation needs, allocated once for the optimised image's size.
pub struct Objective<'b, B: Backend> {
    backend: &'b B,
    net: Network<B>,
    spec: ObjectiveSpec,
    h: usize,
    w: usize,
    content: Vec<(usize, B::Buf)>,
    style: Vec<StyleTerm<B>>,
    acts: Vec<B::Buf>,
    grads: LayerGrads<B>,
    /// With normalize_gradients: one buffer per layer that has a term, for that term's gradient
    /// before it is normalised and added (None elsewhere).
    term_grads: Vec<Option<B::Buf>>,
}

impl<'b, B: Backend> Objective<'b, B> {
    /// Computes the content targets from `content` and the blended style Grams from `styles`
    /// (each with its blend weight; the weights are normalised to sum to 1). Every style image
    /// is run at its own size.
    pub fn new(backend: &'b B, vgg: &Vgg, spec: ObjectiveSpec, content: &Image, styles: &[(Image, f32)]) -> Result<Self> {
        ensure!(!spec.content_layers.is_empty() || !spec.style_layers.is_empty(), "no content or style layers chosen");
        ensure!(!styles.is_empty() || spec.style_layers.is_empty() || spec.style_weight == 0.0, "no style image given");
        let needed: Vec<String> = spec.content_layers.iter().chain(&spec.style_layers).cloned().collect();
        let net = Network::new(backend, vgg, spec.pooling, &needed)?;
        net.check_size(content.h, content.w, "the content image")?;
        let (h, w) = (content.h, content.w);
        let shapes = layer_shapes(&net.layers, h, w);

        let mut acts = net.alloc_activations(backend, h, w)?;
        let x = backend.upload(&content.data)?;
        net.forward(backend, &x, h, w, &mut acts)?;
        let mut content_terms = Vec::new();
        for name in &spec.content_layers {
            let i = net.index_of(name).expect("checked by Network::new");
            let mut p = backend.zeros(backend.len(&acts[i]))?;
            backend.copy(&acts[i], &mut p)?;
            content_terms.push((i, p));
        }

        let blend_sum: f32 = styles.iter().map(|s| s.1).sum();
        ensure!(styles.is_empty() || blend_sum > 0.0, "style blend weights must sum to more than zero");
        let mut style_terms = Vec::new();
        for name in &spec.style_layers {
            let i = net.index_of(name).expect("checked by Network::new");
            let c = shapes[i].2;
            style_terms.push(StyleTerm { layer: i, name: name.clone(), active: true, target: backend.zeros(c * c)?, gram: backend.zeros(c * c)?, d_gram: backend.zeros(c * c)? });
        }
        let grads = LayerGrads::new(backend, &net, h, w)?;
        let mut term_grads: Vec<Option<B::Buf>> = (0..net.layers.len()).map(|_| None).collect();
        if spec.normalize_gradients {
            for i in content_terms.iter().map(|(i, _)| *i).chain(style_terms.iter().map(|t| t.layer)) {
                if term_grads[i].is_none() {
                    term_grads[i] = Some(backend.zeros(backend.len(&acts[i]))?);
                }
            }
        }
        let mut objective = Objective { backend, net, spec, h, w, content: content_terms, style: style_terms, acts, grads, term_grads };
        if !styles.is_empty() {
            objective.set_styles(styles)?;
        }
        Ok(objective)
    }

    /// The term weights in use.
    pub fn spec(&self) -> &ObjectiveSpec {
        &self.spec
    }

    /// Changes the term weights; the targets stay.
    pub fn set_weights(&mut self, content_weight: f32, style_weight: f32, tv_weight: f32) {
        self.spec.content_weight = content_weight;
        self.spec.style_weight = style_weight;
        self.spec.tv_weight = tv_weight;
    }

    /// Keeps only the style terms of `names` (each one of the layers the objective was built
    /// with); the others are skipped until named again. Their targets stay.
    pub fn set_style_layers(&mut self, names: &[String]) -> Result<()> {
        for n in names {
            ensure!(self.style.iter().any(|t| &t.name == n), "style layer '{n}' is not one this objective was built with");
        }
        for t in &mut self.style {
            t.active = names.contains(&t.name);
        }
        Ok(())
    }

    /// Replaces the content targets with those of `content` (the same size as before), keeping
    /// the style targets: a batch of frames computes its style Grams once.
    pub fn set_content(&mut self, content: &Image) -> Result<()> {
        ensure!(
            content.h == self.h && content.w == self.w,
            "the new content image is {}x{}, the objective was built for {}x{}",
            content.w,
            content.h,
            self.w,
            self.h
        );
        let x = self.backend.upload(&content.data)?;
        self.net.forward(self.backend, &x, self.h, self.w, &mut self.acts)?;
        for (i, p) in &mut self.content {
            self.backend.copy(&self.acts[*i], p)?;
        }
        Ok(())
    }

    /// Replaces the style targets with the blended Grams of `styles` (as in `new`), keeping the
    /// content targets: a contact sheet of one content under several styles computes the
    /// content features once and each style's Grams once.
    pub fn set_styles(&mut self, styles: &[(Image, f32)]) -> Result<()> {
        let blend_sum: f32 = styles.iter().map(|s| s.1).sum();
        ensure!(!styles.is_empty() && blend_sum > 0.0, "style blend weights must sum to more than zero");
        for t in &mut self.style {
            self.backend.fill(&mut t.target, 0.0)?;
        }
        let x_shapes = layer_shapes(&self.net.layers, self.h, self.w);
        for (k, (style, blend)) in styles.iter().enumerate() {
            self.net.check_size(style.h, style.w, &format!("style image {}", k + 1))?;
            let mut s_acts = self.net.alloc_activations(self.backend, style.h, style.w)?;
            let xs = self.backend.upload(&style.data)?;
            self.net.forward(self.backend, &xs, style.h, style.w, &mut s_acts)?;
            let s_shapes = layer_shapes(&self.net.layers, style.h, style.w);
            for t in &mut self.style {
                let (sh, sw, c) = s_shapes[t.layer];
                self.backend.gram(sh * sw, c, &s_acts[t.layer], &mut t.gram)?;
                // Targets are kept in the normalisation of x's Grams, G / (C·H·W) at x's layer
                // size. Unnormalised Grams of a style image of another size convert by hw_s / hw.
                // (Gatys2015 scales a style image's Gram by M / M_style: per position, as Chw.)
                let to_x_scale = match self.spec.gram_normalization {
                    GramNormalization::Chw | GramNormalization::Gatys2015 => 1.0,
                    GramNormalization::KerasExample => {
                        let (lh, lw, _) = x_shapes[t.layer];
                        (sh * sw) as f32 / (lh * lw) as f32
                    }
                };
                self.backend.axpy(blend / blend_sum * to_x_scale, &t.gram, &mut t.target)?;
            }
        }
        Ok(())
    }

    pub fn height(&self) -> usize {
        self.h
    }
    pub fn width(&self) -> usize {
        self.w
    }

    /// FLOPs of one evaluation: 2 x the forward convolutions (forward + input gradient).
    pub fn flops_per_evaluation(&self) -> u64 {
        crate::network::conv_flops(&self.net.layers, self.h, self.w) * 2
    }

    /// Loss at x (h, w, 3) and its gradient, written into grad.
    pub fn evaluate(&mut self, x: &B::Buf, grad: &mut B::Buf) -> Result<LossParts> {
        let be = self.backend;
        let (h, w) = (self.h, self.w);
        self.net.forward(be, x, h, w, &mut self.acts)?;
        let shapes = layer_shapes(&self.net.layers, h, w);
        // Backward from the deepest layer; grads[i] holds d(loss)/d(output of layer i). The
        // backward op of layer i+1 overwrites grads[i]; the loss terms at layer i are added after.
        let last = self.net.layers.len() - 1;
        let len = |i: usize| shapes[i].0 * shapes[i].1 * shapes[i].2;
        be.fill(self.grads.layer(be, last, len(last))?, 0.0)?;
        let mut parts = LossParts::default();
        let spec = &self.spec;
        let active_style_layers = self.style.iter().filter(|t| t.active).count().max(1);
        for i in (0..=last).rev() {
            let (lh, lw, c) = shapes[i];
            // Each term's weight as the backend op takes it: the op's own reduction (mean over
            // its entries) times what turns it into the spec's form.
            let content_scale = match spec.content_reduction {
                Reduction::Mean => 1.0,
                Reduction::Sum => (lh * lw * c) as f64,
                Reduction::HalfSum => 0.5 * (lh * lw * c) as f64,
            };
            let style_scale = match spec.gram_normalization {
                GramNormalization::Chw => 1.0,
                // Σ (G − A)² / D = (C·hw)² Σ (g − a)² / D, and the op divides by C².
                GramNormalization::KerasExample => {
                    let d = 4.0 * 9.0 * ((h * w) as f64).powi(2);
                    ((c * lh * lw) as f64).powi(2) * (c * c) as f64 / d
                }
                // Σ (G − A)² / (4 N² M²) = (N M)² Σ (g − a)² / (4 N² M²) = Σ (g − a)² / 4, and
                // the op's mean divides by N²; then 1/L.
                GramNormalization::Gatys2015 => (c * c) as f64 / 4.0 / active_style_layers as f64,
            };
            for (_, p) in self.content.iter().filter(|(l, _)| *l == i) {
                parts.content += match &mut self.term_grads[i] {
                    None => be.content_loss_acc((spec.content_weight as f64 * content_scale) as f32, &self.acts[i], p, self.grads.layer(be, i, len(i))?)?,
                    Some(tg) => {
                        be.fill(tg, 0.0)?;
                        let unweighted = be.content_loss_acc(content_scale as f32, &self.acts[i], p, tg)?;
                        add_normalized(be, spec.content_weight, tg, self.grads.layer(be, i, len(i))?)?;
                        spec.content_weight as f64 * unweighted
                    }
                };
            }
            for t in self.style.iter_mut().filter(|t| t.layer == i && t.active) {
                be.gram(lh * lw, c, &self.acts[i], &mut t.gram)?;
                parts.style += match &mut self.term_grads[i] {
                    None => {
                        let l = be.style_loss((spec.style_weight as f64 * style_scale) as f32, &t.gram, &t.target, &mut t.d_gram)?;
                        be.gram_bwd_acc(lh * lw, c, &self.acts[i], &t.d_gram, self.grads.layer(be, i, len(i))?)?;
                        l
                    }
                    Some(tg) => {
                        let unweighted = be.style_loss(style_scale as f32, &t.gram, &t.target, &mut t.d_gram)?;
                        be.fill(tg, 0.0)?;
                        be.gram_bwd_acc(lh * lw, c, &self.acts[i], &t.d_gram, tg)?;
                        add_normalized(be, spec.style_weight, tg, self.grads.layer(be, i, len(i))?)?;
                        spec.style_weight as f64 * unweighted
                    }
                };
            }
            let (ih, iw, ic) = if i == 0 { (h, w, 3) } else { shapes[i - 1] };
            if i == 0 {
                self.net.backward_layer(be, 0, ih, iw, ic, x, &self.acts[0], self.grads.layer(be, 0, len(0))?, grad)?;
            } else {
                let (upper, lower) = self.grads.pair(be, i, len(i - 1))?;
                self.net.backward_layer(be, i, ih, iw, ic, &self.acts[i - 1], &self.acts[i], upper, lower)?;
            }
        }
        parts.tv = match self.spec.tv_power {
            None => be.tv_loss_acc(self.spec.tv_weight, h, w, 3, x, grad)?,
            Some(p) => be.tv_pow_loss_acc(self.spec.tv_weight, p, h, w, 3, x, grad)?,
        };
        parts.total = parts.content + parts.style + parts.tv;
        Ok(parts)
    }
}

/// d(loss)/d(output of layer i) during the backward pass. Layer i's buffer is written by layer
/// i+1's backward op (or zeroed, for the deepest), takes layer i's loss terms, and is read by
/// layer i's backward op, which writes layer i-1's: only two are ever alive at once.
enum LayerGrads<B: Backend> {
    /// One buffer per layer (backends whose buffers cannot change size in place).
    PerLayer(Vec<B::Buf>),
    /// Two buffers, used by alternate layers and resized to each (the CPU): 2 x the largest
    /// layer instead of the sum of all layers (at 512², 89 MB instead of 223 MB).
    Alternating([B::Buf; 2]),
}

impl<B: Backend> LayerGrads<B> {
    fn new(be: &B, net: &Network<B>, h: usize, w: usize) -> Result<Self> {
        if !be.resizes_in_place() {
            return Ok(LayerGrads::PerLayer(net.alloc_activations(be, h, w)?));
        }
        let largest = layer_shapes(&net.layers, h, w).iter().map(|&(h, w, c)| h * w * c).max().unwrap_or(0);
        Ok(LayerGrads::Alternating([be.zeros(largest)?, be.zeros(largest)?]))
    }

    /// Layer i's buffer, len floats (resizing leaves its values unspecified: call it again only
    /// with the same i until the layer is done).
    fn layer(&mut self, be: &B, i: usize, len: usize) -> Result<&mut B::Buf> {
        match self {
            LayerGrads::PerLayer(v) => Ok(&mut v[i]),
            LayerGrads::Alternating(pair) => {
                be.resize(&mut pair[i % 2], len)?;
                Ok(&mut pair[i % 2])
            }
        }
    }

    /// (layer i's buffer, layer i-1's sized to len_below), i >= 1.
    fn pair(&mut self, be: &B, i: usize, len_below: usize) -> Result<(&mut B::Buf, &mut B::Buf)> {
        match self {
            LayerGrads::PerLayer(v) => {
                let (lower, upper) = v.split_at_mut(i);
                Ok((&mut upper[0], &mut lower[i - 1]))
            }
            LayerGrads::Alternating([even, odd]) => {
                let (upper, lower) = if i % 2 == 0 { (even, odd) } else { (odd, even) };
                be.resize(lower, len_below)?;
                Ok((upper, lower))
            }
        }
    }
}

/// grad += weight · term / (‖term‖₁ + 1e-8): jcjohnson's gradient normalisation of one term.
fn add_normalized<B: Backend>(be: &B, weight: f32, term: &B::Buf, grad: &mut B::Buf) -> Result<()> {
    let l1 = be.asum(term)?;
    be.axpy((weight as f64 / (l1 + 1e-8)) as f32, term, grad)
}

#[cfg(test)]
mod layer_grads_tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::rng::Rng;

    /// The CPU's two alternating gradient buffers give the same loss and gradient, bit for bit,
    /// as one buffer per layer (what backends that cannot resize in place use), with and
    /// without the per-term buffers of normalize_gradients, and on a second evaluation (the
    /// buffers shrink back for the deepest layer).
    #[test]
    fn alternating_gradient_buffers_match_one_per_layer() {
        let be = CpuBackend::new();
        let vgg = crate::model::random::random_vgg19(1);
        let mut rng = Rng::new(2);
        let (h, w) = (36, 20);
        let image = |rng: &mut Rng| Image { h, w, data: rng.normal_vec(h * w * 3, 1.0) };
        let (content, style) = (image(&mut rng), image(&mut rng));
        let xs = [rng.normal_vec(h * w * 3, 1.0), rng.normal_vec(h * w * 3, 1.0)];
        for normalize_gradients in [false, true] {
            let spec = ObjectiveSpec { normalize_gradients, pooling: PoolKind::Avg, ..ObjectiveSpec::default() };
            let mut obj = Objective::new(&be, &vgg, spec, &content, &[(style.clone(), 1.0)]).unwrap();
            assert!(matches!(obj.grads, LayerGrads::Alternating(_)));
            let mut per_layer = Objective::new(&be, &vgg, obj.spec.clone(), &content, &[(style.clone(), 1.0)]).unwrap();
            per_layer.grads = LayerGrads::PerLayer(per_layer.net.alloc_activations(&be, h, w).unwrap());
            for x in &xs {
                let (mut g1, mut g2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                let (l1, l2) = (obj.evaluate(x, &mut g1).unwrap(), per_layer.evaluate(x, &mut g2).unwrap());
                assert_eq!(l1, l2);
                assert!(g1.iter().any(|v| *v != 0.0));
                assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()), "normalize_gradients {normalize_gradients}");
            }
        }
    }
}
