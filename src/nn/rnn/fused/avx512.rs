//! The per-unit step on AVX-512: each block of M running rows times a block of 16 hidden units'
//! gate rows (one vector per gate) accumulates in registers over k; the cell update follows in
//! the same registers (the formulas and operand order of [`super::cell::cell`]).

use super::buffers::RowPtrs;
use super::panels::Lane;
use super::scalar::{EXP_P, LN2_HI, LN2_LO, TANH_P};
use crate::nn::rnn::config::Mode;
use std::arch::x86_64::*;

/// One thread's part of a step: units `u0..u0 + width` of every running row.
/// A cell step multiplies h_prev by W_hh and updates the cell; a product step (`project`)
/// multiplies o ⊙ tanh c by W_hr (one gate), or the layer's input by W_ih (every gate,
/// [`super::input_projection::input_projection`]), and stores the result.
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
    /// The biases (2G, see [`super::cell::cell`]); unread by a projection step (may be null).
    pub b: *const f32,
}

/// The step for the `a` running rows; `panels` holds these units' rows of the weight
/// ([`super::panels::pack_panels`]). `rows` (where the input projections and outputs are) is
/// needed by a cell step and by a product step that writes the output, not by the input
/// projection's. The weight's reads are bounded here (`panels` is checked against the
/// units and `kdim`); every other access goes through `st`'s and `rows`' raw pointers.
///
/// # Safety
///
/// - The CPU has AVX-512F.
/// - `st.x` points at `a` rows of `st.kdim` floats (row stride `kdim`), not written during
///   the call.
/// - `st.u0 + st.width` ≤ `st.hh`; for each row r < `a`, gate q < `st.gates` and unit
///   u in `u0..u0 + width`, `st.dst[r·dst_stride + q·hh + u]` (a product step; one gate for a
///   projection, every gate for the input projection) or `st.dst[r·dst_stride + u]` (a cell
///   step) is writable, and so are `st.c[r·hh + u]` (LSTM cell step) and, with `write_out`,
///   the output row `rows.at(r).1[u]`; nothing else reads or writes these elements meanwhile.
/// - A cell step reads `st.b` (2G floats) and the G-wide input projection rows `rows.at(r).0`,
///   which nothing writes meanwhile; `rows` is for the step the `a` rows are running in.
pub unsafe fn step(st: &State, a: usize, panels: &[Lane], rows: Option<&RowPtrs>) {
    let gates = st.gates;
    assert!(panels.len() >= st.width.div_ceil(16) * st.kdim * gates);
    assert!(rows.is_some() || (st.project && !st.write_out && gates > 1));
    assert!(gates == st.mode.gates() as usize || (st.project && gates == 1));
    // SAFETY: the CPU has AVX-512F and `st`, `rows` meet `blocks`' contract (this function's);
    // `panels` holds every block it reads (asserted above).
    unsafe {
        match gates {
            4 => blocks::<4, 6>(st, a, panels, rows),
            3 => blocks::<3, 8>(st, a, panels, rows),
            _ => blocks::<1, 8>(st, a, panels, rows),
        }
    }
}

/// [`step`] with NQ gates, in row chunks of at most MR rows.
///
/// # Safety
///
/// [`step`]'s contract, with `panels` holding at least `width.div_ceil(16)·kdim·NQ` lanes.
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
        // SAFETY: block b < width.div_ceil(16) starts inside `panels` (the contract).
        let p = unsafe { panels.as_ptr().add(b * st.kdim * NQ) } as *const f32;
        // The next block's panel (kdim·NQ lines), prefetched into L2 while this block runs,
        // one line per k in each of the first NQ row chunks (with fewer chunks, part of it):
        // when a thread's share of W_hh is larger than its L2, the first chunk over every
        // block would otherwise wait on L3 (docs/PERFORMANCE.md).
        let next = (panels.len() >= (b + 2) * st.kdim * NQ)
            // SAFETY: block b + 1 lies inside `panels` (just checked).
            .then(|| unsafe { p.add(st.kdim * NQ * 16) });
        let mut r = 0;
        for ci in 0..chunks {
            let pf = match next {
                // SAFETY: line ci·kdim of block b + 1's kdim·NQ lines, ci < NQ.
                Some(n) if ci < NQ => unsafe { n.add(ci * st.kdim * 16) },
                _ => p,
            };
            let m = a * (ci + 1) / chunks - r;
            // SAFETY: rows r..r + m ≤ a and units j.. of block b (lanes in `mask`) meet
            // `block`'s contract by this function's; `p` is block b's panel, and `pf` plus
            // kdim lines stays inside `panels` (block b + 1's lines from ci·kdim, ci < NQ, or
            // block b's own).
            unsafe {
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
            }
            r += m;
        }
    }
}

/// `acc[m][q] = Σ_k h[m][k] · panel[k][q]` (16 lanes): per k, NQ loads of weights and M
/// broadcasts of h, and one line of the next block's panel prefetched into L2 (`pf`, see
/// `blocks`). Inlined into a caller compiled for AVX-512.
///
/// # Safety
///
/// The CPU has AVX-512F; each `h[m]` points at `kdim` readable floats; `p` at a packed
/// block's `kdim·NQ` lanes (64-byte aligned, [`Lane`]); `pf` at `kdim` lines of 16 floats
/// inside the same packed weight.
#[inline(always)]
unsafe fn products<const NQ: usize, const M: usize>(
    h: &[*const f32; M],
    kdim: usize,
    p: *const f32,
    pf: *const f32,
) -> [[__m512; NQ]; M] {
    // SAFETY: the CPU has AVX-512F (the contract; the callers are compiled for it).
    let mut acc = unsafe { [[_mm512_setzero_ps(); NQ]; M] };
    for k in 0..kdim {
        // SAFETY: AVX-512F as above. k < kdim: lanes k·NQ..(k + 1)·NQ of the block are inside
        // it and 64-byte aligned (`_mm512_load_ps`), line k of `pf` is inside the packed
        // weight, and element k of each row of h is readable.
        unsafe {
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
    }
    acc
}

/// The input projection's block ([`super::input_projection::input_projection`]): [`block`]'s
/// products for every gate, stored. Apart, because with only stores after the k loop the
/// accumulators stay in registers, where [`block`]'s cell update, a loop over the rows, keeps
/// them in an array on the stack.
///
/// # Safety
///
/// [`block`]'s contract.
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
    // SAFETY: rows r0..r0 + M of `x` are among its `a` rows of `kdim` floats.
    let h: [*const f32; M] = std::array::from_fn(|m| unsafe { st.x.add((r0 + m) * kdim) });
    let u = st.u0 + j;
    // SAFETY: AVX-512F is enabled here; `h`, `p` and `pf` as `products` requires (`block`'s
    // contract).
    let acc = unsafe { products::<NQ, M>(&h, kdim, p, pf) };
    for (m, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            let at = (r0 + m) * st.dst_stride + q * hh + u;
            // SAFETY: row r0 + m < a, gate q, units u.. in `mask` of `dst`: this call's to
            // write (`step`'s contract); masked-off lanes are not touched.
            unsafe { _mm512_mask_storeu_ps(st.dst.add(at), mask, *v) };
        }
    }
}

/// Rows `r0..r0 + M`, units `u0 + j..` (lanes outside `mask` untouched): M·NQ accumulators
/// ([`products`]), then the cell update.
///
/// # Safety
///
/// [`step`]'s contract for rows `r0..r0 + M` (all < `a`) and the units `u0 + j + i` for the
/// lanes i in `mask` (all < `u0 + width`); `p` is these units' block of the packed weight
/// (`kdim·NQ` lanes) and `pf` plus `kdim` lines of 16 floats lies inside the packed weight.
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
        // SAFETY: the same contract.
        return unsafe { product::<NQ, M>(st, r0, j, mask, p, pf) };
    }
    let (hh, kdim) = (st.hh, st.kdim);
    // One pointer per row, so that the loop indexes each with k alone.
    // SAFETY: rows r0..r0 + M of `x` are among its `a` rows of `kdim` floats.
    let h: [*const f32; M] = std::array::from_fn(|m| unsafe { st.x.add((r0 + m) * kdim) });
    let u = st.u0 + j;
    if let (false, Some(rows)) = (st.project, rows) {
        // The input projections the cell update reads (rows of a vocabulary table, at
        // random): fetched while the products run.
        for m in 0..M {
            // SAFETY: r0 + m is a running row (< a), so `at` gives its G-wide row of input
            // projections, and gate q's units u.. lie inside it.
            unsafe {
                let pre = rows.at(r0 + m).0;
                for q in 0..NQ {
                    _mm_prefetch::<_MM_HINT_T0>(pre.add(q * hh + u) as *const i8);
                }
            }
        }
    }
    // SAFETY: AVX-512F is enabled here; `h`, `p` and `pf` as `products` requires (this
    // function's contract).
    let acc = unsafe { products::<NQ, M>(&h, kdim, p, pf) };
    for (m, rec) in acc.iter().enumerate() {
        let k = r0 + m;
        // SAFETY: `rows` is present for every step but the input projection's, which returned
        // above (`step` asserts it); k < a is a running row.
        let (pre, out) = unsafe { rows.unwrap_unchecked().at(k) };
        // SAFETY: `ld` is only given row k's 16-lane runs of units u.. in the input
        // projections, the biases (2G), `c` and `x`, all inside their buffers (`step`'s
        // contract) and not written by anyone else meanwhile; masked-off lanes are not read.
        let ld = |ptr: *const f32| unsafe { _mm512_maskz_loadu_ps(mask, ptr) };
        // (input projection + its bias), as `super::cell` adds them.
        let pre_q = |q: usize| {
            // SAFETY: gate q < NQ's units u.. of row k's G-wide input projections and of the
            // input bias (the first G floats of `b`).
            unsafe { _mm512_add_ps(ld(pre.add(q * hh + u)), ld(st.b.add(q * hh + u))) }
        };
        let at = k * hh + u;
        let h_new = match st.mode {
            _ if st.project => rec[0],
            Mode::Lstm => {
                let i = sigmoid(_mm512_add_ps(pre_q(0), rec[0]));
                let f = sigmoid(_mm512_add_ps(pre_q(1), rec[1]));
                let g = tanh(_mm512_add_ps(pre_q(2), rec[2]));
                let o = sigmoid(_mm512_add_ps(pre_q(3), rec[3]));
                // SAFETY: row k's units u.. of `c` (N, H): this call's to read and write.
                let c = _mm512_add_ps(
                    _mm512_mul_ps(f, ld(unsafe { st.c.add(at) })),
                    _mm512_mul_ps(i, g),
                );
                // SAFETY: as above; masked-off lanes are not touched.
                unsafe { _mm512_mask_storeu_ps(st.c.add(at), mask, c) };
                _mm512_mul_ps(o, tanh(c))
            }
            Mode::Gru => {
                // SAFETY: GRU's b_hh, the second G floats of `b`: gate q's units u.. (`ld`).
                let b = |q: usize| ld(unsafe { st.b.add((NQ + q) * hh + u) });
                let r = sigmoid(_mm512_add_ps(pre_q(0), _mm512_add_ps(rec[0], b(0))));
                let z = sigmoid(_mm512_add_ps(pre_q(1), _mm512_add_ps(rec[1], b(1))));
                let n = tanh(_mm512_add_ps(
                    pre_q(2),
                    _mm512_mul_ps(r, _mm512_add_ps(rec[2], b(2))),
                ));
                // SAFETY: row k's units u.. of h_prev (`x`, H wide for GRU).
                let hp = ld(unsafe { st.x.add(k * kdim + u) });
                _mm512_add_ps(n, _mm512_mul_ps(z, _mm512_sub_ps(hp, n)))
            }
            Mode::RnnTanh => tanh(_mm512_add_ps(pre_q(0), rec[0])),
            Mode::RnnRelu => _mm512_max_ps(_mm512_add_ps(pre_q(0), rec[0]), _mm512_setzero_ps()),
        };
        // SAFETY: row k's units u.. of `dst` and (with `write_out`) of its output row: this
        // call's to write (`step`'s contract); masked-off lanes are not touched.
        unsafe {
            _mm512_mask_storeu_ps(st.dst.add(k * st.dst_stride + u), mask, h_new);
            if st.write_out {
                _mm512_mask_storeu_ps(out.add(u), mask, h_new);
            }
        }
    }
}

/// e^x lane-wise: [`super::avx2`]'s `exp8` on 16 lanes (same constants, same rounding).
/// σ and tanh below replace the division by [`recip`]: within an ulp of the AVX2 ones.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
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
fn recip(d: __m512) -> __m512 {
    let r = _mm512_rcp14_ps(d);
    _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0)), r)
}

/// σ(x) = 1 / (1 + e^-x) lane-wise (safe to call where AVX-512F is enabled).
#[inline]
#[target_feature(enable = "avx512f")]
pub fn sigmoid(x: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    recip(_mm512_add_ps(one, e))
}

/// tanh lane-wise, Cephes' `tanhf` as [`super::scalar::tanh_scalar`] (safe to call where
/// AVX-512F is enabled).
#[inline]
#[target_feature(enable = "avx512f")]
pub fn tanh(x: __m512) -> __m512 {
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
