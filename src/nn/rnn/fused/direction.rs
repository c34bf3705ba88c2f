//! One direction of one layer ([`run_direction`]): the working buffers (h, c, the biases,
//! rows sorted by length), then either the per-unit path ([`super::small_batch`]) or, per step,
//! the recurrent product `R = h[..a] W_hhᵀ` (a, G) with libtorch's sgemm (rnnkit's for
//! a ≤ [`SMALL_ROWS`]) followed by one gate pass over the running rows ([`Step::rows`]).

use super::buffers::{f32_data, p_row, slice, slice_mut, Geom};
use super::cell::{cell, small_gemm};
use super::cpu::{avx512_available, simd_available};
use super::panels::Lane;
use super::small_batch::{per_unit_path, Shared, SmallBatch};
use crate::error::{Error, Result};
use crate::nn::rnn::config::{CellParams, Mode};
use std::marker::PhantomData;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Running rows at or below this count use the hand-written product.
const SMALL_ROWS: usize = 4;

/// Runs one direction of one layer; returns its `h_n` (N, H_out) and `c_n` (N, H). Row r's
/// input projection is row r of `proj`, or with `gather` row `gather[r]`. Panics if `proj`,
/// `gather`, `out` or W_hh do not have the sizes `forward` gives them (the raw accesses below
/// rely on them).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_direction<'a>(
    mode: Mode,
    g: &'a Geom<'a>,
    p: &CellParams,
    proj: &Tensor,
    bias: Option<&Tensor>,
    gather: Option<&'a [i64]>,
    out: &'a Tensor,
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
    let out_width = out.size()[1] as usize;
    // What the raw accesses below rely on: W_hh is (G, H_out) (`forward` returns an error
    // otherwise); `proj` has a G-wide row for every step-row, or for every id in `gather`
    // (`RnnBase::forward_table` checks them); `out` is (N·L, ·) with this direction's columns.
    let rows = (g.n * g.l) as i64;
    assert!(
        panels.is_none() || avx512_available(),
        "fused kernel: packed weights without AVX-512F"
    );
    assert_eq!(w_hh.size(), [gsz as i64, ho as i64], "fused kernel: W_hh");
    let proj_rows = proj.size()[0];
    assert_eq!(
        proj.size()[1],
        gsz as i64,
        "fused kernel: input projections' width"
    );
    match gather {
        None => assert_eq!(proj_rows, rows, "fused kernel: input projections' rows"),
        Some(ids) => assert!(
            ids.len() as i64 == rows && ids.iter().all(|&id| (0..proj_rows).contains(&id)),
            "fused kernel: {} token ids for {rows} rows of a {proj_rows}-row table",
            ids.len()
        ),
    }
    assert!(
        out.size()[0] == rows && col + ho <= out_width,
        "fused kernel: output {:?} for columns {col}..{}",
        out.size(),
        col + ho
    );
    {
        let h_init = h_init.contiguous();
        // SAFETY: two distinct tensors (`h` new, `h_init` the caller's state), no other access
        // to either while the slices live; `hs` is only written.
        let (hs, h0) = unsafe { (slice_mut(&h), slice(&h_init)) };
        for (k, &i) in g.order.iter().enumerate() {
            hs[k * ho..(k + 1) * ho].copy_from_slice(&h0[i * ho..(i + 1) * ho]);
        }
        if let Some(c_init) = c_init {
            let c0 = c_init.contiguous();
            // SAFETY: two distinct tensors (`c` new), no other access to either meanwhile.
            let (cs, c0) = unsafe { (slice_mut(&c), slice(&c0)) };
            for (k, &i) in g.order.iter().enumerate() {
                cs[k * hh..(k + 1) * hh].copy_from_slice(&c0[i * hh..(i + 1) * hh]);
            }
        }
    }
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
        // The job's tensors (or, `out` and the ids, borrowed for its lifetime); what makes the
        // pointers' use sound is `SmallBatch::run`'s contract.
        let sh = Shared {
            p: f32_data(&proj).0,
            prow,
            w: f32_data(&w_hh).0,
            b: f32_data(&b).0,
            h: [f32_data(&h).0, f32_data(&h2).0],
            c: f32_data(&c).0,
            hp: f32_data(&hp).0,
            out: f32_data(out).0,
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
            _borrows: PhantomData,
            h: [h, h2],
            c,
        };
        if defer {
            return Ok(Prepared::Small(Box::new(job)));
        }
        // SAFETY: the job holds every buffer its pointers reach (`out` and the ids are borrowed
        // for `'a`), of the sizes allocated or checked above; nothing else touches them until
        // it returns.
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
    // The buffers' storage stays put for the whole loop: libtorch writes `rec` and `h` in
    // place (`matmul_rows` into views of them), so the pointers are taken once.
    let bufs = Bufs {
        p: f32_data(&proj).0,
        prow,
        rec: f32_data(&rec).0,
        b: f32_data(&b).0,
        h: f32_data(&h).0,
        c: f32_data(&c).0,
        hp: f32_data(&hp).0,
        out: f32_data(out).0,
    };
    for s in 0..g.l {
        let t = if reverse { g.l - 1 - s } else { s };
        let a = g.active[t];
        if a == 0 {
            continue;
        }
        // SAFETY: `rec` shares no storage with `h` or `w_hh`.
        unsafe { matmul_rows(&h, &w_hh, &w_hh_t, &rec, a)? };
        if a * gsz >= PARALLEL_GATES_MIN {
            // The gate pass over two threads of libtorch's pool, half the rows each.
            crate::nn::inference::parallel(2, &|thread, threads| {
                let (k0, k1) = (a * thread / threads, a * (thread + 1) / threads);
                let mut scratch = vec![0f32; gsz + hh];
                // SAFETY: `bufs` points into this function's live buffers, of the sizes
                // allocated above; no libtorch call runs during the pass; rows k0..k1 (and
                // their output rows) are this thread's alone, the other thread's are disjoint.
                unsafe { step.rows(simd, g, t, k0..k1, bufs, &mut scratch) };
            });
        } else {
            let mut scratch = vec![0f32; gsz + hh];
            // SAFETY: as above, with one thread doing every running row.
            unsafe { step.rows(simd, g, t, 0..a, bufs, &mut scratch) };
        }
        if let (Some(w_hr), Some(w_hr_t)) = (&w_hr, &w_hr_t) {
            // SAFETY: `h` shares no storage with `hp` or `w_hr`.
            unsafe { matmul_rows(&hp, w_hr, w_hr_t, &h, a)? };
            // SAFETY: `h` and `out` are distinct tensors, nothing else accesses them while the
            // slices live (libtorch has returned); `os` is only written.
            let (hs, os) = unsafe { (slice(&h), slice_mut(out)) };
            for (k, &i) in g.order[..a].iter().enumerate() {
                let r = g.row(i, t) * out_width + col;
                os[r..r + ho].copy_from_slice(&hs[k * ho..(k + 1) * ho]);
            }
        }
    }
    // SAFETY: the recurrence is over; nothing writes `h` or `c` while the slices live, and
    // every row of both has been written (copied from the initial state, or zeros).
    let h_n = unsort_rows(g, unsafe { slice(&h) }, ho);
    // SAFETY: as above.
    let c_n = (mode == Mode::Lstm).then(|| unsort_rows(g, unsafe { slice(&c) }, hh));
    Ok(Prepared::Done(h_n, c_n))
}

/// A direction's packed W_hh and, with a projection, packed W_hr ([`super::PanelCache`]).
pub(super) type Packs = (Arc<Vec<Lane>>, Option<Arc<Vec<Lane>>>);

/// A direction's result, or (`defer`) its per-unit job, to run alongside the other direction's.
pub(super) enum Prepared<'a> {
    Done(Tensor, Option<Tensor>),
    Small(Box<SmallJob<'a>>),
}

/// A [`SmallBatch`] with the buffers its raw pointers point into.
pub(super) struct SmallJob<'a> {
    pub(super) batch: SmallBatch<'a>,
    /// W_hh, the biases and the input projections, read through `batch.sh`; the cell outputs
    /// before the projection, written through it.
    _keep: [Tensor; 4],
    /// The output and the token ids, written and read through `batch.sh`: the job may not
    /// outlive them.
    _borrows: PhantomData<(&'a Tensor, &'a [i64])>,
    /// h, double-buffered, and c, sorted by length, written through `batch.sh`.
    h: [Tensor; 2],
    c: Tensor,
}

// SAFETY: while a job is shared between threads (`forward` runs the two directions' jobs at
// once), they only call `batch.run()`, which reaches the buffers through raw pointers: each
// job's buffers are its own, and the two jobs write different columns of `out`. The tensors
// themselves are not touched until the job is finished and owned by one thread again.
unsafe impl Sync for SmallJob<'_> {}

impl SmallJob<'_> {
    /// `h_n` and `c_n` in the caller's row order.
    pub(super) fn finish(self) -> (Tensor, Option<Tensor>) {
        let g = self.batch.g;
        let (hh, ho) = (self.batch.hh, self.batch.ho);
        // SAFETY: nothing writes the job's buffers any more (`finish` owns it; `forward` and
        // `run_direction` call it after `run`, whose step l-1 wrote every row of `h[l % 2]`).
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

/// `dst[..a] = src[..a] · wᵀ` (`w` is (G, K) row-major, `wt` its transposed view).
///
/// # Safety
///
/// `dst` shares no storage with `src` or `w`. (Every access is bounds-checked.)
pub(super) unsafe fn matmul_rows(
    src: &Tensor,
    w: &Tensor,
    wt: &Tensor,
    dst: &Tensor,
    a: usize,
) -> Result<()> {
    if a <= SMALL_ROWS {
        // SAFETY: `dst` shares no storage with `src` or `w` (the contract), and no libtorch
        // call runs while the slices live; `d` is only written, `s` and `ws` only read.
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

// SAFETY: the pointers are only dereferenced in `Step::rows`, whose callers give each thread its
// own rows of `h`, `c`, `hp` and the output, and whose other buffers are only read.
unsafe impl Send for Bufs {}
// SAFETY: as for `Send`: shared by reference, the pointers are used the same way.
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
    /// # Safety
    ///
    /// `bufs` points into live buffers of the sizes `run_direction` allocates (`p` with a row
    /// for every step-row, or every id behind `prow`; `rec`, `h`, `c`, `hp` with N rows; `out`
    /// (N·L, `out_width`)); `ks` lies within the running rows of step `t`; nothing else reads
    /// or writes rows `ks` of `h`, `c`, `hp` or their output rows meanwhile, and nothing writes
    /// `p`, `rec` or `b`.
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
            // SAFETY: `simd` says the CPU has AVX2 and FMA (`simd_available`); the buffers are
            // as this function's contract requires.
            return unsafe { self.rows_avx2(g, t, ks, bufs, scratch) };
        }
        let _ = simd;
        // SAFETY: as this function's contract requires.
        unsafe { self.rows_generic::<false>(g, t, ks, bufs, scratch) }
    }

    /// [`Step::rows_generic`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA, and [`Step::rows`]'s contract holds.
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
        // SAFETY: AVX2 and FMA are enabled here, which `SIMD` asks for; the rest is this
        // function's contract.
        unsafe { self.rows_generic::<true>(g, t, ks, bufs, scratch) }
    }

    /// The gate pass; `SIMD` (set by [`Step::rows_avx2`] only) runs the AVX2 kernels.
    ///
    /// # Safety
    ///
    /// [`Step::rows`]'s contract; with `SIMD`, the CPU has AVX2 and FMA.
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
        // SAFETY: `b` holds 2G floats, only read during the pass.
        let b = unsafe { std::slice::from_raw_parts(bufs.b, 2 * gsz) };
        for k in ks {
            let row = g.row(g.order[k], t);
            // SAFETY: running row k at step t is step-row `row` < N·L, whose input projections
            // are a G-wide row of `p` (`p_row`: the row itself, or its checked token id), only
            // read.
            let pre =
                unsafe { std::slice::from_raw_parts(bufs.p.add(p_row(bufs.prow, row) * gsz), gsz) };
            // SAFETY: row k < a ≤ N of `rec` (N, G), written by the product before the pass and
            // only read during it.
            let r = unsafe { std::slice::from_raw_parts(bufs.rec.add(k * gsz), gsz) };
            // SAFETY: the output row `row` has `out_width` floats, this direction's `ho` from
            // `col`; rows `ks` are this thread's alone (the contract).
            let out = unsafe {
                std::slice::from_raw_parts_mut(bufs.out.add(row * self.out_width + self.col), ho)
            };
            // The cell's output: LSTM with a projection writes o ⊙ tanh c to `hp` (projected
            // after the pass); otherwise it replaces the row of `h` (GRU reads it first).
            let h = if self.has_proj {
                // SAFETY: row k of `hp` (N, H), this thread's alone.
                unsafe { std::slice::from_raw_parts_mut(bufs.hp.add(k * hh), hh) }
            } else {
                // SAFETY: row k of `h` (N, H_out = H without projection), this thread's alone.
                unsafe { std::slice::from_raw_parts_mut(bufs.h.add(k * hh), hh) }
            };
            // SAFETY: row k of `c` (N, H), this thread's alone.
            let c = unsafe { std::slice::from_raw_parts_mut(bufs.c.add(k * hh), hh) };
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { cell::<SIMD>(self.mode, (hh, 0), r, pre, b, c, h, z, tmp) };
            if !self.has_proj {
                out.copy_from_slice(h);
            }
        }
    }
}
