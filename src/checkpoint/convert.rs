//! `rnnkit convert IN OUT`: a checkpoint's tensors from `.pth` to `.safetensors` or back (or
//! `.pth` to `.pth`). The input format is read from the content; the output format from OUT's
//! extension (`.safetensors`, or `.pth`/`.pt`/`.bin`). Tensors come out flattened with dotted
//! names, C-contiguous, with neg/conj resolved; `--key` selects a sub-tree, `--strip-prefix` and
//! `--rename` edit names, `--dtype` casts floating-point tensors.
//!
//! Memory: storages are released as soon as their last tensor is materialised, so peak use is
//! about the checkpoint size plus one tensor. Everything read is bounded by the reading budget
//! (`--max-bytes`, 16 GiB by default; [`ReadOptions::max_bytes`]): a tensor whose logical size
//! would take the total past it (a stride-0 view of one element can describe petabytes) is
//! refused before it is allocated, and so is a `--dtype` cast that would.

use crate::checkpoint::budget::{Budget, ReadOptions};
use crate::checkpoint::pth::{self, Format};
use crate::checkpoint::raw::{DType, RawTensor};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A safetensors header's `__metadata__` (string to string).
pub type Metadata = BTreeMap<String, String>;

/// What `rnnkit convert` does: input, output and the edits on the way.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Input checkpoint (.pth zip or legacy, or .safetensors; detected from the content).
    pub input: PathBuf,
    /// Output file: .safetensors, or .pth / .pt / .bin for torch.save format.
    pub output: PathBuf,
    /// Sub-tree to convert, as a dotted path (e.g. model_state_dict). For a safetensors input,
    /// the tensors named `KEY.*`, with `KEY.` removed.
    pub key: Option<String>,
    /// Remove this prefix from every name that has it (repeatable). `auto` removes `module.` and
    /// `_orig_mod.` when every name carries them.
    pub strip_prefix: Vec<String>,
    /// Rename a name prefix, OLD=NEW (repeatable; applied after --strip-prefix).
    pub rename: Vec<String>,
    /// Cast floating-point tensors to this dtype (float32, float16, bfloat16, float64).
    pub dtype: Option<String>,
    /// Limits and reading budget for the input (`max_bytes`, 16 GiB by default).
    pub read: ReadOptions,
}

/// Runs `rnnkit convert` and returns a one-line summary.
pub fn run(args: &ConvertOptions) -> Result<String> {
    let out_format = output_format(&args.output)?;
    let mut budget = args.read.budget();
    let (mut tensors, metadata) =
        read_any_within(&args.input, args.key.as_deref(), &args.read, &mut budget)?;
    // A prefix or rename that matches no name is almost always a typo: say so rather than
    // write an unchanged file.
    let matches_none = |flag: &str, p: &str, tensors: &[(String, _)]| {
        Error::invalid(format!(
            "{flag} {p:?} matches no tensor name; names are: {}",
            tensors
                .iter()
                .map(|(k, _)| k.as_str())
                .take(20)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    for p in &args.strip_prefix {
        tensors = if p == "auto" {
            pth::strip_wrapper_prefixes(tensors)
        } else {
            if !tensors.iter().any(|(k, _)| k.starts_with(p.as_str())) {
                return Err(matches_none("--strip-prefix", p, &tensors));
            }
            pth::strip_prefix(tensors, p)
        };
    }
    for rule in &args.rename {
        let (old, new) = rule
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--rename {rule:?}: expected OLD=NEW")))?;
        if !tensors.iter().any(|(k, _)| k.starts_with(old)) {
            return Err(matches_none("--rename", old, &tensors));
        }
        tensors = tensors
            .into_iter()
            .map(|(k, t)| match k.strip_prefix(old) {
                Some(rest) => (format!("{new}{rest}"), t),
                None => (k, t),
            })
            .collect();
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &tensors {
        if k.is_empty() {
            return Err(Error::invalid(
                "a tensor's name is empty after renaming (a prefix was a whole name)",
            ));
        }
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(format!(
                "two tensors are named {k:?} after renaming"
            )));
        }
    }
    if let Some(d) = &args.dtype {
        let target = DType::from_torch_name(d.strip_prefix("torch.").unwrap_or(d))
            .filter(|d| matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "--dtype {d:?}: expected float32, float16, bfloat16 or float64"
                ))
            })?;
        let input = &args.input;
        tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = cast(t, target, &k, input, &mut budget)?;
                Ok((k, t))
            })
            .collect::<Result<_>>()?;
    }
    let count = tensors.len();
    let params: usize = tensors.iter().map(|(_, t)| t.numel()).sum();
    let bytes: usize = tensors.iter().map(|(_, t)| t.data.len()).sum();
    match out_format {
        Format::Safetensors => {
            crate::checkpoint::safetensors::write(&args.output, &tensors, &metadata)?
        }
        _ => pth::save_tensors(&args.output, tensors)?,
    }
    Ok(format!(
        "wrote {count} tensors ({params} parameters, {bytes} bytes) to {} ({})",
        args.output.display(),
        if out_format == Format::Safetensors {
            "safetensors"
        } else {
            "torch.save zip"
        }
    ))
}

fn output_format(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => Ok(Format::Safetensors),
        Some("pth" | "pt" | "bin" | "ckpt") => Ok(Format::Zip),
        _ => Err(Error::invalid(format!(
            "{}: cannot tell the output format from the extension (use .safetensors, .pth, .pt or .bin)",
            path.display()
        ))),
    }
}

/// The tensors of any checkpoint (format from content), flattened, and the safetensors
/// metadata to carry over (`{"format": "pt"}` for a torch.save input). Default limits and
/// reading budget.
pub fn read_any(path: &Path, key: Option<&str>) -> Result<(Vec<(String, RawTensor)>, Metadata)> {
    read_any_with(path, key, &ReadOptions::default())
}

/// As [`read_any`], within `opts` (its `max_bytes` bounds the storages loaded and the tensors
/// materialised).
pub fn read_any_with(
    path: &Path,
    key: Option<&str>,
    opts: &ReadOptions,
) -> Result<(Vec<(String, RawTensor)>, Metadata)> {
    read_any_within(path, key, opts, &mut opts.budget())
}

/// As [`read_any_with`], charging the tensors materialised to `budget` (which `run` keeps for
/// the casts that follow).
fn read_any_within(
    path: &Path,
    key: Option<&str>,
    opts: &ReadOptions,
    budget: &mut Budget,
) -> Result<(Vec<(String, RawTensor)>, Metadata)> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if pth::sniff(&head) == Format::Safetensors {
        let st = crate::checkpoint::safetensors::read_with(path, opts)?;
        budget.charge(
            st.tensors.iter().map(|(_, t)| t.data.len() as u64).sum(),
            path,
            || "the tensors".into(),
        )?;
        let tensors: Vec<(String, RawTensor)> = match key {
            None => st.tensors,
            Some(k) => {
                let p = format!("{k}.");
                st.tensors
                    .into_iter()
                    .filter_map(|(n, t)| n.strip_prefix(&p).map(|r| (r.to_string(), t)))
                    .collect()
            }
        };
        if tensors.is_empty() {
            return Err(Error::format(path, "no tensors to convert (check --key)"));
        }
        return Ok((tensors, st.metadata));
    }
    let root = pth::load_with(path, opts)?.0;
    let tensors = pth::flatten_with(pth::select(&root, key, path)?, path, &opts.limits)?;
    drop(root);
    let tensors = pth::materialise_within(tensors, path, budget)?;
    Ok((
        tensors,
        BTreeMap::from([("format".to_string(), "pt".to_string())]),
    ))
}

/// Casts a floating-point tensor with libtorch's rounding (as `tensor.to(dtype)` does); other
/// dtypes are returned unchanged. A cast that widens charges the growth to `budget` first.
fn cast(
    t: RawTensor,
    target: DType,
    name: &str,
    path: &Path,
    budget: &mut Budget,
) -> Result<RawTensor> {
    if !matches!(t.dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64) || t.dtype == target {
        return Ok(t);
    }
    let (old, new) = (t.data.len() as u64, (t.numel() * target.size()) as u64);
    if new > old {
        budget.charge(new - old, path, || {
            format!(
                "casting tensor {name:?} ({} {:?}) to {target}",
                t.dtype, t.shape
            )
        })?;
    } else {
        budget.release(old - new);
    }
    let kind = target
        .kind()
        .ok_or_else(|| Error::invalid(format!("cannot cast to {target}")))?;
    let x = t.to_tch(name)?.f_to_kind(kind)?;
    RawTensor::from_tch(&x)
}
