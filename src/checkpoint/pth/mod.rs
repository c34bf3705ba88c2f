//! PyTorch checkpoints (`.pth`, `.pt`, `.bin`): read any file `torch.load(weights_only=True)`
//! reads — zip or legacy format, chosen by content — into a [`Value`] tree, select a sub-tree,
//! flatten it to a [`StateDict`], and write files that torch reads back.
//!
//! ```no_run
//! # fn main() -> rnnkit::Result<()> {
//! let ckpt = rnnkit::checkpoint::pth::load("run1.pth")?;                     // the whole tree
//! let sd = rnnkit::checkpoint::pth::load_state_dict("run1.pth", Some("model_state_dict"))?;
//! let sd = sd.strip_prefix("module.")?;
//! rnnkit::checkpoint::pth::save_state_dict("weights.pth", &sd)?;             // torch.load(…, weights_only=True) reads it
//! # Ok(()) }
//! ```
//!
//! The container and pickle layers ([`read`], [`write`](mod@write), [`crate::checkpoint::pickle`]) need no libtorch;
//! tensors cross into tch only in [`load_state_dict`] / [`save_state_dict`].

pub mod read;
pub mod write;

pub use crate::checkpoint::pickle::{Dict, DictKind, Limits, Storage, Tensor, Value};
pub use read::{sniff, FileInfo, Format, ReadOptions};

use crate::checkpoint::atomic::write_atomic;
use crate::checkpoint::budget::{materialise_tensor, Budget};
use crate::checkpoint::raw::RawTensor;
use crate::checkpoint::state_dict::StateDict;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// Reads a torch.save file (zip or legacy) with the default limits.
pub fn load(path: impl AsRef<Path>) -> Result<Value> {
    Ok(load_with(path, &ReadOptions::default())?.0)
}

/// Reads a torch.save file, returning the value tree and facts about the container.
pub fn load_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(Value, FileInfo)> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    read::read(file, len, path, opts)
}

/// The sub-tree at `key` (a dotted path, see [`Value::get_path`]); the root for `None`.
pub fn select<'a>(root: &'a Value, key: Option<&str>, path: &Path) -> Result<&'a Value> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(root);
    };
    root.get_path(key).ok_or_else(|| {
        let top: Vec<String> = match root {
            Value::Dict(d) => d
                .entries
                .iter()
                .filter_map(|(k, _)| k.key_string())
                .take(20)
                .collect(),
            _ => Vec::new(),
        };
        Error::format(
            path,
            format!("no key {key:?} in the checkpoint (top-level keys: {top:?})"),
        )
    })
}

/// Every tensor under `value` with its dotted name, in file order. An error if there is none,
/// so a wrong `--key` or a non-weights file never reads as an empty model.
pub fn flatten(value: &Value, path: &Path) -> Result<Vec<(String, Arc<Tensor>)>> {
    flatten_with(value, path, &Limits::default())
}

/// As [`flatten`], walking within `limits` (`max_visits`, `max_name_bytes`).
pub fn flatten_with(
    value: &Value,
    path: &Path,
    limits: &Limits,
) -> Result<Vec<(String, Arc<Tensor>)>> {
    let tensors = value
        .tensors_within(limits.max_visits, limits.max_name_bytes)
        .map_err(|e| Error::format(path, e.to_string()))?;
    if tensors.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "the selected {} holds no tensors (choose a sub-tree with a key)",
                value.type_name()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::format(
                path,
                format!("two tensors flatten to the same name {name:?}"),
            ));
        }
    }
    Ok(tensors)
}

/// Materialises named tensors as raw bytes within the default reading budget, releasing each
/// storage as soon as its last tensor is done (the caller must not hold other references to the
/// tree), so peak memory stays near the checkpoint size plus one tensor.
pub fn materialise(
    tensors: Vec<(String, Arc<Tensor>)>,
    path: &Path,
) -> Result<Vec<(String, RawTensor)>> {
    materialise_within(tensors, path, &mut ReadOptions::default().budget())
}

/// As [`materialise`], charging each tensor's logical size (numel × element size) to `budget`
/// before gathering it: a tensor that would take the total past the budget is refused with
/// [`Error::Budget`] and nothing is allocated for it.
pub fn materialise_within(
    tensors: Vec<(String, Arc<Tensor>)>,
    path: &Path,
    budget: &mut Budget,
) -> Result<Vec<(String, RawTensor)>> {
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let raw = materialise_tensor(&name, &t, path, budget)?;
        drop(t); // last user of a storage frees it here
        out.push((name, raw));
    }
    Ok(out)
}

/// Reads the tensors at `key` (or everywhere) as raw bytes, flattened with dotted names, within
/// the default limits and reading budget.
pub fn load_tensors(path: impl AsRef<Path>, key: Option<&str>) -> Result<Vec<(String, RawTensor)>> {
    load_tensors_with(path, key, &ReadOptions::default())
}

/// As [`load_tensors`], within `opts` (its `max_bytes` bounds both the storages loaded and the
/// tensors materialised).
pub fn load_tensors_with(
    path: impl AsRef<Path>,
    key: Option<&str>,
    opts: &ReadOptions,
) -> Result<Vec<(String, RawTensor)>> {
    let path = path.as_ref();
    let root = load_with(path, opts)?.0;
    let tensors = flatten_with(select(&root, key, path)?, path, &opts.limits)?;
    drop(root);
    materialise_within(tensors, path, &mut opts.budget())
}

/// Reads a checkpoint into a [`StateDict`] of CPU tensors: the sub-tree at `key` (e.g.
/// `model_state_dict`) flattened with dotted names; non-tensor values are skipped. An error if
/// the selection holds no tensor. Default limits and reading budget.
pub fn load_state_dict(path: impl AsRef<Path>, key: Option<&str>) -> Result<StateDict> {
    load_state_dict_with(path, key, &ReadOptions::default())
}

/// As [`load_state_dict`], within `opts`.
pub fn load_state_dict_with(
    path: impl AsRef<Path>,
    key: Option<&str>,
    opts: &ReadOptions,
) -> Result<StateDict> {
    let path = path.as_ref();
    let root = load_with(path, opts)?.0;
    let tensors = flatten_with(select(&root, key, path)?, path, &opts.limits)?;
    drop(root);
    let mut budget = opts.budget();
    let mut sd = StateDict::new().with_source(path);
    for (name, t) in tensors {
        let raw = materialise_tensor(&name, &t, path, &mut budget)?;
        drop(t); // last user of a storage frees it here
        let tt = raw.to_tch(&format!("{}: tensor {name:?}", path.display()))?;
        drop(raw);
        sd.insert(name, tt)?;
    }
    Ok(sd)
}

/// Writes `value` as a torch.save zip archive, atomically.
pub fn save(path: impl AsRef<Path>, value: &Value) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        write::write(value, w).map_err(|e| match e {
            Error::Io { err, .. } => Error::io(path, err),
            Error::Invalid(m) => Error::invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    })
}

/// Writes named raw tensors as an `OrderedDict` state_dict, atomically.
pub fn save_tensors(path: impl AsRef<Path>, tensors: Vec<(String, RawTensor)>) -> Result<()> {
    let mut d = Dict::new(DictKind::OrderedDict);
    for (name, raw) in tensors {
        d.entries.push((
            Value::Str(name.into()),
            Value::Tensor(Arc::new(Tensor::from(raw))),
        ));
    }
    save(path, &Value::Dict(Arc::new(d)))
}

/// Writes a [`StateDict`] as `torch.save(module.state_dict())` would (an `OrderedDict` of
/// tensors), so `module.load_state_dict(torch.load(path, weights_only=True))` works.
pub fn save_state_dict(path: impl AsRef<Path>, sd: &StateDict) -> Result<()> {
    let tensors = sd
        .iter()
        .map(|(k, t)| Ok((k.clone(), RawTensor::from_tch(t)?)))
        .collect::<Result<Vec<_>>>()?;
    save_tensors(path, tensors)
}

/// Names with `prefix` removed where present (`module.`, `_orig_mod.`).
pub fn strip_prefix<T>(tensors: Vec<(String, T)>, prefix: &str) -> Vec<(String, T)> {
    tensors
        .into_iter()
        .map(|(k, t)| (k.strip_prefix(prefix).map(str::to_string).unwrap_or(k), t))
        .collect()
}

/// The wrapper prefixes torch adds: `module.` (DataParallel/DDP), `_orig_mod.` (torch.compile).
pub const WRAPPER_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// Removes `module.` and `_orig_mod.` when *every* name carries it (repeatedly, so
/// `_orig_mod.module.` goes too). Linear in the names' length however many prefixes there are.
pub fn strip_wrapper_prefixes<T>(tensors: Vec<(String, T)>) -> Vec<(String, T)> {
    let mut cut = 0;
    while let Some(p) = WRAPPER_PREFIXES
        .iter()
        .find(|p| !tensors.is_empty() && tensors.iter().all(|(k, _)| k[cut..].starts_with(*p)))
    {
        cut += p.len(); // ASCII prefixes: `cut` stays on a character boundary
    }
    if cut == 0 {
        return tensors;
    }
    tensors
        .into_iter()
        .map(|(k, t)| (k[cut..].to_string(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_torch_cannot_read_back_is_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("rnnkit-pth-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.pth");
        let mut d = Dict::new(DictKind::Dict);
        d.attrs.push((Value::Str("x".into()), Value::Int(1)));
        let e = save(&path, &Value::Dict(Arc::new(d))).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("bad.pth") && msg.contains("attributes on a plain dict"),
            "{msg}"
        );
        assert!(!path.exists(), "nothing written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
