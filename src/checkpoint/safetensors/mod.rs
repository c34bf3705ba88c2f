//! safetensors files: the format itself is in `codec.rs` (no libtorch, so the fuzz crate compiles
//! it); this file crosses into tch, reading into and writing from a [`StateDict`].

mod codec;

pub use codec::{
    read, read_header_only, read_metadata, read_with, write, Header, SafeTensors, TensorEntry,
};

use crate::checkpoint::budget::ReadOptions;
use crate::checkpoint::raw::RawTensor;
use crate::checkpoint::state_dict::StateDict;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a safetensors file into a [`StateDict`] of CPU tensors (file order), within the
/// default reading budget.
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
    load_state_dict_with(path, &ReadOptions::default())
}

/// As [`load_state_dict`], within `opts.max_bytes`.
pub fn load_state_dict_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<StateDict> {
    let path = path.as_ref();
    let st = read_with(path, opts)?;
    let mut sd = StateDict::new().with_source(path);
    for (name, raw) in st.tensors {
        let t = raw.to_tch(&format!("{}: tensor {name:?}", path.display()))?;
        sd.insert(name, t)?;
    }
    Ok(sd)
}

/// Writes a [`StateDict`] (any device or layout) as safetensors, atomically.
pub fn save_state_dict(
    path: impl AsRef<Path>,
    sd: &StateDict,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tensors = sd
        .iter()
        .map(|(k, t)| Ok((k.clone(), RawTensor::from_tch(t)?)))
        .collect::<Result<Vec<_>>>()?;
    write(path, &tensors, metadata)
}
