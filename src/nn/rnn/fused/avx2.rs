//! The portable path's kernels on 8-wide AVX2 vectors with FMA: the row-block dot products of
//! [`super::cell::gemm_rows`] and σ/tanh in place, with the same polynomials and constants as
//! the scalar versions in [`super::scalar`]. The functions are safe where AVX2 and FMA are
//! enabled; callers without them check the CPU first (`simd_available`) and call them in an
//! `unsafe` block. Their memory accesses are bounded by the slices they take.

use super::scalar::{sigmoid_scalar, tanh_scalar, EXP_P, LN2_HI, LN2_LO, TANH_P};
use std::arch::x86_64::*;

/// The dot products of `x` (k) with four consecutive rows of `w` (4·k): each 8-wide load
/// of `x` serves four rows, and one horizontal reduction serves all four sums.
#[target_feature(enable = "avx2,fma")]
pub fn dot4(x: &[f32], w: &[f32]) -> [f32; 4] {
    let k = x.len();
    assert!(w.len() >= 4 * k);
    let (px, pw) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 16 <= k {
        // SAFETY: i + 16 ≤ k: floats i..i + 16 of `x` and of each row q < 4 of `w` (4·k long,
        // asserted) are in bounds; the loads are unaligned.
        unsafe {
            let (x0, x1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(i + 8)));
            for q in 0..4 {
                let row = pw.add(q * k + i);
                acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(row), x0, acc[q]);
                acc[q + 4] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), x1, acc[q + 4]);
            }
        }
        i += 16;
    }
    while i + 8 <= k {
        // SAFETY: as above, with i + 8 ≤ k.
        unsafe {
            let x0 = _mm256_loadu_ps(px.add(i));
            for (q, a) in acc[..4].iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(q * k + i)), x0, *a);
            }
        }
        i += 8;
    }
    let s: [__m256; 4] = std::array::from_fn(|q| _mm256_add_ps(acc[q], acc[q + 4]));
    // Horizontal sums of the four vectors at once: lanes (0..4) = rows 0..4.
    let t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    let sum = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
    let mut out = [0f32; 4];
    // SAFETY: `out` holds the 4 floats stored.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), sum) };
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
pub fn dot4x2(x: &[f32], w: &[f32]) -> ([f32; 4], [f32; 4]) {
    let k = w.len() / 4;
    assert!(x.len() >= 2 * k);
    let (px, pw) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 8 <= k {
        // SAFETY: i + 8 ≤ k: floats i..i + 8 of both vectors in `x` (2·k long, asserted) and
        // of each row q < 4 of `w` (4·k) are in bounds; the loads are unaligned.
        unsafe {
            let (x0, x1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(k + i)));
            for q in 0..4 {
                let wq = _mm256_loadu_ps(pw.add(q * k + i));
                acc[q] = _mm256_fmadd_ps(wq, x0, acc[q]);
                acc[q + 4] = _mm256_fmadd_ps(wq, x1, acc[q + 4]);
            }
        }
        i += 8;
    }
    let sum4 = |s: &[__m256]| {
        let t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
        let v = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
        let mut out = [0f32; 4];
        // SAFETY: `out` holds the 4 floats stored.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
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
fn exp8(x: __m256) -> __m256 {
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

/// σ(x) = 1 / (1 + e^-x) in place; the tail of fewer than 8 by [`sigmoid_scalar`].
#[target_feature(enable = "avx2,fma")]
pub fn sigmoid(v: &mut [f32]) {
    let one = _mm256_set1_ps(1.0);
    let mut chunks = v.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is 8 floats (`chunks_exact_mut`); the loads and stores are unaligned.
        let x = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), _mm256_div_ps(one, _mm256_add_ps(one, e))) };
    }
    sigmoid_scalar(chunks.into_remainder());
}

/// tanh in place, Cephes' `tanhf` as [`tanh_scalar`], which does the tail of fewer than 8.
#[target_feature(enable = "avx2,fma")]
pub fn tanh(v: &mut [f32]) {
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let mut chunks = v.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is 8 floats (`chunks_exact_mut`); the loads and stores are unaligned.
        let x = unsafe { _mm256_loadu_ps(c.as_ptr()) };
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
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), _mm256_blendv_ps(big, small, is_small)) };
    }
    tanh_scalar(chunks.into_remainder());
}
