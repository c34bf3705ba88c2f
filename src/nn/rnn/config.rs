//! The constructor arguments of `torch.nn.RNN` / `LSTM` / `GRU` ([`RnnConfig`], with PyTorch's
//! names and defaults, serialised as they appear in `config.json`), the recurrence kind
//! ([`Mode`]), the recurrent state ([`RnnState`]: `h` `(D*num_layers, N, H_out)`, `c`
//! `(D*num_layers, N, hidden_size)` for LSTM) and one layer-direction's parameters as the
//! kernels borrow them (`CellParams`). Shared by the layer ([`super::RnnBase`]) and the
//! kernels ([`super::fused`], [`super::packed`]), which import it rather than the layer.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which recurrence. Serialized as PyTorch's `mode` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// `nn.RNN(nonlinearity='tanh')`: `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`.
    #[serde(rename = "RNN_TANH")]
    RnnTanh,
    /// `nn.RNN(nonlinearity='relu')`: the same with ReLU.
    #[serde(rename = "RNN_RELU")]
    RnnRelu,
    /// `nn.LSTM`: gates i, f, g, o; optional projection `proj_size`.
    #[serde(rename = "LSTM")]
    Lstm,
    /// `nn.GRU`: gates r, z, n; the reset gate applies to `W_hn h + b_hn`.
    #[serde(rename = "GRU")]
    Gru,
}

impl Mode {
    /// Gates stacked in the fused weight: rows of `weight_ih` = gates * hidden_size.
    pub fn gates(self) -> i64 {
        match self {
            Mode::RnnTanh | Mode::RnnRelu => 1,
            Mode::Lstm => 4,
            Mode::Gru => 3,
        }
    }
    /// The PyTorch class name: `RNN`, `LSTM` or `GRU`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::RnnTanh | Mode::RnnRelu => "RNN",
            Mode::Lstm => "LSTM",
            Mode::Gru => "GRU",
        }
    }
}

/// `nonlinearity` of `torch.nn.RNN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}

/// The constructor arguments of `torch.nn.RNN` / `LSTM` / `GRU`, with PyTorch's names and
/// defaults. `proj_size` is LSTM-only and `nonlinearity` RNN-only, as in PyTorch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RnnConfig {
    /// Features of the input `x` (H_in).
    pub input_size: i64,
    /// Features of the hidden state (H_cell for LSTM).
    pub hidden_size: i64,
    /// Stacked recurrent layers. Default 1.
    #[serde(default = "one")]
    pub num_layers: i64,
    /// Whether `bias_ih_l{k}` and `bias_hh_l{k}` exist. Default true.
    #[serde(default = "yes")]
    pub bias: bool,
    /// Input and output as `(N, L, H)` instead of `(L, N, H)`. Default **false**, as in PyTorch.
    #[serde(default)]
    pub batch_first: bool,
    /// Dropout on the outputs of every layer but the last, in training mode. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Run a second, reversed direction per layer. Default false.
    #[serde(default)]
    pub bidirectional: bool,
    /// LSTM only: project h to this size with `weight_hr_l{k}`. Default 0 (no projection).
    #[serde(default)]
    pub proj_size: i64,
    /// RNN only: `tanh` (default) or `relu`.
    #[serde(default)]
    pub nonlinearity: Nonlinearity,
}

impl RnnConfig {
    /// A config with PyTorch's defaults for everything but the two sizes.
    pub fn new(input_size: i64, hidden_size: i64) -> Self {
        Self {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
            nonlinearity: Nonlinearity::Tanh,
        }
    }
    /// `num_layers` (default 1): stacked layers, each reading the previous one's output.
    pub fn num_layers(mut self, n: i64) -> Self {
        self.num_layers = n;
        self
    }
    /// `bias` (default true): `b_ih` and `b_hh` in every layer.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    /// `batch_first` (default false): input and output are `(N, L, H)` instead of `(L, N, H)`.
    pub fn batch_first(mut self, b: bool) -> Self {
        self.batch_first = b;
        self
    }
    /// `dropout` (default 0.0): dropout on each layer's output except the last, in training.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// `bidirectional` (default false): a reverse direction per layer; outputs concatenate.
    pub fn bidirectional(mut self, b: bool) -> Self {
        self.bidirectional = b;
        self
    }
    /// `proj_size` (default 0, LSTM only): `h_t = W_hr (o ⊙ tanh(c_t))` of this size.
    pub fn proj_size(mut self, p: i64) -> Self {
        self.proj_size = p;
        self
    }
    /// `nonlinearity` (default tanh, RNN only).
    pub fn nonlinearity(mut self, n: Nonlinearity) -> Self {
        self.nonlinearity = n;
        self
    }
    /// D: 2 if bidirectional, else 1.
    pub fn num_directions(&self) -> i64 {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// H_out: `proj_size` if set, else `hidden_size`.
    pub fn output_hidden_size(&self) -> i64 {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// The checks of `RNNBase.__init__`, as errors instead of exceptions.
    pub(crate) fn validate(&self, mode: Mode) -> Result<()> {
        let c = self;
        if c.input_size < 0 || c.hidden_size <= 0 {
            return Err(Error::config(format!(
                "{}: hidden_size must be positive and input_size non-negative, got input_size={} hidden_size={}",
                mode.name(), c.input_size, c.hidden_size
            )));
        }
        if c.num_layers <= 0 {
            return Err(Error::config(format!(
                "{}: num_layers must be positive, got {}",
                mode.name(),
                c.num_layers
            )));
        }
        if !(0.0..=1.0).contains(&c.dropout) || c.dropout.is_nan() {
            return Err(Error::config(format!(
                "{}: dropout should be a number in range [0, 1] representing the probability of an element being zeroed, got {}",
                mode.name(), c.dropout
            )));
        }
        if c.proj_size < 0 {
            return Err(Error::config(format!(
                "{}: proj_size should be a positive integer or zero, got {}",
                mode.name(),
                c.proj_size
            )));
        }
        if c.proj_size > 0 && mode != Mode::Lstm {
            return Err(Error::config(format!(
                "proj_size argument is only supported for LSTM, not {}",
                mode.name()
            )));
        }
        if c.proj_size >= c.hidden_size {
            return Err(Error::config(format!(
                "proj_size ({}) has to be smaller than hidden_size ({})",
                c.proj_size, c.hidden_size
            )));
        }
        Ok(())
    }
}

/// One layer and direction's parameters, borrowed from `_flat_weights` (libtorch's
/// `CellParams`): biases absent without `bias`, `w_hr` only with `proj_size`.
pub(crate) struct CellParams<'a> {
    pub w_ih: &'a Tensor,
    pub w_hh: &'a Tensor,
    pub b_ih: Option<&'a Tensor>,
    pub b_hh: Option<&'a Tensor>,
    pub w_hr: Option<&'a Tensor>,
}

impl RnnConfig {
    /// `flat` (`_flat_weights`, in order) split into each layer and direction's parameters:
    /// `l0, l0_reverse, l1, …`; an error (`what`: the caller) if the count does not match this
    /// configuration.
    pub(crate) fn cell_params<'a>(
        &self,
        what: &str,
        flat: &'a [Tensor],
    ) -> Result<Vec<CellParams<'a>>> {
        let per = 2 + 2 * usize::from(self.bias) + usize::from(self.proj_size > 0);
        let cells = (self.num_layers * self.num_directions()) as usize;
        if flat.len() != per * cells {
            return Err(Error::invalid(format!(
                "{what}: {} parameter tensors for {} layer(s) × {} direction(s); need {}",
                flat.len(),
                self.num_layers,
                self.num_directions(),
                per * cells
            )));
        }
        Ok(flat
            .chunks(per)
            .map(|w| CellParams {
                w_ih: &w[0],
                w_hh: &w[1],
                b_ih: self.bias.then(|| &w[2]),
                b_hh: self.bias.then(|| &w[3]),
                w_hr: (self.proj_size > 0).then(|| &w[per - 1]),
            })
            .collect())
    }
}

/// The recurrent state: `h` for all modes, `c` for LSTM. Shapes `(D*num_layers, N, H_out)` and
/// `(D*num_layers, N, hidden_size)`; without N for unbatched input.
#[derive(Debug)]
pub struct RnnState {
    /// `h_n`: `(D*num_layers, N, H_out)`.
    pub h: Tensor,
    /// `c_n` (LSTM only): `(D*num_layers, N, hidden_size)`.
    pub c: Option<Tensor>,
}

impl RnnState {
    /// A state from `h` and, for LSTM, `c`.
    pub fn new(h: Tensor, c: Option<Tensor>) -> Self {
        Self { h, c }
    }
    /// Handles that share storage with `self` (cheap).
    pub fn shallow_clone(&self) -> Self {
        Self {
            h: self.h.shallow_clone(),
            c: self.c.as_ref().map(Tensor::shallow_clone),
        }
    }
    /// A copy cut from autograd (for streaming with truncated backpropagation, or saving).
    pub fn detach(&self) -> Self {
        Self {
            h: self.h.detach(),
            c: self.c.as_ref().map(Tensor::detach),
        }
    }
}
