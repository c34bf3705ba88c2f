//! [`StateDict::load`] and [`StateDict::save`]: PyTorch's `torch.load(path, weights_only=True)`
//! and `torch.save(state_dict, path)` for state_dicts. Reading picks the format by the file's
//! content (safetensors, or torch.save zip / legacy); writing picks it by the extension
//! (`.safetensors`, anything else torch.save's zip format) and replaces the file atomically.

use crate::checkpoint::budget::ReadOptions;
use crate::checkpoint::state_dict::StateDict;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::Path;

impl StateDict {
    /// `torch.load(path, weights_only=True)` of a state_dict: every tensor of a safetensors file,
    /// or of a torch.save file flattened with dotted names (nested dicts become `a.b.c`).
    pub fn load(path: impl AsRef<Path>) -> Result<StateDict> {
        crate::checkpoint::load_state_dict(path.as_ref(), None)
    }

    /// As [`StateDict::load`], for the sub-tree at the dotted `key` of a torch.save file (for
    /// example `model_state_dict` in a training checkpoint).
    pub fn load_key(path: impl AsRef<Path>, key: &str) -> Result<StateDict> {
        crate::checkpoint::load_state_dict(path.as_ref(), Some(key))
    }

    /// As [`StateDict::load`], within `opts`: its `max_bytes` (the reading budget, 16 GiB by
    /// default) bounds the storages loaded and the tensors materialised, each checked before
    /// allocating ([`crate::error::Error::Budget`] names the file, the tensor and the size).
    ///
    /// ```no_run
    /// # fn main() -> rnnkit::Result<()> {
    /// use rnnkit::checkpoint::{ReadOptions, StateDict};
    /// let sd = StateDict::load_with("big.pth", &ReadOptions::with_max_bytes(64 << 30))?;
    /// # Ok(()) }
    /// ```
    pub fn load_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<StateDict> {
        crate::checkpoint::load_state_dict_with(path.as_ref(), None, opts)
    }

    /// As [`StateDict::load_key`], within `opts` (see [`StateDict::load_with`]).
    pub fn load_key_with(
        path: impl AsRef<Path>,
        key: &str,
        opts: &ReadOptions,
    ) -> Result<StateDict> {
        crate::checkpoint::load_state_dict_with(path.as_ref(), Some(key), opts)
    }

    /// `torch.save(state_dict, path)`: an `OrderedDict` of tensors in torch.save's zip format,
    /// or a safetensors file when `path` ends in `.safetensors`. Written atomically: on error
    /// the file that was there is untouched.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "safetensors") {
            crate::checkpoint::safetensors::save_state_dict(path, self, &BTreeMap::new())
        } else {
            crate::checkpoint::pth::save_state_dict(path, self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn save_then_load_gives_the_same_bits_in_both_formats() {
        let dir = std::env::temp_dir().join(format!("rnnkit-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sd = StateDict::new();
        sd.insert(
            "rnn.weight_ih_l0".into(),
            Tensor::from_slice(&[1.5f32, -0.0, f32::MIN_POSITIVE]),
        )
        .unwrap();
        sd.insert("head.bias".into(), Tensor::from_slice(&[3i64, -7]))
            .unwrap();
        for name in ["sd.pth", "sd.safetensors"] {
            let p = dir.join(name);
            sd.save(&p).unwrap();
            let back = StateDict::load(&p).unwrap();
            let mut keys: Vec<&String> = back.keys().collect();
            keys.sort();
            assert_eq!(keys, ["head.bias", "rnn.weight_ih_l0"], "{name}");
            for (k, t) in sd.iter() {
                let b = back.get(k).unwrap();
                assert_eq!(b.kind(), t.kind(), "{name} {k}");
                assert!(
                    b.view_dtype(tch::Kind::Uint8)
                        .equal(&t.view_dtype(tch::Kind::Uint8)),
                    "{name} {k}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
