//! `torch.nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0)` (no dilation,
//! groups 1): input `(N, C_in, L)` → output `(N, C_out, L_out)`,
//! `L_out = ⌊(L + 2·padding − kernel_size) / stride⌋ + 1`,
//! `y[n, o, t] = b[o] + Σ_c Σ_k W[o, c, k] · x_pad[n, c, t·stride + k]`.
//! Keys `weight` `(C_out, C_in, kernel_size)` and `bias` `(C_out)`. Initialisation as PyTorch:
//! W and b ~ U(−1/√(C_in·kernel_size), 1/√(C_in·kernel_size)).

use crate::error::{Error, Result};
use crate::nn::module::{new_param, uniform_, Module};
use tch::{Device, Kind, Tensor};

/// `nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, bias)`.
#[derive(Debug)]
pub struct Conv1d {
    /// `weight`: `(out_channels, in_channels, kernel_size)`.
    pub weight: Tensor,
    /// `bias`: `(out_channels)`; absent with `bias=false`.
    pub bias: Option<Tensor>,
    /// `stride` along time.
    pub stride: i64,
    /// Zeros added at both ends of time.
    pub padding: i64,
}

impl Conv1d {
    /// `nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)`.
    #[allow(clippy::too_many_arguments)] // PyTorch's constructor arguments, in its order
    pub fn new(
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if in_channels < 1 || out_channels < 1 || kernel_size < 1 || stride < 1 || padding < 0 {
            return Err(Error::config(format!(
                "Conv1d({in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}, \
                 padding={padding}): channels, kernel_size and stride must be positive, padding non-negative"
            )));
        }
        let mut weight = new_param(&[out_channels, in_channels, kernel_size], kind, device)?;
        let mut bias = bias
            .then(|| new_param(&[out_channels], kind, device))
            .transpose()?;
        let bound = 1.0 / ((in_channels * kernel_size) as f64).sqrt();
        uniform_(&mut weight, bound);
        if let Some(b) = &mut bias {
            uniform_(b, bound);
        }
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// `kernel_size`.
    pub fn kernel_size(&self) -> i64 {
        self.weight.size()[2]
    }

    /// `L_out` for an input of `len` steps (0 when the input is shorter than the kernel).
    pub fn out_len(&self, len: i64) -> i64 {
        let span = len + 2 * self.padding - self.kernel_size();
        if span < 0 {
            0
        } else {
            span / self.stride + 1
        }
    }

    /// `(N, C_in, L)` → `(N, C_out, L_out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (size, w) = (x.size(), self.weight.size());
        if size.len() != 3 || size[1] != w[1] || size[2] + 2 * self.padding < w[2] {
            return Err(Error::shape(
                "Conv1d input",
                format!("(N, {}, L) with L + 2·{} ≥ {}", w[1], self.padding, w[2]),
                &size,
            ));
        }
        Ok(x.f_conv1d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride],
            [self.padding],
            [1],
            1,
        )?)
    }
}

impl Conv1d {
    /// The same product on an input that already holds its padding (`(N, C_in, L)`,
    /// `L ≥ kernel_size`): outputs `⌊(L − kernel_size) / stride⌋ + 1` steps, none added.
    pub fn forward_unpadded(&self, x: &Tensor) -> Result<Tensor> {
        let (size, w) = (x.size(), self.weight.size());
        if size.len() != 3 || size[1] != w[1] || size[2] < w[2] {
            return Err(Error::shape(
                "Conv1d input (padded)",
                format!("(N, {}, L) with L ≥ {}", w[1], w[2]),
                &size,
            ));
        }
        Ok(x.f_conv1d(&self.weight, self.bias.as_ref(), [self.stride], [0], [1], 1)?)
    }
}

impl Module for Conv1d {
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
