//! Any checkpoint file, chosen by content: safetensors, or a `torch.save` file (zip or legacy)
//! read by [`crate::checkpoint::pth`]. The one entry point model loading and the CLI use.
//!
//! A leaf layer: nothing here imports `nn`, `models`, `train` or `serve`. Parsing and writing
//! (`raw`, `pickle`, `pth/read.rs`, `pth/write.rs`, `safetensors/codec.rs`, `atomic`) never name
//! tch, so the fuzz crate compiles them without libtorch; tensors cross into tch only in
//! `state_dict` and the `StateDict` functions of `pth` and `safetensors`.

pub mod atomic;
pub mod budget;
pub mod convert;
mod files;
pub mod inspect;
pub mod pickle;
pub mod pth;
pub mod raw;
pub mod safetensors;
pub mod state_dict;

pub use budget::{Budget, ReadOptions, DEFAULT_MAX_BYTES};
pub use state_dict::StateDict;

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// What a checkpoint file is, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An 8-byte header length followed by a JSON header.
    Safetensors,
    /// Anything else: handed to the torch.save reader (zip or legacy), which names what it is not.
    TorchSave,
}

/// Sniffs the file. safetensors first: a little-endian header length followed by `{` (after
/// optional whitespace). A pickle's PROTO byte 0x80 can also be the first byte of such a
/// length, so the order matters. Anything else goes to the torch.save reader, which names what
/// it is not (zip, legacy, tar, truncated, empty…).
pub fn sniff(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    // A `{` after the 8-byte header length marks a safetensors file, even when that length does
    // not fit the file (truncated or corrupt): its reader then names the problem precisely. A
    // zip starts `PK\x03\x04` and a legacy torch.save with its magic number, neither with `{`
    // (after optional whitespace) at byte 8.
    if n >= 9 && head[8..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(FileKind::Safetensors);
    }
    Ok(FileKind::TorchSave)
}

/// The tensors of a checkpoint as a [`StateDict`]: a safetensors file, or the (sub-)tree `key`
/// of a torch.save file flattened with dotted names. Default limits and reading budget
/// ([`DEFAULT_MAX_BYTES`]); see [`load_state_dict_with`].
pub fn load_state_dict(path: &Path, key: Option<&str>) -> Result<StateDict> {
    load_state_dict_with(path, key, &ReadOptions::default())
}

/// As [`load_state_dict`], within `opts`: a tensor or storage that would take the read past
/// `opts.max_bytes` is refused with [`Error::Budget`] before it is allocated.
pub fn load_state_dict_with(
    path: &Path,
    key: Option<&str>,
    opts: &ReadOptions,
) -> Result<StateDict> {
    match sniff(path)? {
        FileKind::Safetensors => {
            if key.is_some() {
                return Err(Error::invalid(format!(
                    "{}: --key applies to .pth files; safetensors files are flat",
                    path.display()
                )));
            }
            crate::checkpoint::safetensors::load_state_dict_with(path, opts)
        }
        FileKind::TorchSave => crate::checkpoint::pth::load_state_dict_with(path, key, opts),
    }
}

/// Writes `sd` as a `.pth` that `torch.load(path, weights_only=True)` reads, atomically.
pub fn save_pth_state_dict(path: &Path, sd: &StateDict) -> Result<()> {
    crate::checkpoint::pth::save_state_dict(path, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_whose_header_length_starts_with_0x80_is_not_a_pickle() {
        // A 128-byte-aligned header length begins with 0x80, the pickle PROTO byte.
        let dir = std::env::temp_dir().join(format!("rnnkit-sniff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.safetensors");
        let mut header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_string();
        while header.len() < 0x80 {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        assert_eq!(bytes[0], 0x80);
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(sniff(&p).unwrap(), FileKind::Safetensors);
        assert_eq!(load_state_dict(&p, None).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
