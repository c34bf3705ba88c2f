//! `torch.nn.Linear`: `y = x W^T + b`, W `(out_features, in_features)`, b `(out_features)`;
//! input `(*, in_features)` → output `(*, out_features)`. Keys `weight`, `bias`.
//! Initialisation as PyTorch: W ~ U(-1/√in, 1/√in) (kaiming_uniform with a=√5), b likewise.

use crate::error::{Error, Result};
use crate::nn::module::{new_param, uniform_, Module};
use tch::{Device, Kind, Tensor};

/// `nn.Linear(in_features, out_features, bias)`: `y = x Wᵀ + b`, `(*, H_in)` → `(*, H_out)`.
#[derive(Debug)]
pub struct Linear {
    /// `weight`: `(out_features, in_features)`, U(-1/√in, 1/√in) as PyTorch initialises it.
    pub weight: Tensor,
    /// `bias`: `(out_features)`, same bound; absent with `bias=false`.
    pub bias: Option<Tensor>,
    in_features: i64,
    out_features: i64,
}

impl Linear {
    /// `nn.Linear(in_features, out_features, bias)` on `device` with dtype `kind`.
    pub fn new(
        in_features: i64,
        out_features: i64,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if in_features < 0 || out_features < 0 {
            return Err(Error::config(format!(
                "Linear({in_features}, {out_features}): sizes must be non-negative"
            )));
        }
        let mut weight = new_param(&[out_features, in_features], kind, device)?;
        let mut bias = bias
            .then(|| new_param(&[out_features], kind, device))
            .transpose()?;
        let bound = if in_features > 0 {
            1.0 / (in_features as f64).sqrt()
        } else {
            0.0
        };
        uniform_(&mut weight, bound);
        if let Some(b) = &mut bias {
            uniform_(b, bound);
        }
        Ok(Self {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// `in_features` (H_in).
    pub fn in_features(&self) -> i64 {
        self.in_features
    }
    /// `out_features` (H_out).
    pub fn out_features(&self) -> i64 {
        self.out_features
    }

    /// `(*, in_features)` → `(*, out_features)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.last() != Some(&self.in_features) {
            return Err(Error::shape(
                "Linear input",
                format!("(*, {})", self.in_features),
                &size,
            ));
        }
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }

    /// `y = x Wᵀ + b` for `n` rows of `x` (row-major f32, `n · in_features` values), each row
    /// on its own: `y_j = f32(Σ_k x_k W_jk + b_j)`, the sum taken in f64 in k order, the bias
    /// last. A row's result depends on that row alone, never on the others (libtorch's sgemm
    /// picks its blocking by the batch's shape, so its rows do not have this property). For
    /// small heads at inference; the weights are read on the CPU.
    pub fn forward_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let (din, dout) = (self.in_features as usize, self.out_features as usize);
        if x.len() != n * din {
            return Err(Error::shape(
                "Linear forward_rows input",
                format!("({n}, {din}) = {} values", n * din),
                &[x.len() as i64],
            ));
        }
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
            let mut v = vec![0f32; t.numel()];
            let len = v.len();
            t.f_copy_data(&mut v, len)?;
            Ok(v)
        };
        let w = host(&self.weight)?;
        let b = self.bias.as_ref().map(host).transpose()?;
        let mut y = Vec::with_capacity(n * dout);
        for r in 0..n {
            let row = &x[r * din..(r + 1) * din];
            for j in 0..dout {
                let wj = &w[j * din..(j + 1) * din];
                let dot = row
                    .iter()
                    .zip(wj)
                    .fold(0f64, |acc, (&a, &c)| acc + a as f64 * c as f64);
                let bias = b.as_ref().map_or(0.0, |b| b[j] as f64);
                y.push((dot + bias) as f32);
            }
        }
        Ok(y)
    }
}

impl Module for Linear {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(format!("{prefix}weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        f(format!("{prefix}weight"), &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn set_training(&mut self, _: bool) {}
    fn is_training(&self) -> bool {
        false
    }
}
