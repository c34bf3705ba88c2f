//! ULMFiT's second stage: fine-tune a pretrained language model on unlabelled in-domain text
//! (for example the classifier's training sentences) before the classifier is built on it.
//! `rnnkit finetune-lm`; the same loop in PyTorch is `scripts/lm_finetune_reference.py`.
//!
//! One step at global step t, for a batch of sequences x (N, L) with lengths ℓ_n ≥ 2:
//! ```text
//! manual_seed(seed · 1000003 + t)                      dropout masks depend on (seed, t) only
//! logits = lm(x[:, :L-1], ℓ - 1)                       (N, L-1, V)
//! loss = cross_entropy(logits, x[:, 1:], ignore -100)  mean over the Σ(ℓ_n - 1) real targets
//! zero_grad; loss.backward(); clip_grad_norm; lr_t = lr · schedule(t, T); step
//! ```
//! Batches come from the classifier's batching ([`crate::train::data::epoch_batches`]: seeded shuffle,
//! length buckets). Parameters are optimised once each: a tied decoder shares the embedding's
//! tensor, which `model.parameters()` in PyTorch also yields once.

use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use crate::models::{Family, Model};
use crate::nn::module::{Module, ModuleExt};
use crate::train::common::{check_positive, check_run_length, log_line, step_seed, Plan};
use crate::train::data::{epoch_batches, read_jsonl, Batching, Dataset};
use crate::train::optim::{clip_grad_norm, Optimizer, OptimizerConfig, ParamGroup};
use crate::train::run_dir::{check_no_earlier_run, check_out_is_not_input};
use crate::train::schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Reduction, Tensor};

fn d_epochs() -> u64 {
    1
}
fn d_opt() -> OptimizerConfig {
    OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    }
}

/// Everything `rnnkit finetune-lm` does, as a JSON file with these field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LmFinetuneConfig {
    /// Pretrained language model directory.
    pub model: PathBuf,
    /// Text to adapt to: JSONL with "text" (or "ids"); labels, if present, are ignored.
    pub train: PathBuf,
    /// Held-out text; its perplexity is reported after every epoch.
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Output: the adapted language model directory, and `metrics.jsonl`.
    pub out: PathBuf,
    /// Passes over the training text (default 1).
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    /// Stop after this many steps in total (default: none).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Sequences per step (default 32).
    #[serde(default = "crate::train::common::d_batch")]
    pub batch_size: usize,
    /// Base learning rate (default 1e-3); each step's rate is this times the schedule's factor.
    #[serde(default = "crate::train::common::d_lr")]
    pub lr: f64,
    /// The optimizer and its hyperparameters (default: `torch.optim.AdamW`'s,
    /// `{"name": "adamw"}`, weight_decay 0.01).
    #[serde(default = "d_opt")]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over the run's steps (default `constant`).
    #[serde(default)]
    pub schedule: Schedule,
    /// Clip the gradients' total 2-norm to this, as `torch.nn.utils.clip_grad_norm_(max_norm)`
    /// (default: none).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Dropout before the decoder (default: the pretrained model's).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Seeds the data order and each step's dropout masks (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Shuffle the sequences every epoch (default true); see [`crate::train::data`].
    #[serde(default = "crate::train::common::d_true")]
    pub shuffle: bool,
    /// Batch sequences of similar length together (default true); see [`crate::train::data`].
    #[serde(default = "crate::train::common::d_true")]
    pub bucket: bool,
    /// `auto` (the default), `cpu`, `cuda` or `cuda:N`; see [`crate::device::parse_device`].
    #[serde(default = "crate::train::common::d_device")]
    pub device: String,
    /// Print a line on stderr every this many steps (default 0: none).
    #[serde(default)]
    pub log_every: u64,
    /// Write `model.pth` next to `model.safetensors` (default true).
    #[serde(default = "crate::train::common::d_true")]
    pub save_pth: bool,
}

/// The result of a run: steps, final training loss, validation perplexity per epoch.
#[derive(Debug, Serialize)]
pub struct LmReport {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Mean next-token loss of the last step (`None`: no step was taken).
    pub final_train_loss: Option<f64>,
    /// (epoch, validation loss per token, perplexity), before training (epoch 0) and after each.
    pub valid: Vec<(u64, f64, f64)>,
    /// The output directory ([`LmFinetuneConfig::out`]).
    pub out: PathBuf,
}

/// Inputs (N, L-1), their lengths, and targets (N·(L-1)) with -100 past each length.
fn lm_batch(
    data: &Dataset,
    indices: &[usize],
    pad: i64,
    device: Device,
) -> (Tensor, Vec<i64>, Tensor) {
    let l = indices
        .iter()
        .map(|&i| data.examples[i].ids.len())
        .max()
        .unwrap_or(2)
        - 1;
    let (mut inp, mut tgt, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for &i in indices {
        let ids = &data.examples[i].ids;
        let n = ids.len() - 1;
        inp.extend_from_slice(&ids[..n]);
        inp.extend(std::iter::repeat_n(pad, l - n));
        tgt.extend_from_slice(&ids[1..]);
        tgt.extend(std::iter::repeat_n(-100, l - n));
        lengths.push(n as i64);
    }
    let rows = indices.len() as i64;
    (
        Tensor::from_slice(&inp)
            .view([rows, l as i64])
            .to_device(device),
        lengths,
        Tensor::from_slice(&tgt).to_device(device),
    )
}

fn read(path: &Path, tok: Option<&Tokenizer>, max_length: usize, vocab: i64) -> Result<Dataset> {
    let mut d = read_jsonl(path, tok, None, 0, max_length + 1)?;
    d.examples.retain(|e| e.ids.len() >= 2);
    if d.examples.is_empty() {
        return Err(Error::format(
            path,
            "no sequence of 2 or more tokens: nothing to predict",
        ));
    }
    d.check_vocab(vocab)?;
    Ok(d)
}

/// Mean next-token loss per target token over `data`, in eval mode.
fn evaluate(
    lm: &mut crate::models::LanguageModel,
    data: &Dataset,
    batch: usize,
    pad: i64,
    device: Device,
) -> Result<f64> {
    let was = lm.is_training();
    lm.set_training(false);
    let _g = tch::no_grad_guard();
    let (mut total, mut count) = (0.0, 0usize);
    for idx in epoch_batches(&data.lengths(), Batching::for_eval(batch), 0) {
        let (x, lens, y) = lm_batch(data, &idx, pad, device);
        let logits = lm.forward(&x, &lens)?;
        let v = logits.size()[2];
        total += logits
            .view([-1, v])
            .f_cross_entropy_loss(&y, None::<Tensor>, Reduction::Sum, -100, 0.0)?
            .double_value(&[]);
        count += lens.iter().sum::<i64>() as usize;
    }
    lm.set_training(was);
    Ok(total / count.max(1) as f64)
}

/// Runs the language-model fine-tuning as configured; every input is checked first.
pub fn run(cfg: &LmFinetuneConfig) -> Result<LmReport> {
    let device = crate::device::parse_device(&cfg.device)?;
    check_run_length(cfg.batch_size, cfg.epochs, cfg.lr)?;
    cfg.schedule.validate()?;
    check_positive("clip_grad_norm", cfg.clip_grad_norm)?;
    check_out_is_not_input(&cfg.out, &cfg.model)?;
    check_no_earlier_run(
        &cfg.out,
        &["metrics.jsonl", "model.safetensors", "model.pth"],
        false,
    )?;
    let mut lm = match Model::load_dir(&cfg.model, device)? {
        Model::LanguageModel(m) => m,
        other => {
            return Err(Error::config(format!(
                "{}: finetune-lm needs a language model (family {:?}), this is family {:?}",
                cfg.model.display(),
                Family::LanguageModel,
                other.config().family
            )))
        }
    };
    if let Some(p) = cfg.dropout {
        lm.config.dropout = p;
        lm.dropout = crate::nn::dropout::Dropout::new(p)?;
    }
    let mcfg = lm.config.clone();
    // A text of max_length + 1 tokens gives max_length inputs and as many targets.
    let tok = Tokenizer::of_model(&cfg.model, &mcfg, mcfg.max_length + 1)?;
    let train = read(&cfg.train, tok.as_ref(), mcfg.max_length, mcfg.vocab_size)?;
    let valid = cfg
        .valid
        .as_deref()
        .map(|p| read(p, tok.as_ref(), mcfg.max_length, mcfg.vocab_size))
        .transpose()?;
    let pad = mcfg.padding_idx.unwrap_or(0);

    // Each tensor once (the tied decoder is the embedding's tensor), in state_dict order.
    let mut seen = std::collections::HashSet::new();
    let params: Vec<(String, Tensor)> = lm
        .named_parameters()
        .into_iter()
        .filter(|(_, t)| seen.insert(t.data_ptr() as usize))
        .collect();
    let all: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut opt = Optimizer::new(
        cfg.optimizer,
        vec![ParamGroup {
            name: "all".into(),
            params,
            lr: cfg.lr,
        }],
    )?;
    let batching = Batching {
        batch_size: cfg.batch_size,
        shuffle: cfg.shuffle,
        bucket: cfg.bucket,
        seed: cfg.seed,
    };
    let plan = Plan::new(&train, batching, cfg.epochs, cfg.max_steps);
    let total = plan.total;

    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let log_path = cfg.out.join("metrics.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut report = LmReport {
        steps: 0,
        final_train_loss: None,
        valid: vec![],
        out: cfg.out.clone(),
    };
    let mut validate = |lm: &mut crate::models::LanguageModel,
                        epoch: u64,
                        log: &mut std::fs::File|
     -> Result<()> {
        if let Some(v) = &valid {
            let loss = evaluate(lm, v, cfg.batch_size, pad, device)?;
            eprintln!(
                "epoch {epoch}: valid loss {loss:.4}, perplexity {:.2}",
                loss.exp()
            );
            log_line(
                log,
                &log_path,
                &serde_json::json!({"epoch": epoch, "valid_loss": loss, "valid_ppl": loss.exp()}),
            )?;
            report.valid.push((epoch, loss, loss.exp()));
        }
        Ok(())
    };
    validate(&mut lm, 0, &mut log)?;
    let mut step = 0u64;
    'epochs: for epoch in 0..cfg.epochs {
        lm.set_training(true);
        for idx in epoch_batches(&plan.lengths, plan.batching, epoch) {
            if step >= total {
                break 'epochs;
            }
            tch::manual_seed(step_seed(cfg.seed, step));
            let (x, lens, y) = lm_batch(&train, &idx, pad, device);
            let logits = lm.forward(&x, &lens)?;
            let v = logits.size()[2];
            let loss = logits.view([-1, v]).f_cross_entropy_loss(
                &y,
                None::<Tensor>,
                Reduction::Mean,
                -100,
                0.0,
            )?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::invalid(format!(
                    "loss became {value} at step {step}; stopped (try a lower lr or clip_grad_norm)"
                )));
            }
            opt.zero_grad();
            loss.f_backward()?;
            if let Some(n) = cfg.clip_grad_norm {
                clip_grad_norm(&all, n);
            }
            opt.groups[0].lr = cfg.lr * cfg.schedule.factor(step, total);
            opt.step()?;
            step += 1;
            log_line(
                &mut log,
                &log_path,
                &serde_json::json!({"step": step, "epoch": epoch + 1, "loss": value}),
            )?;
            if cfg.log_every > 0 && step.is_multiple_of(cfg.log_every) {
                eprintln!("epoch {} step {step}/{total} loss {value:.4}", epoch + 1);
            }
            report.final_train_loss = Some(value);
        }
        validate(&mut lm, epoch + 1, &mut log)?;
    }
    report.steps = step;
    lm.set_training(false);
    crate::models::save_dir(&cfg.out, &lm.config, &lm, &cfg.model, cfg.save_pth)?;
    Ok(report)
}
