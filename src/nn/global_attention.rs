//! Attention of a decoder state over a memory (Luong et al. 2015, "global" attention), with
//! Luong's dot and general scores or Bahdanau's additive one:
//!
//! ```text
//! s (N, H) decoder state; memory (N, S, M); mask (N, S) true at real source steps
//! score_j = s · m_j                                 dot      (H = M)
//!         = (W_in s) · m_j                          general  linear_in.weight (M, H)
//!         = v · tanh(W_k m_j + b_k + W_q s)         additive key.weight (A, M), key.bias (A),
//!                                                            query.weight (A, H), v.weight (1, A)
//! α = softmax_j(score, -inf where mask is false)    (N, S)
//! c = Σ_j α_j m_j                                   (N, M)
//! a = tanh(W_out [c; s])                            linear_out.weight (H, M + H)   → (N, H)
//! ```
//! `W_k m + b_k` depends only on the memory: [`GlobalAttention::keys`] computes it once per
//! sentence. Keys and operations are those of `Attention` in `scripts/rnnkit_seq2seq.py`.

use crate::error::{Error, Result};
use crate::nn::linear::Linear;
use crate::nn::module::Module;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How the decoder's state attends over the encoder's outputs (the score of step `s` against
/// memory row `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Luong's dot: `s · m` (the decoder's hidden size must equal the memory width).
    Dot,
    /// Luong's general: `(W_in s) · m`.
    #[default]
    General,
    /// Bahdanau's additive score: `v · tanh(W_k m + b_k + W_q s)`.
    Additive,
}

/// The score function and its layers.
#[derive(Debug)]
pub enum Score {
    /// `s · m`.
    Dot,
    /// `(W_in s) · m`: `linear_in`, `Linear(H, M, bias=False)`.
    General {
        /// `linear_in`.
        linear_in: Linear,
    },
    /// `v · tanh(W_k m + b_k + W_q s)`.
    Additive {
        /// `query`: `Linear(H, A, bias=False)`.
        query: Linear,
        /// `key`: `Linear(M, A)`.
        key: Linear,
        /// `v`: `Linear(A, 1, bias=False)`.
        v: Linear,
    },
}

/// Global attention with an output layer (see the module doc).
#[derive(Debug)]
pub struct GlobalAttention {
    /// The score function.
    pub score: Score,
    /// `linear_out`: `Linear(M + H, H, bias=False)`.
    pub linear_out: Linear,
}

/// What [`GlobalAttention::forward`] returns for one step.
pub struct Attended {
    /// The attentional state `a` (N, H).
    pub state: Tensor,
    /// The weights `α` (N, S).
    pub alpha: Tensor,
}

impl GlobalAttention {
    /// `kind` is `dot`, `general` or `additive`; `query` = H, `memory` = M, `size` = A.
    pub fn new(
        kind: AttentionKind,
        query: i64,
        memory: i64,
        size: i64,
        dtype: Kind,
        device: Device,
    ) -> Result<Self> {
        use AttentionKind as K;
        let score = match kind {
            K::Dot => Score::Dot,
            K::General => Score::General {
                linear_in: Linear::new(query, memory, false, dtype, device)?,
            },
            K::Additive => Score::Additive {
                query: Linear::new(query, size, false, dtype, device)?,
                key: Linear::new(memory, size, true, dtype, device)?,
                v: Linear::new(size, 1, false, dtype, device)?,
            },
        };
        Ok(Self {
            score,
            linear_out: Linear::new(memory + query, query, false, dtype, device)?,
        })
    }

    /// What the scores need from `memory` (N, S, M): `W_k m + b_k` (N, S, A) for additive
    /// attention, the memory itself otherwise.
    pub fn keys(&self, memory: &Tensor) -> Result<Tensor> {
        match &self.score {
            Score::Additive { key, .. } => key.forward(memory),
            _ => Ok(memory.shallow_clone()),
        }
    }

    /// One step: `s` (N, H), `memory` (N, S, M), `keys` from [`Self::keys`], `mask` (N, S) bool.
    pub fn forward(
        &self,
        s: &Tensor,
        memory: &Tensor,
        keys: &Tensor,
        mask: &Tensor,
    ) -> Result<Attended> {
        let (ss, ms) = (s.size(), memory.size());
        if ss.len() != 2 || ms.len() != 3 || ss[0] != ms[0] || mask.size() != ms[..2] {
            return Err(Error::invalid(format!(
                "attention: state {ss:?}, memory {ms:?} and mask {:?} do not fit \
                 ((N, H), (N, S, M), (N, S))",
                mask.size()
            )));
        }
        let scores = match &self.score {
            Score::Additive { query, v, .. } => {
                let e = (keys + query.forward(s)?.f_unsqueeze(1)?).f_tanh()?;
                v.forward(&e)?.f_squeeze_dim(2)?
            }
            Score::Dot => memory.f_bmm(&s.f_unsqueeze(2)?)?.f_squeeze_dim(2)?,
            Score::General { linear_in } => memory
                .f_bmm(&linear_in.forward(s)?.f_unsqueeze(2)?)?
                .f_squeeze_dim(2)?,
        };
        let alpha = scores
            .f_masked_fill(&mask.f_logical_not()?, f64::NEG_INFINITY)?
            .f_softmax(1, None::<Kind>)?;
        let ctx = alpha.f_unsqueeze(1)?.f_bmm(memory)?.f_squeeze_dim(1)?;
        let state = self
            .linear_out
            .forward(&Tensor::f_cat(&[&ctx, s], 1)?)?
            .f_tanh()?;
        Ok(Attended { state, alpha })
    }
}

impl Module for GlobalAttention {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        match &self.score {
            Score::Dot => {}
            Score::General { linear_in } => linear_in.visit(&format!("{prefix}linear_in."), f),
            Score::Additive { query, key, v } => {
                query.visit(&format!("{prefix}query."), f);
                key.visit(&format!("{prefix}key."), f);
                v.visit(&format!("{prefix}v."), f);
            }
        }
        self.linear_out.visit(&format!("{prefix}linear_out."), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        match &mut self.score {
            Score::Dot => {}
            Score::General { linear_in } => linear_in.visit_mut(&format!("{prefix}linear_in."), f),
            Score::Additive { query, key, v } => {
                query.visit_mut(&format!("{prefix}query."), f);
                key.visit_mut(&format!("{prefix}key."), f);
                v.visit_mut(&format!("{prefix}v."), f);
            }
        }
        self.linear_out
            .visit_mut(&format!("{prefix}linear_out."), f);
    }
    fn set_training(&mut self, _: bool) {}
    fn is_training(&self) -> bool {
        false
    }
}
