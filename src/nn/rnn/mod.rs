//! Multi-layer recurrent layers with PyTorch's exact semantics: [`Rnn`], [`Lstm`], [`Gru`].
//!
//! For each layer k and direction, with `x_t` the layer input at step t (shapes for one batch row):
//!
//! ```text
//! RNN:  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)            act = tanh | relu
//! LSTM: i, f, g, o = split4(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)  gate order i, f, g, o
//!       c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
//!       h_t = W_hr (σ(o) ⊙ tanh(c_t))                                W_hr only when proj_size > 0
//! GRU:  r, z = σ(split2(W_ih[:2H] x_t + b_ih[:2H] + W_hh[:2H] h_{t-1} + b_hh[:2H]))
//!       n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))      reset applied to W_hn h + b_hn
//!       h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
//! ```
//!
//! Shapes, with D = 2 if bidirectional else 1, H_out = proj_size or hidden_size:
//! - input `(L, N, H_in)`, or `(N, L, H_in)` with `batch_first`, or unbatched `(L, H_in)`
//! - output `(L, N, D*H_out)` (batch_first: `(N, L, D*H_out)`; unbatched: `(L, D*H_out)`)
//! - `h_n` `(D*num_layers, N, H_out)`, `c_n` `(D*num_layers, N, hidden_size)` (unbatched: no N)
//!
//! Parameters are stored in PyTorch's fused layout and `_flat_weights` order
//! (`weight_ih_l{k}{_reverse}`, `weight_hh_…`, `bias_ih_…`, `bias_hh_…`, `weight_hr_…`), and the
//! forward pass calls the same fused libtorch kernel that `torch.nn.LSTM.forward` calls
//! (`at::lstm`, `at::gru`, `at::rnn_tanh`, `at::rnn_relu`) with the same arguments, so outputs
//! are bitwise identical to PyTorch's. In eval mode the kernel gets `train=false`, which is
//! libtorch's inference path (oneDNN on CPU for f32/bf16).
//!
//! Variable-length batches ([`RnnBase::forward_padded`]) sort, pack, run the packed kernel and
//! unpack exactly as `pack_padded_sequence(..., enforce_sorted=False)` followed by
//! `pad_packed_sequence(..., total_length=L)` do. On CPU the packed kernel is
//! [`crate::nn::rnn::packed`]: libtorch's own step-by-step recurrence, the same operations and numbers,
//! arranged so that its backward pass does not zero-fill the whole input once per time step.

pub mod config;
// The kernels are internal; public (hidden) only so the parity tests can drive them directly.
#[doc(hidden)]
pub mod fused;
#[doc(hidden)]
pub mod packed;
mod stream;
#[cfg(test)]
mod tests;

pub use config::{Mode, Nonlinearity, RnnConfig, RnnState};
pub use stream::Stream;

use crate::error::{Error, Result};
use crate::nn::module::{new_param, uniform_, Module};
use crate::nn::rnn::fused::Input;
use tch::{Device, Kind, Tensor};

/// What `Rnn`, `Lstm` and `Gru` share: PyTorch's `RNNBase`.
#[derive(Debug)]
pub struct RnnBase {
    mode: Mode,
    config: RnnConfig,
    /// `_flat_weights_names`, e.g. `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, ….
    names: Vec<String>,
    /// `_flat_weights`: the kernel's `params` argument, in the same order as `names`.
    flat: Vec<Tensor>,
    training: bool,
    /// Use [`crate::nn::rnn::fused`] when it applies (eval mode, autograd off, f32 on CPU).
    fused: bool,
    /// The fused kernel's packed copies of W_hh, kept between passes.
    panels: crate::nn::rnn::fused::PanelCache,
}

/// The state_dict key of one parameter: `{kind}_l{layer}{_reverse}`.
pub fn param_name(kind: &str, layer: i64, reverse: bool) -> String {
    format!("{kind}_l{layer}{}", if reverse { "_reverse" } else { "" })
}

impl RnnBase {
    /// Builds a layer on `device` in `kind` (f32 or f64), initialised as PyTorch does:
    /// every parameter ~ U(-1/√hidden_size, 1/√hidden_size), drawn in `_flat_weights` order, so
    /// with the same `tch::manual_seed` as `torch.manual_seed` the weights are PyTorch's.
    pub fn new(mode: Mode, config: RnnConfig, kind: Kind, device: Device) -> Result<Self> {
        // `RNN_RELU` names the nonlinearity itself; plain `RNN_TANH` (what `Rnn::new` passes)
        // defers to `config.nonlinearity`, as `nn.RNN(nonlinearity=...)` does.
        let mut config = config;
        let mode = match (mode, config.nonlinearity) {
            (Mode::RnnRelu, _) | (Mode::RnnTanh, Nonlinearity::Relu) => {
                config.nonlinearity = Nonlinearity::Relu;
                Mode::RnnRelu
            }
            (m, _) => m,
        };
        config.validate(mode)?;
        let c = &config;
        let gate_size = mode.gates().checked_mul(c.hidden_size).ok_or_else(|| {
            Error::config(format!(
                "{}: hidden_size {} is too large",
                mode.name(),
                c.hidden_size
            ))
        })?;
        let h_out = c.output_hidden_size();
        let (mut names, mut flat) = (Vec::new(), Vec::new());
        for layer in 0..c.num_layers {
            for dir in 0..c.num_directions() {
                let reverse = dir == 1;
                let layer_input = if layer == 0 {
                    c.input_size
                } else {
                    h_out * c.num_directions()
                };
                let mut add = |kind_name: &str, shape: &[i64]| -> Result<()> {
                    let name = param_name(kind_name, layer, reverse);
                    let t = new_param(shape, kind, device).map_err(|e| match e {
                        Error::Config(m) => Error::config(format!("{}: {name}: {m}", mode.name())),
                        e => e,
                    })?;
                    names.push(name);
                    flat.push(t);
                    Ok(())
                };
                add("weight_ih", &[gate_size, layer_input])?;
                add("weight_hh", &[gate_size, h_out])?;
                if c.bias {
                    add("bias_ih", &[gate_size])?;
                    add("bias_hh", &[gate_size])?;
                }
                if c.proj_size > 0 {
                    add("weight_hr", &[c.proj_size, c.hidden_size])?;
                }
            }
        }
        let mut base = Self {
            mode,
            config,
            names,
            flat,
            training: true,
            fused: false,
            panels: Default::default(),
        };
        base.reset_parameters();
        Ok(base)
    }

    /// `reset_parameters()`: U(-1/√H, 1/√H) for every parameter, in order.
    pub fn reset_parameters(&mut self) {
        let stdv = 1.0 / (self.config.hidden_size as f64).sqrt();
        self.panels = Default::default();
        for t in &mut self.flat {
            uniform_(t, stdv);
        }
    }

    /// Opt in to the fused inference kernel ([`crate::nn::rnn::fused`]) for forward passes in eval mode
    /// with autograd off on f32 CPU tensors: several times fewer libtorch calls per step, and
    /// results equal to the exact path up to float rounding (not bitwise). Elsewhere, and by
    /// default, the forward pass calls libtorch's kernels exactly as PyTorch does.
    pub fn set_fused_inference(&mut self, on: bool) {
        self.fused = on;
    }

    /// The largest batch whose rows the fused kernel computes independently of one another
    /// (bitwise as each row alone), with layer 0 read from an [`RnnBase::input_table`] or not;
    /// 1 where it cannot promise that (see [`crate::nn::rnn::fused::row_independent_batch`]).
    /// Only meaningful with [`RnnBase::set_fused_inference`] on, in eval mode on f32 CPU tensors.
    pub fn row_independent_batch(&self, table: bool) -> usize {
        crate::nn::rnn::fused::row_independent_batch(self.mode, &self.config, table)
    }

    /// The first layer's input projections for every row of `embedding` (V, input_size), per
    /// direction, for [`RnnBase::forward_table`]: a lookup table that replaces layer 0's
    /// input product at inference. `None` where the fused kernel cannot run (not f32 on CPU).
    /// It is a snapshot: compute it again after changing the weights.
    pub fn input_table(&self, embedding: &Tensor) -> Result<Option<Vec<Tensor>>> {
        let size = embedding.size();
        if size.len() != 2 || size[1] != self.config.input_size {
            return Err(Error::shape(
                format!("{}: input_table embedding", self.mode.name()),
                format!("(vocab, input_size = {})", self.config.input_size),
                &size,
            ));
        }
        let f32_cpu = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu;
        if !f32_cpu(embedding) || !self.flat.iter().all(f32_cpu) {
            return Ok(None);
        }
        let _no_grad = tch::no_grad_guard();
        crate::nn::rnn::fused::input_table(self.mode, &self.config, &self.flat, embedding).map(Some)
    }

    /// Like [`RnnBase::forward_padded`] on a batch of `n` token sequences padded to `l`
    /// (`ids`: n·l ids, rows in the input's layout), with layer 0's input projections read from
    /// `tables` (from [`RnnBase::input_table`]) instead of computed. Fused kernel only: eval
    /// mode, autograd off, f32 on CPU.
    pub fn forward_table(
        &self,
        tables: &[Tensor],
        ids: &[i64],
        (n, l): (i64, i64),
        lengths: &[i64],
    ) -> Result<(Tensor, RnnState)> {
        let name = self.mode.name();
        if self.training || crate::nn::inference::grad_enabled() {
            return Err(Error::invalid(format!(
                "{name}: forward_table is for inference (eval mode, autograd off)"
            )));
        }
        let w = self.first();
        if w.kind() != Kind::Float || w.device() != Device::Cpu {
            return Err(Error::invalid(format!(
                "{name}: forward_table runs f32 weights on the CPU; these are {:?} on {:?}",
                w.kind(),
                w.device()
            )));
        }
        let g = self.mode.gates() * self.config.hidden_size;
        let vocab = tables
            .first()
            .and_then(|t| t.size().first().copied())
            .unwrap_or(0);
        if tables.len() as i64 != self.config.num_directions()
            || tables.iter().any(|t| {
                t.size() != [vocab, g]
                    || t.kind() != Kind::Float
                    || t.device() != Device::Cpu
                    || !t.is_contiguous()
            })
        {
            return Err(Error::invalid(format!(
                "{name}: forward_table needs {} contiguous f32 CPU tables of shape [vocab, {g}], got {:?}",
                self.config.num_directions(),
                tables.iter().map(|t| t.size()).collect::<Vec<_>>()
            )));
        }
        if n < 1 || l < 1 {
            return Err(Error::invalid(format!(
                "{name}: forward_table needs at least one sequence of at least one step, got {n} x {l}"
            )));
        }
        if ids.len() as i64 != n * l {
            return Err(Error::invalid(format!(
                "{name}: forward_table got {} ids for a batch of {n} x {l}",
                ids.len()
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab) {
            return Err(Error::invalid(format!(
                "{name}: token id {bad} is outside the table's vocabulary 0..{vocab}"
            )));
        }
        if lengths.len() as i64 != n || lengths.iter().any(|&x| x < 1 || x > l) {
            return Err(Error::invalid(format!(
                "{name}: forward_table needs {n} lengths in 1..={l}, got {lengths:?}"
            )));
        }
        let hx = self.zero_state(n, Device::Cpu);
        crate::nn::rnn::fused::forward(
            self.mode,
            &self.config,
            &self.flat,
            &self.panels,
            Input::Table { n, l, ids, tables },
            Some(lengths),
            &hx,
        )
    }

    /// Whether this forward pass takes the fused kernel.
    fn use_fused(&self, input: &Tensor, padded: bool) -> bool {
        let batch = input.size()[usize::from(!self.config.batch_first)];
        self.fused
            && !self.training
            && crate::nn::rnn::fused::supported(input, &self.flat)
            && crate::nn::rnn::fused::faster(self.mode, batch, padded)
    }

    /// Which recurrence this layer runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The constructor arguments.
    pub fn config(&self) -> &RnnConfig {
        &self.config
    }
    /// `_flat_weights_names`.
    pub fn param_names(&self) -> &[String] {
        &self.names
    }
    /// The parameter with this state_dict key.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.flat[i])
    }
    fn first(&self) -> &Tensor {
        &self.flat[0]
    }

    /// The whole sequence at once: `forward(input, hx) -> (output, (h_n[, c_n]))`.
    ///
    /// `hx` absent means zeros, as in PyTorch. See the module doc for shapes.
    pub fn forward(&self, input: &Tensor, hx: Option<&RnnState>) -> Result<(Tensor, RnnState)> {
        let c = &self.config;
        let batch_dim = if c.batch_first { 0 } else { 1 };
        let unbatched = self.check_input(input)?;
        let (input, hx) = if unbatched {
            let hx = match hx {
                Some(s) => Some(self.unsqueeze_state(s)?),
                None => None,
            };
            (input.unsqueeze(batch_dim), hx)
        } else {
            (input.shallow_clone(), hx.map(RnnState::shallow_clone))
        };
        let n = input.size()[batch_dim as usize];
        let hx = match hx {
            Some(s) => {
                self.check_state(&s, n)?;
                s
            }
            None => self.zero_state(n, input.device()),
        };
        let (output, state) = if self.use_fused(&input, false) {
            crate::nn::rnn::fused::forward(
                self.mode,
                c,
                &self.flat,
                &self.panels,
                Input::Seq(&input),
                None,
                &hx,
            )?
        } else {
            self.run_kernel(&input, None, &hx)?
        };
        if unbatched {
            Ok((output.squeeze_dim(batch_dim), squeeze_state(state)))
        } else {
            Ok((output, state))
        }
    }

    /// A batch of sequences of different lengths, in any order, padded to a common length L:
    /// the result equals PyTorch's
    /// `pad_packed_sequence(rnn(pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False), hx), batch_first, total_length=L)`.
    /// Outputs past each length are zero; `h_n` / `c_n` are taken at each sequence's true last
    /// step (the reverse direction reads from the true end back to the start).
    pub fn forward_padded(
        &self,
        input: &Tensor,
        lengths: &[i64],
        hx: Option<&RnnState>,
    ) -> Result<(Tensor, RnnState)> {
        let c = &self.config;
        if self.check_input(input)? {
            return Err(Error::shape(
                format!("{} forward_padded input", self.mode.name()),
                "a batch (L, N, H_in) or (N, L, H_in) with lengths",
                &input.size(),
            ));
        }
        let batch_dim = if c.batch_first { 0 } else { 1 };
        let (time_dim, size) = (1 - batch_dim, input.size());
        let (n, l) = (size[batch_dim as usize], size[time_dim as usize]);
        if lengths.len() as i64 != n {
            return Err(Error::invalid(format!(
                "{}: {} lengths given for a batch of {n} sequences (input shape {size:?})",
                self.mode.name(),
                lengths.len()
            )));
        }
        if let Some((i, &bad)) = lengths.iter().enumerate().find(|(_, &x)| x < 1 || x > l) {
            return Err(Error::invalid(format!(
                "{}: lengths[{i}] = {bad} is out of range 1..={l} (input shape {size:?})",
                self.mode.name()
            )));
        }
        let device = input.device();
        let hx = match hx {
            Some(s) => {
                self.check_state(s, n)?;
                s.shallow_clone()
            }
            None => self.zero_state(n, device),
        };
        if self.use_fused(input, true) {
            return crate::nn::rnn::fused::forward(
                self.mode,
                c,
                &self.flat,
                &self.panels,
                Input::Seq(input),
                Some(lengths),
                &hx,
            );
        }
        // pack_padded_sequence(enforce_sorted=False): sort by length, descending.
        let lengths_t = Tensor::from_slice(lengths);
        let (sorted_lengths, sorted_indices) = lengths_t.sort(0, true);
        let unsorted_indices = sorted_indices.argsort(0, false);
        let (sorted_indices_d, unsorted_indices_d) = (
            sorted_indices.to_device(device),
            unsorted_indices.to_device(device),
        );
        let sorted_input = input.f_index_select(batch_dim, &sorted_indices_d)?;
        let (data, batch_sizes) =
            Tensor::f_internal_pack_padded_sequence(&sorted_input, &sorted_lengths, c.batch_first)?;
        let permute = |t: &Tensor| t.index_select(1, &sorted_indices_d);
        let hx_sorted = RnnState {
            h: permute(&hx.h),
            c: hx.c.as_ref().map(permute),
        };
        let (out_data, state) = self.run_kernel(&data, Some(&batch_sizes), &hx_sorted)?;
        let (padded, _) =
            Tensor::f_internal_pad_packed_sequence(&out_data, &batch_sizes, c.batch_first, 0.0, l)?;
        let output = padded.f_index_select(batch_dim, &unsorted_indices_d)?;
        let unpermute = |t: &Tensor| t.index_select(1, &unsorted_indices_d);
        Ok((
            output,
            RnnState {
                h: unpermute(&state.h),
                c: state.c.as_ref().map(unpermute),
            },
        ))
    }

    /// The kernel call exactly as `torch.nn.{RNN,LSTM,GRU}.forward` makes it: dense
    /// (`_VF.lstm(input, hx, params, …, batch_first)`) or, with `batch_sizes`, packed
    /// (`_VF.lstm(data, batch_sizes, hx, params, …)`).
    fn run_kernel(
        &self,
        input: &Tensor,
        batch_sizes: Option<&Tensor>,
        hx: &RnnState,
    ) -> Result<(Tensor, RnnState)> {
        let c = &self.config;
        if let Some(bs) = batch_sizes {
            // The same operations as libtorch's packed kernel, with a backward pass linear in
            // the sequence length (see crate::nn::rnn::packed), where libtorch takes that path.
            let bs = Vec::<i64>::try_from(bs)?;
            if crate::nn::rnn::packed::applies(self.mode, input, &bs) {
                return crate::nn::rnn::packed::forward(
                    self.mode,
                    c,
                    &self.flat,
                    input,
                    &bs,
                    hx,
                    self.training,
                );
            }
        }
        let (bias, n, p, train, bi, bf) = (
            c.bias,
            c.num_layers,
            c.dropout,
            self.training,
            c.bidirectional,
            c.batch_first,
        );
        let w: Vec<&Tensor> = self.flat.iter().collect();
        let h0 = &hx.h;
        let (out, h, cn) = match (self.mode, batch_sizes) {
            (Mode::Lstm, _) => {
                let hc = [h0, hx.c.as_ref().expect("checked: LSTM state has c")];
                let (o, h, c) = match batch_sizes {
                    None => input.f_lstm(&hc, &w, bias, n, p, train, bi, bf)?,
                    Some(bs) => Tensor::f_lstm_data(input, bs, &hc, &w, bias, n, p, train, bi)?,
                };
                (o, h, Some(c))
            }
            (Mode::Gru, None) => with_no_cell(input.f_gru(h0, &w, bias, n, p, train, bi, bf)?),
            (Mode::Gru, Some(bs)) => with_no_cell(Tensor::f_gru_data(
                input, bs, h0, &w, bias, n, p, train, bi,
            )?),
            (Mode::RnnTanh, None) => {
                with_no_cell(input.f_rnn_tanh(h0, &w, bias, n, p, train, bi, bf)?)
            }
            (Mode::RnnTanh, Some(bs)) => with_no_cell(Tensor::f_rnn_tanh_data(
                input, bs, h0, &w, bias, n, p, train, bi,
            )?),
            (Mode::RnnRelu, None) => {
                with_no_cell(input.f_rnn_relu(h0, &w, bias, n, p, train, bi, bf)?)
            }
            (Mode::RnnRelu, Some(bs)) => with_no_cell(Tensor::f_rnn_relu_data(
                input, bs, h0, &w, bias, n, p, train, bi,
            )?),
        };
        Ok((out, RnnState::new(h, cn)))
    }

    /// Zeros of the right shapes (`torch.zeros(D*num_layers, N, H_out)`), on `device`.
    pub fn zero_state(&self, batch: i64, device: Device) -> RnnState {
        let c = &self.config;
        let rows = c.num_directions() * c.num_layers;
        let kind = self.first().kind();
        let h = Tensor::zeros([rows, batch, c.output_hidden_size()], (kind, device));
        let cell = (self.mode == Mode::Lstm)
            .then(|| Tensor::zeros([rows, batch, c.hidden_size], (kind, device)));
        RnnState::new(h, cell)
    }

    /// PyTorch's `check_input`: rank 2 or 3, last dim = input_size, same dtype and device as the
    /// weights. Returns whether the input is unbatched.
    fn check_input(&self, input: &Tensor) -> Result<bool> {
        let name = self.mode.name();
        let size = input.size();
        if size.len() != 2 && size.len() != 3 {
            let layout = if self.config.batch_first {
                "(N, L, H_in)"
            } else {
                "(L, N, H_in)"
            };
            return Err(Error::shape(
                format!("{name} input"),
                format!(
                    "{layout} or unbatched (L, H_in) with H_in = {}",
                    self.config.input_size
                ),
                &size,
            ));
        }
        if size[size.len() - 1] != self.config.input_size {
            return Err(Error::shape(
                format!("{name} input: input.size(-1) must be equal to input_size"),
                format!("last dimension {}", self.config.input_size),
                &size,
            ));
        }
        // PyTorch refuses an empty sequence too ("Expected sequence length to be larger than 0").
        let steps = if size.len() == 3 && self.config.batch_first {
            size[1]
        } else {
            size[0]
        };
        if steps == 0 {
            return Err(Error::shape(
                format!("{name} input: the sequence length must be larger than 0"),
                "at least one step",
                &size,
            ));
        }
        self.check_tensor_like_weights(&format!("{name} input"), input)?;
        Ok(size.len() == 2)
    }

    fn check_tensor_like_weights(&self, what: &str, t: &Tensor) -> Result<()> {
        let w = self.first();
        if t.kind() != w.kind() {
            return Err(Error::Dtype {
                what: what.to_string(),
                expected: format!("{:?} (the dtype of the weights)", w.kind()),
                actual: format!("{:?}", t.kind()),
            });
        }
        if t.device() != w.device() {
            return Err(Error::invalid(format!(
                "{what}: on {:?} but the weights are on {:?}",
                t.device(),
                w.device()
            )));
        }
        Ok(())
    }

    /// PyTorch's `check_hidden_size` for h (and c).
    fn check_state(&self, s: &RnnState, batch: i64) -> Result<()> {
        let c = &self.config;
        let name = self.mode.name();
        let rows = c.num_directions() * c.num_layers;
        let expect = [rows, batch, c.output_hidden_size()];
        if s.h.size() != expect {
            return Err(Error::shape(
                format!("{name} hidden state h_0"),
                format!("{expect:?}"),
                &s.h.size(),
            ));
        }
        self.check_tensor_like_weights(&format!("{name} hidden state h_0"), &s.h)?;
        match (self.mode, &s.c) {
            (Mode::Lstm, Some(cell)) => {
                let expect = [rows, batch, c.hidden_size];
                if cell.size() != expect {
                    return Err(Error::shape(
                        format!("{name} cell state c_0"),
                        format!("{expect:?}"),
                        &cell.size(),
                    ));
                }
                self.check_tensor_like_weights(&format!("{name} cell state c_0"), cell)?;
            }
            (Mode::Lstm, None) => {
                return Err(Error::invalid("LSTM initial state needs both h_0 and c_0"));
            }
            (_, Some(_)) => {
                return Err(Error::invalid(format!(
                    "{name} has no cell state, but c_0 was given"
                )));
            }
            (_, None) => {}
        }
        Ok(())
    }

    /// Unbatched state `(D*num_layers, H)` → batched `(D*num_layers, 1, H)`; rank checked.
    fn unsqueeze_state(&self, s: &RnnState) -> Result<RnnState> {
        let name = self.mode.name();
        let check = |t: &Tensor, what: &str| -> Result<Tensor> {
            if t.dim() != 2 {
                return Err(Error::shape(
                    format!("{name} {what} for unbatched input"),
                    "(D*num_layers, H) (2-D, because the input is 2-D)",
                    &t.size(),
                ));
            }
            Ok(t.unsqueeze(1))
        };
        Ok(RnnState {
            h: check(&s.h, "h_0")?,
            c: s.c.as_ref().map(|c| check(c, "c_0")).transpose()?,
        })
    }

    /// Starts a stream: feed a sequence one step or one chunk at a time, carrying the state.
    /// Unidirectional layers only (the reverse direction needs the whole sequence).
    pub fn stream(&self, state: Option<RnnState>) -> Result<Stream<'_>> {
        if self.config.bidirectional {
            return Err(Error::invalid(format!(
                "{}: streaming needs a unidirectional layer (the reverse direction reads the sequence from its end)",
                self.mode.name()
            )));
        }
        Ok(Stream { rnn: self, state })
    }
}

fn with_no_cell((out, h): (Tensor, Tensor)) -> (Tensor, Tensor, Option<Tensor>) {
    (out, h, None)
}

fn squeeze_state(s: RnnState) -> RnnState {
    RnnState {
        h: s.h.squeeze_dim(1),
        c: s.c.map(|c| c.squeeze_dim(1)),
    }
}
impl Module for RnnBase {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (n, t) in self.names.iter().zip(&self.flat) {
            f(format!("{prefix}{n}"), t);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        // The visitor may replace the tensors (moves, loads): nothing packed from them stays.
        self.panels = Default::default();
        for (n, t) in self.names.iter().zip(&mut self.flat) {
            f(format!("{prefix}{n}"), t);
        }
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn is_training(&self) -> bool {
        self.training
    }
}

macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $name:ident, $mode:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub RnnBase);

        impl $name {
            /// A new layer in f32 on the CPU, initialised as PyTorch does.
            pub fn new(config: RnnConfig) -> Result<Self> {
                Self::new_on(config, Kind::Float, Device::Cpu)
            }
            /// A new layer of the given dtype on the given device.
            pub fn new_on(config: RnnConfig, kind: Kind, device: Device) -> Result<Self> {
                Ok(Self(RnnBase::new($mode, config, kind, device)?))
            }
        }

        impl std::ops::Deref for $name {
            type Target = RnnBase;
            fn deref(&self) -> &RnnBase {
                &self.0
            }
        }
        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut RnnBase {
                &mut self.0
            }
        }
        crate::nn::module::delegate_module!($name);
    };
}

recurrent_layer!(
    /// `torch.nn.RNN`: Elman RNN with `tanh` or `relu` (`config.nonlinearity`).
    Rnn,
    Mode::RnnTanh
);
recurrent_layer!(
    /// `torch.nn.LSTM`, including `proj_size`.
    Lstm,
    Mode::Lstm
);
recurrent_layer!(
    /// `torch.nn.GRU`.
    Gru,
    Mode::Gru
);
