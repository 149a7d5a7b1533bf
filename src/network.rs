//! The VGG stack on a backend: forward to the deepest layer a loss needs, and backward to the
//! image. Activations are kept for the backward pass (the ReLU masks and max-pool inputs).

use crate::backend::{Backend, ConvShape, PoolKind, PoolShape};
use crate::cpu::conv::{weights_to_bwd_layout, weights_to_fwd_layout};
use crate::model::{Layer, Vgg};
use anyhow::{bail, Result};

pub enum NetLayer<B: Backend> {
    Conv { name: String, c_in: usize, c_out: usize, w: B::Buf, w_flip: B::Buf, b: B::Buf },
    Pool,
}

/// The frozen network's weights on a backend, truncated after `depth` layers.
pub struct Network<B: Backend> {
    pub layers: Vec<NetLayer<B>>,
    pub pooling: PoolKind,
}

/// Shape of each layer's output for an input of h x w: (h, w, c).
pub fn layer_shapes<B: Backend>(layers: &[NetLayer<B>], h: usize, w: usize) -> Vec<(usize, usize, usize)> {
    let (mut h, mut w, mut c) = (h, w, 3);
    layers
        .iter()
        .map(|l| {
            match l {
                NetLayer::Conv { c_out, .. } => c = *c_out,
                NetLayer::Pool => {
                    h /= 2;
                    w /= 2;
                }
            }
            (h, w, c)
        })
        .collect()
}

impl<B: Backend> Network<B> {
    /// Uploads the layers up to and including the last of `needed` (ReLU names).
    pub fn new(backend: &B, vgg: &Vgg, pooling: PoolKind, needed: &[String]) -> Result<Self> {
        let names = vgg.relu_names();
        for n in needed {
            if !names.contains(&n.as_str()) {
                bail!("unknown layer '{n}': this model has {}", names.join(", "));
            }
        }
        let mut layers = Vec::new();
        let mut remaining: Vec<&String> = needed.iter().collect();
        for l in &vgg.layers {
            if remaining.is_empty() {
                break;
            }
            match l {
                Layer::Pool => layers.push(NetLayer::Pool),
                Layer::Conv(c) => {
                    let (w, w_flip) = backend.upload_conv_weights(
                        c.c_in,
                        c.c_out,
                        &weights_to_fwd_layout(c.c_out, c.c_in, &c.weight),
                        &weights_to_bwd_layout(c.c_out, c.c_in, &c.weight),
                    )?;
                    layers.push(NetLayer::Conv { name: c.name.clone(), c_in: c.c_in, c_out: c.c_out, w, w_flip, b: backend.upload(&c.bias)? });
                    remaining.retain(|n| **n != c.name);
                }
            }
        }
        Ok(Network { layers, pooling })
    }

    /// Index of the layer whose output is the ReLU `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| matches!(l, NetLayer::Conv { name: n, .. } if n == name))
    }

    /// Checks that every layer of an h x w input keeps at least one pixel.
    pub fn check_size(&self, h: usize, w: usize, what: &str) -> Result<()> {
        let shapes = layer_shapes(&self.layers, h, w);
        if let Some((i, _)) = shapes.iter().enumerate().find(|(_, s)| s.0 == 0 || s.1 == 0) {
            let pools = self.layers[..=i].iter().filter(|l| matches!(l, NetLayer::Pool)).count();
            bail!("{what} is {w}x{h} pixels, too small for the chosen layers: it must be at least {0}x{0} to survive {pools} poolings", 1usize << pools);
        }
        Ok(())
    }

    /// Allocates one output buffer per layer for an h x w input.
    pub fn alloc_activations(&self, backend: &B, h: usize, w: usize) -> Result<Vec<B::Buf>> {
        layer_shapes(&self.layers, h, w).iter().map(|&(h, w, c)| backend.zeros(h * w * c)).collect()
    }

    /// Runs every layer; acts[i] receives layer i's output.
    pub fn forward(&self, backend: &B, x: &B::Buf, h: usize, w: usize, acts: &mut [B::Buf]) -> Result<()> {
        let (mut h, mut w, mut c) = (h, w, 3usize);
        for i in 0..self.layers.len() {
            let (done, rest) = acts.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            let out = &mut rest[0];
            match &self.layers[i] {
                NetLayer::Conv { c_in, c_out, w: wt, b, .. } => {
                    backend.conv3x3_fwd(ConvShape { h, w, c_in: *c_in, c_out: *c_out }, input, wt, b, out)?;
                    c = *c_out;
                }
                NetLayer::Pool => {
                    backend.pool_fwd(self.pooling, PoolShape { h, w, c }, input, out)?;
                    h /= 2;
                    w /= 2;
                }
            }
        }
        Ok(())
    }

    /// Backward pass through layer i: given d (gradient w.r.t. its output, may be modified),
    /// writes the gradient w.r.t. its input into d_in. `input` is layer i's input activation,
    /// `output` its output; (h, w) the input grid size.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_layer(
        &self,
        backend: &B,
        i: usize,
        h: usize,
        w: usize,
        c_in: usize,
        input: &B::Buf,
        output: &B::Buf,
        d: &mut B::Buf,
        d_in: &mut B::Buf,
    ) -> Result<()> {
        match &self.layers[i] {
            NetLayer::Conv { c_out, w: wt, w_flip, .. } => backend.conv3x3_bwd_input_masked(ConvShape { h, w, c_in, c_out: *c_out }, output, d, wt, w_flip, d_in),
            NetLayer::Pool => backend.pool_bwd(self.pooling, PoolShape { h, w, c: c_in }, input, d, d_in),
        }
    }
}

/// Forward convolution FLOPs of the layers for an h x w input.
pub fn conv_flops<B: Backend>(layers: &[NetLayer<B>], h: usize, w: usize) -> u64 {
    let (mut h, mut w) = (h, w);
    let mut total = 0;
    for l in layers {
        match l {
            NetLayer::Conv { c_in, c_out, .. } => total += ConvShape { h, w, c_in: *c_in, c_out: *c_out }.flops(),
            NetLayer::Pool => {
                h /= 2;
                w /= 2;
            }
        }
    }
    total
}
