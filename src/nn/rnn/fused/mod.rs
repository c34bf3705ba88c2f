//! Fused inference kernel for [`crate::nn::rnn::RnnBase`]: eval mode, no autograd, f32 on CPU.
//! Opt in with [`crate::nn::rnn::RnnBase::set_fused_inference`]; the
//! [`crate::serve::predictor::Predictor`] does. The exact path (libtorch's own kernels, bitwise
//! equal to PyTorch) stays the default.
//!
//! Per layer and direction, rows kept sorted by length (longest first):
//! ```text
//! P = X W_ihᵀ                 (N·L, G) in one GEMM    b = b_ih + b_hh (LSTM, RNN); b_ih (GRU)
//!                             (LSTM, GRU on AMD with AVX-512: rnnkit's, see own_input_gemm)
//! for t ascending (forward) or descending (reverse):
//!   a = #{n : len_n > t}        the rows still running are the prefix h[..a]
//!   R = h[..a] W_hhᵀ            (a, G): a hand-written product for a ≤ 4, libtorch's sgemm above
//!   one pass per row: gates from (P[n, t] + b) + R[k] (GRU: + b_hh), nonlinearities, update
//!   LSTM with proj_size: h[..a] = (o ⊙ tanh c)[..a] W_hrᵀ
//! ```
//! G = gates · hidden_size. b is added in the pass rather than by the GEMM, which would first copy
//! it into every row of P (a pass over (N·L, G) floats); the first layer's table of token
//! projections ([`input_table`]) holds it already and the pass adds zeros. libtorch's CPU path
//! issues about ten operator calls per step, each allocating its result; at small batch those
//! calls, not the arithmetic, are the time. Here a step is at most two calls plus one pass over the
//! gates. At batch ≤ 8 without projection (with AVX-512: batch ≤ 32, or 64 with exactly two
//! threads, projection or not) a step makes no libtorch call at all: the recurrent dot products and
//! the gates are fused per hidden unit, and two threads of libtorch's own OpenMP pool each take
//! half the hidden units (and so half of W_hh, which stays in that core's L2 cache), meeting at a
//! barrier per step; a bidirectional layer instead runs its two directions at once, one per thread,
//! no barrier. With AVX-512 that path multiplies W_hh packed in blocks of 16 hidden units (packed
//! once per weight version, [`PanelCache`]): M rows × 16 units × every gate accumulate in registers
//! over k, the next block's panel is prefetched into L2 meanwhile, and the cell update runs on the
//! same registers; the last quarter of each thread's blocks goes to whichever thread is free first,
//! so a core slowed by its neighbours does not hold the other at the barrier
//! (`SmallBatch::step_shared`); a projection is a second product of the same kind, each thread
//! taking half of h's columns after a barrier:
//! ```text
//! acc[m][q] = Σ_k h[r+m, k] · W_hh[q·H + u .. q·H + u + 16, k]     M ≤ 6 (LSTM), 8 (GRU, RNN)
//! h[r+m, j .. j + 16] = Σ_u (o ⊙ tanh c)[r+m, u] · W_hr[j .. j + 16, u]         (projection)
//! ```
//!
//! Numbers: the same formulas as libtorch's cells, different rounding only (summation order in
//! the products; exp and tanh from Cephes-style polynomials, within a few ulp; on AVX-512 a
//! reciprocal estimate refined by a Newton step instead of a division). Tests bound the
//! difference to PyTorch's outputs (`tests/fused.rs`). Steps past a row's length are never
//! computed: their outputs are 0 and `h_n`/`c_n` come from each row's last real step, exactly
//! as with PyTorch's packed sequences.
//!
//! Memory: the kernels reach the buffers through raw pointers (`Shared`, `Bufs`,
//! `avx512::State`), taken once per direction from tensors the kernel made or made contiguous
//! (`f32_data` checks f32, contiguous, CPU). Threads never write the same element: the sgemm
//! path's gate pass splits the rows, the per-unit path the hidden units (or 16-unit blocks,
//! claimed atomically), reading h from one buffer while writing the other, with a barrier
//! between steps. Each `unsafe` block states its part of this.
//!
//! Files, each importing only those after it: this one holds the entry points (`forward`,
//! `supported`, `faster`, [`input_table`]); `direction` runs one layer direction (buffers, and
//! the path with libtorch's sgemm per step); `input_projection` rnnkit's own `X W_ihᵀ` (and `PackedLinear`, the same product for an output layer);
//! `small_batch` the per-unit path, its batch limits and its two threads; `avx512` the AVX-512
//! tile; `cell` the portable and AVX2 cell update; `avx2` the AVX2 kernels; `panels` the packed
//! weights; `buffers` the geometry and raw access to the buffers; `scalar` exp/σ/tanh; `cpu`
//! the feature checks.

mod buffers;
mod cell;
mod cpu;
mod direction;
mod input_projection;
mod panels;
mod scalar;
mod small_batch;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

pub use input_projection::{force_input_projection, PackedLinear};
pub use panels::PanelCache;

thread_local! {
    static FORWARDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many passes of the fused kernel this thread has started (calls of its entry point, whatever
/// the batch takes inside). Tests read it before and after a call to prove the fused path ran,
/// since [`crate::nn::rnn::RnnBase::set_fused_inference`] falls back to the exact path silently.
pub fn forwards_on_this_thread() -> u64 {
    FORWARDS.with(|c| c.get())
}

use crate::error::{Error, Result};
use crate::nn::rnn::config::{CellParams, Mode, RnnConfig, RnnState};
use buffers::Geom;
use cpu::avx512_available;
use direction::{run_direction, Prepared};
#[cfg(target_arch = "x86_64")]
use input_projection::{input_projection, own_input_gemm};
use small_batch::{per_unit_path, wide_batch, WIDE_BATCH_2T};
use tch::{Device, Kind, Tensor};

/// Whether the fused kernel can run `input` with these weights: f32 on CPU, autograd off, a
/// non-empty batch (empty ones take the exact path, which returns empty results).
pub(crate) fn supported(input: &Tensor, flat: &[Tensor]) -> bool {
    input.kind() == Kind::Float
        && input.device() == Device::Cpu
        && input.dim() == 3
        && input.numel() > 0
        && flat.iter().all(|w| w.kind() == Kind::Float)
        && !crate::nn::inference::grad_enabled()
}

/// Where the fused kernel beats libtorch's (measured with `rnnkit bench`, 2 threads; the
/// figures are in docs/PERFORMANCE.md): GRU and RNN always (libtorch runs them op by op); LSTM
/// for padded batches (libtorch's packed LSTM is op by op too) and up to batch 4, or 16 with
/// the AVX-512 product, or [`WIDE_BATCH_2T`] with exactly two threads, each keeping its half of
/// W_hh in its own L2. Not with one thread nor more than two (oneDNN's LSTM uses every core,
/// the per-unit path two).
pub(crate) fn faster(mode: Mode, batch: i64, padded: bool) -> bool {
    let wide = || tch::get_num_threads() == 2 && batch <= WIDE_BATCH_2T as i64;
    mode != Mode::Lstm || padded || batch <= 4 || (avx512_available() && (batch <= 16 || wide()))
}

/// The largest batch in which the fused kernel computes every row independently of the others: each
/// output element of such a pass has the bits it has when that row runs alone (batch 1, its own
/// length). `table`: layer 0 reads [`input_table`] (a lookup, the same for any batch).
///
/// That holds on the AVX-512 per-unit path (`small_batch`): every product element is one
/// FMA chain over k in order, whichever row block (1 to 8 rows) and thread computes it, and the
/// cell update is elementwise; layers above 0 (and layer 0 without a table) then need rnnkit's
/// own input projection (`input_projection`), which is the same chain. libtorch's sgemm chooses
/// its kernel and blocking by the matrix shape, so a row's sums change with the batch; where
/// it would run, the answer is 1 (rows one at a time). For LSTM the bound also keeps
/// `faster` choosing the fused kernel when no row is padded.
pub fn row_independent_batch(mode: Mode, cfg: &RnnConfig, table: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    let own = own_input_gemm(mode);
    #[cfg(not(target_arch = "x86_64"))]
    let own = false;
    if !avx512_available() || !(table || own) || (cfg.num_layers > 1 && !own) {
        return 1;
    }
    let limit = wide_batch();
    if mode == Mode::Lstm && tch::get_num_threads() != 2 {
        limit.min(16)
    } else {
        limit
    }
}

/// The first layer's input: the sequences, or token ids and a table of their input projections.
pub enum Input<'a> {
    Seq(&'a Tensor),
    /// Layer 0's projection of the token at row r (rows in the input's layout) is row `ids[r]`
    /// of `tables[direction]`, (V, G) = `E W_ih_l0ᵀ + b` from [`input_table`]; read in place,
    /// never gathered into an (N·L, G) copy.
    Table {
        n: i64,
        l: i64,
        ids: &'a [i64],
        tables: &'a [Tensor],
    },
}

/// `input` (batch-first or not, per `cfg`), `lengths` (None: all L), `hx` (already checked).
pub(crate) fn forward(
    mode: Mode,
    cfg: &RnnConfig,
    flat: &[Tensor],
    panels: &PanelCache,
    input: Input,
    lengths: Option<&[i64]>,
    hx: &RnnState,
) -> Result<(Tensor, RnnState)> {
    FORWARDS.with(|c| c.set(c.get() + 1));
    let (n, l) = match &input {
        Input::Seq(x) => {
            let size = x.size();
            if cfg.batch_first {
                (size[0], size[1])
            } else {
                (size[1], size[0])
            }
        }
        Input::Table { n, l, .. } => (*n, *l),
    };
    let (nu, lu) = (n as usize, l as usize);
    let lens: Vec<usize> = match lengths {
        Some(v) => v.iter().map(|&x| x as usize).collect(),
        None => vec![lu; nu],
    };
    let mut order: Vec<usize> = (0..nu).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let active: Vec<usize> = (0..lu)
        .map(|t| order.partition_point(|&i| lens[i] > t))
        .collect();
    let d = cfg.num_directions() as usize;
    let (hh, ho) = (cfg.hidden_size as usize, cfg.output_hidden_size() as usize);
    let cells = cfg.cell_params("fused kernel", flat)?;
    let h0 = hx.h.to_kind(Kind::Float).contiguous();
    let c0 = hx.c.as_ref().map(|c| c.to_kind(Kind::Float).contiguous());
    let geom = Geom {
        order: &order,
        active: &active,
        batch_first: cfg.batch_first,
        n: nu,
        l: lu,
    };
    let (mut x, given) = match input {
        Input::Seq(x) => (x.contiguous(), None),
        Input::Table { ids, tables, .. } => (
            Tensor::empty([0], (Kind::Float, Device::Cpu)),
            Some((ids, tables)),
        ),
    };
    let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
    // Every row of every step is written unless some sequence ends early (its padding stays 0).
    let padded = lens.iter().any(|&x| x < lu);
    // Batch-first, sequence b's steps are rows b·L .. b·L + len_b: the input projection skips
    // the padding after them (time-major, the padding is scattered: every row is projected).
    let valid: Option<Vec<(usize, usize)>> =
        (padded && cfg.batch_first).then(|| (0..nu).map(|b| (b * lu, b * lu + lens[b])).collect());
    for layer in 0..cfg.num_layers as usize {
        let size = [n * l, (d * ho) as i64];
        let out = if padded {
            Tensor::zeros(size, (Kind::Float, Device::Cpu))
        } else {
            Tensor::empty(size, (Kind::Float, Device::Cpu))
        };
        let given = given.filter(|_| layer == 0);
        let x2 = if given.is_some() {
            x.shallow_clone()
        } else {
            x.f_reshape([n * l, -1])?
        };
        // A bidirectional layer on the per-unit path runs its directions concurrently.
        let concurrent = d == 2 && per_unit_path(nu, cfg.proj_size > 0);
        let (mut done, mut jobs) = (Vec::new(), Vec::new());
        for dir in 0..d {
            let p = &cells[layer * d + dir];
            let idx = (layer * d + dir) as i64;
            let w_hh_size = [mode.gates() * hh as i64, ho as i64];
            if p.w_hh.size() != w_hh_size {
                let suffix = if dir == 1 { "_reverse" } else { "" };
                return Err(Error::shape(
                    format!("fused kernel: weight_hh_l{layer}{suffix}"),
                    format!("{w_hh_size:?}"),
                    &p.w_hh.size(),
                ));
            }
            // The table rows hold their bias; the GEMM's do not (see the module doc).
            let (proj, bias, gather) = match given {
                Some((ids, tables)) => (tables[dir].shallow_clone(), None, Some(ids)),
                #[cfg(target_arch = "x86_64")]
                None if own_input_gemm(mode) => {
                    let (gsz, kdim) = (mode.gates() * hh as i64, x2.size()[1]);
                    if p.w_ih.size() != [gsz, kdim] {
                        return Err(Error::shape(
                            format!("fused kernel: weight_ih_l{layer} against the layer's input"),
                            format!("[{gsz}, {kdim}]"),
                            &p.w_ih.size(),
                        ));
                    }
                    let i = 3 * idx as usize + 2;
                    let w = panels.get(i, p.w_ih, mode.gates() as usize, hh, kdim as usize);
                    (
                        input_projection(mode, &x2, &w, hh, valid.as_deref())?,
                        input_bias(mode, p),
                        None,
                    )
                }
                None => (x2.f_mm(&p.w_ih.tr())?, input_bias(mode, p), None),
            };
            let packed = (avx512_available() && per_unit_path(nu, cfg.proj_size > 0)).then(|| {
                let i = 3 * idx as usize;
                let w_hh = panels.get(i, p.w_hh, mode.gates() as usize, hh, ho);
                let w_hr = p.w_hr.map(|w| panels.get(i + 1, w, 1, ho, hh));
                (w_hh, w_hr)
            });
            let h_init = h0.get(idx);
            let c_init = c0.as_ref().map(|c| c.get(idx));
            match run_direction(
                mode,
                &geom,
                p,
                &proj,
                bias.as_ref(),
                gather,
                &out,
                dir * ho,
                dir == 1,
                (hh, ho),
                &h_init,
                c_init.as_ref(),
                packed,
                concurrent,
            )? {
                Prepared::Done(h, c) => done.push((h, c)),
                Prepared::Small(job) => jobs.push(job),
            }
        }
        if !jobs.is_empty() {
            // Both directions at once, one per thread: no barrier between them.
            crate::nn::inference::parallel(2, &|thread, threads| {
                for job in jobs.iter().skip(thread).step_by(threads) {
                    // SAFETY: the job owns (or borrows for its lifetime) every buffer its
                    // pointers reach, and no Rust reference to them is alive; each job runs on
                    // exactly one thread (`skip`/`step_by` deal them out), on one thread itself
                    // (`defer` leaves it unthreaded); the two jobs share only `out`, where each
                    // writes its own direction's columns.
                    unsafe { job.batch.run() };
                }
            });
            done.extend(jobs.into_iter().map(|job| job.finish()));
        }
        for (h, c) in done {
            h_n.push(h);
            c_n.extend(c);
        }
        x = out;
    }
    let out_size = if cfg.batch_first {
        [n, l, (d * ho) as i64]
    } else {
        [l, n, (d * ho) as i64]
    };
    let output = x.f_view(out_size)?;
    let h = Tensor::f_stack(&h_n, 0)?;
    let c = (mode == Mode::Lstm)
        .then(|| Tensor::f_stack(&c_n, 0))
        .transpose()?;
    Ok((output, RnnState::new(h, c)))
}

/// The bias of the input projection: `b_ih + b_hh` (GRU: `b_ih`; its `b_hh` stays in the
/// reset gate's product), (G); None without biases.
fn input_bias(mode: Mode, p: &CellParams) -> Option<Tensor> {
    match (p.b_ih, p.b_hh, mode) {
        (Some(bi), _, Mode::Gru) => Some(bi.shallow_clone()),
        (Some(bi), Some(bh), _) => Some(bi + bh),
        _ => None,
    }
}

/// The first layer's input projections for every token id: `E W_ih_l0ᵀ + b`, (V, G) per
/// direction, for [`Input::Table`]. `embedding` is (V, E) = (V, input_size).
pub fn input_table(
    mode: Mode,
    cfg: &RnnConfig,
    flat: &[Tensor],
    embedding: &Tensor,
) -> Result<Vec<Tensor>> {
    let cells = cfg.cell_params("fused kernel", flat)?;
    (0..cfg.num_directions() as usize)
        .map(|dir| {
            let p = &cells[dir];
            Ok(match input_bias(mode, p) {
                Some(b) => Tensor::f_addmm(&b, embedding, &p.w_ih.tr())?,
                None => embedding.f_mm(&p.w_ih.tr())?,
            })
        })
        .collect()
}
