//! `torch.nn.Embedding`: a lookup table `weight (num_embeddings, embedding_dim)`; input of
//! integer ids `(*)` → `(*, embedding_dim)`. Key `weight`. Initialised N(0, 1) with the
//! `padding_idx` row zeroed, as PyTorch; that row gets no gradient.

use crate::error::{Error, Result};
use crate::nn::module::{new_param, Module};
use tch::{Device, Kind, Tensor};

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: ids `(*)` → vectors `(*, E)`.
#[derive(Debug)]
pub struct Embedding {
    /// `weight`: `(num_embeddings, embedding_dim)`, initialised from N(0, 1) with the padding row zeroed.
    pub weight: Tensor,
    /// Normalised to a non-negative index, as PyTorch stores it.
    padding_idx: Option<i64>,
}

impl Embedding {
    /// `nn.Embedding(...)` on `device` with dtype `kind`; a negative `padding_idx` counts from the end, as in PyTorch.
    pub fn new(
        num_embeddings: i64,
        embedding_dim: i64,
        padding_idx: Option<i64>,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let padding_idx = match padding_idx {
            Some(p) if p >= num_embeddings || p < -num_embeddings => {
                return Err(Error::config(format!(
                    "Embedding: padding_idx {p} must be within num_embeddings ({num_embeddings})"
                )))
            }
            Some(p) if p < 0 => Some(num_embeddings + p),
            p => p,
        };
        if num_embeddings < 0 || embedding_dim < 0 {
            return Err(Error::config(format!(
                "Embedding({num_embeddings}, {embedding_dim}): sizes must be non-negative"
            )));
        }
        let weight = new_param(&[num_embeddings, embedding_dim], kind, device)?;
        tch::no_grad(|| {
            let _ = weight.shallow_clone().normal_(0.0, 1.0);
            if let Some(p) = padding_idx {
                let _ = weight.get(p).fill_(0.0);
            }
        });
        Ok(Self {
            weight,
            padding_idx,
        })
    }

    /// A second handle on the same table, as assigning one `nn.Embedding` to two attributes:
    /// no new parameters (and no draws from the random generator); both see every update.
    pub fn shared(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            padding_idx: self.padding_idx,
        }
    }

    /// Rows of the table (vocabulary size).
    pub fn num_embeddings(&self) -> i64 {
        self.weight.size()[0]
    }
    /// Width of each vector.
    pub fn embedding_dim(&self) -> i64 {
        self.weight.size()[1]
    }
    /// The row whose gradient is always zero, if any (non-negative).
    pub fn padding_idx(&self) -> Option<i64> {
        self.padding_idx
    }

    /// Integer ids `(*)` → `(*, embedding_dim)`. Ids out of range are an error, not an abort.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
            return Err(Error::Dtype {
                what: "Embedding input".into(),
                expected: "Int64 or Int (token ids)".into(),
                actual: format!("{:?}", ids.kind()),
            });
        }
        if ids.numel() > 0 {
            let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            let n = self.num_embeddings();
            if lo < 0 || hi >= n {
                return Err(Error::invalid(format!(
                    "Embedding: token ids must be in 0..{n}, got min {lo}, max {hi}"
                )));
            }
        }
        Ok(Tensor::f_embedding(
            &self.weight,
            ids,
            self.padding_idx.unwrap_or(-1),
            false,
            false,
        )?)
    }
}

impl Module for Embedding {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(format!("{prefix}weight"), &self.weight);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        f(format!("{prefix}weight"), &mut self.weight);
    }
    fn set_training(&mut self, _: bool) {}
    fn is_training(&self) -> bool {
        false
    }
}
