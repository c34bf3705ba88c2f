//! The per-unit path ([`SmallBatch`]): per step and range of hidden units, the recurrent
//! products of that range's gate rows and the cell update, fused, with no libtorch call inside
//! the recurrence. Two threads of libtorch's pool each take half the hidden units and meet at a
//! barrier per step (with a projection, twice):
//! ```text
//! step s, running row k, a thread's units u in u0..u1, every gate q:
//!   R[k, q, u] = h_prev[k] · W_hh[q·H + u]                   (H_out long)
//!   h_next[k, u], c[k, u] = cell(P[row, q·H + u] + b, R[k, q, u])   (cell::cell's formulas)
//! with a projection, a thread's columns j in j0..j1, after a barrier:
//!   h_next[k, j] = (o ⊙ tanh c)[k] · W_hr[j]                 (H long)
//! ```
//! h is double-buffered (`h[s % 2]` read, `h[(s + 1) % 2]` written at step s), so no thread
//! reads what the other writes within a step. The batch limits of the path ([`per_unit_path`])
//! live here too.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::buffers::{p_row, Geom, RowPtrs};
use super::cell::{cell, gemm_rows};
use super::cpu::{avx512_available, simd_available};
use super::panels::Lane;
use crate::nn::rnn::config::Mode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Batches at or below this size (without projection) never call libtorch inside the
/// recurrence ([`SmallBatch`]); with AVX-512, up to [`WIDE_BATCH`] or [`WIDE_BATCH_2T`].
const SMALL_BATCH: usize = 8;

/// The per-unit path's batch limit with the AVX-512 product (up to it the per-unit path beats
/// sgemm per step on the machines measured, see docs/PERFORMANCE.md).
const WIDE_BATCH: usize = 32;

/// The limit with exactly two threads, where each keeps its half of W_hh (and the next block's
/// panel, prefetched) in its own L2 and the last quarter of each half goes to whichever core
/// is free ([`SmallBatch::step_shared`]): up to batch 64 the per-unit path is ahead of sgemm
/// per step and level with or ahead of oneDNN's LSTM; at 128 oneDNN is ahead on the machines
/// measured (docs/PERFORMANCE.md).
pub(super) const WIDE_BATCH_2T: usize = 64;

/// [`WIDE_BATCH_2T`] with exactly two threads, else [`WIDE_BATCH`].
pub(super) fn wide_batch() -> usize {
    if tch::get_num_threads() == 2 {
        WIDE_BATCH_2T
    } else {
        WIDE_BATCH
    }
}

/// Whether a direction runs on the per-unit path ([`SmallBatch`]): a small batch, and with a
/// projection only on AVX-512.
pub(super) fn per_unit_path(n: usize, has_proj: bool) -> bool {
    if avx512_available() {
        n <= wide_batch()
    } else {
        !has_proj && n <= SMALL_BATCH
    }
}

/// Raw views shared by the threads of the small-batch path. `h` is double-buffered: step s
/// reads `h[s % 2]` and writes `h[(s + 1) % 2]`. Each thread writes only its own hidden units'
/// columns of `h`, `c` and the output, so no element is written by two threads.
#[derive(Clone, Copy)]
pub(super) struct Shared {
    pub(super) p: *const f32,
    /// Row map into `p` (null: identity).
    pub(super) prow: *const i64,
    pub(super) w: *const f32,
    pub(super) b: *const f32,
    pub(super) h: [*mut f32; 2],
    pub(super) c: *mut f32,
    /// LSTM with projection: o ⊙ tanh c (N, H) before the projection.
    pub(super) hp: *mut f32,
    pub(super) out: *mut f32,
}

// SAFETY: the pointers are only dereferenced inside `SmallBatch::run`, whose threads write
// disjoint elements and are separated by a barrier (release/acquire) at every step.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: shared by reference, the pointers are used the same way.
unsafe impl Sync for Shared {}

/// Batch ≤ [`SMALL_BATCH`] without projection, or with AVX-512 batch ≤ [`wide_batch`] (see
/// [`per_unit_path`]): per step and hidden unit range, the recurrent dot products of that
/// range's gate rows and the gate pass, fused; with two cores, each thread takes half the hidden
/// units (and so half of W_hh, which then stays in its core's L2 cache), or, in a bidirectional
/// layer, one direction each. With AVX-512 the products run on W_hh packed in 16-unit blocks
/// ([`avx512::step`]), the gates in the same registers, and a projection follows per step.
pub(super) struct SmallBatch<'a> {
    pub(super) mode: Mode,
    pub(super) g: &'a Geom<'a>,
    pub(super) reverse: bool,
    pub(super) hh: usize,
    /// Width of h: `proj_size`, or `hh` without projection.
    pub(super) ho: usize,
    pub(super) col: usize,
    pub(super) out_width: usize,
    pub(super) sh: Shared,
    /// One per thread (one or two): its hidden units `u0..u1`.
    pub(super) parts: Vec<(usize, usize)>,
    /// One per thread, as `parts`: its projected columns (with a projection).
    pub(super) proj_parts: Vec<(usize, usize)>,
    /// With AVX-512: W_hh packed by [`pack_panels`] (then every `u0` is a multiple of 16).
    ///
    /// [`pack_panels`]: super::panels::pack_panels
    pub(super) panels: Option<Arc<Vec<Lane>>>,
    /// W_hr packed likewise (a projection runs only with AVX-512).
    pub(super) proj_panels: Option<Arc<Vec<Lane>>>,
}

impl SmallBatch<'_> {
    /// Below this many multiply-adds per step a second thread costs more than it saves.
    pub(super) const THREADED_MIN_MACS: usize = 1 << 15;

    /// Runs every step, on one thread or (two `parts`) on two of libtorch's pool.
    ///
    /// # Safety
    ///
    /// `self.sh` points into live buffers of the sizes `run_direction` allocates: `p` with a
    /// G-wide row for every step-row (with `prow`: N·L ids, each a row of `p`), `w` (G, H_out),
    /// `b` (2G), `h[0]` and `h[1]` (N, H_out), `c` and `hp` (N, H), `out` (N·L, `out_width`)
    /// with this direction's `ho` columns from `col`. `panels` and `proj_panels` are W_hh and
    /// W_hr packed for these sizes, present only where the CPU has AVX-512F. Nothing else reads
    /// or writes these buffers during the call, except another job writing other columns of
    /// `out`.
    pub(super) unsafe fn run(&self) {
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
                // SAFETY: `run`'s contract; one thread does every unit of every step in order.
                unsafe { self.step(simd, s, self.parts[0], &mut z) };
                if project {
                    // SAFETY: as above; the step's cell outputs are complete.
                    unsafe { self.project(s, self.proj_parts[0]) };
                }
            }
            return;
        }
        let team = crate::nn::inference::SpinBarrier::new(2);
        let claimed = [AtomicUsize::new(0), AtomicUsize::new(0)];
        crate::nn::inference::parallel(2, &|thread, threads| {
            let mut z = scratch();
            if threads == 1 {
                for s in 0..self.g.l {
                    for &part in &self.parts {
                        // SAFETY: `run`'s contract; the pool gave one thread, which does all
                        // units, step by step.
                        unsafe { self.step(simd, s, part, &mut z) };
                    }
                    if project {
                        for &cols in &self.proj_parts {
                            // SAFETY: as above; every unit of step s is done.
                            unsafe { self.project(s, cols) };
                        }
                    }
                }
                return;
            }
            // Barrier: the team has exactly 2 threads here (max_threads = 2); both pass the
            // same barriers in the same order.
            let mut passed = 0;
            let mut barrier = || team.wait(&mut passed);
            for s in 0..self.g.l {
                // SAFETY: `run`'s contract for the buffers. Between threads: this part's first
                // units are this thread's alone and each shared block is the claimer's alone
                // (`step_shared`), so no element of `h[(s + 1) % 2]`, `c`, `hp` or `out` is
                // written by both; `h[s % 2]` is only read in step s; step s starts after both
                // threads passed the barrier ending step s-1 (release/acquire), so it sees every
                // write of that step.
                unsafe { self.step_shared(simd, s, thread, &claimed, &mut z) };
                if project {
                    // The projection reads every unit of o ⊙ tanh c: after both halves.
                    barrier();
                    // SAFETY: `run`'s contract; `hp` is complete for step s (barrier above) and
                    // only read now; these columns of `h[(s + 1) % 2]` and `out` are this
                    // thread's alone (`proj_parts` are disjoint).
                    unsafe { self.project(s, self.proj_parts[thread]) };
                }
                barrier();
            }
        });
    }

    /// Thread `thread`'s share of step `s` with two threads. Without the packed panels: its
    /// part. With them, the part's first 16-unit blocks, then the blocks of the last quarter of
    /// each part, its own first, claimed one at a time by whichever thread gets there first
    /// (`claimed[p]`: part p's blocks claimed so far, over all steps), so that a core slowed
    /// by its neighbours for a while hands the end of its part to the other instead of holding
    /// it at the barrier. Each block's arithmetic is the same whoever runs it.
    ///
    /// # Safety
    ///
    /// [`SmallBatch::run`]'s contract; the other thread runs `step_shared` for the same step
    /// with the other `thread` index and the same `claimed`, and step s-1 is complete on both.
    unsafe fn step_shared(
        &self,
        simd: bool,
        s: usize,
        thread: usize,
        claimed: &[AtomicUsize; 2],
        z: &mut [f32],
    ) {
        if self.panels.is_none() {
            // SAFETY: the contract above; `parts[thread]` is this thread's alone.
            return unsafe { self.step(simd, s, self.parts[thread], z) };
        }
        let pool = |(u0, u1): (usize, usize)| {
            let blocks = (u1 - u0).div_ceil(16);
            let shared = blocks.div_ceil(4);
            (u0 + 16 * (blocks - shared), shared)
        };
        let (u0, u1) = self.parts[thread];
        // SAFETY: the contract above; the part's blocks before its shared quarter are this
        // thread's alone.
        unsafe { self.step(simd, s, (u0, pool((u0, u1)).0), z) };
        for p in [thread, 1 - thread] {
            let (start, n) = pool(self.parts[p]);
            let end = self.parts[p].1;
            // Step s's claims are the counter's values s·n .. (s+1)·n.
            while let Ok(v) = claimed[p].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v < (s + 1) * n).then_some(v + 1)
            }) {
                let b0 = start + 16 * (v - s * n);
                // SAFETY: the contract above; the atomic update gives value v, and so block
                // b0, to exactly one thread.
                unsafe { self.step(simd, s, (b0, (b0 + 16).min(end)), z) };
            }
        }
    }

    /// LSTM with projection, step `s`, columns `j0..j1` of h: h = (o ⊙ tanh c) W_hrᵀ.
    ///
    /// # Safety
    ///
    /// [`SmallBatch::run`]'s contract; every unit of step s's `hp` is written and nothing
    /// writes it meanwhile; nothing else accesses columns `j0..j1` of `h[(s + 1) % 2]` or of
    /// this direction's output.
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
            // SAFETY: `proj_panels` exists only with AVX-512F; `hp` (N, H) is read, columns
            // j0..j1 of `h_next` (N, H_out) and of the output rows written, for the a running
            // rows; W_hr's packed blocks from j0 / 16 cover columns j0..j1 (j0 is a multiple
            // of 16, `halves`); the function's contract excludes other access.
            unsafe { avx512::step(&state, a, &panels[j0 / 16 * self.hh..], Some(&rows)) };
        }
        for k in a..g.n {
            let at = k * self.ho + j0;
            // SAFETY: rows k < N of the two distinct (N, H_out) buffers, columns j0..j1 ≤ H_out;
            // this thread's columns of `h_next`, and `h_prev` is only read in step s.
            unsafe { std::ptr::copy_nonoverlapping(h_prev.add(at), h_next.add(at), j1 - j0) };
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

    /// Step `s` for `part`'s hidden units, with the AVX2 kernels where `simd` says the CPU
    /// has them.
    ///
    /// # Safety
    ///
    /// [`SmallBatch::run`]'s contract; step s-1 is complete; nothing else accesses `part`'s
    /// units of `h[(s + 1) % 2]`, `c`, `hp` or the output meanwhile, nor writes `h[s % 2]`;
    /// `part` lies within 0..H (with the panels, `part.0` is a multiple of 16).
    unsafe fn step(&self, simd: bool, s: usize, part: (usize, usize), z: &mut [f32]) {
        if part.0 == part.1 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is `simd_available()`: the CPU has AVX2 and FMA; the rest is
            // this function's contract.
            return unsafe { self.step_avx2(s, part, z) };
        }
        let _ = simd;
        // SAFETY: this function's contract.
        unsafe { self.step_generic::<false>(s, part, z) }
    }

    /// [`SmallBatch::step_generic`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA, and [`SmallBatch::step`]'s contract holds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step_avx2(&self, s: usize, part: (usize, usize), z: &mut [f32]) {
        // SAFETY: AVX2 and FMA are enabled here, which `SIMD` asks for; the rest is this
        // function's contract.
        unsafe { self.step_generic::<true>(s, part, z) }
    }

    /// Step `s` for `part`'s hidden units.
    ///
    /// # Safety
    ///
    /// [`SmallBatch::step`]'s contract; with `SIMD`, the CPU has AVX2 and FMA.
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
            // SAFETY: `panels` exists only with AVX-512F; `state` points into the job's
            // buffers (`run`'s contract): `h_prev` read, `part`'s units of `dst` and `c` and of
            // the output rows written for the a running rows, which this function's contract
            // leaves to this call; the packed blocks from u0 / 16 cover those units.
            unsafe { avx512::step(&state, a, panels, Some(&self.rows(t))) };
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
            // SAFETY: `w` (G, H) and `b` (2G) are only read; the a running rows of `h_prev`
            // (N, H) are only read during step s (both threads may read them).
            let (w, b, h_rows) = unsafe {
                (
                    std::slice::from_raw_parts(sh.w, gsz * hh),
                    std::slice::from_raw_parts(sh.b, 2 * gsz),
                    std::slice::from_raw_parts(h_prev, a * hh),
                )
            };
            let (zall, tmp) = z.split_at_mut(g.n * gates * hh);
            let stride = gates * width;
            // zall[k·stride + q·width + j] = W_hh[q·hh + u0 + j] · h_prev[k], for every running
            // row k; each block of four W_hh rows is loaded once and used for all rows.
            for q in 0..gates {
                let rows = &w[(q * hh + u0) * hh..(q * hh + u1) * hh];
                // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
                unsafe { gemm_rows::<SIMD>(h_rows, a, hh, rows, &mut zall[q * width..], stride) };
            }
            let (zcell, tmp) = tmp.split_at_mut(gates * hh);
            for (k, &i) in g.order[..a].iter().enumerate() {
                let row = g.row(i, t);
                // SAFETY: step-row `row` < N·L has a G-wide row of `p` (`p_row`), only read;
                // units u0..u1 of row k < a of `h_next` and `c` (both (N, H), distinct from
                // each other and from `h_prev`) are this call's alone (the contract).
                let (pre, hn, c) = unsafe {
                    (
                        std::slice::from_raw_parts(sh.p.add(p_row(sh.prow, row) * gsz), gsz),
                        std::slice::from_raw_parts_mut(h_next.add(k * hh + u0), width),
                        std::slice::from_raw_parts_mut(sh.c.add(k * hh + u0), width),
                    )
                };
                hn.copy_from_slice(&h_rows[k * hh + u0..k * hh + u1]);
                let rec = &zall[k * stride..(k + 1) * stride];
                // SAFETY: as for `gemm_rows` above.
                unsafe { cell::<SIMD>(self.mode, (hh, u0), rec, pre, b, c, hn, zcell, tmp) };
                let o = row * self.out_width + self.col + u0;
                // SAFETY: the output row `row` has `out_width` floats, this direction's H from
                // `col`; units u0..u1 of it are this call's alone.
                unsafe { std::ptr::copy_nonoverlapping(hn.as_ptr(), sh.out.add(o), width) };
            }
        }
        // Rows not running at t (finished, or in the reverse direction not yet started) keep
        // their state.
        for k in a..g.n {
            // SAFETY: units u0..u1 of row k < N of the distinct (N, H) buffers; `h_prev` is
            // only read in step s, these units of `h_next` are this call's alone.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    h_prev.add(k * hh + u0),
                    h_next.add(k * hh + u0),
                    width,
                )
            };
        }
    }
}
