//! The per-unit path ([`SmallBatch`]): per step and range of hidden units, the recurrent
//! products of that range's gate rows and the cell update, fused, with no libtorch call inside
//! the recurrence. Two threads of libtorch's pool each take half the hidden units and meet at a
//! barrier per step (with a projection, twice):
//! ```text
//! thread θ, units u0..u1:  h_next[k, u0..u1] = cell(P[row k, t] + b, h_prev[k] W_hh[gates, u0..u1]ᵀ)
//! projection, columns j0..j1:  h_next[k, j0..j1] = (o ⊙ tanh c)[k] W_hr[j0..j1]ᵀ
//! ```
//! h is double-buffered (`h[s % 2]` read, `h[(s + 1) % 2]` written at step s), so no thread
//! reads what the other writes within a step.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::cell::{cell, gemm_rows};
use super::panels::Lane;
use super::{p_row, simd_available, Geom};
use crate::nn::rnn::Mode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
    pub(super) panels: Option<Arc<Vec<Lane>>>,
    /// W_hr packed likewise (a projection runs only with AVX-512).
    pub(super) proj_panels: Option<Arc<Vec<Lane>>>,
}

impl SmallBatch<'_> {
    /// Below this many multiply-adds per step a second thread costs more than it saves.
    pub(super) const THREADED_MIN_MACS: usize = 1 << 15;

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
pub(super) struct RowPtrs<'a> {
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
    pub(super) unsafe fn at(&self, k: usize) -> (*const f32, *mut f32) {
        let row = self.g.row(self.g.order[k], self.t);
        (
            self.p.add(p_row(self.prow, row) * self.gsz),
            self.out.add(row * self.out_width + self.col),
        )
    }
}
