//! Single-step cells: [`RnnCell`], [`LstmCell`], [`GruCell`] — `torch.nn.RNNCell`, `LSTMCell`,
//! `GRUCell`, with their state_dict keys `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
//!
//! One step of the recurrence in the module doc of [`crate::nn::rnn`], computed by the same libtorch
//! kernels PyTorch's cells call (`at::lstm_cell`, `at::gru_cell`, `at::rnn_tanh_cell`,
//! `at::rnn_relu_cell`). Shapes: input `(N, H_in)` or unbatched `(H_in)`; `h`, `c` `(N, H)` or `(H)`.

use crate::error::{Error, Result};
use crate::nn::module::{new_param, uniform_, Module};
use crate::nn::rnn::{Mode, Nonlinearity, RnnState};
use tch::{Device, Kind, Tensor};

/// What the three cells share.
#[derive(Debug)]
pub struct CellBase {
    mode: Mode,
    input_size: i64,
    hidden_size: i64,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Option<Tensor>,
    bias_hh: Option<Tensor>,
    training: bool,
}

impl CellBase {
    fn new(
        mode: Mode,
        input_size: i64,
        hidden_size: i64,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if input_size < 0 || hidden_size <= 0 {
            return Err(Error::config(format!(
                "{}Cell: hidden_size must be positive and input_size non-negative, got {input_size}, {hidden_size}",
                mode.name()
            )));
        }
        let g = mode.gates().checked_mul(hidden_size).ok_or_else(|| {
            Error::config(format!(
                "{}Cell: hidden_size {hidden_size} is too large",
                mode.name()
            ))
        })?;
        let make_bias = || bias.then(|| new_param(&[g], kind, device)).transpose();
        let mut cell = Self {
            mode,
            input_size,
            hidden_size,
            weight_ih: new_param(&[g, input_size], kind, device)?,
            weight_hh: new_param(&[g, hidden_size], kind, device)?,
            bias_ih: make_bias()?,
            bias_hh: make_bias()?,
            training: true,
        };
        cell.reset_parameters();
        Ok(cell)
    }

    /// U(-1/√H, 1/√H) for every parameter, in registration order, as PyTorch.
    pub fn reset_parameters(&mut self) {
        let stdv = 1.0 / (self.hidden_size as f64).sqrt();
        self.visit_mut("", &mut |_, t| uniform_(t, stdv));
    }

    /// `input_size`: features of `x`.
    pub fn input_size(&self) -> i64 {
        self.input_size
    }
    /// `hidden_size`: features of `h` (and `c`).
    pub fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    /// One step. `state` absent means zeros. Returns the new state (`c` only for LSTM).
    pub fn forward(&self, input: &Tensor, state: Option<&RnnState>) -> Result<RnnState> {
        let name = format!("{}Cell", self.mode.name());
        let size = input.size();
        if !(size.len() == 1 || size.len() == 2) || size[size.len() - 1] != self.input_size {
            return Err(Error::shape(
                format!("{name} input"),
                format!("(N, {0}) or unbatched ({0})", self.input_size),
                &size,
            ));
        }
        if input.kind() != self.weight_ih.kind() {
            return Err(Error::Dtype {
                what: format!("{name} input"),
                expected: format!("{:?} (the dtype of the weights)", self.weight_ih.kind()),
                actual: format!("{:?}", input.kind()),
            });
        }
        let unbatched = size.len() == 1;
        let x = if unbatched {
            input.unsqueeze(0)
        } else {
            input.shallow_clone()
        };
        let n = x.size()[0];
        let expect = [n, self.hidden_size];
        let prep = |t: &Tensor, what: &str| -> Result<Tensor> {
            // As PyTorch: an unbatched input takes an unbatched (H,) state, a batched one (N, H).
            let rank_ok = t.dim() == size.len();
            let t = if unbatched && rank_ok {
                t.unsqueeze(0)
            } else {
                t.shallow_clone()
            };
            if !rank_ok || t.size() != expect || t.kind() != x.kind() {
                let shape = if unbatched {
                    format!("[{}]", self.hidden_size)
                } else {
                    format!("{expect:?}")
                };
                return Err(Error::shape(
                    format!("{name} {what} ({:?})", t.kind()),
                    shape,
                    &t.size(),
                ));
            }
            Ok(t)
        };
        let zeros = || Tensor::zeros(expect, (x.kind(), x.device()));
        let h = match state {
            Some(s) => prep(&s.h, "h")?,
            None => zeros(),
        };
        if self.mode != Mode::Lstm && state.is_some_and(|s| s.c.is_some()) {
            return Err(Error::invalid(format!(
                "{name}: a cell state c was given, but only LSTMCell has one"
            )));
        }
        let (b_ih, b_hh) = (self.bias_ih.as_ref(), self.bias_hh.as_ref());
        let out = match self.mode {
            Mode::Lstm => {
                let c = match state.and_then(|s| s.c.as_ref()) {
                    Some(c) => prep(c, "c")?,
                    None if state.is_some() => {
                        return Err(Error::invalid("LSTMCell state needs both h and c"))
                    }
                    None => zeros(),
                };
                let (h1, c1) =
                    x.f_lstm_cell(&[&h, &c], &self.weight_ih, &self.weight_hh, b_ih, b_hh)?;
                RnnState::new(h1, Some(c1))
            }
            Mode::Gru => RnnState::new(
                x.f_gru_cell(&h, &self.weight_ih, &self.weight_hh, b_ih, b_hh)?,
                None,
            ),
            Mode::RnnTanh => RnnState::new(
                x.f_rnn_tanh_cell(&h, &self.weight_ih, &self.weight_hh, b_ih, b_hh)?,
                None,
            ),
            Mode::RnnRelu => RnnState::new(
                x.f_rnn_relu_cell(&h, &self.weight_ih, &self.weight_hh, b_ih, b_hh)?,
                None,
            ),
        };
        Ok(if unbatched {
            RnnState {
                h: out.h.squeeze_dim(0),
                c: out.c.map(|c| c.squeeze_dim(0)),
            }
        } else {
            out
        })
    }
}

impl Module for CellBase {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(format!("{prefix}weight_ih"), &self.weight_ih);
        f(format!("{prefix}weight_hh"), &self.weight_hh);
        if let (Some(b_ih), Some(b_hh)) = (&self.bias_ih, &self.bias_hh) {
            f(format!("{prefix}bias_ih"), b_ih);
            f(format!("{prefix}bias_hh"), b_hh);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        f(format!("{prefix}weight_ih"), &mut self.weight_ih);
        f(format!("{prefix}weight_hh"), &mut self.weight_hh);
        if let (Some(b_ih), Some(b_hh)) = (&mut self.bias_ih, &mut self.bias_hh) {
            f(format!("{prefix}bias_ih"), b_ih);
            f(format!("{prefix}bias_hh"), b_hh);
        }
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn is_training(&self) -> bool {
        self.training
    }
}

macro_rules! cell {
    ($(#[$doc:meta])* $name:ident, $mode:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub CellBase);

        impl std::ops::Deref for $name {
            type Target = CellBase;
            fn deref(&self) -> &CellBase {
                &self.0
            }
        }
        crate::nn::module::delegate_module!($name);
    };
}

cell!(
    /// `torch.nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh')`.
    RnnCell,
    Mode::RnnTanh
);
cell!(
    /// `torch.nn.LSTMCell(input_size, hidden_size, bias=True)`.
    LstmCell,
    Mode::Lstm
);
cell!(
    /// `torch.nn.GRUCell(input_size, hidden_size, bias=True)`.
    GruCell,
    Mode::Gru
);

impl RnnCell {
    /// `nn.RNNCell(input_size, hidden_size, bias, nonlinearity)` on `device` with dtype `kind`.
    pub fn new(
        input_size: i64,
        hidden_size: i64,
        bias: bool,
        nonlinearity: Nonlinearity,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let mode = match nonlinearity {
            Nonlinearity::Tanh => Mode::RnnTanh,
            Nonlinearity::Relu => Mode::RnnRelu,
        };
        Ok(Self(CellBase::new(
            mode,
            input_size,
            hidden_size,
            bias,
            kind,
            device,
        )?))
    }
}
impl LstmCell {
    /// `nn.LSTMCell(input_size, hidden_size, bias)` on `device` with dtype `kind`.
    pub fn new(
        input_size: i64,
        hidden_size: i64,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        Ok(Self(CellBase::new(
            Mode::Lstm,
            input_size,
            hidden_size,
            bias,
            kind,
            device,
        )?))
    }
}
impl GruCell {
    /// `nn.GRUCell(input_size, hidden_size, bias)` on `device` with dtype `kind`.
    pub fn new(
        input_size: i64,
        hidden_size: i64,
        bias: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        Ok(Self(CellBase::new(
            Mode::Gru,
            input_size,
            hidden_size,
            bias,
            kind,
            device,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::module::ModuleExt;

    #[test]
    fn cell_keys_and_shapes() {
        let cell = LstmCell::new(3, 5, true, Kind::Float, Device::Cpu).unwrap();
        let keys: Vec<_> = cell
            .named_parameters()
            .into_iter()
            .map(|(k, t)| (k, t.size()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("weight_ih".to_string(), vec![20, 3]),
                ("weight_hh".to_string(), vec![20, 5]),
                ("bias_ih".to_string(), vec![20]),
                ("bias_hh".to_string(), vec![20]),
            ]
        );
        let s = cell
            .forward(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), None)
            .unwrap();
        assert_eq!(s.h.size(), [2, 5]);
        let unbatched = cell
            .forward(&Tensor::zeros([3], (Kind::Float, Device::Cpu)), None)
            .unwrap();
        assert_eq!(unbatched.h.size(), [5]);
        let again = cell
            .forward(
                &Tensor::zeros([3], (Kind::Float, Device::Cpu)),
                Some(&unbatched),
            )
            .unwrap();
        assert_eq!(again.c.unwrap().size(), [5]);
    }

    #[test]
    fn cell_rejects_bad_state_shape() {
        let cell = GruCell::new(3, 5, true, Kind::Float, Device::Cpu).unwrap();
        let h = RnnState::new(Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)), None);
        let e = cell
            .forward(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), Some(&h))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 5]") && e.contains("[2, 4]"), "{e}");
    }
}
