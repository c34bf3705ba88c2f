//! Numerical comparison of two tensors, as rnnkit's parity checks report it: shape, max
//! absolute and relative difference, the worst index, and whether the bits are identical.
//!
//! `|got - want| <= atol + rtol * |want|` elementwise (numpy's `allclose` rule); NaN equals NaN
//! only in [`Tolerance::Exact`] mode where bits are compared.

use crate::error::{Error, Result};
use crate::checkpoint::raw::RawTensor;
use tch::{Kind, Tensor};

/// How close is close enough.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Identical bits (same dtype, same bytes).
    Exact,
    /// `|got - want| <= atol + rtol * |want|`.
    Close { atol: f64, rtol: f64 },
}

/// The result of comparing `got` against `want`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diff {
    pub key: String,
    pub shape: Vec<i64>,
    pub max_abs: f64,
    pub max_rel: f64,
    /// Index of the largest violation of the tolerance (or of the largest abs diff).
    pub worst_index: Vec<i64>,
    pub got_at_worst: f64,
    pub want_at_worst: f64,
    pub bitwise_equal: bool,
    pub ok: bool,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} {} max_abs={:.3e} max_rel={:.3e} worst{:?}: got {:.9e} want {:.9e}{}",
            self.key,
            if self.ok { "ok  " } else { "FAIL" },
            self.max_abs,
            self.max_rel,
            self.worst_index,
            self.got_at_worst,
            self.want_at_worst,
            if self.bitwise_equal {
                " (bitwise equal)"
            } else {
                ""
            }
        )
    }
}

/// Compares `got` with `want` (same shape required; computed in f64 on the CPU).
pub fn compare(key: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<Diff> {
    if got.size() != want.size() {
        return Err(Error::shape(
            key.to_string(),
            format!("{:?} (the reference)", want.size()),
            &got.size(),
        ));
    }
    let bitwise_equal = got.kind() == want.kind()
        && RawTensor::from_tch(got)?.data == RawTensor::from_tch(want)?.data;
    let g = got
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double);
    let w = want
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double);
    let abs = (&g - &w).abs();
    let rel = &abs / w.abs().clamp_min(f64::MIN_POSITIVE);
    // NaN-safe maxima: a NaN difference counts as infinite.
    let abs_nan = abs.nan_to_num(f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let rel_nan = rel.nan_to_num(f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let numel = g.numel();
    let (max_abs, max_rel) = if numel == 0 {
        (0.0, 0.0)
    } else {
        (
            abs_nan.max().double_value(&[]),
            rel_nan.max().double_value(&[]),
        )
    };
    let (ok, excess) = match tol {
        Tolerance::Exact => (bitwise_equal, abs_nan.shallow_clone()),
        Tolerance::Close { atol, rtol } => {
            let excess = &abs_nan - (w.abs() * rtol + atol);
            let ok = numel == 0 || excess.max().double_value(&[]) <= 0.0;
            (ok, excess)
        }
    };
    let (worst_index, got_at_worst, want_at_worst) = if numel == 0 {
        (vec![], 0.0, 0.0)
    } else {
        let flat = excess.flatten(0, -1).argmax(0, false).int64_value(&[]);
        let idx = unravel(flat, &g.size());
        let at = |t: &Tensor| t.flatten(0, -1).double_value(&[flat]);
        (idx, at(&g), at(&w))
    };
    Ok(Diff {
        key: key.into(),
        shape: g.size(),
        max_abs,
        max_rel,
        worst_index,
        got_at_worst,
        want_at_worst,
        bitwise_equal,
        ok,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_worst_index_and_tolerance() {
        let want = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let got = Tensor::from_slice(&[1.0f32, 2.0, 3.0005, 4.0]).reshape([2, 2]);
        let d = compare(
            "w",
            &got,
            &want,
            Tolerance::Close {
                atol: 1e-6,
                rtol: 1e-5,
            },
        )
        .unwrap();
        assert!(!d.ok && !d.bitwise_equal);
        assert_eq!(d.worst_index, [1, 0]);
        assert!((d.max_abs - 5e-4).abs() < 1e-6, "{d}");
        assert!(
            compare(
                "w",
                &got,
                &want,
                Tolerance::Close {
                    atol: 1e-3,
                    rtol: 0.0
                }
            )
            .unwrap()
            .ok
        );
        assert!(!compare("w", &got, &want, Tolerance::Exact).unwrap().ok);
        assert!(
            compare("w", &want, &want.copy(), Tolerance::Exact)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn nan_is_never_close_and_shapes_must_match() {
        let want = Tensor::from_slice(&[1.0f64, 2.0]);
        let got = Tensor::from_slice(&[1.0f64, f64::NAN]);
        assert!(
            !compare(
                "x",
                &got,
                &want,
                Tolerance::Close {
                    atol: 1.0,
                    rtol: 1.0
                }
            )
            .unwrap()
            .ok
        );
        assert!(compare("x", &want.reshape([2, 1]), &want, Tolerance::Exact).is_err());
    }
}

/// What `rnnkit parity` reports: the model's outputs on the reference inputs against the
/// outputs PyTorch computed (`reference.safetensors` from `scripts/rnnkit_export.py`).
#[derive(Debug, serde::Serialize)]
pub struct ModelParity {
    pub model: std::path::PathBuf,
    pub reference: std::path::PathBuf,
    pub torch_version: Option<String>,
    pub device: String,
    pub atol: f64,
    pub rtol: f64,
    pub outputs: Vec<Diff>,
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
        writeln!(
            f,
            "device     {}; tolerance |diff| <= {:e} + {:e} * |reference|",
            self.device, self.atol, self.rtol
        )?;
        for d in &self.outputs {
            writeln!(f, "{d}")?;
        }
        write!(f, "{}", if self.ok { "PASS" } else { "FAIL" })
    }
}

/// Runs the model in `model_dir` (eval mode, no autograd) on the reference inputs and compares
/// every output the reference holds (`logits`).
pub fn check_model(
    model_dir: &std::path::Path,
    reference: &std::path::Path,
    atol: f64,
    rtol: f64,
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
    let tol = Tolerance::Close { atol, rtol };
    let diff = compare("logits", &got.to_kind(want.kind()), &want, tol)
        .map_err(|e| Error::format(reference, e.to_string()))?;
    Ok(ModelParity {
        model: model_dir.to_path_buf(),
        reference: reference.to_path_buf(),
        torch_version: st.metadata.get("torch_version").cloned(),
        device: crate::device::device_name(device),
        atol,
        rtol,
        ok: diff.ok,
        outputs: vec![diff],
    })
}
