//! Numerical comparison of two tensors, as rnnkit's parity checks report it: shape, max
//! absolute and relative difference, the worst index, and whether the bits are identical.
//!
//! - [`Tolerance::Exact`]: the same dtype and the same bytes, element for element. Signed zeros
//!   and NaN payloads count: `-0.0` is not `0.0`, and a NaN equals a NaN only with the same bits.
//! - [`Tolerance::Close`]: for every element, `|got - want| <= atol + rtol * |want|` (numpy's
//!   `allclose` rule, computed in f64), where an infinity is close only to the same infinity and
//!   a NaN only to a NaN at the same index. A NaN on one side where the other is not NaN fails
//!   whatever the tolerance.
//!
//! The reported maxima never swallow a NaN: a NaN on one side only counts as an infinite
//! difference (`f64::max` would drop it, `nan_to_num` does not).

use crate::checkpoint::raw::RawTensor;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// How close is close enough.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Identical bits (same dtype, same bytes).
    Exact,
    /// `|got - want| <= atol + rtol * |want|`; infinities and NaNs must match in place.
    Close {
        /// Absolute tolerance.
        atol: f64,
        /// Relative tolerance (times `|want|`).
        rtol: f64,
    },
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Exact => write!(f, "identical bits"),
            Tolerance::Close { atol, rtol } => write!(f, "|diff| <= {atol:e} + {rtol:e} * |want|"),
        }
    }
}

/// The result of comparing `got` against `want`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diff {
    /// The output compared (`logits`, a state_dict key, …).
    pub key: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Largest |got - want|; infinite where exactly one side is NaN or the infinities differ.
    pub max_abs: f64,
    /// Largest |got - want| / |want| (same conventions as `max_abs`).
    pub max_rel: f64,
    /// `Close`: the index of the element furthest past (or nearest to) its bound. `Exact`: of
    /// the largest abs diff, or, when no value differs but the bits do, of the first element
    /// whose bytes differ.
    pub worst_index: Vec<i64>,
    /// rnnkit's value at the worst element.
    pub got_at_worst: f64,
    /// PyTorch's value at the worst element.
    pub want_at_worst: f64,
    /// Same dtype and identical bytes.
    pub bitwise_equal: bool,
    /// Elements that are NaN on exactly one side.
    pub nan_mismatches: i64,
    /// Whether every comparison passed.
    pub ok: bool,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} {} max_abs={:.3e} max_rel={:.3e} worst{:?}: got {:.9e} want {:.9e}{}{}",
            self.key,
            if self.ok { "ok  " } else { "FAIL" },
            self.max_abs,
            self.max_rel,
            self.worst_index,
            self.got_at_worst,
            self.want_at_worst,
            if self.nan_mismatches > 0 {
                format!(" ({} NaN on one side only)", self.nan_mismatches)
            } else {
                String::new()
            },
            if self.bitwise_equal {
                " (bitwise equal)"
            } else {
                ""
            }
        )
    }
}

/// Compares `got` with `want` (same shape required; values computed in f64 on the CPU, bits
/// compared as the tensors' C-contiguous bytes).
pub fn compare(key: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<Diff> {
    if got.size() != want.size() {
        return Err(Error::shape(
            key.to_string(),
            format!("{:?} (the reference)", want.size()),
            &got.size(),
        ));
    }
    let (raw_got, raw_want) = (RawTensor::from_tch(got)?, RawTensor::from_tch(want)?);
    let bitwise_equal = got.kind() == want.kind() && raw_got.data == raw_want.data;
    let numel = got.numel();
    if numel == 0 {
        return Ok(Diff {
            key: key.into(),
            shape: got.size(),
            max_abs: 0.0,
            max_rel: 0.0,
            worst_index: vec![],
            got_at_worst: 0.0,
            want_at_worst: 0.0,
            bitwise_equal,
            nan_mismatches: 0,
            ok: match tol {
                Tolerance::Exact => bitwise_equal,
                Tolerance::Close { .. } => true,
            },
        });
    }
    let cpu = |t: &Tensor| {
        t.detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Double)
            .flatten(0, -1)
    };
    let (g, w) = (cpu(got), cpu(want));
    let (g_nan, w_nan) = (g.isnan(), w.isnan());
    let both_nan = g_nan.logical_and(&w_nan);
    let one_nan = g_nan.logical_xor(&w_nan);
    let nan_mismatches = one_nan.sum(Kind::Int64).int64_value(&[]);
    // Equal values (infinities of the same sign included) and NaN against NaN agree: difference 0.
    let agree = g.eq_tensor(&w).logical_or(&both_nan);
    let finite = g.isfinite().logical_and(&w.isfinite());
    let differ = agree.logical_not();
    // |got - want|: 0 where they agree, +inf where they differ and a side is NaN or infinite.
    let abs = (&g - &w)
        .abs()
        .where_scalarother(&finite, f64::INFINITY)
        .where_scalarother(&differ, 0.0);
    let w_abs = w.abs();
    let rel = (&abs / w_abs.clamp_min(f64::MIN_POSITIVE))
        .where_scalarother(&finite, f64::INFINITY)
        .where_scalarother(&differ, 0.0);
    let max_of = |t: &Tensor| {
        let m = t.max().double_value(&[]);
        // Cannot be NaN by construction; if it ever were, report it as the worst possible.
        if m.is_nan() {
            f64::INFINITY
        } else {
            m
        }
    };
    let (max_abs, max_rel) = (max_of(&abs), max_of(&rel));
    let (ok, score) = match tol {
        Tolerance::Exact => (bitwise_equal, abs.shallow_clone()),
        Tolerance::Close { atol, rtol } => {
            assert!(
                atol >= 0.0 && rtol >= 0.0 && atol.is_finite() && rtol.is_finite(),
                "a tolerance is finite and not negative (atol {atol}, rtol {rtol})"
            );
            // Only finite pairs are compared against the bound, so `allowed` is finite there.
            let allowed = (&w_abs * rtol + atol).where_scalarother(&finite, 0.0);
            let within = abs.le_tensor(&allowed).logical_and(&finite);
            let element_ok = agree.logical_or(&within);
            let ok = element_ok.all().int64_value(&[]) != 0;
            // How far past its bound each element is: +inf for a non-finite mismatch.
            let score = (&abs - &allowed)
                .where_scalarother(&finite, f64::INFINITY)
                .where_scalarother(&differ, f64::NEG_INFINITY);
            (ok, score)
        }
    };
    let flat = if tol == Tolerance::Exact && !bitwise_equal && max_abs == 0.0 {
        // Values equal but bits not (signed zero, NaN payload) or another dtype: point at the
        // first element whose bytes differ.
        first_differing_element(
            &raw_got.data,
            &raw_want.data,
            numel,
            got.kind() == want.kind(),
        )
    } else {
        score.argmax(0, false).int64_value(&[])
    };
    let at = |t: &Tensor| t.double_value(&[flat]);
    Ok(Diff {
        key: key.into(),
        shape: got.size(),
        max_abs,
        max_rel,
        worst_index: unravel(flat, &got.size()),
        got_at_worst: at(&g),
        want_at_worst: at(&w),
        bitwise_equal,
        nan_mismatches,
        ok,
    })
}

fn first_differing_element(a: &[u8], b: &[u8], numel: usize, same_kind: bool) -> i64 {
    if !same_kind || a.len() != b.len() || numel == 0 {
        return 0;
    }
    let elem = a.len() / numel;
    a.chunks(elem)
        .zip(b.chunks(elem))
        .position(|(x, y)| x != y)
        .unwrap_or(0) as i64
}

fn unravel(mut flat: i64, shape: &[i64]) -> Vec<i64> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}

/// Compares two lists of numbers (losses, probabilities) as f64 tensors: see [`compare`].
pub fn compare_values(key: &str, got: &[f64], want: &[f64], tol: Tolerance) -> Result<Diff> {
    compare(
        key,
        &Tensor::from_slice(got),
        &Tensor::from_slice(want),
        tol,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(atol: f64, rtol: f64) -> Tolerance {
        Tolerance::Close { atol, rtol }
    }

    #[test]
    fn reports_worst_index_and_tolerance() {
        let want = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let got = Tensor::from_slice(&[1.0f32, 2.0, 3.0005, 4.0]).reshape([2, 2]);
        let d = compare("w", &got, &want, close(1e-6, 1e-5)).unwrap();
        assert!(!d.ok && !d.bitwise_equal);
        assert_eq!(d.worst_index, [1, 0]);
        assert!((d.max_abs - 5e-4).abs() < 1e-6, "{d}");
        assert!(compare("w", &got, &want, close(1e-3, 0.0)).unwrap().ok);
        assert!(!compare("w", &got, &want, Tolerance::Exact).unwrap().ok);
        let same = compare("w", &want, &want.copy(), Tolerance::Exact).unwrap();
        assert!(
            same.ok && same.bitwise_equal && same.max_abs == 0.0,
            "{same}"
        );
    }

    #[test]
    fn nan_on_one_side_fails_every_tolerance_and_is_not_swallowed() {
        let want = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
        for got in [
            Tensor::from_slice(&[1.0f64, f64::NAN, 3.0]),
            Tensor::from_slice(&[f64::NAN, 2.0, 3.0]),
        ] {
            for tol in [Tolerance::Exact, close(1.0, 1.0), close(1e300, 1e300)] {
                let d = compare("x", &got, &want, tol).unwrap();
                assert!(!d.ok, "{tol:?}: {d}");
                assert_eq!(d.nan_mismatches, 1);
                assert_eq!(d.max_abs, f64::INFINITY, "{d}");
                assert_eq!(d.max_rel, f64::INFINITY, "{d}");
                // And the other way round: a NaN in the reference only.
                let d = compare("x", &want, &got, tol).unwrap();
                assert!(!d.ok && d.max_abs == f64::INFINITY, "{tol:?}: {d}");
            }
        }
        // The worst index points at the NaN.
        let got = Tensor::from_slice(&[1.5f64, f64::NAN, 3.0]);
        let d = compare("x", &got, &want, close(1.0, 0.0)).unwrap();
        assert_eq!(d.worst_index, [1], "{d}");
        // A NaN at the same place on both sides agrees under Close; under Exact only with the
        // same bits.
        let nan = Tensor::from_slice(&[1.0f64, f64::NAN]);
        assert!(compare("x", &nan, &nan.copy(), close(0.0, 0.0)).unwrap().ok);
        assert!(
            compare("x", &nan, &nan.copy(), Tolerance::Exact)
                .unwrap()
                .ok
        );
        let other_payload = Tensor::from_slice(&[1.0f64, f64::from_bits(f64::NAN.to_bits() ^ 1)]);
        let d = compare("x", &other_payload, &nan, Tolerance::Exact).unwrap();
        assert!(!d.ok && !d.bitwise_equal && d.worst_index == [1], "{d}");
        assert!(
            compare("x", &other_payload, &nan, close(0.0, 0.0))
                .unwrap()
                .ok
        );
    }

    #[test]
    fn exact_compares_bits_signed_zeros_and_dtypes() {
        let z = Tensor::from_slice(&[1.0f32, 0.0, 2.0]);
        let nz = Tensor::from_slice(&[1.0f32, -0.0, 2.0]);
        let d = compare("z", &nz, &z, Tolerance::Exact).unwrap();
        assert!(!d.ok && !d.bitwise_equal && d.max_abs == 0.0, "{d}");
        assert_eq!(d.worst_index, [1], "{d}");
        assert!(compare("z", &nz, &z, close(0.0, 0.0)).unwrap().ok);
        // The same values in another dtype are not identical bits.
        let d = compare("z", &z.to_kind(Kind::Double), &z, Tolerance::Exact).unwrap();
        assert!(!d.ok && !d.bitwise_equal, "{d}");
        assert!(
            compare("z", &z.to_kind(Kind::Double), &z, close(0.0, 0.0))
                .unwrap()
                .ok
        );
        // Layout does not matter, only the values' bits in logical order.
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
        assert!(
            compare("t", &t.tr(), &t.tr().contiguous(), Tolerance::Exact)
                .unwrap()
                .ok
        );
        assert!(
            !compare("t", &t.tr(), &t.reshape([3, 2]), Tolerance::Exact)
                .unwrap()
                .ok
        );
        // Empty tensors of one shape and dtype are identical.
        let e = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu));
        assert!(compare("e", &e, &e.copy(), Tolerance::Exact).unwrap().ok);
    }

    #[test]
    fn infinities_are_close_only_to_themselves() {
        let want = Tensor::from_slice(&[f64::INFINITY, f64::NEG_INFINITY, 1.0]);
        let d = compare("i", &want.copy(), &want, close(0.0, 0.0)).unwrap();
        assert!(d.ok && d.max_abs == 0.0, "{d}");
        for got in [
            Tensor::from_slice(&[f64::NEG_INFINITY, f64::NEG_INFINITY, 1.0]),
            Tensor::from_slice(&[1e308, f64::NEG_INFINITY, 1.0]),
            Tensor::from_slice(&[f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY]),
        ] {
            // Even a huge relative tolerance does not make a finite value close to infinity.
            let d = compare("i", &got, &want, close(1e300, 10.0)).unwrap();
            assert!(!d.ok && d.max_abs == f64::INFINITY, "{d}");
        }
    }

    #[test]
    fn shapes_must_match() {
        let want = Tensor::from_slice(&[1.0f64, 2.0]);
        assert!(compare("x", &want.reshape([2, 1]), &want, Tolerance::Exact).is_err());
        assert!(compare_values("x", &[1.0], &[1.0, 2.0], close(1.0, 0.0)).is_err());
        assert!(
            compare_values("x", &[1.0, 2.0], &[1.0, 2.0], Tolerance::Exact)
                .unwrap()
                .ok
        );
    }
}

/// What `rnnkit parity` reports: the model's outputs on the reference inputs against the
/// outputs PyTorch computed (`reference.safetensors` from `scripts/rnnkit_export.py`).
#[derive(Debug, serde::Serialize)]
pub struct ModelParity {
    /// The model directory checked.
    pub model: std::path::PathBuf,
    /// The reference file PyTorch wrote.
    pub reference: std::path::PathBuf,
    /// The torch version recorded in the reference file.
    pub torch_version: Option<String>,
    /// The device rnnkit ran on.
    pub device: String,
    /// Absolute tolerance applied.
    pub atol: f64,
    /// Relative tolerance applied.
    pub rtol: f64,
    /// The outputs were required to have identical bits (atol and rtol are then 0).
    pub exact: bool,
    /// One comparison per output.
    pub outputs: Vec<Diff>,
    /// Whether every comparison passed.
    pub ok: bool,
}

impl std::fmt::Display for ModelParity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model      {}", self.model.display())?;
        writeln!(
            f,
            "reference  {} (PyTorch {})",
            self.reference.display(),
            self.torch_version.as_deref().unwrap_or("?")
        )?;
        if self.exact {
            writeln!(f, "device     {}; tolerance: identical bits", self.device)?;
        } else {
            writeln!(
                f,
                "device     {}; tolerance |diff| <= {:e} + {:e} * |reference|",
                self.device, self.atol, self.rtol
            )?;
        }
        for d in &self.outputs {
            writeln!(f, "{d}")?;
        }
        write!(f, "{}", if self.ok { "PASS" } else { "FAIL" })
    }
}

/// Runs the model in `model_dir` (eval mode, no autograd) on the reference inputs and compares
/// every output the reference holds (`logits`) within `atol` / `rtol` (see [`compare`]).
pub fn check_model(
    model_dir: &std::path::Path,
    reference: &std::path::Path,
    atol: f64,
    rtol: f64,
    device: tch::Device,
) -> Result<ModelParity> {
    check_model_with(
        model_dir,
        reference,
        Tolerance::Close { atol, rtol },
        device,
    )
}

/// [`check_model`] with any [`Tolerance`]; with `Exact` the logits must have the reference's
/// dtype and bits (no cast before comparing).
pub fn check_model_with(
    model_dir: &std::path::Path,
    reference: &std::path::Path,
    tol: Tolerance,
    device: tch::Device,
) -> Result<ModelParity> {
    let mut model = crate::models::Model::load_dir(model_dir, device)?;
    model.module_mut().set_training(false);
    // The reference is what scripts/make_model_golden.py writes: a safetensors file.
    if crate::checkpoint::sniff(reference)? != crate::checkpoint::FileKind::Safetensors {
        return Err(Error::format(
            reference,
            "a parity reference is a safetensors file (ids, lengths, logits); this is not one \
             (a torch.save file? save it with safetensors.torch.save_file)",
        ));
    }
    let st = crate::checkpoint::safetensors::read(reference)?;
    let get = |k: &str| -> Result<Tensor> {
        let (_, raw) = st.tensors.iter().find(|(n, _)| n == k).ok_or_else(|| {
            Error::format(reference, format!("no tensor {k:?} in the reference file"))
        })?;
        raw.to_tch(&format!("{}: {k}", reference.display()))
    };
    let (ids, lengths) = (get("ids")?, get("lengths")?);
    let (is, ls) = (ids.size(), lengths.size());
    if ids.kind() != Kind::Int64
        || lengths.kind() != Kind::Int64
        || is.len() != 2
        || is[0] < 1
        || ls != [is[0]]
    {
        return Err(Error::format(
            reference,
            format!(
                "\"ids\" must be int64 (N, L) with N ≥ 1 and \"lengths\" int64 (N,); got ids {:?} {is:?}, lengths {:?} {ls:?}",
                ids.kind(),
                lengths.kind()
            ),
        ));
    }
    let lengths = Vec::<i64>::try_from(&lengths)
        .map_err(|e| Error::format(reference, format!("lengths: {e}")))?;
    let want = get("logits")?;
    let got = tch::no_grad(|| model.forward(&ids.to_device(device), &lengths))
        .map_err(|e| Error::format(reference, e.to_string()))?;
    let (got, (atol, rtol)) = match tol {
        Tolerance::Exact => (got, (0.0, 0.0)),
        Tolerance::Close { atol, rtol } => (got.to_kind(want.kind()), (atol, rtol)),
    };
    let diff =
        compare("logits", &got, &want, tol).map_err(|e| Error::format(reference, e.to_string()))?;
    Ok(ModelParity {
        model: model_dir.to_path_buf(),
        reference: reference.to_path_buf(),
        torch_version: st.metadata.get("torch_version").cloned(),
        device: crate::device::device_name(device),
        atol,
        rtol,
        exact: tol == Tolerance::Exact,
        ok: diff.ok,
        outputs: vec![diff],
    })
}
