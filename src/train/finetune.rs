//! Fine-tuning a classifier with cross-entropy: the familiar PyTorch loop (load the state_dict,
//! freeze the pretrained layers, attach a new head, Adam lr=1e-3, CrossEntropyLoss, save the
//! state_dict) plus ULMFiT's gradual unfreezing, discriminative learning rates and slanted
//! triangular schedule, gradient clipping, early stopping, and checkpoints that resume
//! bit-identically.
//!
//! One training step at global step t (the same order as `scripts/finetune_reference.py`):
//! ```text
//! manual_seed(seed · 1000003 + t)             dropout masks depend on (seed, t) only → resumable
//! logits = model(ids, lengths)                (N, C)
//! loss = cross_entropy(logits, y, weight, label_smoothing)   mean over the batch
//!        y: class indices (N,), or (N, C) probabilities when the batch has soft targets
//!        ("probs" in the data; PyTorch's CrossEntropyLoss with class probabilities)
//! zero_grad; loss.backward(); clip; lr_g = lr · factor^-(G-1-g) · schedule(t, T); step
//! ```
//! Layer groups, bottom to top: `embedding`, `encoder.l0` … `encoder.l{K-1}`, `head` (with the
//! attention pooling). Gradual unfreezing trains the top e+1 groups in epoch e.

use crate::train::common::{check_positive, check_run_length, step_seed, Plan};
use crate::train::data::{epoch_batches, make_batch, read_jsonl, Batching, Dataset};
use crate::error::{Error, Result};
use crate::checkpoint::atomic::{write_atomic, write_err};
use crate::train::metrics::{plot_svg, Metrics, MetricsAcc};
use crate::models::{Family, Model, ModelConfig, Pooling, SequenceClassifier};
use crate::nn::module::{Module, ModuleExt};
use crate::train::optim::{clip_grad_norm, clip_grad_value, Optimizer, OptimizerConfig, ParamGroup};
use crate::train::schedule::Schedule;
use crate::models::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Reduction, Tensor};

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
    /// Validation data, evaluated after every epoch.
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Output directory: the fine-tuned model, `best/`, `metrics.jsonl`, `metrics.svg`,
    /// `checkpoint.safetensors`.
    pub out: PathBuf,
    /// Class names of a new head (required when starting from a language model).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Replace the head even if the pretrained model is a classifier with the same classes.
    #[serde(default)]
    pub new_head: bool,
    #[serde(default)]
    pub pooling: Option<Pooling>,
    /// Dropout before the head (default: the pretrained model's).
    #[serde(default)]
    pub dropout: Option<f64>,
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    /// Stop after this many steps in total (for quick runs and parity tests).
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default = "crate::train::common::d_batch")]
    pub batch_size: usize,
    #[serde(default = "crate::train::common::d_lr")]
    pub lr: f64,
    #[serde(default = "d_opt")]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: Schedule,
    /// Glob patterns over parameter names (`encoder.*`) kept frozen throughout.
    #[serde(default)]
    pub freeze: Vec<String>,
    #[serde(default)]
    pub gradual_unfreezing: bool,
    /// Discriminative learning rates: group g gets lr / factor^(G-1-g) (ULMFiT: 2.6).
    #[serde(default)]
    pub discriminative_factor: Option<f64>,
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    #[serde(default)]
    pub clip_grad_value: Option<f64>,
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
    #[serde(default)]
    pub label_smoothing: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "crate::train::common::d_true")]
    pub shuffle: bool,
    #[serde(default = "crate::train::common::d_true")]
    pub bucket: bool,
    /// Stop when the validation metric has not improved for this many epochs.
    #[serde(default)]
    pub early_stopping_patience: Option<u64>,
    /// `accuracy`, `macro_f1` (higher is better) or `loss` (lower is better).
    #[serde(default = "d_metric")]
    pub metric: String,
    /// Also write a checkpoint every this many steps (always at each epoch's end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Continue from `out/checkpoint.safetensors`.
    #[serde(default)]
    pub resume: bool,
    #[serde(default = "crate::train::common::d_device")]
    pub device: String,
    /// Print a line every this many steps when stderr is not a terminal (0: epoch lines only).
    #[serde(default)]
    pub log_every: u64,
    /// Write `model.pth` next to `model.safetensors` in the output directories.
    #[serde(default = "crate::train::common::d_true")]
    pub save_pth: bool,
}

/// Glob matching with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The layer group of a parameter (index bottom to top) for a classifier.
fn layer_groups(model: &SequenceClassifier) -> Vec<(String, Vec<(String, Tensor)>)> {
    let cfg = &model.config;
    let layers = cfg.encoder.rnn.num_layers;
    let mut groups: Vec<(String, Vec<(String, Tensor)>)> = vec![("embedding".into(), vec![])];
    groups.extend((0..layers).map(|k| (format!("encoder.l{k}"), vec![])));
    groups.push(("head".into(), vec![]));
    let (emb, enc) = (cfg.prefix("embedding"), cfg.prefix("encoder"));
    for (name, t) in model.named_parameters() {
        let g = if name.starts_with(&emb) {
            0
        } else if let Some(rest) = name.strip_prefix(&enc) {
            let k: usize = rest
                .rsplit_once("_l")
                .and_then(|(_, tail)| tail.trim_end_matches("_reverse").parse().ok())
                .unwrap_or(0);
            1 + k
        } else {
            groups.len() - 1
        };
        groups[g].1.push((name, t));
    }
    groups
}

/// Trainer state stored in checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Progress {
    epoch: u64,
    /// Batches of `epoch` already trained.
    step_in_epoch: u64,
    global_step: u64,
    best: Option<f64>,
    bad_epochs: u64,
    log_lines: u64,
    train_loss_curve: Vec<(u64, f64)>,
    valid_curve: Vec<(u64, f64, f64)>,
    /// The configuration that produced the checkpoint (resume refuses a different one).
    config: serde_json::Value,
}

/// The result of a fine-tuning run.
#[derive(Debug, Serialize)]
pub struct FinetuneReport {
    pub steps: u64,
    pub epochs_completed: u64,
    pub final_train_loss: Option<f64>,
    pub best_valid: Option<f64>,
    pub valid: Option<Metrics>,
    pub stopped_early: bool,
    pub out: PathBuf,
}

/// Builds the classifier to fine-tune: the pretrained directory's classifier, or its backbone
/// under a new head (initialised as PyTorch's `nn.Linear`, after `manual_seed(seed)`).
pub fn prepare_model(cfg: &FinetuneConfig, device: Device) -> Result<SequenceClassifier> {
    let pretrained = Model::load_dir(&cfg.model, device)?;
    let pcfg = pretrained.config().clone();
    let same_head = pcfg.family == Family::Classifier
        && !cfg.new_head
        && cfg.pooling.is_none_or(|p| p == pcfg.pooling)
        && cfg
            .labels
            .as_ref()
            .is_none_or(|l| Some(l) == pcfg.labels.as_ref());
    let mut classifier = if same_head {
        match pretrained {
            Model::Classifier(c) => c,
            Model::LanguageModel(_) => unreachable!("family checked"),
        }
    } else {
        let labels = cfg
            .labels
            .clone()
            .or_else(|| pcfg.labels.clone())
            .ok_or_else(|| {
                Error::config(format!(
                    "{}: a new head needs labels (--labels neg,pos)",
                    cfg.model.display()
                ))
            })?;
        let mut ccfg = ModelConfig {
            family: Family::Classifier,
            num_classes: Some(labels.len() as i64),
            labels: Some(labels),
            pooling: cfg.pooling.unwrap_or(if pcfg.family == Family::Classifier {
                pcfg.pooling
            } else {
                Pooling::Last
            }),
            tie_weights: false,
            ..pcfg
        };
        ccfg.prefixes.remove("decoder");
        // What load_dir would refuse later (a repeated label…) is refused before training.
        ccfg.validate()?;
        tch::manual_seed(cfg.seed as i64);
        SequenceClassifier::with_backbone(ccfg, pretrained.into_backbone(), Kind::Float, device)?
    };
    if let Some(p) = cfg.dropout {
        classifier.config.dropout = p;
        classifier.dropout = crate::nn::dropout::Dropout::new(p)?;
    }
    Ok(classifier)
}

/// What a fine-tuning run writes into `out` besides `best/`.
const RUN_FILES: &[&str] = &[
    "checkpoint.safetensors",
    "metrics.jsonl",
    "model.safetensors",
    "model.pth",
];

/// The numeric settings PyTorch would refuse, or that would silently train the wrong way (a
/// negative clipping norm flips the gradient), and an output directory that is the model's.
fn check_settings(cfg: &FinetuneConfig) -> Result<()> {
    check_positive("clip_grad_norm", cfg.clip_grad_norm)?;
    check_positive("clip_grad_value", cfg.clip_grad_value)?;
    check_positive("discriminative_factor", cfg.discriminative_factor)?;
    if !(0.0..=1.0).contains(&cfg.label_smoothing) {
        return Err(Error::config(format!(
            "label_smoothing must be in [0, 1], got {}",
            cfg.label_smoothing
        )));
    }
    if let Some(w) = &cfg.class_weights {
        if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || w.iter().all(|&x| x == 0.0) {
            return Err(Error::config(format!(
                "class_weights must be finite, non-negative and not all zero, got {w:?}"
            )));
        }
    }
    cfg.schedule.validate()?;
    crate::train::run_dir::check_out_is_not_input(&cfg.out, &cfg.model)
}

/// Runs fine-tuning as configured. Every input is validated before the first step.
pub fn run(cfg: &FinetuneConfig) -> Result<FinetuneReport> {
    let device = crate::device::parse_device(&cfg.device)?;
    check_run_length(cfg.batch_size, cfg.epochs, cfg.lr)?;
    check_settings(cfg)?;
    if !cfg.resume {
        crate::train::run_dir::check_no_earlier_run(&cfg.out, RUN_FILES, true)?;
    }
    let higher_is_better = match cfg.metric.as_str() {
        "accuracy" | "macro_f1" => true,
        "loss" => false,
        m => {
            return Err(Error::config(format!(
                "unknown metric {m:?}: accuracy, macro_f1 or loss"
            )))
        }
    };
    let mut model = prepare_model(cfg, device)?;
    let mcfg = model.config.clone();
    let num_classes = mcfg.num_classes.unwrap_or(0);
    let tokenizer = Tokenizer::of_model(&cfg.model, &mcfg, mcfg.max_length)?;
    let labels = mcfg.labels.clone();
    let read = |p: &Path| -> Result<Dataset> {
        let d = read_jsonl(
            p,
            tokenizer.as_ref(),
            labels.as_deref(),
            num_classes,
            mcfg.max_length,
        )?;
        d.check_vocab(mcfg.vocab_size)?;
        Ok(d)
    };
    let train = read(&cfg.train)?;
    let valid = cfg.valid.as_deref().map(read).transpose()?;
    if let Some(w) = &cfg.class_weights {
        if w.len() as i64 != num_classes {
            return Err(Error::config(format!(
                "{} class weights for {num_classes} classes",
                w.len()
            )));
        }
    }

    // Freezing: patterns must each match something.
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for pat in &cfg.freeze {
        if !names.iter().any(|n| glob_match(pat, n)) {
            return Err(Error::config(format!(
                "freeze pattern {pat:?} matches no parameter; parameters are: {}",
                names.join(", ")
            )));
        }
    }
    let frozen = |n: &str| cfg.freeze.iter().any(|p| glob_match(p, n));
    let groups = layer_groups(&model);
    let g_count = groups.len();
    // The first epoch trains the fewest parameters (with gradual unfreezing, the head only).
    let first: Vec<&String> = groups
        .iter()
        .skip(if cfg.gradual_unfreezing {
            g_count - 1
        } else {
            0
        })
        .flat_map(|(_, ps)| ps.iter().map(|(n, _)| n))
        .collect();
    if first.iter().all(|n| frozen(n)) {
        return Err(Error::config(format!(
            "nothing to train{}: freeze {:?} covers {}",
            if cfg.gradual_unfreezing {
                " in epoch 1 (gradual unfreezing trains the head first)"
            } else {
                ""
            },
            cfg.freeze,
            first
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let base_lrs: Vec<f64> = (0..g_count)
        .map(|g| {
            cfg.lr
                / cfg
                    .discriminative_factor
                    .unwrap_or(1.0)
                    .powi((g_count - 1 - g) as i32)
        })
        .collect();
    let mut opt = Optimizer::new(
        cfg.optimizer,
        groups
            .iter()
            .zip(&base_lrs)
            .map(|((name, params), &lr)| ParamGroup {
                name: name.clone(),
                params: params
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
                lr,
            })
            .collect(),
    )?;
    let all_params: Vec<Tensor> = groups
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|(_, t)| t.shallow_clone()))
        .collect();
    let set_trainable = |epoch: u64| {
        for (g, (_, params)) in groups.iter().enumerate() {
            let open = !cfg.gradual_unfreezing || (g_count - 1 - g) as u64 <= epoch;
            for (n, t) in params {
                let _ = t.shallow_clone().set_requires_grad(open && !frozen(n));
            }
        }
    };

    let batching = Batching {
        batch_size: cfg.batch_size,
        shuffle: cfg.shuffle,
        bucket: cfg.bucket,
        seed: cfg.seed,
    };
    let plan = Plan::new(&train, batching, cfg.epochs, cfg.max_steps);
    let total = plan.total;
    let class_weights = cfg
        .class_weights
        .as_ref()
        .map(|w| Tensor::from_slice(w).to_kind(Kind::Float).to_device(device));
    let pad = mcfg.padding_idx.unwrap_or(0);

    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let ckpt_path = cfg.out.join("checkpoint.safetensors");
    let log_path = cfg.out.join("metrics.jsonl");
    let config_json = serde_json::to_value(fingerprint(cfg)).expect("config serialises");
    let mut progress = Progress {
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        best: None,
        bad_epochs: 0,
        log_lines: 0,
        train_loss_curve: vec![],
        valid_curve: vec![],
        config: config_json.clone(),
    };
    if cfg.resume && ckpt_path.exists() {
        progress = load_checkpoint(&ckpt_path, &mut model, &mut opt)?;
        if progress.config != config_json {
            let (was, now) = (&progress.config, &config_json);
            let mut keys: Vec<&String> = was
                .as_object()
                .into_iter()
                .chain(now.as_object())
                .flat_map(|o| o.keys())
                .filter(|k| was.get(k.as_str()) != now.get(k.as_str()))
                .collect();
            keys.sort();
            keys.dedup();
            return Err(Error::config(format!(
                "{}: the checkpoint was made with a different configuration ({}); start a new --out or drop --resume",
                ckpt_path.display(),
                keys.iter()
                    .map(|k| format!(
                        "{k}: {} then, {} now",
                        was.get(k.as_str()).unwrap_or(&serde_json::Value::Null),
                        now.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        truncate_lines(&log_path, progress.log_lines)?;
    } else {
        std::fs::write(&log_path, b"").map_err(|e| Error::io(&log_path, e))?;
        // Step 0: there is always a good checkpoint to fall back on.
        save_checkpoint(&ckpt_path, &model, &opt, &progress)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut stopped_early = false;
    let mut last_valid = None;

    'epochs: while progress.epoch < cfg.epochs && progress.global_step < total {
        let epoch = progress.epoch;
        set_trainable(epoch);
        model.set_training(true);
        let batches = epoch_batches(&plan.lengths, plan.batching, epoch);
        let bar = interactive.then(|| {
            let b = indicatif::ProgressBar::new(batches.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b.set_message(format!("{}/{}", epoch + 1, cfg.epochs));
            b.set_position(progress.step_in_epoch);
            b
        });
        for indices in batches.iter().skip(progress.step_in_epoch as usize) {
            if progress.global_step >= total {
                break;
            }
            let t = progress.global_step;
            tch::manual_seed(step_seed(cfg.seed, t));
            let batch = make_batch(&train.examples, indices, pad, device);
            let logits = model.forward(&batch.ids, &batch.lengths)?;
            let loss = logits.f_cross_entropy_loss(
                batch.probs.as_ref().unwrap_or(&batch.labels),
                class_weights.as_ref(),
                Reduction::Mean,
                -100,
                cfg.label_smoothing,
            )?;
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                return Err(Error::invalid(format!(
                    "loss became {loss_value} at step {t} (epoch {}); stopped. The last good checkpoint is {} — try a lower lr or --clip-grad-norm",
                    epoch + 1,
                    ckpt_path.display()
                )));
            }
            opt.zero_grad();
            loss.f_backward()?;
            if let Some(v) = cfg.clip_grad_value {
                clip_grad_value(&all_params, v);
            }
            if let Some(n) = cfg.clip_grad_norm {
                clip_grad_norm(&all_params, n);
            }
            let factor = cfg.schedule.factor(t, total);
            for (g, lr) in opt.groups.iter_mut().zip(&base_lrs) {
                g.lr = lr * factor;
            }
            opt.step()?;
            progress.global_step += 1;
            progress.step_in_epoch += 1;
            progress
                .train_loss_curve
                .push((progress.global_step, loss_value));
            let line = serde_json::json!({"step": progress.global_step, "epoch": epoch + 1, "loss": loss_value, "lr": opt.groups.last().map(|g| g.lr)});
            writeln!(log, "{line}").map_err(write_err(&log_path))?;
            progress.log_lines += 1;
            if let Some(b) = &bar {
                b.inc(1);
            } else if cfg.log_every > 0 && progress.global_step.is_multiple_of(cfg.log_every) {
                eprintln!(
                    "epoch {} step {} loss {loss_value:.4}",
                    epoch + 1,
                    progress.global_step
                );
            }
            if cfg
                .checkpoint_every
                .is_some_and(|k| k > 0 && progress.global_step.is_multiple_of(k))
            {
                save_checkpoint(&ckpt_path, &model, &opt, &progress)?;
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if progress.step_in_epoch < batches.len() as u64 {
            break 'epochs; // max_steps reached mid-epoch
        }
        // Epoch end: validate, early stopping, best model, checkpoint.
        // From the recorded curve, so a resumed epoch averages the steps before the restart too.
        let this_epoch = &progress.train_loss_curve
            [progress.train_loss_curve.len() - progress.step_in_epoch as usize..];
        let train_loss =
            this_epoch.iter().map(|p| p.1).sum::<f64>() / this_epoch.len().max(1) as f64;
        let mut line = serde_json::json!({"epoch": epoch + 1, "step": progress.global_step, "train_loss": train_loss});
        let mut improved = false;
        if let Some(v) = &valid {
            let m = evaluate(
                &mut model,
                v,
                cfg.batch_size,
                pad,
                class_weights.as_ref(),
                device,
            )?;
            let score = match cfg.metric.as_str() {
                "loss" => m.loss,
                "macro_f1" => m.macro_f1,
                _ => m.accuracy,
            };
            improved = progress.best.is_none_or(|b| {
                if higher_is_better {
                    score > b
                } else {
                    score < b
                }
            });
            if improved {
                progress.best = Some(score);
                progress.bad_epochs = 0;
            } else {
                progress.bad_epochs += 1;
            }
            line["valid"] = serde_json::to_value(&m).expect("metrics serialise");
            progress
                .valid_curve
                .push((progress.global_step, m.loss, m.accuracy));
            eprintln!(
                "epoch {}/{}: train loss {train_loss:.4}, valid loss {:.4}, accuracy {:.4}, macro-F1 {:.4}{}",
                epoch + 1,
                cfg.epochs,
                m.loss,
                m.accuracy,
                m.macro_f1,
                if improved { " (best)" } else { "" }
            );
            last_valid = Some(m);
        } else {
            eprintln!(
                "epoch {}/{}: train loss {train_loss:.4}",
                epoch + 1,
                cfg.epochs
            );
        }
        writeln!(log, "{line}").map_err(write_err(&log_path))?;
        progress.log_lines += 1;
        progress.epoch += 1;
        progress.step_in_epoch = 0;
        if improved {
            save_model_dir(&cfg.out.join("best"), &model, &cfg.model, cfg.save_pth)?;
        }
        save_checkpoint(&ckpt_path, &model, &opt, &progress)?;
        if cfg
            .early_stopping_patience
            .is_some_and(|p| progress.bad_epochs >= p)
        {
            eprintln!(
                "early stopping: no improvement of {} for {} epoch(s)",
                cfg.metric, progress.bad_epochs
            );
            stopped_early = true;
            break;
        }
    }
    save_checkpoint(&ckpt_path, &model, &opt, &progress)?;
    save_model_dir(&cfg.out, &model, &cfg.model, cfg.save_pth)?;
    let svg = plot_svg(&progress.train_loss_curve, &progress.valid_curve);
    let svg_path = cfg.out.join("metrics.svg");
    write_atomic(&svg_path, |w| {
        w.write_all(svg.as_bytes()).map_err(write_err(&svg_path))
    })?;
    Ok(FinetuneReport {
        steps: progress.global_step,
        epochs_completed: progress.epoch,
        final_train_loss: progress.train_loss_curve.last().map(|p| p.1),
        best_valid: progress.best,
        valid: last_valid,
        stopped_early,
        out: cfg.out.clone(),
    })
}

/// The fields that change the result (not where it is written or whether it resumes).
fn fingerprint(cfg: &FinetuneConfig) -> FinetuneConfig {
    FinetuneConfig {
        resume: false,
        device: String::new(),
        log_every: 0,
        ..cfg.clone()
    }
}

/// Writes the classifier's model directory (see [`crate::models::save_dir`]).
pub fn save_model_dir(
    dir: &Path,
    model: &SequenceClassifier,
    tokenizer_from: &Path,
    save_pth: bool,
) -> Result<()> {
    crate::models::save_dir(dir, &model.config, model, tokenizer_from, save_pth)
}

/// Writes the checkpoint atomically — unless a parameter is no longer finite, in which case the
/// previous checkpoint stays and training stops with an error naming the parameter.
fn save_checkpoint(
    path: &Path,
    model: &SequenceClassifier,
    opt: &Optimizer,
    progress: &Progress,
) -> Result<()> {
    let sd = model.state_dict();
    if let Some((k, _)) = sd
        .iter()
        .find(|(_, t)| t.isfinite().all().int64_value(&[]) == 0)
    {
        return Err(Error::invalid(format!(
            "parameter {k} became NaN or infinite after step {}; stopped. The last good checkpoint is {} — try a lower lr or --clip-grad-norm",
            progress.global_step,
            path.display()
        )));
    }
    let mut tensors = Vec::new();
    for (k, t) in sd.iter() {
        tensors.push((format!("model.{k}"), crate::checkpoint::raw::RawTensor::from_tch(t)?));
    }
    for (k, t) in opt.state_dict().iter() {
        tensors.push((format!("optim.{k}"), crate::checkpoint::raw::RawTensor::from_tch(t)?));
    }
    let meta = BTreeMap::from([(
        "trainer".to_string(),
        serde_json::to_string(progress).expect("progress serialises"),
    )]);
    crate::checkpoint::safetensors::write(path, &tensors, &meta)
}

fn load_checkpoint(
    path: &Path,
    model: &mut SequenceClassifier,
    opt: &mut Optimizer,
) -> Result<Progress> {
    // The trainer state first: a model file copied here is "not a checkpoint", not a list
    // of missing keys.
    let meta = crate::checkpoint::safetensors::read_metadata(path)?;
    let trainer = meta.get("trainer").ok_or_else(|| {
        Error::format(
            path,
            "not an rnnkit fine-tuning checkpoint (no trainer state in its metadata)",
        )
    })?;
    let progress = serde_json::from_str(trainer)
        .map_err(|e| Error::format(path, format!("trainer state: {e}")))?;
    let sd = crate::checkpoint::safetensors::load_state_dict(path)?;
    model.load_state_dict(&sd.select("model."))?;
    opt.load_state_dict(&sd.select("optim."))?;
    Ok(progress)
}

fn truncate_lines(path: &Path, keep: u64) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .take(keep as usize)
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, |w| {
        w.write_all(kept.as_bytes()).map_err(write_err(path))
    })
}

/// Loss (mean cross-entropy), accuracy, macro-F1 and confusion matrix of `data`, in eval mode.
pub fn evaluate(
    model: &mut SequenceClassifier,
    data: &Dataset,
    batch_size: usize,
    pad: i64,
    class_weights: Option<&Tensor>,
    device: Device,
) -> Result<Metrics> {
    let was_training = model.is_training();
    model.set_training(false);
    let _guard = tch::no_grad_guard();
    let n = model.config.num_classes.unwrap_or(1) as usize;
    let mut acc = MetricsAcc::new(n);
    for indices in epoch_batches(&data.lengths(), Batching::for_eval(batch_size), 0) {
        let b = make_batch(&data.examples, &indices, pad, device);
        let logits = model.forward(&b.ids, &b.lengths)?;
        let loss = logits
            .f_cross_entropy_loss(&b.labels, class_weights, Reduction::Mean, -100, 0.0)?
            .double_value(&[]);
        let pred = Vec::<i64>::try_from(logits.argmax(1, false).to_device(Device::Cpu))
            .map_err(|e| Error::invalid(e.to_string()))?;
        let labels = Vec::<i64>::try_from(b.labels.to_device(Device::Cpu))
            .map_err(|e| Error::invalid(e.to_string()))?;
        acc.add(&labels, &pred, loss);
    }
    model.set_training(was_training);
    Ok(acc.finish())
}

/// `rnnkit eval`: a model directory on a labelled data file.
pub fn eval_dir(
    model_dir: &Path,
    data: &Path,
    batch_size: usize,
    device: Device,
) -> Result<Metrics> {
    let mut model = match Model::load_dir(model_dir, device)? {
        Model::Classifier(c) => c,
        Model::LanguageModel(_) => {
            return Err(Error::invalid(format!(
                "{}: eval needs a classifier, this is a language model",
                model_dir.display()
            )))
        }
    };
    let mcfg = model.config.clone();
    let tokenizer = Tokenizer::of_model(model_dir, &mcfg, mcfg.max_length)?;
    let ds = read_jsonl(
        data,
        tokenizer.as_ref(),
        mcfg.labels.as_deref(),
        mcfg.num_classes.unwrap_or(0),
        mcfg.max_length,
    )?;
    ds.check_vocab(mcfg.vocab_size)?;
    evaluate(
        &mut model,
        &ds,
        batch_size,
        mcfg.padding_idx.unwrap_or(0),
        None,
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("encoder.*", "encoder.weight_ih_l0"));
        assert!(glob_match("*_l1*", "encoder.bias_hh_l1_reverse"));
        assert!(!glob_match("encoder.*", "head.weight"));
        assert!(glob_match("head.?eight", "head.weight"));
        assert!(glob_match("*", ""));
    }
}
