//! The packed-sequence recurrence on CPU, written with libtorch's own operators so that autograd
//! differentiates it: what `_VF.lstm(data, batch_sizes, hx, …)` (and `gru`, `rnn_tanh`,
//! `rnn_relu`) computes, operation for operation, with one change to the graph that makes its
//! backward pass linear in the sequence length instead of quadratic.
//!
//! A packed sequence is `data (Σ_t b_t, H_in)` with `batch_sizes [b_0 ≥ b_1 ≥ … ≥ b_{T-1}]`: the
//! rows of step t are the next b_t rows of `data`, the b_t sequences that are still running
//! (sorted longest first). Per layer and direction, as libtorch's `PackedLayer` /
//! `ReversedPackedLayer` and its cells do it (G = gates · hidden_size):
//! ```text
//! P = linear(data, W_ih, b_ih)                        (Σ b_t, G)   one GEMM for every step
//! forward:  for t = 0 … T-1: h = h[..b_t] (the rows cut off are final states);  h = cell(P_t, h)
//! reverse:  for t = T-1 … 0: h = cat(h, h_0[b_{t+1}..b_t]);                   h = cell(P_t, h)
//! RNN:  h' = act(linear(h, W_hh, b_hh) + P_t)
//! LSTM: i, f, g, o = chunk4(linear(h, W_hh, b_hh) + P_t);  c' = σ(f) c + σ(i) tanh(g)
//!       h' = σ(o) tanh(c')  (then h' W_hrᵀ with proj_size)
//! GRU:  r, z, n from chunk3(P_t) and chunk3(linear(h, W_hh, b_hh)) = (hr, hz, hn):
//!       r = σ(hr + P_r), z = σ(hz + P_z), n = tanh(P_n + r ⊙ hn), h' = (h - n) z + n
//! output = cat over t of h (Σ b_t, D·H_out);  layers stacked with dropout(p) between them in
//! training;  h_n = stack of each layer's final states (D·num_layers, N, H_out)
//! ```
//!
//! The change: libtorch takes P_t with `narrow`, and the backward of a narrow allocates a zeroed
//! tensor the size of all of P and copies the step's gradient into it; autograd then adds those T
//! full-size tensors together. For a batch of 32 sequences of length 33-64 with H = 256 that is
//! about 64 × 6 MB of memset plus as many additions, most of the time of a training step (see
//! `scripts/bench.sh`). Here the T slices come from one `split_with_sizes`, whose backward
//! concatenates the T gradients once. Every forward value is the same operation on the same
//! numbers, and so is every gradient (the zeros libtorch adds change nothing), so results are
//! bitwise equal to PyTorch's; `tests/packed.rs` checks outputs and gradients against libtorch's
//! kernel for every mode, bidirectional, stacked, with projection, without bias and with dropout.
//! One batch is not computed this way by torch 2.13: an LSTM whose sequences all have the same
//! length, which it runs on its dense kernel (oneDNN); [`applies`] leaves that call to libtorch.

use crate::error::{Error, Result};
use crate::nn::rnn::config::{CellParams, Mode, RnnConfig, RnnState};
use tch::{Device, Tensor};

/// Whether libtorch's packed kernel runs the layer-by-layer recurrence described above for this
/// call, so that [`forward`] computes what it computes: on CPU, except an LSTM whose sequences all
/// have the same length (`batch_sizes` constant), which torch 2.13 hands to its dense kernel
/// (oneDNN for f32; checked bitwise in `tests/packed.rs`). Elsewhere call libtorch's kernel.
pub fn applies(mode: Mode, data: &Tensor, batch_sizes: &[i64]) -> bool {
    let uniform = batch_sizes.first() == batch_sizes.last();
    data.device() == Device::Cpu && !(mode == Mode::Lstm && uniform)
}

/// Rows `start..end` of one direction's state (`h`, and `c` for LSTM).
fn slice(s: &RnnState, start: i64, end: i64) -> Result<RnnState> {
    let rows = |t: &Tensor| t.f_narrow(0, start, end - start);
    Ok(RnnState {
        h: rows(&s.h)?,
        c: s.c.as_ref().map(rows).transpose()?,
    })
}

/// States stacked row-wise, in order.
fn concat(parts: &[RnnState]) -> Result<RnnState> {
    let h: Vec<&Tensor> = parts.iter().map(|p| &p.h).collect();
    let c: Option<Vec<&Tensor>> = parts.iter().map(|p| p.c.as_ref()).collect();
    Ok(RnnState {
        h: Tensor::f_cat(&h, 0)?,
        c: c.map(|c| Tensor::f_cat(&c, 0)).transpose()?,
    })
}

/// `_VF.{lstm,gru,rnn_tanh,rnn_relu}(data, batch_sizes, hx, flat, bias, num_layers, dropout,
/// train, bidirectional)`: packed output data `(Σ b_t, D·H_out)` and the final state, stacked
/// as `(D·num_layers, N, H_out)` (and `c` for LSTM). `flat` is `_flat_weights`; `hx` is already
/// permuted to the sorted order, as `nn.LSTM` does before its kernel call.
pub fn forward(
    mode: Mode,
    config: &RnnConfig,
    flat: &[Tensor],
    data: &Tensor,
    batch_sizes: &[i64],
    hx: &RnnState,
    train: bool,
) -> Result<(Tensor, RnnState)> {
    let (directions, layers) = (config.num_directions() as usize, config.num_layers as usize);
    let params = config.cell_params(&format!("{} packed forward", mode.name()), flat)?;
    if batch_sizes.is_empty() {
        return Err(Error::invalid(format!(
            "{} packed forward: batch_sizes is empty (no steps)",
            mode.name()
        )));
    }
    let h0 = hx.h.f_unbind(0)?;
    let c0 = hx.c.as_ref().map(|c| c.f_unbind(0)).transpose()?;
    let states = layers * directions;
    // LSTM needs c for every layer state; the others take none.
    let c_states = (mode == Mode::Lstm).then_some(states);
    if h0.len() != states || c0.as_ref().map(Vec::len) != c_states {
        return Err(Error::invalid(format!(
            "{} packed forward: initial state h {:?}, c {:?}; need {states} layer states each{}",
            mode.name(),
            hx.h.size(),
            hx.c.as_ref().map(Tensor::size),
            if mode == Mode::Lstm { "" } else { " and no c" }
        )));
    }
    let mut layer_input = data.shallow_clone();
    let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
    for layer in 0..layers {
        let mut outputs = Vec::with_capacity(directions);
        for dir in 0..directions {
            let k = layer * directions + dir;
            let hidden = RnnState {
                h: h0[k].shallow_clone(),
                c: c0.as_ref().map(|c| c[k].shallow_clone()),
            };
            let (out, last) = if dir == 0 {
                forward_direction(mode, &params[k], &layer_input, batch_sizes, hidden)?
            } else {
                reverse_direction(mode, &params[k], &layer_input, batch_sizes, hidden)?
            };
            outputs.push(out);
            h_n.push(last.h);
            c_n.extend(last.c);
        }
        layer_input = if directions == 1 {
            outputs.pop().expect("one direction")
        } else {
            Tensor::f_cat(&outputs, -1)?
        };
        if config.dropout != 0.0 && train && layer + 1 < layers {
            layer_input = layer_input.f_dropout(config.dropout, true)?;
        }
    }
    let h = Tensor::f_stack(&h_n, 0)?;
    let c = if c_n.is_empty() {
        None
    } else {
        Some(Tensor::f_stack(&c_n, 0)?)
    };
    Ok((layer_input, RnnState::new(h, c)))
}

/// The input projections of every step at once, then split into the steps' rows.
fn step_inputs(p: &CellParams, input: &Tensor, batch_sizes: &[i64]) -> Result<Vec<Tensor>> {
    let projected = input.f_linear(p.w_ih, p.b_ih)?;
    Ok(projected.f_split_with_sizes(batch_sizes, 0)?)
}

/// libtorch's `PackedLayer`: steps in order; rows whose sequence has ended leave the state and
/// are kept as final states.
fn forward_direction(
    mode: Mode,
    p: &CellParams,
    input: &Tensor,
    batch_sizes: &[i64],
    hidden: RnnState,
) -> Result<(Tensor, RnnState)> {
    let steps = step_inputs(p, input, batch_sizes)?;
    let mut finished = Vec::new();
    let mut outputs = Vec::with_capacity(steps.len());
    let (mut hidden, mut last) = (hidden, batch_sizes[0]);
    for (x, &b) in steps.iter().zip(batch_sizes) {
        if b < last {
            finished.push(slice(&hidden, b, last)?);
            hidden = slice(&hidden, 0, b)?;
        }
        last = b;
        hidden = cell(mode, p, x, &hidden)?;
        outputs.push(hidden.h.shallow_clone());
    }
    finished.push(hidden);
    finished.reverse();
    Ok((Tensor::f_cat(&outputs, 0)?, concat(&finished)?))
}

/// libtorch's `ReversedPackedLayer`: steps from the last back to the first; a sequence joins the
/// state, from the initial state, at its own last step.
fn reverse_direction(
    mode: Mode,
    p: &CellParams,
    input: &Tensor,
    batch_sizes: &[i64],
    initial: RnnState,
) -> Result<(Tensor, RnnState)> {
    let steps = step_inputs(p, input, batch_sizes)?;
    let mut last = *batch_sizes.last().expect("checked: at least one step");
    let mut hidden = slice(&initial, 0, last)?;
    let mut outputs = Vec::with_capacity(steps.len());
    for (x, &b) in steps.iter().zip(batch_sizes).rev() {
        if b > last {
            hidden = concat(&[hidden, slice(&initial, last, b)?])?;
        }
        last = b;
        hidden = cell(mode, p, x, &hidden)?;
        outputs.push(hidden.h.shallow_clone());
    }
    outputs.reverse();
    Ok((Tensor::f_cat(&outputs, 0)?, hidden))
}

/// One step of libtorch's CPU cells with the input projection `x` precomputed (in-place
/// operations where libtorch uses them, so that rounding and autograd's graph are the same).
fn cell(mode: Mode, p: &CellParams, x: &Tensor, hidden: &RnnState) -> Result<RnnState> {
    let mut hh = hidden.h.f_linear(p.w_hh, p.b_hh)?;
    Ok(match mode {
        Mode::RnnTanh | Mode::RnnRelu => {
            let pre = hh.f_add_(x)?;
            let h = if mode == Mode::RnnTanh {
                pre.f_tanh()?
            } else {
                pre.f_relu()?
            };
            RnnState { h, c: None }
        }
        Mode::Lstm => {
            let mut gates = hh.f_add_(x)?.f_unsafe_chunk(4, 1)?.into_iter();
            let mut next = || gates.next().expect("4 chunks of 4·hidden_size columns");
            let i = next().f_sigmoid_()?;
            let f = next().f_sigmoid_()?;
            let g = next().f_tanh_()?;
            let o = next().f_sigmoid_()?;
            let cx = hidden.c.as_ref().expect("LSTM state has c");
            let c = f.f_mul(cx)?.f_add_(&i.f_mul(&g)?)?;
            let h = o.f_mul(&c.f_tanh()?)?;
            let h = match p.w_hr {
                Some(w_hr) => h.f_matmul(&w_hr.f_tr()?)?,
                None => h,
            };
            RnnState { h, c: Some(c) }
        }
        Mode::Gru => {
            let xs = x.f_unsafe_chunk(3, 1)?;
            let mut hs = hh.f_unsafe_chunk(3, 1)?.into_iter();
            let mut next = || hs.next().expect("3 chunks of 3·hidden_size columns");
            let r = next().f_add_(&xs[0])?.f_sigmoid_()?;
            let z = next().f_add_(&xs[1])?.f_sigmoid_()?;
            let n = xs[2].f_add(&next().f_mul_(&r)?)?.f_tanh_()?;
            let h = hidden.h.f_sub(&n)?.f_mul_(&z)?.f_add_(&n)?;
            RnnState { h, c: None }
        }
    })
}
