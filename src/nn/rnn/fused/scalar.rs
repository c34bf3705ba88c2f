//! e^x, σ and tanh on f32 without SIMD, from Cephes' `expf` and `tanhf`, and the constants the
//! AVX2 and AVX-512 versions share with them:
//! ```text
//! e^x    = 2ⁿ · (1 + r + r²·P(r)),  x = n·ln 2 + r,  x clamped to [-87, 88]
//! σ(x)   = 1 / (1 + e^-x)
//! tanh x = x + x·z·Q(z), z = x²   (|x| < 0.625),   else ±(1 - 2 / (e^{2|x|} + 1))
//! ```

// Polynomial constants are Cephes' as published (more digits than f32 holds; same values).
#![allow(clippy::excessive_precision)]

/// e^x for f32 (Cephes `expf`: x = n·ln2 + r, a degree-6 polynomial in r, 2^n from the bits),
/// branch-free so that loops over it vectorise. Inputs are clamped to [-87, 88].
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// `expf`'s polynomial, highest degree first: e^r ≈ 1 + r + r²·P(r).
pub(super) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// `tanhf`'s polynomial below |x| = 0.625, highest degree first: tanh x ≈ x + x·z·P(z), z = x².
pub(super) const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];

/// σ(x) = 1 / (1 + e^-x) in place.
#[inline(always)]
pub(super) fn sigmoid_scalar(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 1.0 / (1.0 + exp(-*x));
    }
}

/// tanh in place: Cephes `tanhf` (an odd polynomial below |x| = 0.625, else
/// 1 - 2 / (e^{2|x|} + 1) with the sign of x).
#[inline(always)]
pub(super) fn tanh_scalar(v: &mut [f32]) {
    for x in v.iter_mut() {
        let a = x.abs();
        let big = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
        let z = *x * *x;
        let small = TANH_P[1..].iter().fold(TANH_P[0], |p, &c| p * z + c) * z * *x + *x;
        *x = if a < 0.625 { small } else { big.copysign(*x) };
    }
}
