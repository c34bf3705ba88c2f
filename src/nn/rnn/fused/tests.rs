//! The kernels against libm and libtorch: exp/σ/tanh (scalar, AVX2, AVX-512), the packed panels,
//! the input projection and the small product. Whole forward passes against PyTorch are in
//! `tests/fused.rs`.

use super::buffers::slice;
use super::cpu::{avx512_available, simd_available};
use super::direction::matmul_rows;
use super::panels::pack_panels;
use super::scalar::{exp, sigmoid_scalar, tanh_scalar};
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
            // SAFETY: the CPU has AVX2 and FMA (checked above), all the kernels need.
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
                // SAFETY: the CPU has AVX-512F (checked above); the loads and stores are of
                // 16-float arrays.
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
        // SAFETY: `w` is a fresh tensor, only read while the slice lives.
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
            let got = input_projection(mode, &x, &lanes, hh as usize, None).unwrap();
            assert_eq!(got.size(), [rows, gsz]);
            // Some rows only (a padded batch's valid rows): those rows, bit for bit.
            let ranges = [
                (0, 1.min(rows as usize)),
                (rows as usize / 3, rows as usize / 2),
            ];
            let part = input_projection(mode, &x, &lanes, hh as usize, Some(&ranges)).unwrap();
            for &(a, b) in &ranges {
                let (a, n) = (a as i64, (b - a) as i64);
                assert!(
                    part.narrow(0, a, n).equal(&got.narrow(0, a, n)),
                    "rows {a}..{b}"
                );
            }
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
        // SAFETY: `y` is a fresh tensor, apart from `a` and `w`.
        unsafe { matmul_rows(&a, &w, &w.tr(), &y, rows as usize).unwrap() };
        let diff = (&y - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "rows {rows} k {k} g {g}: max diff {diff}");
    }
}

/// [`PackedLinear`] against libtorch's `linear`: output widths that are and are not a multiple
/// of 4 (zero-padded rows), with and without bias, a wrong input width refused. The same
/// bound as the input projection, relative to Σ|x||w| + |b|.
#[test]
fn packed_linear_matches_libtorch() {
    let w = Tensor::randn([10, 7], (Kind::Float, Device::Cpu));
    let Some(_) = PackedLinear::new(&w, None).unwrap() else {
        println!("skipped: no AVX-512 on this CPU (PackedLinear::new gives None)");
        assert!(!avx512_available());
        return;
    };
    for (rows, kdim, out, bias) in [(1, 7, 10, true), (13, 256, 8000, true), (9, 33, 64, false)] {
        let x = Tensor::randn([rows, kdim], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([out, kdim], (Kind::Float, Device::Cpu));
        let b = bias.then(|| Tensor::randn([out], (Kind::Float, Device::Cpu)));
        let p = PackedLinear::new(&w, b.as_ref()).unwrap().unwrap();
        let got = p.forward(&x).unwrap();
        let want = x.linear(&w, b.as_ref());
        assert_eq!(got.size(), want.size());
        let scale = x.abs().mm(&w.abs().tr()) + b.map_or(Tensor::from(0f32), |b| b.abs());
        let err = ((&got - &want).abs() / (scale + 1e-30))
            .max()
            .double_value(&[]);
        assert!(
            err < 1e-6,
            "rows {rows} K {kdim} out {out}: relative error {err}"
        );
    }
    let e = PackedLinear::new(&w, None)
        .unwrap()
        .unwrap()
        .forward(&Tensor::zeros([2, 6], (Kind::Float, Device::Cpu)));
    assert!(e.unwrap_err().to_string().contains("(N, 7)"));
}
