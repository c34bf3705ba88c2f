//! What the training loops ([`crate::train::finetune`], [`crate::train::lm_finetune`],
//! [`crate::train::seq2seq_finetune`]) share: the defaults of their common settings, the checks on
//! them, the per-step seed, the plan of a run's batches, freezing by glob, and the lines of
//! `metrics.jsonl`.
//!
//! ```text
//! step_seed(seed, t) = seed · 1000003 + t      (wrapping i64; dropout masks of step t)
//! total              = min(max_steps, epochs · ⌈N / batch_size⌉)
//! ```

use crate::checkpoint::atomic::write_err;
use crate::error::{Error, Result};
use crate::train::data::{total_steps, Batching, Dataset};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::io::Write;
use std::path::Path;

pub(crate) fn d_batch() -> usize {
    32
}
pub(crate) fn d_lr() -> f64 {
    1e-3
}
pub(crate) fn d_true() -> bool {
    true
}
pub(crate) fn d_device() -> String {
    "auto".into()
}

/// The RNG seed for training step `step` (dropout masks): seeded per step, so a resumed run
/// draws what an uninterrupted one would. `scripts/finetune_reference.py` and
/// `scripts/lm_finetune_reference.py` seed PyTorch the same way.
pub fn step_seed(seed: u64, step: u64) -> i64 {
    (seed as i64)
        .wrapping_mul(1_000_003)
        .wrapping_add(step as i64)
}

/// Each layer group's base rate, bottom to top: group g of G learns at `lr / factor^(G-1-g)`
/// (ULMFiT's discriminative learning rates; no factor: every group at `lr`).
pub(crate) fn discriminative_lrs(lr: f64, factor: Option<f64>, groups: usize) -> Vec<f64> {
    (0..groups)
        .map(|g| lr / factor.unwrap_or(1.0).powi((groups - 1 - g) as i32))
        .collect()
}

/// Refuses a run of no batches, no epochs or a learning rate that is not positive.
pub(crate) fn check_run_length(batch_size: usize, epochs: u64, lr: f64) -> Result<()> {
    if batch_size == 0 || epochs == 0 || lr.is_nan() || lr <= 0.0 {
        return Err(Error::config("batch_size, epochs and lr must be positive"));
    }
    Ok(())
}

/// An optional setting that must be positive and finite when given.
pub(crate) fn check_positive(what: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(v) if !(v > 0.0 && v.is_finite()) => Err(Error::config(format!(
            "{what} must be positive and finite, got {v}"
        ))),
        _ => Ok(()),
    }
}

/// The batches of a training run: how each epoch is cut, the example lengths it is cut by,
/// and the number of steps the run takes.
pub(crate) struct Plan {
    pub batching: Batching,
    pub lengths: Vec<usize>,
    pub total: u64,
}

impl Plan {
    pub fn new(train: &Dataset, batching: Batching, epochs: u64, max_steps: Option<u64>) -> Self {
        let lengths = train.lengths();
        let total = total_steps(&lengths, batching, epochs, max_steps);
        Plan {
            batching,
            lengths,
            total,
        }
    }
}

/// Appends one JSON line to the run's log at `path`.
pub(crate) fn log_line(log: &mut impl Write, path: &Path, line: &serde_json::Value) -> Result<()> {
    writeln!(log, "{line}").map_err(write_err(path))
}

/// The `freeze` patterns: globs over parameter names (`*` any run of characters, dots
/// included; `?` one character; `[ab]` a class; `{a,b}` alternatives), matched in linear time.
pub(crate) struct Freeze(GlobSet);

impl Freeze {
    /// Compiles `patterns`; each must match at least one of `names`.
    pub(crate) fn new(patterns: &[String], names: &[String]) -> Result<Self> {
        let mut set = GlobSetBuilder::new();
        for pat in patterns {
            let glob = Glob::new(pat)
                .map_err(|e| Error::config(format!("freeze pattern {pat:?}: {e}")))?;
            let matcher = glob.compile_matcher();
            if !names.iter().any(|n| matcher.is_match(n)) {
                return Err(Error::config(format!(
                    "freeze pattern {pat:?} matches no parameter; parameters are: {}",
                    names.join(", ")
                )));
            }
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| Error::config(format!("freeze patterns {patterns:?}: {e}")))?;
        Ok(Freeze(set))
    }

    pub(crate) fn covers(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}
