//! Any checkpoint file, chosen by content: safetensors, or a `torch.save` file (zip or legacy)
//! read by [`crate::pth`]. The one entry point model loading and the CLI use.

use crate::error::{Error, Result};
use crate::state_dict::StateDict;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Safetensors,
    TorchSave,
}

/// Sniffs the file: a torch.save file starts with a zip or pickle signature; a safetensors
/// file with a little-endian header length followed by `{`.
pub fn sniff(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0x80]) {
        return Ok(FileKind::TorchSave);
    }
    if n >= 9 && head[8..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(FileKind::Safetensors);
    }
    // Let the torch.save reader name what it is not (tar, truncated, empty…).
    Ok(FileKind::TorchSave)
}

/// The tensors of a checkpoint as a [`StateDict`]: a safetensors file, or the (sub-)tree `key`
/// of a torch.save file flattened with dotted names.
pub fn load_state_dict(path: &Path, key: Option<&str>) -> Result<StateDict> {
    match sniff(path)? {
        FileKind::Safetensors => {
            if key.is_some() {
                return Err(Error::invalid(format!(
                    "{}: --key applies to .pth files; safetensors files are flat",
                    path.display()
                )));
            }
            crate::safetensors::load_state_dict(path)
        }
        FileKind::TorchSave => crate::pth::load_state_dict(path, key),
    }
}

/// Writes `sd` as a `.pth` that `torch.load(path, weights_only=True)` reads, atomically.
pub fn save_pth_state_dict(path: &Path, sd: &StateDict) -> Result<()> {
    crate::pth::save_state_dict(path, sd)
}
