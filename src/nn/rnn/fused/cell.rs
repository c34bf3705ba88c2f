//! The cell update of one row for a range of hidden units ([`cell`]), PyTorch's formulas:
//! ```text
//! LSTM  i, f, g, o = σ(P_i + R_i), σ(P_f + R_f), tanh(P_g + R_g), σ(P_o + R_o)
//!       c' = f ⊙ c + i ⊙ g          h' = o ⊙ tanh c'
//! GRU   r, z = σ(P_r + (R_r + b_hr)), σ(P_z + (R_z + b_hz))
//!       n = tanh(P_n + r ⊙ (R_n + b_hn))          h' = n + z ⊙ (h - n)
//! RNN   h' = tanh(P + R)  or  relu(P + R)
//! ```
//! with P the input projection plus its bias and R = h W_hhᵀ; the row-block products of the
//! portable and AVX2 paths ([`gemm_rows`], [`small_gemm`]); σ and tanh from [`super::scalar`],
//! or from [`super::avx2`] when `SIMD` is set.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::cpu::simd_available;
use super::scalar::{sigmoid_scalar, tanh_scalar};
use crate::nn::rnn::config::Mode;

/// `y[r·stride + j] = rows[j] · x[r]` for the `a` vectors of `x` and the rows of a row-major
/// block (all `k` long); each block of four rows is used for every vector.
///
/// # Safety
///
/// With `SIMD`, the CPU has AVX2 and FMA. (Every access is bounds-checked.)
#[inline(always)]
pub(super) unsafe fn gemm_rows<const SIMD: bool>(
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
                // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
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

/// One row's cell update for the hidden units `u0..u0 + w` (`w = h.len()`), with PyTorch's
/// formulas (module doc). `rec[q·w + j]` is (W_hh h_prev)[q·H + u0 + j]; `pre` is a whole row
/// of G = gates·H (the input projection), `b` two ([its bias | GRU's b_hh]). `h` holds
/// h_prev on entry (read by GRU only) and the new h (LSTM: o ⊙ tanh c) on return; `c` is
/// LSTM's cell state. `z` (gates·w) and `tmp` (w) are scratch. Every fused path sums in the
/// same order (libtorch's, but for the bias added to `pre` first), so they round alike.
///
/// # Safety
///
/// With `SIMD`, the CPU has AVX2 and FMA. (Every access is bounds-checked.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn cell<const SIMD: bool>(
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
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { sigmoid::<SIMD>(zif) };
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { tanh::<SIMD>(zg) };
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { sigmoid::<SIMD>(zo) };
            let (zi, zf) = zif.split_at(w);
            for ((cj, tj), ((&i, &f), &gg)) in c
                .iter_mut()
                .zip(tmp.iter_mut())
                .zip(zi.iter().zip(zf).zip(zg.iter()))
            {
                *cj = f * *cj + i * gg;
                *tj = *cj;
            }
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { tanh::<SIMD>(tmp) };
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
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { sigmoid::<SIMD>(z) };
            let (zr, zz) = z.split_at(w);
            for ((tj, p), ((&rg, &rn), &bn)) in tmp
                .iter_mut()
                .zip(pre_q(2))
                .zip(zr.iter().zip(rec_q(2)).zip(&b_hh[part(2)]))
            {
                *tj = p + rg * (rn + bn);
            }
            // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
            unsafe { tanh::<SIMD>(tmp) };
            for ((hj, &nj), &zj) in h.iter_mut().zip(tmp.iter()).zip(zz) {
                *hj = nj + zj * (*hj - nj);
            }
        }
        Mode::RnnTanh | Mode::RnnRelu => {
            for ((d, &r), p) in h.iter_mut().zip(rec_q(0)).zip(pre_q(0)) {
                *d = p + r;
            }
            if mode == Mode::RnnTanh {
                // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
                unsafe { tanh::<SIMD>(h) };
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
pub(super) fn small_gemm(a: &[f32], rows: usize, k: usize, w: &[f32], g: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { small_gemm_avx2(a, rows, k, &w[..g * k], y, g) };
    }
    // SAFETY: without SIMD there is no requirement.
    unsafe { gemm_rows::<false>(a, rows, k, &w[..g * k], y, g) }
}

/// [`gemm_rows`] compiled for AVX2 and FMA (safe where they are enabled; [`small_gemm`]
/// checks the CPU first).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn small_gemm_avx2(a: &[f32], rows: usize, k: usize, w: &[f32], y: &mut [f32], g: usize) {
    // SAFETY: AVX2 and FMA are enabled here.
    unsafe { gemm_rows::<true>(a, rows, k, w, y, g) }
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

/// σ(x) = 1 / (1 + e^-x), in place.
///
/// # Safety
///
/// With `SIMD`, the CPU has AVX2 and FMA.
#[inline(always)]
unsafe fn sigmoid<const SIMD: bool>(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
        return unsafe { avx2::sigmoid(v) };
    }
    sigmoid_scalar(v)
}

/// tanh in place.
///
/// # Safety
///
/// With `SIMD`, the CPU has AVX2 and FMA.
#[inline(always)]
unsafe fn tanh<const SIMD: bool>(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: with SIMD the CPU has AVX2 and FMA (this function's contract).
        return unsafe { avx2::tanh(v) };
    }
    tanh_scalar(v)
}
