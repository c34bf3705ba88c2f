//! What reading a checkpoint may cost: [`ReadOptions`] (every limit, the reading budget among
//! them) and [`Budget`] (the running tally of bytes a read has allocated). docs/FORMATS.md
//! "Limits" lists each bound and its default.
//!
//! The budget (`max_bytes`, [`DEFAULT_MAX_BYTES`] = 16 GiB) bounds, separately, the storage
//! records a read loads (stored, inflated or legacy, each charged at the size the pickle declares,
//! all before the first is read) and the tensors it materialises (each view's numel × element
//! size, charged before it is gathered). A small file can describe a huge tensor (a stride-0
//! `expand`); the budget refuses it with [`Error::Budget`], naming the file, the tensor and the
//! size, before anything is allocated.
//!
//! No libtorch here: the fuzz crate compiles this file.

use crate::checkpoint::pickle::{Limits, Tensor};
use crate::checkpoint::raw::RawTensor;
use crate::error::{Error, Result};
use std::path::Path;

/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// The default reading budget: 16 GiB of storages loaded, and 16 GiB of tensors materialised.
/// The same on every machine (not a fraction of its memory), so a file reads the same
/// everywhere; raise it with `rnnkit convert --max-bytes` or [`ReadOptions::max_bytes`].
pub const DEFAULT_MAX_BYTES: u64 = 16 * GIB;

/// Options for reading a checkpoint; the defaults suit any real checkpoint up to 16 GiB.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The pickle VM's limits (operations, stack, memo, objects, nesting, working memory, …).
    pub limits: Limits,
    /// Check CRC-32s that are non-zero (torch does not check them at all).
    pub verify_crc: bool,
    /// Largest `data.pkl` accepted (after inflating, for a deflated record).
    pub max_pickle_bytes: u64,
    /// The reading budget, in bytes: the storages a read loads may total at most this much, and
    /// so may the tensors it materialises (each view's numel × element size). Checked before
    /// allocating.
    pub max_bytes: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            limits: Limits::default(),
            verify_crc: true,
            max_pickle_bytes: 2 * GIB,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl ReadOptions {
    /// The defaults with another reading budget.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        ReadOptions {
            max_bytes,
            ..Default::default()
        }
    }

    /// A fresh tally against this budget.
    pub fn budget(&self) -> Budget {
        Budget::new(self.max_bytes)
    }
}

/// A running tally of bytes against a maximum. [`Budget::charge`] refuses, without charging,
/// what would take the total past the maximum.
#[derive(Debug, Clone)]
pub struct Budget {
    max: u64,
    used: u64,
}

impl Budget {
    /// Nothing charged yet, at most `max` bytes.
    pub fn new(max: u64) -> Self {
        Budget { max, used: 0 }
    }
    /// The maximum.
    pub fn max(&self) -> u64 {
        self.max
    }
    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Adds `bytes` for `what` (a tensor or storage, described only on failure) read from
    /// `path`, or returns [`Error::Budget`] and leaves the tally unchanged.
    pub fn charge(&mut self, bytes: u64, path: &Path, what: impl FnOnce() -> String) -> Result<()> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.max => {
                self.used = total;
                Ok(())
            }
            _ => Err(Error::Budget {
                path: path.to_path_buf(),
                what: what(),
                bytes,
                used: self.used,
                max: self.max,
            }),
        }
    }

    /// Gives back bytes charged earlier (a buffer that was freed or shrank).
    pub fn release(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }
}

/// The bytes materialising `t` allocates: numel × element size of the view (not of its
/// storage: a stride-0 view of one element can be petabytes). Saturates at `u64::MAX`.
pub fn logical_bytes(t: &Tensor) -> u64 {
    t.shape
        .iter()
        .try_fold(t.dtype.size() as u64, |acc, &n| {
            u64::try_from(n).ok().and_then(|n| acc.checked_mul(n))
        })
        .unwrap_or(u64::MAX)
}

/// Materialises the tensor `name` of `path` ([`Tensor::to_raw`]) after charging its logical
/// size to `budget`: the only way checkpoint readers turn a view into bytes.
pub fn materialise_tensor(
    name: &str,
    t: &Tensor,
    path: &Path,
    budget: &mut Budget,
) -> Result<RawTensor> {
    budget.charge(logical_bytes(t), path, || {
        let mut s = format!("tensor {name:?} ({} {:?}", t.dtype, t.shape);
        if !t.is_contiguous() {
            s.push_str(&format!(", stride {:?}", t.stride));
        }
        s.push_str(&format!(
            ", a view of the {}-byte storage {:?})",
            t.storage.data.len(),
            t.storage.key
        ));
        s
    })?;
    t.to_raw()
        .map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))
}

/// Parses a size such as `17179869184`, `16G`, `512M`, `1.5GiB` or `64k`: a number, then
/// optionally K, M, G, T or P (powers of 1024, with or without `i` and `B`). `0` is allowed.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let bad = || format!("{text:?}: expected a size such as 16G, 512M or 1073741824");
    let prefix = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match prefix {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    if num.is_empty() || (unit.ends_with("ib") && prefix.is_empty()) {
        return Err(bad());
    }
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = frac.parse().map_err(|_| bad())?;
        let whole = (int as u128) << shift;
        let part = (frac << shift) / scale;
        u64::try_from(whole + part).map_err(|_| format!("{text:?}: too large"))?
    } else {
        let int: u64 = num.parse().map_err(|_| bad())?;
        int.checked_shl(shift)
            .filter(|v| v >> shift == int)
            .ok_or_else(|| format!("{text:?}: too large"))?
    };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        for (text, want) in [
            ("0", 0),
            ("1073741824", 1 << 30),
            ("16G", 16 << 30),
            ("16g", 16 << 30),
            ("16GiB", 16 << 30),
            ("16GB", 16 << 30),
            ("512M", 512 << 20),
            ("64k", 64 << 10),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            (" 3 M ", 3 << 20),
            ("100B", 100),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "G",
            "-1",
            "1.2.3G",
            "12X",
            "99999999999999999999",
            "16384P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_charge_past_the_maximum_is_refused_and_not_counted() {
        let mut b = Budget::new(100);
        b.charge(60, Path::new("f.pth"), || "a".into()).unwrap();
        let e = b
            .charge(41, Path::new("f.pth"), || "tensor \"b\"".into())
            .unwrap_err();
        assert_eq!(b.used(), 60);
        let msg = e.to_string();
        assert!(
            msg.contains("f.pth") && msg.contains("tensor \"b\"") && msg.contains("41"),
            "{msg}"
        );
        assert!(msg.contains("--max-bytes"), "{msg}");
        b.charge(40, Path::new("f.pth"), || "c".into()).unwrap();
        assert!(b
            .charge(u64::MAX, Path::new("f.pth"), || "d".into())
            .is_err());
    }
}
