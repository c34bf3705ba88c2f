//! The configuration of `rnnkit finetune` ([`FinetuneConfig`]): its fields and defaults, the
//! checks run before anything is loaded, the validation metric, and the fingerprint a
//! checkpoint records so that a resumed run is the same run.

use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::models::Pooling;
use crate::train::common::{check_positive, check_run_length};
use crate::train::metrics::Metrics;
use crate::train::optim::OptimizerConfig;
use crate::train::run_dir::{check_no_earlier_run, check_out_is_not_input};
use crate::train::schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Device;

fn d_epochs() -> u64 {
    3
}
fn d_metric() -> String {
    "accuracy".into()
}
fn d_opt() -> OptimizerConfig {
    OptimizerConfig::adam()
}

/// Everything `rnnkit finetune` does, as flags or a JSON file with these field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Pretrained model directory (a language model or a classifier).
    pub model: PathBuf,
    /// Training data (JSONL: {"text"|"ids", "label"}).
    pub train: PathBuf,
    /// Validation data, evaluated after every epoch (default: none).
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Output directory: the fine-tuned model, `best/`, `metrics.jsonl`, `metrics.svg`,
    /// `checkpoint.safetensors`.
    pub out: PathBuf,
    /// Class names of a new head (required when starting from a language model).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Replace the head even if the pretrained model is a classifier with the same classes
    /// (default false).
    #[serde(default)]
    pub new_head: bool,
    /// How the head pools the encoder's outputs (default: the pretrained classifier's, or
    /// `last` for a language model). A pooling other than the pretrained classifier's means a
    /// new head.
    #[serde(default)]
    pub pooling: Option<Pooling>,
    /// Dropout before the head (default: the pretrained model's).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Passes over the training data (default 3).
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    /// Stop after this many steps in total (default: none; for quick runs and parity tests).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Examples per step (default 32).
    #[serde(default = "crate::train::common::d_batch")]
    pub batch_size: usize,
    /// Base learning rate of the top layer group (default 1e-3); each step's rate is this
    /// times the schedule's factor (and the discriminative factor below the top).
    #[serde(default = "crate::train::common::d_lr")]
    pub lr: f64,
    /// The optimizer and its hyperparameters (default: `torch.optim.Adam`'s,
    /// `{"name": "adam"}`).
    #[serde(default = "d_opt")]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over the run's steps (default `constant`).
    #[serde(default)]
    pub schedule: Schedule,
    /// Glob patterns over parameter names (`encoder.*`) kept frozen throughout (default none).
    #[serde(default)]
    pub freeze: Vec<String>,
    /// ULMFiT's gradual unfreezing: epoch 1 trains the head only, each later epoch one more
    /// layer group downwards (default false).
    #[serde(default)]
    pub gradual_unfreezing: bool,
    /// Discriminative learning rates: group g gets lr / factor^(G-1-g) (default: none, every
    /// group gets `lr`; ULMFiT: 2.6).
    #[serde(default)]
    pub discriminative_factor: Option<f64>,
    /// Clip the gradients' total 2-norm to this, as `torch.nn.utils.clip_grad_norm_(max_norm)`
    /// (default: none). Applied after `clip_grad_value`.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Clamp every gradient element to `[-v, v]`, as `torch.nn.utils.clip_grad_value_`
    /// (default: none).
    #[serde(default)]
    pub clip_grad_value: Option<f64>,
    /// One weight per class, `CrossEntropyLoss(weight=…)`; finite, non-negative, not all zero
    /// (default: none, every class 1). Also weights the validation loss.
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
    /// `CrossEntropyLoss(label_smoothing=…)`, in [0, 1] (default 0). Training loss only.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seeds the data order, a new head's initialisation and each step's dropout masks
    /// (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Shuffle the training examples every epoch (default true); see [`crate::train::data`].
    #[serde(default = "crate::train::common::d_true")]
    pub shuffle: bool,
    /// Batch examples of similar length together (default true); see [`crate::train::data`].
    #[serde(default = "crate::train::common::d_true")]
    pub bucket: bool,
    /// Stop when the validation metric has not improved for this many epochs (default: none).
    #[serde(default)]
    pub early_stopping_patience: Option<u64>,
    /// `accuracy` (the default), `macro_f1` (higher is better) or `loss` (lower is better).
    #[serde(default = "d_metric")]
    pub metric: String,
    /// Also write a checkpoint every this many steps (default: none; always at each epoch's
    /// end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Continue from `out/checkpoint.safetensors` (default false).
    #[serde(default)]
    pub resume: bool,
    /// `auto` (the default), `cpu`, `cuda` or `cuda:N`; see [`crate::device::parse_device`].
    #[serde(default = "crate::train::common::d_device")]
    pub device: String,
    /// Print a line every this many steps when stderr is not a terminal (0: epoch lines only).
    #[serde(default)]
    pub log_every: u64,
    /// Write `model.pth` next to `model.safetensors` in the output directories (default true).
    #[serde(default = "crate::train::common::d_true")]
    pub save_pth: bool,
}

/// What a fine-tuning run writes into `out` besides `best/`.
const RUN_FILES: &[&str] = &[
    "checkpoint.safetensors",
    "metrics.jsonl",
    "model.safetensors",
    "model.pth",
];

/// The validation metric that picks `best/` and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    Accuracy,
    MacroF1,
    Loss,
}

impl Metric {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "accuracy" => Ok(Metric::Accuracy),
            "macro_f1" => Ok(Metric::MacroF1),
            "loss" => Ok(Metric::Loss),
            m => Err(Error::config(format!(
                "unknown metric {m:?}: accuracy, macro_f1 or loss"
            ))),
        }
    }

    /// The score of `m` under this metric.
    pub fn score(self, m: &Metrics) -> f64 {
        match self {
            Metric::Accuracy => m.accuracy,
            Metric::MacroF1 => m.macro_f1,
            Metric::Loss => m.loss,
        }
    }

    /// Whether `score` beats `best` (any score beats none): higher accuracy and macro-F1,
    /// lower loss.
    pub fn improves(self, score: f64, best: Option<f64>) -> bool {
        best.is_none_or(|b| match self {
            Metric::Accuracy | Metric::MacroF1 => score > b,
            Metric::Loss => score < b,
        })
    }
}

impl FinetuneConfig {
    /// Every setting that can be checked before the model and data are read: the numbers
    /// PyTorch would refuse or that would silently train the wrong way (a negative clipping
    /// norm flips the gradient), an output directory that is the model's or holds another
    /// run (unless resuming), and the metric. Returns the device and the metric.
    pub(crate) fn check(&self) -> Result<(Device, Metric)> {
        let device = parse_device(&self.device)?;
        check_run_length(self.batch_size, self.epochs, self.lr)?;
        check_positive("clip_grad_norm", self.clip_grad_norm)?;
        check_positive("clip_grad_value", self.clip_grad_value)?;
        check_positive("discriminative_factor", self.discriminative_factor)?;
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::config(format!(
                "label_smoothing must be in [0, 1], got {}",
                self.label_smoothing
            )));
        }
        if let Some(w) = &self.class_weights {
            if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || w.iter().all(|&x| x == 0.0) {
                return Err(Error::config(format!(
                    "class_weights must be finite, non-negative and not all zero, got {w:?}"
                )));
            }
        }
        self.schedule.validate()?;
        check_out_is_not_input(&self.out, &self.model)?;
        if !self.resume {
            check_no_earlier_run(&self.out, RUN_FILES, true)?;
        }
        Ok((device, Metric::parse(&self.metric)?))
    }

    /// The fields that change the result (not where it is written or whether it resumes).
    pub(crate) fn fingerprint(&self) -> FinetuneConfig {
        FinetuneConfig {
            resume: false,
            device: String::new(),
            log_every: 0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_improve_in_their_direction() {
        let m = Metrics {
            loss: 0.5,
            accuracy: 0.75,
            macro_f1: 0.625,
            confusion: vec![],
            examples: 4,
        };
        assert_eq!(Metric::parse("macro_f1").unwrap().score(&m), 0.625);
        assert!(Metric::Accuracy.improves(0.8, Some(0.75)));
        assert!(!Metric::Accuracy.improves(0.75, Some(0.75)));
        assert!(Metric::Loss.improves(0.4, Some(0.5)) && !Metric::Loss.improves(0.6, Some(0.5)));
        assert!(Metric::Loss.improves(9.0, None));
        let e = Metric::parse("f1").unwrap_err().to_string();
        assert!(e.contains("unknown metric \"f1\""), "{e}");
    }
}
