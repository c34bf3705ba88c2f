//! `StateDict`: an ordered map from PyTorch state_dict keys to tensors, as
//! `model.state_dict()` returns it, with the usual edits (strip a prefix, rename, select).

use crate::checkpoint::raw::{DType, RawTensor};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// PyTorch's `state_dict()`: keys in insertion order, each naming one tensor.
#[derive(Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// The file it was read from, for error messages.
    source: Option<PathBuf>,
}

impl StateDict {
    /// An empty state_dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds one from (key, tensor) pairs; a repeated key is an error.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Tensor)>) -> Result<Self> {
        let mut sd = Self::new();
        for (k, t) in pairs {
            sd.insert(k, t)?;
        }
        Ok(sd)
    }

    /// Records the file this came from, named in later errors.
    pub fn with_source(mut self, path: impl AsRef<Path>) -> Self {
        self.source = Some(path.as_ref().to_path_buf());
        self
    }

    /// The file this was read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Adds a key; a key that is already there is an error (never silently replaced).
    pub fn insert(&mut self, key: String, t: Tensor) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(Error::invalid(format!("duplicate state_dict key {key:?}")));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, t));
        Ok(())
    }

    /// The tensor under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// The tensor under `key`, or an error naming the key and the file.
    pub fn require(&self, key: &str) -> Result<&Tensor> {
        self.get(key).ok_or_else(|| {
            let file = self
                .source
                .as_ref()
                .map(|p| format!("{}: ", p.display()))
                .unwrap_or_default();
            Error::invalid(format!("{file}missing key {key:?}"))
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// (key, tensor) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k, t))
    }

    /// The (key, tensor) pairs in order, consuming the state_dict.
    pub fn into_pairs(self) -> Vec<(String, Tensor)> {
        self.entries
    }

    /// Keys under `prefix` with the prefix removed (`select("encoder.")`); others dropped.
    pub fn select(&self, prefix: &str) -> StateDict {
        let pairs = self.entries.iter().filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|s| (s.to_string(), t.shallow_clone()))
        });
        let mut sd = StateDict {
            source: self.source.clone(),
            ..Default::default()
        };
        for (k, t) in pairs {
            // Stripping one prefix from unique keys keeps them unique.
            let _ = sd.insert(k, t);
        }
        sd
    }

    /// Removes `prefix` from every key that has it (`module.`, `_orig_mod.`); other keys stay.
    /// Two keys that become equal are an error.
    pub fn strip_prefix(self, prefix: &str) -> Result<StateDict> {
        self.rename(|k| k.strip_prefix(prefix).unwrap_or(k).to_string())
    }

    /// Renames every key with `f`; two keys that become equal are an error.
    pub fn rename(self, f: impl Fn(&str) -> String) -> Result<StateDict> {
        let source = self.source.clone();
        let mut sd = StateDict::from_pairs(self.entries.into_iter().map(|(k, t)| (f(&k), t)))?;
        sd.source = source;
        Ok(sd)
    }
}

// ---------------------------------------------------------------------------------------------
// The crossing between raw bytes and tch (the only place checkpoint code touches libtorch)
// ---------------------------------------------------------------------------------------------

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e.to_string())
    }
}

impl DType {
    /// The tch kind, where tch has one.
    pub fn kind(self) -> Option<Kind> {
        use DType::*;
        Some(match self {
            Bool => Kind::Bool,
            U8 => Kind::Uint8,
            I8 => Kind::Int8,
            I16 => Kind::Int16,
            I32 => Kind::Int,
            I64 => Kind::Int64,
            F16 => Kind::Half,
            BF16 => Kind::BFloat16,
            F32 => Kind::Float,
            F64 => Kind::Double,
            C32 => Kind::ComplexHalf,
            C64 => Kind::ComplexFloat,
            C128 => Kind::ComplexDouble,
            F8E5M2 => Kind::Float8e5m2,
            F8E4M3 => Kind::Float8e4m3fn,
            F8E5M2FNUZ => Kind::Float8e5m2fnuz,
            F8E4M3FNUZ => Kind::Float8e4m3fnuz,
            U16 | U32 | U64 | F8E8M0 => return None,
        })
    }
    /// The dtype of a tch kind; `None` for quantized kinds, which files never hold here.
    pub fn from_kind(kind: Kind) -> Option<Self> {
        use DType::*;
        Some(match kind {
            Kind::Bool => Bool,
            Kind::Uint8 => U8,
            Kind::Int8 => I8,
            Kind::Int16 => I16,
            Kind::Int => I32,
            Kind::Int64 => I64,
            Kind::Half => F16,
            Kind::BFloat16 => BF16,
            Kind::Float => F32,
            Kind::Double => F64,
            Kind::ComplexHalf => C32,
            Kind::ComplexFloat => C64,
            Kind::ComplexDouble => C128,
            Kind::Float8e5m2 => F8E5M2,
            Kind::Float8e4m3fn => F8E4M3,
            Kind::Float8e5m2fnuz => F8E5M2FNUZ,
            Kind::Float8e4m3fnuz => F8E4M3FNUZ,
            Kind::QInt8 | Kind::QUInt8 | Kind::QInt32 => return None,
        })
    }
}

impl RawTensor {
    /// A CPU tch tensor with these values. `what` names the tensor in the error when tch has no
    /// such dtype.
    pub fn to_tch(&self, what: &str) -> Result<Tensor> {
        let kind = self.dtype.kind().ok_or_else(|| Error::Dtype {
            what: what.to_string(),
            expected: "a dtype libtorch-through-tch supports (not uint16/32/64 or float8_e8m0fnu)"
                .into(),
            actual: self.dtype.to_string(),
        })?;
        Ok(Tensor::f_from_data_size(&self.data, &self.shape, kind)?)
    }

    /// The values of a tch tensor (any layout, any device) as C-contiguous little-endian bytes.
    pub fn from_tch(t: &Tensor) -> Result<Self> {
        let dtype = DType::from_kind(t.kind())
            .ok_or_else(|| Error::invalid(format!("cannot serialise a {:?} tensor", t.kind())))?;
        let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * dtype.size()];
        if numel > 0 {
            t.f_copy_data_u8(&mut data, numel)?;
        }
        Ok(Self {
            dtype,
            shape: t.size(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_tch() {
        let t = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0, 0.0, -0.5])
            .reshape([2, 3])
            .tr();
        let raw = RawTensor::from_tch(&t).unwrap();
        assert_eq!(raw.shape, [3, 2]);
        let back = raw.to_tch("t").unwrap();
        assert!(
            back.equal(&t),
            "transposed values must be gathered, not read linearly"
        );
    }

    #[test]
    fn unsupported_dtype_is_a_clear_error() {
        let raw = RawTensor::new(DType::U16, vec![2], vec![0; 4]).unwrap();
        let e = raw.to_tch("w").unwrap_err().to_string();
        assert!(e.contains("w") && e.contains("uint16"), "{e}");
    }
}
