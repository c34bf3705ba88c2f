//! `torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`:
//! `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias` over the trailing `normalized_shape`
//! dimensions. Keys `weight` (ones) and `bias` (zeros).

use crate::error::{Error, Result};
use crate::nn::module::{new_param, Module};
use tch::{Device, Kind, Tensor};

/// `nn.LayerNorm(normalized_shape, eps, elementwise_affine)`: `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias` over the last dimensions.
#[derive(Debug)]
pub struct LayerNorm {
    normalized_shape: Vec<i64>,
    /// Added to the variance (PyTorch's default 1e-5).
    pub eps: f64,
    /// `weight` (γ), ones at construction; absent without `elementwise_affine`.
    pub weight: Option<Tensor>,
    /// `bias` (β), zeros at construction; absent without `elementwise_affine`.
    pub bias: Option<Tensor>,
}

impl LayerNorm {
    /// `nn.LayerNorm(...)` on `device` with dtype `kind`.
    pub fn new(
        normalized_shape: &[i64],
        eps: f64,
        elementwise_affine: bool,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let make = |v: f64| -> Result<Tensor> {
            let t = new_param(normalized_shape, kind, device)?;
            tch::no_grad(|| {
                let _ = t.shallow_clone().fill_(v);
            });
            Ok(t)
        };
        Ok(Self {
            normalized_shape: normalized_shape.to_vec(),
            eps,
            weight: elementwise_affine.then(|| make(1.0)).transpose()?,
            bias: (elementwise_affine && bias)
                .then(|| make(0.0))
                .transpose()?,
        })
    }

    /// Normalises `x` `(*, normalized_shape)` over its trailing dimensions; same shape out.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let k = self.normalized_shape.len();
        if size.len() < k || size[size.len() - k..] != self.normalized_shape[..] {
            return Err(Error::shape(
                "LayerNorm input",
                format!("(*, {:?})", self.normalized_shape),
                &size,
            ));
        }
        Ok(x.f_layer_norm(
            &self.normalized_shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
            true,
        )?)
    }
}

impl Module for LayerNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        if let Some(w) = &self.weight {
            f(format!("{prefix}weight"), w);
        }
        if let Some(b) = &self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        if let Some(w) = &mut self.weight {
            f(format!("{prefix}weight"), w);
        }
        if let Some(b) = &mut self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn set_training(&mut self, _: bool) {}
    fn is_training(&self) -> bool {
        false
    }
}
