//! Additive (Bahdanau-style) attention pooling over time steps, masked at padding:
//!
//! ```text
//! score_t = v · tanh(W o_t + b)          W: proj.weight (A, D), b: proj.bias (A), v: v.weight (1, A)
//! α = softmax_t(score)  with score_t = -inf where t >= length
//! pooled = Σ_t α_t o_t                   o: (N, L, D) → pooled (N, D)
//! ```
//! Keys `proj.weight`, `proj.bias`, `v.weight` (as `scripts/rnnkit_models.py`'s `AdditiveAttention`).

use crate::error::{Error, Result};
use crate::nn::linear::Linear;
use crate::nn::module::Module;
use tch::{Device, Kind, Tensor};

/// Additive attention pooling: `(N, L, D)` outputs and lengths → `(N, D)` (see the module doc).
#[derive(Debug)]
pub struct AdditiveAttention {
    /// `proj`: `Linear(D, A)`, the W and b of the score.
    pub proj: Linear,
    /// `v`: `Linear(A, 1, bias=False)`, the score vector.
    pub v: Linear,
}

impl AdditiveAttention {
    /// Attention over `dim`-wide outputs with an `attention_size`-wide score layer, initialised as PyTorch's `nn.Linear`.
    pub fn new(dim: i64, attention_size: i64, kind: Kind, device: Device) -> Result<Self> {
        Ok(Self {
            proj: Linear::new(dim, attention_size, true, kind, device)?,
            v: Linear::new(attention_size, 1, false, kind, device)?,
        })
    }

    /// `out (N, L, D)`, `mask (N, L)` bool (true at real steps) → `(N, D)`.
    pub fn forward(&self, out: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let size = out.size();
        if size.len() != 3 || mask.kind() != Kind::Bool || mask.size() != size[..2] {
            return Err(Error::invalid(format!(
                "attention: outputs {size:?} need a bool mask of shape [N, L]; got {:?} {:?}",
                mask.kind(),
                mask.size()
            )));
        }
        let scores = self
            .v
            .forward(&self.proj.forward(out)?.tanh())?
            .squeeze_dim(-1);
        let scores = scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        let alpha = scores.softmax(1, None::<Kind>);
        Ok((alpha.unsqueeze(-1) * out).sum_dim_intlist([1i64].as_slice(), false, None::<Kind>))
    }
}

impl Module for AdditiveAttention {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.proj.visit(&format!("{prefix}proj."), f);
        self.v.visit(&format!("{prefix}v."), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.proj.visit_mut(&format!("{prefix}proj."), f);
        self.v.visit_mut(&format!("{prefix}v."), f);
    }
    fn set_training(&mut self, _: bool) {}
    fn is_training(&self) -> bool {
        false
    }
}
