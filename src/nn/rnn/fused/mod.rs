//! Fused inference kernel for [`crate::nn::rnn::RnnBase`]: eval mode, no autograd, f32 on CPU.
//! Opt in with [`crate::nn::rnn::RnnBase::set_fused_inference`]; the [`crate::serve::predictor::Predictor`]
//! does. The exact path (libtorch's own kernels, bitwise equal to PyTorch) stays the default.
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

// Polynomial constants are Cephes' as published (more digits than f32 holds; same values).
#![allow(clippy::excessive_precision)]

use crate::error::{Error, Result};
use crate::nn::rnn::config::{CellParams, Mode, RnnConfig, RnnState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

/// Running rows at or below this count use the hand-written product.
const SMALL_ROWS: usize = 4;

/// Batches at or below this size (without projection) never call libtorch inside the
/// recurrence ([`SmallBatch`]); with AVX-512, up to [`WIDE_BATCH`] or [`WIDE_BATCH_2T`].
const SMALL_BATCH: usize = 8;

/// The per-unit path's batch limit with the AVX-512 product: GRU B=32, T=64, H=256, 2 layers
/// 16-20 ms against 20-27 with sgemm per step; GRU B=16, H=512 12-13 ms against 35-38.
const WIDE_BATCH: usize = 32;

/// The limit with exactly two threads, where each keeps its half of W_hh (and the next block's
/// panel, prefetched) in its own L2 and the last quarter of each half goes to whichever core
/// is free ([`SmallBatch::step_shared`]). Against the other path in the same process, medians
/// of per-iteration ratios, B=64: GRU T=256, H=128, 2 layers, bidirectional 1.16-1.17 (3 runs)
/// and T=64, H=256, 2 layers 1.15 against sgemm per step; RNN_TANH T=64, H=256, 2 layers 1.10;
/// LSTM against oneDNN: T=32, I=H=512 1.02-1.14 (8 runs; fastest iterations 1.00-1.04, and
/// 1.13 in one), T=64, H=128 1.09, T=32, I=256, H=1024 1.03, T=64, H=256, 2 layers 0.99 (a
/// tie). At B=128 oneDNN's LSTM is ahead (T=64, H=256: 0.79; T=32, H=512: 1.00).
const WIDE_BATCH_2T: usize = 64;

/// [`WIDE_BATCH_2T`] with exactly two threads, else [`WIDE_BATCH`].
fn wide_batch() -> usize {
    if tch::get_num_threads() == 2 {
        WIDE_BATCH_2T
    } else {
        WIDE_BATCH
    }
}

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

/// Where the fused kernel beats libtorch's (measured with `rnnkit bench`, 2 threads): GRU and
/// RNN always (libtorch runs them op by op); LSTM for padded batches (libtorch's packed LSTM is
/// op by op too) and up to batch 4, or 16 with the AVX-512 product (B=8, T=256, H=128,
/// bidirectional: 5.7-5.9 ms against oneDNN's 8.4-10.2; B=8, T=64, H=256: 2.6 against 3.4;
/// B=16, T=64, H=256: 5.3-5.6 against 5.7-6.3), or [`WIDE_BATCH_2T`] with exactly two
/// threads, each keeping its half of W_hh in its own L2 (fastest iteration, alternating
/// processes: B=32, T=64, H=256, 2 layers 14.8-21.0 ms against 14.7-21.7, ahead in 7 pairs of
/// 8; B=32, T=256, H=128 9.4-10.0 against 10.5-11.9; B=24, T=64, H=256 5.8-6.1 against
/// 6.5-6.8; B=64 as listed there). Not with one thread (B=32: 28.0-29.1 against oneDNN's
/// 26.3-28.4) nor more than two (oneDNN's LSTM uses every core, the per-unit path two).
pub(crate) fn faster(mode: Mode, batch: i64, padded: bool) -> bool {
    let wide = || tch::get_num_threads() == 2 && batch <= WIDE_BATCH_2T as i64;
    mode != Mode::Lstm || padded || batch <= 4 || (avx512_available() && (batch <= 16 || wide()))
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
                        input_projection(mode, &x2, &w, hh)?,
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
                    // SAFETY: each job's buffers are its own (see `SmallJob`'s Sync impl).
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

/// Whether [`input_projection`] computes the layers' input projections instead of libtorch's
/// sgemm: LSTM and GRU (one gate's tile is too narrow) on AVX-512 CPUs from AMD. There, MKL
/// runs its generic code path (`mkl_blas_def_sgemm_kernel_0_zen` in perf), about 80% of the
/// FMA peak; the per-unit product's tile reaches more. Measured on 2 cores of an EPYC (Zen 4,
/// FMA peak 234 GFLOP/s), 2 threads, medians, MKL against this: X (2048, 512) · W_ih (2048,
/// 512)ᵀ 187-188 GFLOP/s against 220-221; (2048, 256) · (1024, 256)ᵀ 180-183 against 203-207;
/// (2048, 128) · (1024, 128)ᵀ 177 against 190-191; (8192, 128) · (512, 128)ᵀ 169-177 against
/// 181-185; (256, 128) · (1024, 128)ᵀ 162-164 against 219. On Intel CPUs MKL runs its own
/// AVX-512 kernels, not measured against this one: they keep MKL's.
fn own_input_gemm(mode: Mode) -> bool {
    let allowed = mode.gates() > 1 && avx512_available();
    match FORCE_INPUT_GEMM.load(Ordering::Relaxed) {
        1 => false,
        2 => allowed,
        _ => allowed && amd(),
    }
}

/// 0: [`own_input_gemm`] decides; 1: never; 2: wherever it can run.
static FORCE_INPUT_GEMM: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// For tests: `Some(true)` computes the input projections with [`input_projection`] wherever
/// it can run (every AVX-512 CPU, not only AMD's), `Some(false)` never, `None` as chosen by
/// the CPU (the default).
#[doc(hidden)]
pub fn force_input_projection(on: Option<bool>) {
    let v = match on {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    };
    FORCE_INPUT_GEMM.store(v, Ordering::Relaxed);
}

/// Whether the CPU's vendor string is AMD's.
fn amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMD.get_or_init(|| {
            // SAFETY: cpuid leaf 0 exists on every x86_64 CPU.
            #[allow(unused_unsafe)]
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            // "AuthenticAMD" in ebx, edx, ecx.
            (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x W_ihᵀ`, (rows, G), for `x` (rows, I) contiguous, with W_ih packed by [`pack_panels`]:
/// the cell step's products ([`avx512::step`]) without the cell update, every gate's result
/// stored. The threads split the 16-unit blocks; each runs over `x` in slices of a few
/// hundred KiB (its core's L2 holds one, with a block's panel and the next, prefetched).
#[cfg(target_arch = "x86_64")]
fn input_projection(mode: Mode, x: &Tensor, panels: &[Lane], hh: usize) -> Result<Tensor> {
    let x = x.contiguous();
    let (rows, kdim) = (x.size()[0] as usize, x.size()[1] as usize);
    let gates = mode.gates() as usize;
    let gsz = gates * hh;
    let out = Tensor::empty([rows as i64, gsz as i64], (Kind::Float, Device::Cpu));
    let blocks = hh.div_ceil(16);
    assert!(panels.len() >= blocks * kdim * gates);
    // Rows per slice: a multiple of 24 (whole chunks of 6 and of 8 rows), about 192 KiB.
    let slice_rows = ((48 << 10) / kdim.max(1)).max(24) / 24 * 24;
    let (xp, op) = (x.data_ptr() as usize, out.data_ptr() as usize);
    let threads = (tch::get_num_threads().max(1) as usize).min(blocks);
    crate::nn::inference::parallel(threads, &|thread, team| {
        let (b0, b1) = (blocks * thread / team, blocks * (thread + 1) / team);
        if b0 == b1 {
            return;
        }
        let (u0, u1) = (16 * b0, (16 * b1).min(hh));
        for r0 in (0..rows).step_by(slice_rows) {
            let state = avx512::State {
                mode,
                project: true,
                gates,
                hh,
                kdim,
                u0,
                width: u1 - u0,
                // SAFETY: rows r0.. of the contiguous (rows, kdim) input and (rows, gsz) output.
                x: unsafe { (xp as *const f32).add(r0 * kdim) },
                dst: unsafe { (op as *mut f32).add(r0 * gsz) },
                dst_stride: gsz,
                write_out: false,
                c: std::ptr::null_mut(),
                b: std::ptr::null(),
            };
            let a = slice_rows.min(rows - r0);
            // SAFETY: this thread writes only its units' columns of `out`; `x` and the panels
            // are read only.
            unsafe { avx512::step(&state, a, &panels[b0 * kdim * gates..], None) };
        }
    });
    Ok(out)
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

/// Batch geometry shared by every layer: rows sorted by length, running rows per step.
struct Geom<'a> {
    order: &'a [usize],
    active: &'a [usize],
    batch_first: bool,
    n: usize,
    l: usize,
}

impl Geom<'_> {
    /// Row of `(sequence i, step t)` in the (N·L, ·) matrices.
    #[inline(always)]
    fn row(&self, i: usize, t: usize) -> usize {
        if self.batch_first {
            i * self.l + t
        } else {
            t * self.n + i
        }
    }
}

/// A contiguous f32 CPU tensor's elements, to write.
///
/// SAFETY: the caller keeps `t` alive, contiguous and unresized while the slice lives, and no
/// other slice of the same tensor is alive at the same time.
unsafe fn slice_mut<'a>(t: &Tensor) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

/// A contiguous f32 CPU tensor's elements, to read (weights may be read by several threads).
///
/// SAFETY: the caller keeps `t` alive, contiguous and unresized, and unwritten, while the slice
/// lives.
unsafe fn slice<'a>(t: &Tensor) -> &'a [f32] {
    std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel())
}

/// Runs one direction of one layer; returns its `h_n` (N, H_out) and `c_n` (N, H). Row r's
/// input projection is row r of `proj`, or with `gather` row `gather[r]`.
#[allow(clippy::too_many_arguments)]
fn run_direction<'a>(
    mode: Mode,
    g: &'a Geom<'a>,
    p: &CellParams,
    proj: &Tensor,
    bias: Option<&Tensor>,
    gather: Option<&[i64]>,
    out: &Tensor,
    col: usize,
    reverse: bool,
    (hh, ho): (usize, usize),
    h_init: &Tensor,
    c_init: Option<&Tensor>,
    panels: Option<Packs>,
    defer: bool,
) -> Result<Prepared<'a>> {
    let gsz = mode.gates() as usize * hh;
    let n = g.n as i64;
    let f32cpu = (Kind::Float, Device::Cpu);
    // Working buffers as tensors, so libtorch's sgemm can write into them.
    let h = Tensor::empty([n, ho as i64], f32cpu);
    let hp = Tensor::empty([n, hh as i64], f32cpu);
    let c = Tensor::zeros([n, hh as i64], f32cpu);
    let w_hh = p.w_hh.contiguous();
    let w_hr = p.w_hr.map(Tensor::contiguous);
    // The biases the gate pass adds, [input projection's (G) | GRU's b_hh (G)], zeros where
    // there is none: GRU keeps b_hh apart, since the reset gate multiplies (W_hn h + b_hn).
    let b = Tensor::zeros([2, gsz as i64], f32cpu);
    if let Some(bias) = bias {
        b.get(0).copy_(bias);
    }
    if let (Mode::Gru, Some(b_hh)) = (mode, p.b_hh) {
        b.get(1).copy_(b_hh);
    }
    let proj = proj.contiguous();
    let prow = gather.map_or(std::ptr::null(), <[i64]>::as_ptr);
    {
        let h_init = h_init.contiguous();
        // SAFETY: contiguous tensors alive for this block; one slice each.
        let (hs, h0) = unsafe { (slice_mut(&h), slice(&h_init)) };
        for (k, &i) in g.order.iter().enumerate() {
            hs[k * ho..(k + 1) * ho].copy_from_slice(&h0[i * ho..(i + 1) * ho]);
        }
        if let Some(c_init) = c_init {
            let c0 = c_init.contiguous();
            // SAFETY: as above.
            let (cs, c0) = unsafe { (slice_mut(&c), slice(&c0)) };
            for (k, &i) in g.order.iter().enumerate() {
                cs[k * hh..(k + 1) * hh].copy_from_slice(&c0[i * hh..(i + 1) * hh]);
            }
        }
    }
    let out_width = out.size()[1] as usize;
    // A projection needs the packed W_hr (AVX-512).
    let packed_proj = panels.as_ref().is_some_and(|p| p.1.is_some());
    if per_unit_path(g.n, w_hr.is_some()) && (w_hr.is_none() || packed_proj) {
        let gates = mode.gates() as usize;
        let threaded = !defer && gates * hh * ho * g.n >= SmallBatch::THREADED_MIN_MACS && hh >= 8;
        // With the packed panels each thread's units (and projected columns) start on a
        // 16-unit block.
        let halves = |n: usize| {
            let split = if panels.is_some() {
                (n / 2 + 8) / 16 * 16
            } else {
                (n / 2) & !3
            };
            [(0, split), (split, n)]
        };
        let parts = if threaded && halves(hh)[0].1 > 0 && halves(hh)[0].1 < hh {
            halves(hh).to_vec()
        } else {
            vec![(0, hh)]
        };
        let proj_parts = if parts.len() == 2 {
            halves(ho).to_vec()
        } else {
            vec![(0, ho)]
        };
        let (panels, proj_panels) = match panels {
            Some((w, r)) => (Some(w), r),
            None => (None, None),
        };
        // Step 0 writes every element of the second buffer (running rows computed, the others
        // copied), so it needs no initial values.
        let h2 = h.empty_like();
        // SAFETY: every tensor below is contiguous f32 and owned by the job (or, `out` and the
        // ids, borrowed for its lifetime); nothing but the job touches them until it finishes.
        let sh = unsafe {
            Shared {
                p: slice(&proj).as_ptr(),
                prow,
                w: slice(&w_hh).as_ptr(),
                b: slice(&b).as_ptr(),
                h: [h.data_ptr() as *mut f32, h2.data_ptr() as *mut f32],
                c: c.data_ptr() as *mut f32,
                hp: hp.data_ptr() as *mut f32,
                out: out.data_ptr() as *mut f32,
            }
        };
        let job = SmallJob {
            batch: SmallBatch {
                mode,
                g,
                reverse,
                hh,
                ho,
                col,
                out_width,
                sh,
                parts,
                proj_parts,
                panels,
                proj_panels,
            },
            _keep: [w_hh, b, proj, hp],
            h: [h, h2],
            c,
        };
        if defer {
            return Ok(Prepared::Small(Box::new(job)));
        }
        // SAFETY: the job's buffers are alive and only it touches them.
        unsafe { job.batch.run() };
        let (h_n, c_n) = job.finish();
        return Ok(Prepared::Done(h_n, c_n));
    }
    let rec = Tensor::empty([n, gsz as i64], f32cpu);
    let w_hh_t = w_hh.tr();
    let w_hr_t = w_hr.as_ref().map(Tensor::tr);
    let step = Step {
        mode,
        hh,
        ho,
        gsz,
        has_proj: w_hr.is_some(),
        col,
        out_width,
    };
    let simd = simd_available();
    for s in 0..g.l {
        let t = if reverse { g.l - 1 - s } else { s };
        let a = g.active[t];
        if a == 0 {
            continue;
        }
        matmul_rows(&h, &w_hh, &w_hh_t, &rec, a)?;
        // SAFETY: libtorch is not touching these tensors until the next call below, and
        // `Step::rows` writes only the rows in its range.
        let bufs = unsafe {
            Bufs {
                p: slice(&proj).as_ptr(),
                prow,
                rec: slice(&rec).as_ptr(),
                b: slice(&b).as_ptr(),
                h: slice_mut(&h).as_mut_ptr(),
                c: c.data_ptr() as *mut f32,
                hp: slice_mut(&hp).as_mut_ptr(),
                out: slice_mut(out).as_mut_ptr(),
            }
        };
        if a * gsz >= PARALLEL_GATES_MIN {
            // The gate pass over two threads of libtorch's pool, half the rows each.
            crate::nn::inference::parallel(2, &|thread, threads| {
                let (k0, k1) = (a * thread / threads, a * (thread + 1) / threads);
                let mut scratch = vec![0f32; gsz + hh];
                // SAFETY: rows k0..k1 are this thread's alone.
                unsafe { step.rows(simd, g, t, k0..k1, bufs, &mut scratch) };
            });
        } else {
            let mut scratch = vec![0f32; gsz + hh];
            // SAFETY: one thread, all rows.
            unsafe { step.rows(simd, g, t, 0..a, bufs, &mut scratch) };
        }
        if let (Some(w_hr), Some(w_hr_t)) = (&w_hr, &w_hr_t) {
            matmul_rows(&hp, w_hr, w_hr_t, &h, a)?;
            // SAFETY: as above.
            let (hs, os) = unsafe { (slice(&h), slice_mut(out)) };
            for (k, &i) in g.order[..a].iter().enumerate() {
                let r = g.row(i, t) * out_width + col;
                os[r..r + ho].copy_from_slice(&hs[k * ho..(k + 1) * ho]);
            }
        }
    }
    // SAFETY: as above.
    let h_n = unsort_rows(g, unsafe { slice(&h) }, ho);
    // SAFETY: as above.
    let c_n = (mode == Mode::Lstm).then(|| unsort_rows(g, unsafe { slice(&c) }, hh));
    Ok(Prepared::Done(h_n, c_n))
}

/// Whether a direction runs on the per-unit path ([`SmallBatch`]): a small batch, and with a
/// projection only on AVX-512.
fn per_unit_path(n: usize, has_proj: bool) -> bool {
    if avx512_available() {
        n <= wide_batch()
    } else {
        !has_proj && n <= SMALL_BATCH
    }
}

/// A direction's packed W_hh and, with a projection, packed W_hr ([`PanelCache`]).
type Packs = (Arc<Vec<Lane>>, Option<Arc<Vec<Lane>>>);

/// A direction's result, or (`defer`) its per-unit job, to run alongside the other direction's.
enum Prepared<'a> {
    Done(Tensor, Option<Tensor>),
    Small(Box<SmallJob<'a>>),
}

/// A [`SmallBatch`] with the buffers its raw pointers point into.
struct SmallJob<'a> {
    batch: SmallBatch<'a>,
    /// W_hh, the biases and the input projections, read through `batch.sh`; the cell outputs
    /// before the projection, written through it.
    _keep: [Tensor; 4],
    /// h, double-buffered, and c, sorted by length, written through `batch.sh`.
    h: [Tensor; 2],
    c: Tensor,
}

// SAFETY: threads only call `batch.run()`, which reaches the tensors through raw pointers (each
// job's buffers are its own; `out` columns differ per direction); the tensors themselves are
// never touched while the job is shared.
unsafe impl Sync for SmallJob<'_> {}

impl SmallJob<'_> {
    /// `h_n` and `c_n` in the caller's row order.
    fn finish(self) -> (Tensor, Option<Tensor>) {
        let g = self.batch.g;
        let (hh, ho) = (self.batch.hh, self.batch.ho);
        // SAFETY: the job has finished; the buffers are contiguous f32.
        let last = unsafe { slice(&self.h[g.l % 2]) };
        let h_n = unsort_rows(g, last, ho);
        // SAFETY: as above.
        let c_n =
            (self.batch.mode == Mode::Lstm).then(|| unsort_rows(g, unsafe { slice(&self.c) }, hh));
        (h_n, c_n)
    }
}

/// Rows of `buf` (N, width), stored in length order, back in the caller's order.
fn unsort_rows(g: &Geom, buf: &[f32], width: usize) -> Tensor {
    let mut v = vec![0f32; g.n * width];
    for (k, &i) in g.order.iter().enumerate() {
        v[i * width..(i + 1) * width].copy_from_slice(&buf[k * width..(k + 1) * width]);
    }
    Tensor::from_slice(&v).view([g.n as i64, width as i64])
}

/// Raw views shared by the threads of the small-batch path. `h` is double-buffered: step s
/// reads `h[s % 2]` and writes `h[(s + 1) % 2]`. Each thread writes only its own hidden units'
/// columns of `h`, `c` and the output, so no element is written by two threads.
#[derive(Clone, Copy)]
struct Shared {
    p: *const f32,
    /// Row map into `p` (null: identity).
    prow: *const i64,
    w: *const f32,
    b: *const f32,
    h: [*mut f32; 2],
    c: *mut f32,
    /// LSTM with projection: o ⊙ tanh c (N, H) before the projection.
    hp: *mut f32,
    out: *mut f32,
}

// SAFETY: the pointers are only dereferenced inside `SmallBatch::run`, whose threads write
// disjoint elements and are separated by a barrier (release/acquire) at every step.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Batch ≤ [`SMALL_BATCH`] without projection, or with AVX-512 batch ≤ [`wide_batch`] (see
/// [`per_unit_path`]): per step and hidden unit range, the recurrent dot products of that
/// range's gate rows and the gate pass, fused; with two cores, each thread takes half the hidden
/// units (and so half of W_hh, which then stays in its core's L2 cache), or, in a bidirectional
/// layer, one direction each. With AVX-512 the products run on W_hh packed in 16-unit blocks
/// ([`avx512::step`]), the gates in the same registers, and a projection follows per step.
struct SmallBatch<'a> {
    mode: Mode,
    g: &'a Geom<'a>,
    reverse: bool,
    hh: usize,
    /// Width of h: `proj_size`, or `hh` without projection.
    ho: usize,
    col: usize,
    out_width: usize,
    sh: Shared,
    /// One per thread (one or two): its hidden units `u0..u1`.
    parts: Vec<(usize, usize)>,
    /// One per thread, as `parts`: its projected columns (with a projection).
    proj_parts: Vec<(usize, usize)>,
    /// With AVX-512: W_hh packed by [`pack_panels`] (then every `u0` is a multiple of 16).
    panels: Option<Arc<Vec<Lane>>>,
    /// W_hr packed likewise (a projection runs only with AVX-512).
    proj_panels: Option<Arc<Vec<Lane>>>,
}

impl SmallBatch<'_> {
    /// Below this many multiply-adds per step a second thread costs more than it saves.
    const THREADED_MIN_MACS: usize = 1 << 15;

    unsafe fn run(&self) {
        let simd = simd_available();
        let gates = self.mode.gates() as usize;
        // The AVX2 path's products and gates (the AVX-512 one keeps them in registers).
        let scratch = || match self.panels {
            Some(_) => Vec::new(),
            None => vec![0f32; (self.g.n * gates + gates + 1) * self.hh],
        };
        let project = self.proj_panels.is_some();
        if self.parts.len() == 1 {
            let mut z = scratch();
            for s in 0..self.g.l {
                self.step(simd, s, self.parts[0], &mut z);
                if project {
                    self.project(s, self.proj_parts[0]);
                }
            }
            return;
        }
        let arrived = AtomicUsize::new(0);
        let claimed = [AtomicUsize::new(0), AtomicUsize::new(0)];
        crate::nn::inference::parallel(2, &|thread, threads| {
            let mut z = scratch();
            if threads == 1 {
                for s in 0..self.g.l {
                    for &part in &self.parts {
                        // SAFETY: one thread does all units, step by step.
                        unsafe { self.step(simd, s, part, &mut z) };
                    }
                    if project {
                        for &cols in &self.proj_parts {
                            // SAFETY: as above.
                            unsafe { self.project(s, cols) };
                        }
                    }
                }
                return;
            }
            // Barrier: the team has exactly 2 threads here (max_threads = 2); both pass the
            // same barriers in the same order.
            let mut passed = 0;
            let mut barrier = || {
                passed += 1;
                arrived.fetch_add(1, Ordering::AcqRel);
                while arrived.load(Ordering::Acquire) < 2 * passed {
                    std::hint::spin_loop();
                }
            };
            for s in 0..self.g.l {
                // SAFETY: this part's units are this thread's alone, and a claimed block the
                // claimer's alone; step s starts only after both threads passed the barrier
                // ending step s-1.
                unsafe { self.step_shared(simd, s, thread, &claimed, &mut z) };
                if project {
                    // The projection reads every unit of o ⊙ tanh c: after both halves.
                    barrier();
                    // SAFETY: these columns of h are this thread's alone.
                    unsafe { self.project(s, self.proj_parts[thread]) };
                }
                barrier();
            }
        });
    }

    /// Thread `thread`'s share of step `s` with two threads. Without the packed panels: its
    /// part. With them, the part's first 16-unit blocks, then the blocks of the last quarter of
    /// each part, its own first, claimed one at a time by whichever thread gets there first
    /// (`claimed[p]`: part p's blocks claimed so far, over all steps). On a shared machine one
    /// core is often slower than the other for a while (the thread waiting at the barrier
    /// spent 3-26% of the recurrence there, in three runs of 200 passes); the end of its part
    /// then goes to the other core instead. Each block's arithmetic is the same whoever runs it.
    unsafe fn step_shared(
        &self,
        simd: bool,
        s: usize,
        thread: usize,
        claimed: &[AtomicUsize; 2],
        z: &mut [f32],
    ) {
        if self.panels.is_none() {
            return self.step(simd, s, self.parts[thread], z);
        }
        let pool = |(u0, u1): (usize, usize)| {
            let blocks = (u1 - u0).div_ceil(16);
            let shared = blocks.div_ceil(4);
            (u0 + 16 * (blocks - shared), shared)
        };
        let (u0, u1) = self.parts[thread];
        self.step(simd, s, (u0, pool((u0, u1)).0), z);
        for p in [thread, 1 - thread] {
            let (start, n) = pool(self.parts[p]);
            let end = self.parts[p].1;
            // Step s's claims are the counter's values s·n .. (s+1)·n.
            while let Ok(v) = claimed[p].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v < (s + 1) * n).then_some(v + 1)
            }) {
                let b0 = start + 16 * (v - s * n);
                self.step(simd, s, (b0, (b0 + 16).min(end)), z);
            }
        }
    }

    /// LSTM with projection, step `s`, columns `j0..j1` of h: h = (o ⊙ tanh c) W_hrᵀ.
    unsafe fn project(&self, s: usize, (j0, j1): (usize, usize)) {
        let (g, sh) = (self.g, self.sh);
        let t = if self.reverse { g.l - 1 - s } else { s };
        let a = g.active[t];
        let (h_prev, h_next) = (sh.h[s % 2] as *const f32, sh.h[(s + 1) % 2]);
        #[cfg(target_arch = "x86_64")]
        if let (Some(panels), true) = (&self.proj_panels, j0 < j1) {
            let rows = self.rows(t);
            let state = avx512::State {
                mode: self.mode,
                project: true,
                gates: 1,
                hh: self.ho,
                kdim: self.hh,
                u0: j0,
                width: j1 - j0,
                x: sh.hp,
                dst: h_next,
                dst_stride: self.ho,
                write_out: true,
                c: std::ptr::null_mut(),
                b: std::ptr::null(),
            };
            avx512::step(&state, a, &panels[j0 / 16 * self.hh..], Some(&rows));
        }
        for k in a..g.n {
            let at = k * self.ho + j0;
            std::ptr::copy_nonoverlapping(h_prev.add(at), h_next.add(at), j1 - j0);
        }
    }

    /// Where the input projections and outputs of step `t`'s running rows are.
    fn rows(&self, t: usize) -> RowPtrs<'_> {
        RowPtrs {
            g: self.g,
            t,
            p: self.sh.p,
            prow: self.sh.prow,
            gsz: self.mode.gates() as usize * self.hh,
            out: self.sh.out,
            out_width: self.out_width,
            col: self.col,
        }
    }

    unsafe fn step(&self, simd: bool, s: usize, part: (usize, usize), z: &mut [f32]) {
        if part.0 == part.1 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if simd {
            return self.step_avx2(s, part, z);
        }
        let _ = simd;
        self.step_generic::<false>(s, part, z)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step_avx2(&self, s: usize, part: (usize, usize), z: &mut [f32]) {
        self.step_generic::<true>(s, part, z)
    }

    /// Step `s` for `part`'s hidden units.
    #[inline(always)]
    unsafe fn step_generic<const SIMD: bool>(
        &self,
        s: usize,
        (u0, u1): (usize, usize),
        z: &mut [f32],
    ) {
        let (g, hh, sh) = (self.g, self.hh, self.sh);
        let gates = self.mode.gates() as usize;
        let gsz = gates * hh;
        let width = u1 - u0;
        let t = if self.reverse { g.l - 1 - s } else { s };
        let a = g.active[t];
        let (h_prev, h_next) = (sh.h[s % 2] as *const f32, sh.h[(s + 1) % 2]);
        #[cfg(target_arch = "x86_64")]
        let packed = self.panels.as_ref().map(|panels| {
            let ho = self.ho;
            let panels = &panels[u0 / 16 * ho * gates..];
            let proj = self.proj_panels.is_some();
            let state = avx512::State {
                mode: self.mode,
                project: false,
                gates,
                hh,
                kdim: ho,
                u0,
                width,
                x: h_prev,
                // With a projection the cell output goes to `hp`, projected afterwards.
                dst: if proj { sh.hp } else { h_next },
                dst_stride: hh,
                write_out: !proj,
                c: sh.c,
                b: sh.b,
            };
            avx512::step(&state, a, panels, Some(&self.rows(t)));
            if proj {
                return true;
            }
            false
        });
        #[cfg(not(target_arch = "x86_64"))]
        let packed: Option<bool> = None;
        // With a projection, `project` carries the rows that are not running.
        if packed == Some(true) {
            return;
        }
        if packed.is_none() {
            // No projection here: h is H wide.
            let w = std::slice::from_raw_parts(sh.w, gsz * hh);
            let b = std::slice::from_raw_parts(sh.b, 2 * gsz);
            let h_rows = std::slice::from_raw_parts(h_prev, a * hh);
            let (zall, tmp) = z.split_at_mut(g.n * gates * hh);
            let stride = gates * width;
            // zall[k·stride + q·width + j] = W_hh[q·hh + u0 + j] · h_prev[k], for every running
            // row k; each block of four W_hh rows is loaded once and used for all rows.
            for q in 0..gates {
                let rows = &w[(q * hh + u0) * hh..(q * hh + u1) * hh];
                gemm_rows::<SIMD>(h_rows, a, hh, rows, &mut zall[q * width..], stride);
            }
            let (zcell, tmp) = tmp.split_at_mut(gates * hh);
            for (k, &i) in g.order[..a].iter().enumerate() {
                let row = g.row(i, t);
                let pre = std::slice::from_raw_parts(sh.p.add(p_row(sh.prow, row) * gsz), gsz);
                let hn = std::slice::from_raw_parts_mut(h_next.add(k * hh + u0), width);
                hn.copy_from_slice(&h_rows[k * hh + u0..k * hh + u1]);
                let c = std::slice::from_raw_parts_mut(sh.c.add(k * hh + u0), width);
                let rec = &zall[k * stride..(k + 1) * stride];
                cell::<SIMD>(self.mode, (hh, u0), rec, pre, b, c, hn, zcell, tmp);
                let o = row * self.out_width + self.col + u0;
                std::ptr::copy_nonoverlapping(hn.as_ptr(), sh.out.add(o), width);
            }
        }
        // Rows not running at t (finished, or in the reverse direction not yet started) keep
        // their state.
        for k in a..g.n {
            std::ptr::copy_nonoverlapping(h_prev.add(k * hh + u0), h_next.add(k * hh + u0), width);
        }
    }
}

/// Where running row k's input projections (a G-wide row) and output (at this direction's
/// column) are at step t.
struct RowPtrs<'a> {
    g: &'a Geom<'a>,
    t: usize,
    p: *const f32,
    prow: *const i64,
    gsz: usize,
    out: *mut f32,
    out_width: usize,
    col: usize,
}

impl RowPtrs<'_> {
    /// SAFETY: `k` is a running row; the pointers are [`Shared`]'s.
    #[inline(always)]
    unsafe fn at(&self, k: usize) -> (*const f32, *mut f32) {
        let row = self.g.row(self.g.order[k], self.t);
        (
            self.p.add(p_row(self.prow, row) * self.gsz),
            self.out.add(row * self.out_width + self.col),
        )
    }
}

/// The row of the input projections that step-row `row` reads.
///
/// SAFETY: `prow` is null or points at an id for every row.
#[inline(always)]
unsafe fn p_row(prow: *const i64, row: usize) -> usize {
    if prow.is_null() {
        row
    } else {
        *prow.add(row) as usize
    }
}

/// Whether the AVX2+FMA kernels can run on this CPU.
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the AVX-512 product ([`avx512::panels`]) can run on this CPU.
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Sixteen floats on a cache line's boundary (one AVX-512 vector).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lane([f32; 16]);

/// A weight (gates·U, K) packed for [`avx512::step`] — W_hh (G, H_out), or W_hr (H_out, H)
/// with one "gate": per block of 16 units (the last one padded with zeros), per k, per gate,
/// the 16 units' weights: `panels[(b·K + k)·gates + q].0[i] = w[q·U + 16b + i, k]`.
fn pack_panels(w: &[f32], gates: usize, units: usize, kdim: usize) -> Vec<Lane> {
    let blocks = units.div_ceil(16);
    let mut p = vec![Lane([0.0; 16]); blocks * kdim * gates];
    for q in 0..gates {
        for u in 0..units {
            let row = &w[(q * units + u) * kdim..(q * units + u + 1) * kdim];
            let (b, i) = (u / 16, u % 16);
            for (k, &x) in row.iter().enumerate() {
                p[(b * kdim + k) * gates + q].0[i] = x;
            }
        }
    }
    p
}

/// Packed W_hh (and W_hr; W_ih for [`input_projection`]) per layer and direction, kept between
/// forward passes (entry 3·(layer·directions + direction) + 0, 1, 2). An entry
/// is reused while its weight is the same tensor at the same version (in-place updates, such as
/// an optimizer step or `load_state_dict`, bump the version); weights without a version counter
/// (created in inference mode) are packed again on every pass.
#[derive(Default)]
pub struct PanelCache(Mutex<Vec<Option<Packed>>>);

impl std::fmt::Debug for PanelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |c| c.iter().flatten().count());
        write!(f, "PanelCache({n} packed)")
    }
}

struct Packed {
    data_ptr: usize,
    version: i64,
    shape: Vec<i64>,
    lanes: Arc<Vec<Lane>>,
}

impl PanelCache {
    /// `w` (gates·units, kdim) packed, from the cache while `w` has not changed.
    fn get(
        &self,
        idx: usize,
        w: &Tensor,
        gates: usize,
        units: usize,
        kdim: usize,
    ) -> Arc<Vec<Lane>> {
        let key = (w.data_ptr() as usize, w.f_internal_version().ok(), w.size());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(Some(p)), Some(version)) = (cache.get(idx), key.1) {
            if p.data_ptr == key.0 && p.version == version && p.shape == key.2 {
                return p.lanes.clone();
            }
        }
        let w = w.contiguous();
        // SAFETY: contiguous f32 (checked by `supported`), alive for this call.
        let lanes = Arc::new(pack_panels(unsafe { slice(&w) }, gates, units, kdim));
        if let Some(version) = key.1 {
            if cache.len() <= idx {
                cache.resize_with(idx + 1, || None);
            }
            cache[idx] = Some(Packed {
                data_ptr: key.0,
                version,
                shape: key.2,
                lanes: lanes.clone(),
            });
        }
        lanes
    }
}

/// `y[r·stride + j] = rows[j] · x[r]` for the `a` vectors of `x` and the rows of a row-major
/// block (all `k` long); each block of four rows is used for every vector.
#[inline(always)]
fn gemm_rows<const SIMD: bool>(
    x: &[f32],
    a: usize,
    k: usize,
    rows: &[f32],
    y: &mut [f32],
    stride: usize,
) {
    let n = rows.len() / k;
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        while j + 4 <= n {
            let block = &rows[j * k..(j + 4) * k];
            let mut r = 0;
            while r + 2 <= a {
                // SAFETY: SIMD is only set on paths that checked for AVX2 and FMA.
                let (d0, d1) = unsafe { avx2::dot4x2(&x[r * k..(r + 2) * k], block) };
                y[r * stride + j..r * stride + j + 4].copy_from_slice(&d0);
                y[(r + 1) * stride + j..(r + 1) * stride + j + 4].copy_from_slice(&d1);
                r += 2;
            }
            if r < a {
                // SAFETY: as above.
                let d = unsafe { avx2::dot4(&x[r * k..(r + 1) * k], block) };
                y[r * stride + j..r * stride + j + 4].copy_from_slice(&d);
            }
            j += 4;
        }
    }
    for (jj, row) in rows.chunks_exact(k).enumerate().skip(j) {
        for r in 0..a {
            y[r * stride + jj] = dot(&x[r * k..(r + 1) * k], row);
        }
    }
}

/// `dst[..a] = src[..a] · wᵀ` (`w` is (G, K) row-major, `wt` its transposed view).
fn matmul_rows(src: &Tensor, w: &Tensor, wt: &Tensor, dst: &Tensor, a: usize) -> Result<()> {
    if a <= SMALL_ROWS {
        // SAFETY: three distinct tensors, one slice each, no libtorch call meanwhile.
        let (s, ws, d) = unsafe { (slice(src), slice(w), slice_mut(dst)) };
        let (g, k) = (w.size()[0] as usize, w.size()[1] as usize);
        small_gemm(&s[..a * k], a, k, ws, g, &mut d[..a * g]);
        Ok(())
    } else {
        let a = a as i64;
        src.f_narrow(0, 0, a)?
            .f_mm_out(&dst.f_narrow(0, 0, a)?, wt)
            .map(|_| ())
            .map_err(|e| Error::invalid(format!("fused recurrent product: {e}")))
    }
}

/// Running rows times gates at or above which the gate pass is split over two threads.
const PARALLEL_GATES_MIN: usize = 16 * 1024;

/// Raw views of `run_direction`'s buffers for the gate pass (see [`Step::rows`]).
#[derive(Clone, Copy)]
struct Bufs {
    p: *const f32,
    /// Row map into `p` (null: identity).
    prow: *const i64,
    rec: *const f32,
    b: *const f32,
    h: *mut f32,
    c: *mut f32,
    hp: *mut f32,
    out: *mut f32,
}

// SAFETY: only dereferenced in `Step::rows`, whose callers give each thread its own rows.
unsafe impl Send for Bufs {}
unsafe impl Sync for Bufs {}

struct Step {
    mode: Mode,
    hh: usize,
    ho: usize,
    gsz: usize,
    has_proj: bool,
    col: usize,
    out_width: usize,
}

impl Step {
    /// The gate pass for rows `ks` (of the `a` running ones) at step `t`.
    ///
    /// SAFETY: `bufs` point into live buffers of the sizes `run_direction` allocates, and no
    /// other thread touches rows `ks` of `h`, `c`, `hp` or their output rows meanwhile.
    unsafe fn rows(
        &self,
        simd: bool,
        g: &Geom,
        t: usize,
        ks: std::ops::Range<usize>,
        bufs: Bufs,
        scratch: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return self.rows_avx2(g, t, ks, bufs, scratch);
        }
        let _ = simd;
        self.rows_generic::<false>(g, t, ks, bufs, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(
        &self,
        g: &Geom,
        t: usize,
        ks: std::ops::Range<usize>,
        bufs: Bufs,
        scratch: &mut [f32],
    ) {
        self.rows_generic::<true>(g, t, ks, bufs, scratch)
    }

    /// `SIMD`: called from [`Step::rows_avx2`], so AVX2 and FMA are available.
    #[inline(always)]
    unsafe fn rows_generic<const SIMD: bool>(
        &self,
        g: &Geom,
        t: usize,
        ks: std::ops::Range<usize>,
        bufs: Bufs,
        scratch: &mut [f32],
    ) {
        let (hh, ho, gsz) = (self.hh, self.ho, self.gsz);
        let (z, tmp) = scratch.split_at_mut(gsz);
        let b = std::slice::from_raw_parts(bufs.b, 2 * gsz);
        for k in ks {
            let row = g.row(g.order[k], t);
            let pre = std::slice::from_raw_parts(bufs.p.add(p_row(bufs.prow, row) * gsz), gsz);
            let r = std::slice::from_raw_parts(bufs.rec.add(k * gsz), gsz);
            let out =
                std::slice::from_raw_parts_mut(bufs.out.add(row * self.out_width + self.col), ho);
            // The cell's output: LSTM with a projection writes o ⊙ tanh c to `hp` (projected
            // after the pass); otherwise it replaces the row of `h` (GRU reads it first).
            let h = if self.has_proj {
                std::slice::from_raw_parts_mut(bufs.hp.add(k * hh), hh)
            } else {
                std::slice::from_raw_parts_mut(bufs.h.add(k * hh), hh)
            };
            let c = std::slice::from_raw_parts_mut(bufs.c.add(k * hh), hh);
            cell::<SIMD>(self.mode, (hh, 0), r, pre, b, c, h, z, tmp);
            if !self.has_proj {
                out.copy_from_slice(h);
            }
        }
    }
}

/// One row's cell update for the hidden units `u0..u0 + w` (`w = h.len()`), with PyTorch's
/// formulas (module doc). `rec[q·w + j]` is (W_hh h_prev)[q·H + u0 + j]; `pre` is a whole row
/// of G = gates·H (the input projection), `b` two ([its bias | GRU's b_hh]). `h` holds
/// h_prev on entry (read by GRU only) and the new h (LSTM: o ⊙ tanh c) on return; `c` is
/// LSTM's cell state. `z` (gates·w) and `tmp` (w) are scratch. Every fused path sums in the
/// same order (libtorch's, but for the bias added to `pre` first), so they round alike.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cell<const SIMD: bool>(
    mode: Mode,
    (hh, u0): (usize, usize),
    rec: &[f32],
    pre: &[f32],
    b: &[f32],
    c: &mut [f32],
    h: &mut [f32],
    z: &mut [f32],
    tmp: &mut [f32],
) {
    let w = h.len();
    // Gate q's columns of a G-wide row, for these units.
    let part = |q: usize| q * hh + u0..q * hh + u0 + w;
    let rec_q = |q: usize| &rec[q * w..(q + 1) * w];
    let (b_in, b_hh) = b.split_at(b.len() / 2);
    // Gate q's input projections with their bias.
    let pre_q = |q: usize| {
        pre[part(q)]
            .iter()
            .zip(&b_in[part(q)])
            .map(|(&p, &b)| p + b)
    };
    let tmp = &mut tmp[..w];
    match mode {
        Mode::Lstm => {
            let z = &mut z[..4 * w];
            for q in 0..4 {
                for ((zj, &r), p) in z[q * w..(q + 1) * w].iter_mut().zip(rec_q(q)).zip(pre_q(q)) {
                    *zj = p + r;
                }
            }
            let (zif, zgo) = z.split_at_mut(2 * w);
            let (zg, zo) = zgo.split_at_mut(w);
            sigmoid::<SIMD>(zif);
            tanh::<SIMD>(zg);
            sigmoid::<SIMD>(zo);
            let (zi, zf) = zif.split_at(w);
            for ((cj, tj), ((&i, &f), &gg)) in c
                .iter_mut()
                .zip(tmp.iter_mut())
                .zip(zi.iter().zip(zf).zip(zg.iter()))
            {
                *cj = f * *cj + i * gg;
                *tj = *cj;
            }
            tanh::<SIMD>(tmp);
            for ((d, &o), &th) in h.iter_mut().zip(zo.iter()).zip(tmp.iter()) {
                *d = o * th;
            }
        }
        Mode::Gru => {
            let z = &mut z[..2 * w];
            for q in 0..2 {
                for ((zj, &r), (p, &b)) in z[q * w..(q + 1) * w]
                    .iter_mut()
                    .zip(rec_q(q))
                    .zip(pre_q(q).zip(&b_hh[part(q)]))
                {
                    *zj = p + (r + b);
                }
            }
            sigmoid::<SIMD>(z);
            let (zr, zz) = z.split_at(w);
            for ((tj, p), ((&rg, &rn), &bn)) in tmp
                .iter_mut()
                .zip(pre_q(2))
                .zip(zr.iter().zip(rec_q(2)).zip(&b_hh[part(2)]))
            {
                *tj = p + rg * (rn + bn);
            }
            tanh::<SIMD>(tmp);
            for ((hj, &nj), &zj) in h.iter_mut().zip(tmp.iter()).zip(zz) {
                *hj = nj + zj * (*hj - nj);
            }
        }
        Mode::RnnTanh | Mode::RnnRelu => {
            for ((d, &r), p) in h.iter_mut().zip(rec_q(0)).zip(pre_q(0)) {
                *d = p + r;
            }
            if mode == Mode::RnnTanh {
                tanh::<SIMD>(h);
            } else {
                for v in h.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }
}

/// `y = a · wᵀ` for `a` (rows, k) and `w` (g, k), both row-major ([`gemm_rows`], dispatched
/// on the CPU's features).
fn small_gemm(a: &[f32], rows: usize, k: usize, w: &[f32], g: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { small_gemm_avx2(a, rows, k, &w[..g * k], y, g) };
    }
    gemm_rows::<false>(a, rows, k, &w[..g * k], y, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_gemm_avx2(a: &[f32], rows: usize, k: usize, w: &[f32], y: &mut [f32], g: usize) {
    gemm_rows::<true>(a, rows, k, w, y, g)
}

/// Dot product with 8 independent partial sums (portable fallback).
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, xr) = x.as_chunks::<8>();
    let (yc, yr) = y.as_chunks::<8>();
    for (a, b) in xc.iter().zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// e^x for f32 (Cephes `expf`: x = n·ln2 + r, a degree-6 polynomial in r, 2^n from the bits),
/// branch-free so that loops over it vectorise. Inputs are clamped to [-87, 88].
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to nearest
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let y = EXP_P[1..].iter().fold(EXP_P[0], |y, &c| y * r + c) * z + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

// Cephes' constants, shared by the scalar, AVX2 and AVX-512 versions.
/// ln 2 in two parts (the first exact in few bits), for x - n·ln 2 without cancellation.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `expf`'s polynomial, highest degree first: e^r ≈ 1 + r + r²·P(r).
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// `tanhf`'s polynomial below |x| = 0.625, highest degree first: tanh x ≈ x + x·z·P(z), z = x².
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];

/// σ(x) = 1 / (1 + e^-x), in place (`SIMD`: AVX2 and FMA are available).
#[inline(always)]
fn sigmoid<const SIMD: bool>(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: SIMD is only set on paths that checked for AVX2 and FMA.
        return unsafe { avx2::sigmoid(v) };
    }
    sigmoid_scalar(v)
}

#[inline(always)]
fn sigmoid_scalar(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 1.0 / (1.0 + exp(-*x));
    }
}

/// tanh in place (`SIMD`: AVX2 and FMA are available).
#[inline(always)]
fn tanh<const SIMD: bool>(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: SIMD is only set on paths that checked for AVX2 and FMA.
        return unsafe { avx2::tanh(v) };
    }
    tanh_scalar(v)
}

/// tanh in place: Cephes `tanhf` (an odd polynomial below |x| = 0.625, else
/// 1 - 2 / (e^{2|x|} + 1) with the sign of x).
#[inline(always)]
fn tanh_scalar(v: &mut [f32]) {
    for x in v.iter_mut() {
        let a = x.abs();
        let big = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
        let z = *x * *x;
        let small = TANH_P[1..].iter().fold(TANH_P[0], |p, &c| p * z + c) * z * *x + *x;
        *x = if a < 0.625 { small } else { big.copysign(*x) };
    }
}

/// The same kernels on 8-wide AVX2 vectors with FMA; same polynomials and constants as the
/// scalar versions above.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{EXP_P, LN2_HI, LN2_LO, TANH_P};
    use std::arch::x86_64::*;

    /// The dot products of `x` (k) with four consecutive rows of `w` (4·k): each 8-wide load
    /// of `x` serves four rows, and one horizontal reduction serves all four sums.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(x: &[f32], w: &[f32]) -> [f32; 4] {
        let k = x.len();
        assert!(w.len() >= 4 * k);
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        while i + 16 <= k {
            let (x0, x1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(i + 8)));
            for q in 0..4 {
                let row = pw.add(q * k + i);
                acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(row), x0, acc[q]);
                acc[q + 4] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), x1, acc[q + 4]);
            }
            i += 16;
        }
        while i + 8 <= k {
            let x0 = _mm256_loadu_ps(px.add(i));
            for (q, a) in acc[..4].iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(q * k + i)), x0, *a);
            }
            i += 8;
        }
        let s: [__m256; 4] = std::array::from_fn(|q| _mm256_add_ps(acc[q], acc[q + 4]));
        // Horizontal sums of the four vectors at once: lanes (0..4) = rows 0..4.
        let t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
        let sum = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), sum);
        while i < k {
            for (q, o) in out.iter_mut().enumerate() {
                *o += w[q * k + i] * x[i];
            }
            i += 1;
        }
        out
    }

    /// [`dot4`] for two vectors at once (`x` holds both, each `w.len() / 4` long): eight
    /// accumulators, each 8-wide load of `w` used twice.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4x2(x: &[f32], w: &[f32]) -> ([f32; 4], [f32; 4]) {
        let k = w.len() / 4;
        assert!(x.len() >= 2 * k);
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        while i + 8 <= k {
            let (x0, x1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(k + i)));
            for q in 0..4 {
                let wq = _mm256_loadu_ps(pw.add(q * k + i));
                acc[q] = _mm256_fmadd_ps(wq, x0, acc[q]);
                acc[q + 4] = _mm256_fmadd_ps(wq, x1, acc[q + 4]);
            }
            i += 8;
        }
        let sum4 = |s: &[__m256]| {
            let t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
            let v = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), v);
            out
        };
        let (mut o0, mut o1) = (sum4(&acc[..4]), sum4(&acc[4..]));
        while i < k {
            for q in 0..4 {
                o0[q] += w[q * k + i] * x[i];
                o1[q] += w[q * k + i] * x[k + i];
            }
            i += 1;
        }
        (o0, o1)
    }

    /// e^x lane-wise (NaN stays NaN: `max`/`min` return their second operand on NaN).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_set1_ps(88.0),
            _mm256_max_ps(_mm256_set1_ps(-87.0), x),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let z = _mm256_mul_ps(r, r);
        let mut y = _mm256_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(y, z, r), _mm256_set1_ps(1.0));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid(v: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            let x = _mm256_loadu_ps(c.as_ptr());
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_div_ps(one, _mm256_add_ps(one, e)));
        }
        super::sigmoid_scalar(chunks.into_remainder());
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh(v: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            let x = _mm256_loadu_ps(c.as_ptr());
            let a = _mm256_andnot_ps(sign, x);
            let e = exp8(_mm256_add_ps(a, a));
            let big = _mm256_sub_ps(
                one,
                _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
            );
            let big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
            let z = _mm256_mul_ps(x, x);
            let mut p = _mm256_set1_ps(TANH_P[0]);
            for &k in &TANH_P[1..] {
                p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(k));
            }
            let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
            let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(0.625));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_blendv_ps(big, small, is_small));
        }
        super::tanh_scalar(chunks.into_remainder());
    }
}

/// The per-unit step on AVX-512: each block of M running rows times a block of 16 hidden units'
/// gate rows (one vector per gate) accumulates in registers over k; the cell update follows in
/// the same registers (the formulas and operand order of [`super::cell`]).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Lane, Mode, RowPtrs, EXP_P, LN2_HI, LN2_LO, TANH_P};
    use std::arch::x86_64::*;

    /// One thread's part of a step: units `u0..u0 + width` of every running row.
    /// A cell step multiplies h_prev by W_hh and updates the cell; a product step (`project`)
    /// multiplies o ⊙ tanh c by W_hr (one gate), or the layer's input by W_ih (every gate,
    /// [`super::input_projection`]), and stores the result.
    pub struct State {
        pub mode: Mode,
        pub project: bool,
        /// Gate rows per unit in the packed weight: the mode's for W_hh and W_ih, 1 for W_hr.
        pub gates: usize,
        /// Units per gate: H (cell), or H_out (projection).
        pub hh: usize,
        /// Length of the rows of `x`: H_out (cell), or H (projection).
        pub kdim: usize,
        pub u0: usize,
        pub width: usize,
        /// (N, kdim) rows sorted by length: h_prev (cell; GRU also reads its own units of it),
        /// or o ⊙ tanh c (projection).
        pub x: *const f32,
        /// Where the new values go, row stride `dst_stride`: h_next, or (LSTM with projection,
        /// cell step) o ⊙ tanh c.
        pub dst: *mut f32,
        pub dst_stride: usize,
        /// Whether they also go to the layer's output.
        pub write_out: bool,
        /// LSTM's cell state (N, H), updated in place.
        pub c: *mut f32,
        /// The biases (2G, see [`super::cell`]); unread by a projection step (may be null).
        pub b: *const f32,
    }

    /// The step for the `a` running rows; `panels` holds these units' rows of the weight
    /// ([`super::pack_panels`]). `rows` (where the input projections and outputs are) is
    /// needed by a cell step and by a product step that writes the output, not by the input
    /// projection's.
    pub unsafe fn step(st: &State, a: usize, panels: &[Lane], rows: Option<&RowPtrs>) {
        let gates = st.gates;
        assert!(panels.len() >= st.width.div_ceil(16) * st.kdim * gates);
        assert!(rows.is_some() || (st.project && !st.write_out && gates > 1));
        assert!(gates == st.mode.gates() as usize || (st.project && gates == 1));
        match gates {
            4 => blocks::<4, 6>(st, a, panels, rows),
            3 => blocks::<3, 8>(st, a, panels, rows),
            _ => blocks::<1, 8>(st, a, panels, rows),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn blocks<const NQ: usize, const MR: usize>(
        st: &State,
        a: usize,
        panels: &[Lane],
        rows: Option<&RowPtrs>,
    ) {
        // Row blocks as even as possible: 8 rows as 4 + 4 rather than 6 + 2.
        let chunks = a.div_ceil(MR).max(1);
        for b in 0..st.width.div_ceil(16) {
            let j = 16 * b;
            let rest = st.width - j;
            let mask: __mmask16 = if rest >= 16 { 0xffff } else { (1 << rest) - 1 };
            let p = panels.as_ptr().add(b * st.kdim * NQ) as *const f32;
            // The next block's panel (kdim·NQ lines), prefetched into L2 while this block
            // runs, one line per k in each of the first NQ row chunks (with fewer chunks, part
            // of it). When a thread's share of W_hh is larger than its L2, the first chunk over
            // every block otherwise waits on L3: LSTM B=64, T=32, I=H=512, 1 thread, the loop of
            // the 5-row chunks (the first and the last) took 2.1× the time per row of the 6-row
            // ones' (perf; 1.2× with the prefetch). Fastest iterations without and with it,
            // GFLOP/s: that shape 129 and 134 (1 thread), 243-247 and 256-258 (2); B=32, H=512
            // 253 and 264; B=16, H=1024 198 and 232. Where W_hh fits it changes nothing (B=32,
            // H=256, 2 layers: medians within 0.997-1.009 of each other in 5 processes).
            let next = (panels.len() >= (b + 2) * st.kdim * NQ).then(|| p.add(st.kdim * NQ * 16));
            let mut r = 0;
            for ci in 0..chunks {
                let pf = match next {
                    Some(n) if ci < NQ => n.add(ci * st.kdim * 16),
                    _ => p,
                };
                let m = a * (ci + 1) / chunks - r;
                match m {
                    1 => block::<NQ, 1>(st, r, j, mask, p, pf, rows),
                    2 => block::<NQ, 2>(st, r, j, mask, p, pf, rows),
                    3 => block::<NQ, 3>(st, r, j, mask, p, pf, rows),
                    4 => block::<NQ, 4>(st, r, j, mask, p, pf, rows),
                    5 => block::<NQ, 5>(st, r, j, mask, p, pf, rows),
                    6 => block::<NQ, 6>(st, r, j, mask, p, pf, rows),
                    7 => block::<NQ, 7>(st, r, j, mask, p, pf, rows),
                    8 => block::<NQ, 8>(st, r, j, mask, p, pf, rows),
                    _ => {}
                }
                r += m;
            }
        }
    }

    /// `acc[m][q] = Σ_k h[m][k] · panel[k][q]` (16 lanes): per k, NQ loads of weights and M
    /// broadcasts of h, and one line of the next block's panel prefetched into L2 (`pf`, see
    /// `blocks`). Inlined into a caller compiled for AVX-512.
    #[inline(always)]
    unsafe fn products<const NQ: usize, const M: usize>(
        h: &[*const f32; M],
        kdim: usize,
        p: *const f32,
        pf: *const f32,
    ) -> [[__m512; NQ]; M] {
        let mut acc = [[_mm512_setzero_ps(); NQ]; M];
        for k in 0..kdim {
            let pk = p.add(k * NQ * 16);
            _mm_prefetch::<_MM_HINT_T1>(pf.add(k * 16) as *const i8);
            let wv: [__m512; NQ] = std::array::from_fn(|q| _mm512_load_ps(pk.add(16 * q)));
            for (m, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*h[m].add(k));
                for (q, v) in row.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(wv[q], x, *v);
                }
            }
        }
        acc
    }

    /// The input projection's block ([`super::input_projection`]): [`block`]'s products for
    /// every gate, stored. Apart, because with only stores after the k loop the accumulators
    /// stay in registers; [`block`]'s cell update loops over the rows, which keeps them in an
    /// array on the stack (when this was written, zeroed by memset and reloaded). LSTM B=32,
    /// T=64, I=128, H=256, 2 layers, 6 alternating process pairs, fastest iterations: 18.9-19.5
    /// ms with this split, 19.6-21.8 without (median of the pairs' ratios 1.03).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn product<const NQ: usize, const M: usize>(
        st: &State,
        r0: usize,
        j: usize,
        mask: __mmask16,
        p: *const f32,
        pf: *const f32,
    ) {
        let (hh, kdim) = (st.hh, st.kdim);
        let h: [*const f32; M] = std::array::from_fn(|m| st.x.add((r0 + m) * kdim));
        let u = st.u0 + j;
        let acc = products::<NQ, M>(&h, kdim, p, pf);
        for (m, row) in acc.iter().enumerate() {
            for (q, v) in row.iter().enumerate() {
                let at = (r0 + m) * st.dst_stride + q * hh + u;
                _mm512_mask_storeu_ps(st.dst.add(at), mask, *v);
            }
        }
    }

    /// Rows `r0..r0 + M`, units `u0 + j..` (lanes outside `mask` untouched): M·NQ accumulators
    /// ([`products`]), then the cell update.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const NQ: usize, const M: usize>(
        st: &State,
        r0: usize,
        j: usize,
        mask: __mmask16,
        p: *const f32,
        pf: *const f32,
        rows: Option<&RowPtrs>,
    ) {
        if st.project && NQ > 1 {
            return product::<NQ, M>(st, r0, j, mask, p, pf);
        }
        let (hh, kdim) = (st.hh, st.kdim);
        // One pointer per row, so that the loop indexes each with k alone.
        let h: [*const f32; M] = std::array::from_fn(|m| st.x.add((r0 + m) * kdim));
        let u = st.u0 + j;
        if let (false, Some(rows)) = (st.project, rows) {
            // The input projections the cell update reads (rows of a vocabulary table, at
            // random): fetched while the products run.
            for m in 0..M {
                let pre = rows.at(r0 + m).0;
                for q in 0..NQ {
                    _mm_prefetch::<_MM_HINT_T0>(pre.add(q * hh + u) as *const i8);
                }
            }
        }
        let acc = products::<NQ, M>(&h, kdim, p, pf);
        for (m, rec) in acc.iter().enumerate() {
            let k = r0 + m;
            // SAFETY: present for every step but the input projection's (see `step`).
            let (pre, out) = rows.unwrap_unchecked().at(k);
            let ld = |ptr: *const f32| _mm512_maskz_loadu_ps(mask, ptr);
            // (input projection + its bias), as `super::cell` adds them.
            let pre_q = |q: usize| _mm512_add_ps(ld(pre.add(q * hh + u)), ld(st.b.add(q * hh + u)));
            let at = k * hh + u;
            let h_new = match st.mode {
                _ if st.project => rec[0],
                Mode::Lstm => {
                    let i = sigmoid(_mm512_add_ps(pre_q(0), rec[0]));
                    let f = sigmoid(_mm512_add_ps(pre_q(1), rec[1]));
                    let g = tanh(_mm512_add_ps(pre_q(2), rec[2]));
                    let o = sigmoid(_mm512_add_ps(pre_q(3), rec[3]));
                    let c = _mm512_add_ps(_mm512_mul_ps(f, ld(st.c.add(at))), _mm512_mul_ps(i, g));
                    _mm512_mask_storeu_ps(st.c.add(at), mask, c);
                    _mm512_mul_ps(o, tanh(c))
                }
                Mode::Gru => {
                    let b = |q: usize| ld(st.b.add((NQ + q) * hh + u));
                    let r = sigmoid(_mm512_add_ps(pre_q(0), _mm512_add_ps(rec[0], b(0))));
                    let z = sigmoid(_mm512_add_ps(pre_q(1), _mm512_add_ps(rec[1], b(1))));
                    let n = tanh(_mm512_add_ps(
                        pre_q(2),
                        _mm512_mul_ps(r, _mm512_add_ps(rec[2], b(2))),
                    ));
                    let hp = ld(st.x.add(k * kdim + u));
                    _mm512_add_ps(n, _mm512_mul_ps(z, _mm512_sub_ps(hp, n)))
                }
                Mode::RnnTanh => tanh(_mm512_add_ps(pre_q(0), rec[0])),
                Mode::RnnRelu => {
                    _mm512_max_ps(_mm512_add_ps(pre_q(0), rec[0]), _mm512_setzero_ps())
                }
            };
            _mm512_mask_storeu_ps(st.dst.add(k * st.dst_stride + u), mask, h_new);
            if st.write_out {
                _mm512_mask_storeu_ps(out.add(u), mask, h_new);
            }
        }
    }

    /// e^x lane-wise: [`super::avx2`]'s `exp8` on 16 lanes (same constants, same rounding).
    /// σ and tanh below replace the division by [`recip`]: within an ulp of the AVX2 ones.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_set1_ps(88.0),
            _mm512_max_ps(_mm512_set1_ps(-87.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let z = _mm512_mul_ps(r, r);
        let mut y = _mm512_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(y, z, r), _mm512_set1_ps(1.0));
        // y·2ⁿ in one instruction instead of building 2ⁿ's bits and multiplying (four); the
        // same exact product (the clamp keeps n ≥ -126).
        _mm512_scalef_ps(y, n)
    }

    /// 1/d: the 14-bit estimate and one Newton step, within an ulp of the quotient; several
    /// times cheaper than a division, which would be the cell update's largest cost.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0)), r)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sigmoid(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        recip(_mm512_add_ps(one, e))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tanh(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_epi32(i32::MIN);
        let a = _mm512_abs_ps(x);
        let e = exp16(_mm512_add_ps(a, a));
        let big = _mm512_fnmadd_ps(_mm512_set1_ps(2.0), recip(_mm512_add_ps(e, one)), one);
        let big = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(big),
            _mm512_and_si512(sign, _mm512_castps_si512(x)),
        ));
        let z = _mm512_mul_ps(x, x);
        let mut p = _mm512_set1_ps(TANH_P[0]);
        for &k in &TANH_P[1..] {
            p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(k));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(0.625));
        _mm512_mask_blend_ps(is_small, big, small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sigmoid_tanh_are_within_a_few_ulp_of_libm() {
        let mut worst = (0f32, 0f32, 0f32);
        for i in -200_000..=200_000 {
            let x = i as f32 * 4e-4; // [-80, 80]
            let e = exp(x);
            let rel = ((e - x.exp()) / x.exp()).abs();
            worst.0 = worst.0.max(rel);
            let mut s = [x];
            sigmoid_scalar(&mut s);
            worst.1 = worst.1.max((s[0] - 1.0 / (1.0 + (-x).exp())).abs());
            let mut th = [x];
            tanh_scalar(&mut th);
            worst.2 = worst.2.max((th[0] - x.tanh()).abs());
        }
        assert!(worst.0 < 4e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 2e-7, "sigmoid absolute error {}", worst.1);
        assert!(worst.2 < 2e-7, "tanh absolute error {}", worst.2);
        let mut edge = [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0];
        tanh_scalar(&mut edge);
        assert_eq!(edge, [1.0, -1.0, 1.0, -1.0, 0.0]);
        let mut edge = [f32::INFINITY, f32::NEG_INFINITY, 0.0];
        sigmoid_scalar(&mut edge);
        assert!(edge[1] < 1e-37, "sigmoid(-inf) = {}", edge[1]);
        assert!((edge[0] - 1.0).abs() < 1e-7 && (edge[2] - 0.5).abs() < 1e-7);
    }

    /// σ and tanh of `vector` (returning both for the inputs) within 1.5e-7 of the scalar
    /// versions over [-71, 71] in steps of 7.1e-4, NaN, ±inf and ±0 (an odd count, so that
    /// tails are exercised).
    fn matches_scalar(label: &str, vector: impl Fn(&[f32]) -> (Vec<f32>, Vec<f32>)) {
        let xs: Vec<f32> = (-100_003..100_003)
            .map(|i| i as f32 * 7.1e-4)
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0])
            .collect();
        let (mut s1, mut t1) = (xs.clone(), xs.clone());
        sigmoid_scalar(&mut s1);
        tanh_scalar(&mut t1);
        let (s2, t2) = vector(&xs);
        for (i, x) in xs.iter().enumerate() {
            for (name, a, b) in [("sigmoid", s1[i], s2[i]), ("tanh", t1[i], t2[i])] {
                assert!(
                    (a - b).abs() <= 1.5e-7 || (a.is_nan() && b.is_nan()),
                    "{name}({x}): scalar {a} {label} {b}"
                );
            }
        }
    }

    #[test]
    fn vector_kernels_match_scalar_ones() {
        #[cfg(target_arch = "x86_64")]
        if simd_available() {
            return matches_scalar("AVX2", |xs| {
                let (mut s, mut t) = (xs.to_vec(), xs.to_vec());
                // SAFETY: AVX2 and FMA checked above.
                unsafe {
                    avx2::sigmoid(&mut s);
                    avx2::tanh(&mut t);
                }
                (s, t)
            });
        }
        println!("skipped: this CPU has no AVX2+FMA, only the scalar kernels run");
    }

    #[test]
    fn avx512_kernels_match_scalar_ones() {
        #[cfg(target_arch = "x86_64")]
        if avx512_available() {
            use std::arch::x86_64::*;
            return matches_scalar("AVX-512", |xs| {
                let (mut s, mut t) = (Vec::new(), Vec::new());
                for c in xs.chunks(16) {
                    let mut lanes = [0f32; 16];
                    lanes[..c.len()].copy_from_slice(c);
                    let (mut s16, mut t16) = ([0f32; 16], [0f32; 16]);
                    // SAFETY: AVX-512F checked above.
                    unsafe {
                        let v = _mm512_loadu_ps(lanes.as_ptr());
                        _mm512_storeu_ps(s16.as_mut_ptr(), avx512::sigmoid(v));
                        _mm512_storeu_ps(t16.as_mut_ptr(), avx512::tanh(v));
                    }
                    s.extend_from_slice(&s16[..c.len()]);
                    t.extend_from_slice(&t16[..c.len()]);
                }
                (s, t)
            });
        }
        println!("skipped: this CPU has no AVX-512F");
    }

    #[test]
    fn packed_panels_hold_w_hh() {
        let (gates, hh) = (3, 20);
        let w: Vec<f32> = (0..gates * hh * hh).map(|i| i as f32).collect();
        let p = pack_panels(&w, gates, hh, hh);
        assert_eq!(p.len(), 2 * hh * gates);
        for q in 0..gates {
            for u in 0..32 {
                for k in 0..hh {
                    let got = p[((u / 16) * hh + k) * gates + q].0[u % 16];
                    let want = if u < hh {
                        w[(q * hh + u) * hh + k]
                    } else {
                        0.0
                    };
                    assert_eq!(got, want, "gate {q} unit {u} k {k}");
                }
            }
        }
    }

    /// The input projection against libtorch's sgemm: partial 16-unit blocks (H = 7, 40),
    /// row counts that end mid-chunk and mid-slice (a slice is 96 rows at I = 512), I = 1,
    /// one thread and two. Only the summation order differs: bounded relative to Σ|x||w|.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn input_projection_matches_libtorch() {
        if !avx512_available() {
            println!("skipped: no AVX-512 on this CPU");
            return;
        }
        let threads = tch::get_num_threads();
        let mut worst = 0f64;
        for (mode, rows, kdim, hh) in [
            (Mode::Lstm, 1, 13, 7),
            (Mode::Lstm, 25, 1, 40),
            (Mode::Gru, 97, 512, 40),
            (Mode::Lstm, 200, 512, 16),
            (Mode::Gru, 23, 64, 24),
            (Mode::Lstm, 1000, 33, 70),
        ] {
            let gsz = mode.gates() * hh;
            let x = Tensor::randn([rows, kdim], (Kind::Float, Device::Cpu));
            let w = Tensor::randn([gsz, kdim], (Kind::Float, Device::Cpu));
            // SAFETY: contiguous f32, alive for the call.
            let lanes = pack_panels(
                unsafe { slice(&w) },
                mode.gates() as usize,
                hh as usize,
                kdim as usize,
            );
            let want = x.mm(&w.tr());
            let scale = x.abs().mm(&w.abs().tr());
            for t in [1, 2] {
                tch::set_num_threads(t);
                let got = input_projection(mode, &x, &lanes, hh as usize).unwrap();
                assert_eq!(got.size(), [rows, gsz]);
                let err = ((&got - &want).abs() / (&scale + 1e-30))
                    .max()
                    .double_value(&[]);
                assert!(
                    err < 1e-6,
                    "{mode:?} rows {rows} I {kdim} H {hh}, {t} threads: relative error {err}"
                );
                worst = worst.max(err);
            }
        }
        tch::set_num_threads(threads);
        println!("input projection against sgemm: worst error {worst:.2e} of Σ|x||w|");
    }

    #[test]
    fn small_gemm_matches_libtorch() {
        for (rows, k, g) in [(1, 256, 1024), (3, 37, 12), (4, 160, 2048), (2, 5, 3)] {
            let a = Tensor::randn([rows, k], (Kind::Float, Device::Cpu));
            let w = Tensor::randn([g, k], (Kind::Float, Device::Cpu));
            let want = a.mm(&w.tr());
            let y = Tensor::zeros([rows, g], (Kind::Float, Device::Cpu));
            matmul_rows(&a, &w, &w.tr(), &y, rows as usize).unwrap();
            let diff = (&y - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "rows {rows} k {k} g {g}: max diff {diff}");
        }
    }
}
