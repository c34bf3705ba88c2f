//! Just enough of tch's API for rnnkit's tch-free modules (raw.rs, error.rs, state_dict.rs,
//! safetensors.rs) to compile inside the fuzz crate without linking libtorch. Nothing here is
//! ever called by the fuzz targets; every operation returns an error.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uint8,
    Int8,
    Int16,
    Int,
    Int64,
    Half,
    Float,
    Double,
    ComplexHalf,
    ComplexFloat,
    ComplexDouble,
    Bool,
    QInt8,
    QUInt8,
    QInt32,
    BFloat16,
    Float8e5m2,
    Float8e4m3fn,
    Float8e5m2fnuz,
    Float8e4m3fnuz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

#[derive(Debug)]
pub struct TchError(pub String);

impl std::fmt::Display for TchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TchError {}

#[derive(Debug)]
pub struct Tensor;

fn stub<T>() -> Result<T, TchError> {
    Err(TchError("libtorch is not linked into the fuzz crate".into()))
}

impl Tensor {
    pub fn f_from_data_size(_: &[u8], _: &[i64], _: Kind) -> Result<Tensor, TchError> {
        stub()
    }
    pub fn kind(&self) -> Kind {
        Kind::Uint8
    }
    pub fn f_to_device(&self, _: Device) -> Result<Tensor, TchError> {
        stub()
    }
    pub fn f_contiguous(&self) -> Result<Tensor, TchError> {
        stub()
    }
    pub fn numel(&self) -> usize {
        0
    }
    pub fn f_copy_data_u8(&self, _: &mut [u8], _: usize) -> Result<(), TchError> {
        stub()
    }
    pub fn size(&self) -> Vec<i64> {
        Vec::new()
    }
    pub fn shallow_clone(&self) -> Tensor {
        Tensor
    }
}
