//! Tensors as bytes: [`DType`] (every dtype torch.save and safetensors can hold) and
//! [`RawTensor`] (a dtype, a shape and C-contiguous little-endian bytes). File readers produce
//! these without libtorch (this file never uses tch); `checkpoint::state_dict` crosses over.
//! Dtypes libtorch-through-tch cannot hold (uint16/32/64, float8 variants other than tch's,
//! sub-byte types) stay raw and give a clear error when converted.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
/// Every element type torch.save or safetensors can hold (torch name ↔ safetensors name).
pub enum DType {
    /// `torch.bool` / `BOOL`.
    Bool,
    /// `torch.uint8` / `U8`.
    U8,
    /// `torch.int8` / `I8`.
    I8,
    /// `torch.int16` / `I16`.
    I16,
    /// `torch.uint16` / `U16` (no tch kind).
    U16,
    /// `torch.int32` / `I32`.
    I32,
    /// `torch.uint32` / `U32` (no tch kind).
    U32,
    /// `torch.int64` / `I64`.
    I64,
    /// `torch.uint64` / `U64` (no tch kind).
    U64,
    /// `torch.float16` / `F16`.
    F16,
    /// `torch.bfloat16` / `BF16`.
    BF16,
    /// `torch.float32` / `F32`.
    F32,
    /// `torch.float64` / `F64`.
    F64,
    /// complex32: two f16.
    C32,
    /// complex64: two f32.
    C64,
    /// complex128: two f64.
    C128,
    /// `torch.float8_e5m2` / `F8_E5M2`.
    F8E5M2,
    /// `torch.float8_e4m3fn` / `F8_E4M3`.
    F8E4M3,
    /// `torch.float8_e5m2fnuz`.
    F8E5M2FNUZ,
    /// `torch.float8_e4m3fnuz`.
    F8E4M3FNUZ,
    /// `torch.float8_e8m0fnu` (no tch kind).
    F8E8M0,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8E5M2 | F8E4M3 | F8E5M2FNUZ | F8E4M3FNUZ | F8E8M0 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 | C32 => 4,
            I64 | U64 | F64 | C64 => 8,
            C128 => 16,
        }
    }
    /// Size of one byte-swapped unit (complex numbers swap per component).
    pub fn swap_unit(self) -> usize {
        match self {
            DType::C32 | DType::C64 | DType::C128 => self.size() / 2,
            _ => self.size(),
        }
    }
    /// The safetensors name (`F32`, `BF16`, …); complex32 has none.
    pub fn safetensors_name(self) -> Option<&'static str> {
        use DType::*;
        Some(match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            I16 => "I16",
            U16 => "U16",
            I32 => "I32",
            U32 => "U32",
            I64 => "I64",
            U64 => "U64",
            F16 => "F16",
            BF16 => "BF16",
            F32 => "F32",
            F64 => "F64",
            C64 => "C64",
            F8E5M2 => "F8_E5M2",
            F8E4M3 => "F8_E4M3",
            F8E5M2FNUZ => "F8_E5M2FNUZ",
            F8E4M3FNUZ => "F8_E4M3FNUZ",
            F8E8M0 => "F8_E8M0",
            C32 | C128 => return None,
        })
    }
    /// The dtype of a safetensors header's `dtype` string.
    pub fn from_safetensors_name(name: &str) -> Option<Self> {
        use DType::*;
        [
            Bool, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C64, F8E5M2, F8E4M3,
            F8E5M2FNUZ, F8E4M3FNUZ, F8E8M0,
        ]
        .into_iter()
        .find(|d| d.safetensors_name() == Some(name))
    }
    /// PyTorch's name (`float32`, …).
    pub fn torch_name(self) -> &'static str {
        use DType::*;
        match self {
            Bool => "bool",
            U8 => "uint8",
            I8 => "int8",
            I16 => "int16",
            U16 => "uint16",
            I32 => "int32",
            U32 => "uint32",
            I64 => "int64",
            U64 => "uint64",
            F16 => "float16",
            BF16 => "bfloat16",
            F32 => "float32",
            F64 => "float64",
            C32 => "complex32",
            C64 => "complex64",
            C128 => "complex128",
            F8E5M2 => "float8_e5m2",
            F8E4M3 => "float8_e4m3fn",
            F8E5M2FNUZ => "float8_e5m2fnuz",
            F8E4M3FNUZ => "float8_e4m3fnuz",
            F8E8M0 => "float8_e8m0fnu",
        }
    }
    /// The dtype torch calls `name` (`float32`).
    pub fn from_torch_name(name: &str) -> Option<Self> {
        use DType::*;
        [
            Bool, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C32, C64, C128,
            F8E5M2, F8E4M3, F8E5M2FNUZ, F8E4M3FNUZ, F8E8M0,
        ]
        .into_iter()
        .find(|d| d.torch_name() == name)
    }
    /// `torch.is_floating_point`: the float16/32/64, bfloat16 and float8 types.
    pub fn is_floating_point(self) -> bool {
        use DType::*;
        matches!(
            self,
            F16 | BF16 | F32 | F64 | F8E5M2 | F8E4M3 | F8E5M2FNUZ | F8E4M3FNUZ | F8E8M0
        )
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// Number of elements of `shape`, with overflow checked.
pub fn checked_numel(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// A dense tensor as bytes: C-contiguous, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: DType,
    /// Size, as torch reports it.
    pub shape: Vec<i64>,
    /// C-contiguous little-endian bytes: numel × element size.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// Checks that `data` holds exactly `numel(shape) * dtype.size()` bytes.
    pub fn new(dtype: DType, shape: Vec<i64>, data: Vec<u8>) -> Result<Self> {
        let numel = checked_numel(&shape)
            .ok_or_else(|| Error::invalid(format!("invalid tensor shape {shape:?}")))?;
        let expect = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::invalid(format!("tensor shape {shape:?} overflows")))?;
        if data.len() != expect {
            return Err(Error::invalid(format!(
                "{dtype} tensor of shape {shape:?} needs {expect} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self { dtype, shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_byte_count_is_rejected() {
        assert!(RawTensor::new(DType::F32, vec![2, 2], vec![0; 15]).is_err());
        assert!(RawTensor::new(DType::F32, vec![i64::MAX, 4], vec![]).is_err());
    }
}
