//! Fine-tuning a pretrained seq2seq model on parallel text (`rnnkit finetune-seq2seq`): teacher
//! forcing, label-smoothed cross-entropy over the non-padding target tokens, parameters frozen
//! by glob. The same loop in plain PyTorch is `scripts/seq2seq_finetune_reference.py`.
//!
//! Data: JSONL lines `{"src": text, "tgt": text}` (tokenised with the model directory's source
//! and target tokenizers) or `{"src_ids": [...], "tgt_ids": [...]}`. Per pair:
//! ```text
//! x     = src_ids[..max_length]                          (an empty source is an error)
//! y     = tgt_ids[..max_length - 1] ++ [eos]
//! y_in  = [bos] ++ y[..|y| - 1]        y_out = y         (padded with padding_idx per batch)
//! ```
//! One step at global step t, for a batch cut by source length ([`epoch_batches`]):
//! ```text
//! manual_seed(seed · 1000003 + t)                       dropout masks depend on (seed, t) only
//! loss = cross_entropy(model(x, |x|, y_in), y_out, ignore_index = pad, label_smoothing)
//! zero_grad; loss.backward(); clip_grad_norm; lr_t = lr · schedule(t, T); step
//! ```
//! Frozen parameters (`freeze` globs over state_dict keys) get no gradient and no update; every
//! other parameter is optimised once (a shared embedding or tied output is one tensor, as
//! `model.parameters()` yields it once in PyTorch). The validation loss is the plain
//! cross-entropy per target token (no smoothing), reported with its perplexity.
//!
//! Layer groups, bottom to top (G = K + 3 for K encoder layers):
//! ```text
//! embedding | encoder.l0 … encoder.l{K-1} | decoder (tgt_embedding, bridge, decoder, attention) | output
//! ```
//! A tensor stored under several keys (shared embeddings, a tied output) belongs to the highest
//! group of its keys. Group g learns at `lr / discriminative_factor^(G-1-g)`; with
//! `gradual_unfreezing`, epoch e (from 0) trains groups g ≥ G-1-e and the rest have no gradient.
//! Checkpoints and `resume` are [`crate::train::resume`]'s: a resumed run is bit-identical.

use crate::error::{Error, Result};
use crate::models::seq2seq::translate::load_with_tokenizers;
use crate::models::seq2seq::Seq2Seq;
use crate::models::tokenizer::Tokenizer;
use crate::nn::module::{Module, ModuleExt};
use crate::train::common::{check_positive, check_run_length, step_seed};
use crate::train::data::{epoch_batches, total_steps, Batching};
use crate::train::groups::{encoder_layer, Groups, LayerGroups};
use crate::train::optim::{clip_grad_norm, OptimizerConfig};
use crate::train::resume::RunFiles;
use crate::train::run_dir::{check_no_earlier_run, check_out_is_not_input};
use crate::train::schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Reduction, Tensor};

fn d_epochs() -> u64 {
    1
}
fn d_opt() -> OptimizerConfig {
    OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}
fn d_smoothing() -> f64 {
    0.1
}

/// Everything `rnnkit finetune-seq2seq` does, as a JSON file with these field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqFinetuneConfig {
    /// Pretrained seq2seq model directory.
    pub model: PathBuf,
    /// Parallel text: JSONL with "src" and "tgt" (or "src_ids" and "tgt_ids").
    pub train: PathBuf,
    /// Held-out pairs; their loss per target token is reported after every epoch.
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Output: the fine-tuned model directory, and `metrics.jsonl`.
    pub out: PathBuf,
    /// Passes over the training pairs (default 1).
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    /// Stop after this many steps in total (default: none).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Pairs per step (default 32).
    #[serde(default = "crate::train::common::d_batch")]
    pub batch_size: usize,
    /// Base learning rate (default 1e-3); each step's rate is this times the schedule's factor.
    #[serde(default = "crate::train::common::d_lr")]
    pub lr: f64,
    /// The optimizer (default `torch.optim.Adam`'s defaults, `{"name": "adam"}`).
    #[serde(default = "d_opt")]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over the run's steps (default `constant`).
    #[serde(default)]
    pub schedule: Schedule,
    /// Clip the gradients' total 2-norm to this (default: none).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// `label_smoothing` of the training loss (default 0.1).
    #[serde(default = "d_smoothing")]
    pub label_smoothing: f64,
    /// Parameters to keep fixed: globs over state_dict keys (`encoder.*`, `*embedding*`).
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Dropout before the output projection (default: the pretrained model's).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Seeds the data order and each step's dropout masks (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Shuffle the pairs every epoch (default true); see [`crate::train::data`].
    #[serde(default = "crate::train::common::d_true")]
    pub shuffle: bool,
    /// Batch pairs of similar source length together (default true).
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
    /// ULMFiT's gradual unfreezing: epoch 1 trains `output` only, each later epoch one more
    /// layer group downwards (default false; the groups are in the module doc).
    #[serde(default)]
    pub gradual_unfreezing: bool,
    /// Discriminative learning rates: group g learns at lr / factor^(G-1-g) (default: none,
    /// every group at `lr`).
    #[serde(default)]
    pub discriminative_factor: Option<f64>,
    /// Also write a checkpoint every this many steps (default: none; always at each epoch's
    /// end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Continue from `out/checkpoint.safetensors` (default false).
    #[serde(default)]
    pub resume: bool,
}

impl Seq2SeqFinetuneConfig {
    /// What a resumed run must share with the run that wrote the checkpoint: every setting but
    /// `resume`, `device` and `log_every`.
    fn fingerprint(&self) -> serde_json::Value {
        serde_json::to_value(Seq2SeqFinetuneConfig {
            resume: false,
            device: String::new(),
            log_every: 0,
            ..self.clone()
        })
        .expect("config serialises")
    }
}

/// The result of a run.
#[derive(Debug, Serialize)]
pub struct Seq2SeqReport {
    /// Optimizer steps taken, those before a resume included.
    pub steps: u64,
    /// Loss of the last step (`None`: no step was taken).
    pub final_train_loss: Option<f64>,
    /// (epoch, validation loss per target token, perplexity), before training (epoch 0) and after each.
    pub valid: Vec<(u64, f64, f64)>,
    /// Parameters trained and frozen (state_dict keys; a tied tensor under its first key).
    pub trained: Vec<String>,
    /// Frozen parameters.
    pub frozen: Vec<String>,
    /// The output directory.
    pub out: PathBuf,
}

/// One pair, as token ids (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Source ids, 1..=max_length of them.
    pub src: Vec<i64>,
    /// Target ids ending in EOS, at most max_length.
    pub tgt: Vec<i64>,
}

/// What a pair file needs from the model: tokenizers, lengths and special ids.
pub struct PairReader<'a> {
    /// The source tokenizer (None: the file must hold ids).
    pub src_tok: Option<&'a Tokenizer>,
    /// The target tokenizer.
    pub tgt_tok: Option<&'a Tokenizer>,
    /// Longest source and target (EOS included).
    pub max_length: usize,
    /// Appended to every target.
    pub eos: i64,
    /// Sizes the ids must fit.
    pub src_vocab: i64,
    /// Target vocabulary size.
    pub tgt_vocab: i64,
}

impl PairReader<'_> {
    /// Reads a JSONL file of pairs; every problem names the file and the line.
    pub fn read(&self, path: &Path) -> Result<Vec<Pair>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut pairs = Vec::new();
        for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |m: String| Error::format(path, format!("line {}: {m}", i + 1));
            let v: serde_json::Value =
                crate::json::from_str(line).map_err(|e| at(e.to_string()))?;
            let side = |text_key: &str, ids_key: &str, tok: Option<&Tokenizer>, vocab: i64| {
                let ids: Vec<i64> = match (v.get(ids_key), v.get(text_key), tok) {
                    (Some(ids), _, _) => ids
                        .as_array()
                        .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
                        .ok_or_else(|| at(format!("{ids_key:?} must be an array of integers")))?,
                    (None, Some(t), Some(tok)) => {
                        let t = t
                            .as_str()
                            .ok_or_else(|| at(format!("{text_key:?} must be a string")))?;
                        tok.encode_raw(t)?.into_iter().map(i64::from).collect()
                    }
                    (None, Some(_), None) => {
                        return Err(at(format!(
                            "{text_key:?} is text but the model has no tokenizer for it; give {ids_key:?}"
                        )))
                    }
                    (None, None, _) => return Err(at(format!("no {text_key:?} or {ids_key:?}"))),
                };
                if let Some(bad) = ids.iter().find(|&&x| !(0..vocab).contains(&x)) {
                    return Err(at(format!(
                        "{text_key} token id {bad} is outside the vocabulary 0..{vocab}"
                    )));
                }
                Ok(ids)
            };
            let mut src = side("src", "src_ids", self.src_tok, self.src_vocab)?;
            let mut tgt = side("tgt", "tgt_ids", self.tgt_tok, self.tgt_vocab)?;
            if src.is_empty() {
                // As the translator refuses an empty text: nothing to learn a translation of.
                return Err(at("the source is empty (no tokens)".into()));
            }
            src.truncate(self.max_length);
            tgt.truncate(self.max_length.saturating_sub(1));
            tgt.push(self.eos);
            pairs.push(Pair { src, tgt });
        }
        if pairs.is_empty() {
            return Err(Error::format(path, "no pairs"));
        }
        Ok(pairs)
    }
}

/// A padded batch: src (N, S), source lengths, tgt_in and tgt_out (N, T).
pub struct PairBatch {
    /// Source ids.
    pub src: Tensor,
    /// Source lengths.
    pub src_len: Vec<i64>,
    /// `[bos] ++ y[..|y|-1]`, padded.
    pub tgt_in: Tensor,
    /// `y`, padded with `pad` (ignored by the loss).
    pub tgt_out: Tensor,
}

/// The pairs `indices` as one padded batch.
pub fn pair_batch(
    pairs: &[Pair],
    indices: &[usize],
    bos: i64,
    pad: i64,
    device: Device,
) -> PairBatch {
    let rows: Vec<&Pair> = indices.iter().map(|&i| &pairs[i]).collect();
    let s = rows.iter().map(|p| p.src.len()).max().unwrap_or(1);
    let t = rows.iter().map(|p| p.tgt.len()).max().unwrap_or(1);
    let (mut src, mut tin, mut tout, mut src_len) = (vec![], vec![], vec![], vec![]);
    for p in &rows {
        src.extend_from_slice(&p.src);
        src.extend(std::iter::repeat_n(pad, s - p.src.len()));
        src_len.push(p.src.len() as i64);
        tin.push(bos);
        tin.extend_from_slice(&p.tgt[..p.tgt.len() - 1]);
        tin.extend(std::iter::repeat_n(pad, t - p.tgt.len()));
        tout.extend_from_slice(&p.tgt);
        tout.extend(std::iter::repeat_n(pad, t - p.tgt.len()));
    }
    let n = rows.len() as i64;
    let mk = |v: &[i64], w: usize| Tensor::from_slice(v).view([n, w as i64]).to_device(device);
    PairBatch {
        src: mk(&src, s),
        src_len,
        tgt_in: mk(&tin, t),
        tgt_out: mk(&tout, t),
    }
}

/// Plain cross-entropy per non-padding target token over `pairs`, in eval mode.
pub fn evaluate(model: &mut Seq2Seq, pairs: &[Pair], batch: usize, device: Device) -> Result<f64> {
    let was = model.is_training();
    model.set_training(false);
    let _g = tch::no_grad_guard();
    let (bos, pad) = (model.s2s().bos_id, model.config.padding_idx.unwrap_or(-100));
    let v = model.s2s().tgt_vocab_size;
    let lengths: Vec<usize> = pairs.iter().map(|p| p.src.len()).collect();
    let (mut total, mut count) = (0.0, 0usize);
    for idx in epoch_batches(&lengths, Batching::for_eval(batch), 0) {
        let b = pair_batch(pairs, &idx, bos, pad.max(0), device);
        let logits = model.forward(&b.src, &b.src_len, &b.tgt_in)?;
        total += logits
            .f_reshape([-1, v])?
            .f_cross_entropy_loss(
                &b.tgt_out.f_reshape([-1])?,
                None::<Tensor>,
                Reduction::Sum,
                pad,
                0.0,
            )?
            .double_value(&[]);
        count += idx.iter().map(|&i| pairs[i].tgt.len()).sum::<usize>();
    }
    model.set_training(was);
    Ok(total / count.max(1) as f64)
}

/// The layer groups of `model` (see the module doc).
fn layer_groups(model: &Seq2Seq) -> Groups {
    let cfg = &model.config;
    let mut groups: Groups = vec![("embedding".into(), vec![])];
    groups.extend((0..cfg.encoder.rnn.num_layers).map(|k| (format!("encoder.l{k}"), vec![])));
    groups.push(("decoder".into(), vec![]));
    groups.push(("output".into(), vec![]));
    let top = groups.len() - 1;
    let (emb, enc, out) = (
        cfg.prefix("embedding"),
        cfg.prefix("encoder"),
        cfg.prefix("output"),
    );
    let group_of = |name: &str| {
        if name.starts_with(&out) {
            top
        } else if name.starts_with(&emb) {
            0
        } else if let Some(rest) = name.strip_prefix(&enc) {
            1 + encoder_layer(rest)
        } else {
            top - 1
        }
    };
    let mut unique: Vec<(String, Tensor, usize)> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for (name, t) in model.named_parameters() {
        let g = group_of(&name);
        match at.get(&(t.data_ptr() as usize)) {
            Some(&i) => {
                let u: &mut (String, Tensor, usize) = &mut unique[i];
                u.2 = u.2.max(g);
            }
            None => {
                at.insert(t.data_ptr() as usize, unique.len());
                unique.push((name, t, g));
            }
        }
    }
    for (name, t, g) in unique {
        groups[g].1.push((name, t));
    }
    groups
}

/// Checks the settings that need no file.
fn check(cfg: &Seq2SeqFinetuneConfig) -> Result<Device> {
    let device = crate::device::parse_device(&cfg.device)?;
    check_run_length(cfg.batch_size, cfg.epochs, cfg.lr)?;
    cfg.schedule.validate()?;
    check_positive("clip_grad_norm", cfg.clip_grad_norm)?;
    check_positive("discriminative_factor", cfg.discriminative_factor)?;
    if !(0.0..1.0).contains(&cfg.label_smoothing) {
        return Err(Error::config(format!(
            "label_smoothing must be in [0, 1), got {}",
            cfg.label_smoothing
        )));
    }
    check_out_is_not_input(&cfg.out, &cfg.model)?;
    if !cfg.resume {
        check_no_earlier_run(
            &cfg.out,
            &[
                "metrics.jsonl",
                "checkpoint.safetensors",
                "model.safetensors",
                "model.pth",
            ],
            true,
        )?;
    }
    Ok(device)
}

/// Runs the fine-tuning as configured; every input is checked before the first step.
pub fn run(cfg: &Seq2SeqFinetuneConfig) -> Result<Seq2SeqReport> {
    let device = check(cfg)?;
    let (mut model, src_tok, tgt_tok) = load_with_tokenizers(&cfg.model, device)?;
    if let Some(p) = cfg.dropout {
        model.config.dropout = p;
        model.dropout = crate::nn::dropout::Dropout::new(p)?;
    }
    let reader = PairReader {
        src_tok: src_tok.as_ref(),
        tgt_tok: tgt_tok.as_ref(),
        max_length: model.config.max_length,
        eos: model.s2s().eos_id,
        src_vocab: model.config.vocab_size,
        tgt_vocab: model.s2s().tgt_vocab_size,
    };
    let train = reader.read(&cfg.train)?;
    let valid = cfg.valid.as_deref().map(|p| reader.read(p)).transpose()?;
    let (bos, pad) = (model.s2s().bos_id, model.config.padding_idx.unwrap_or(0));

    let groups = LayerGroups::new(
        layer_groups(&model),
        &cfg.freeze,
        cfg.gradual_unfreezing,
        cfg.lr,
        cfg.discriminative_factor,
    )?;
    let mut opt = groups.optimizer(cfg.optimizer)?;
    let batching = Batching {
        batch_size: cfg.batch_size,
        shuffle: cfg.shuffle,
        bucket: cfg.bucket,
        seed: cfg.seed,
    };
    let lengths: Vec<usize> = train.iter().map(|p| p.src.len()).collect();
    let total = total_steps(&lengths, batching, cfg.epochs, cfg.max_steps);

    let mut files = RunFiles::open(
        &cfg.out,
        cfg.resume,
        cfg.fingerprint(),
        &mut model,
        &mut opt,
    )?;
    let validate = |model: &mut Seq2Seq, epoch: u64, files: &mut RunFiles| -> Result<()> {
        if let Some(v) = &valid {
            let loss = evaluate(model, v, cfg.batch_size, device)?;
            eprintln!(
                "epoch {epoch}: valid loss {loss:.4}, perplexity {:.2}",
                loss.exp()
            );
            files.log(
                &serde_json::json!({"epoch": epoch, "valid_loss": loss, "valid_ppl": loss.exp()}),
            )?;
            files.progress.valid_curve.push((epoch, loss, loss.exp()));
        }
        Ok(())
    };
    if files.progress.global_step == 0 && files.progress.log_lines == 0 {
        validate(&mut model, 0, &mut files)?;
        files.save(&model, &opt)?;
    }
    while files.progress.epoch < cfg.epochs && files.progress.global_step < total {
        let epoch = files.progress.epoch;
        groups.set_trainable(epoch);
        model.set_training(true);
        let batches = epoch_batches(&lengths, batching, epoch);
        for idx in batches.iter().skip(files.progress.step_in_epoch as usize) {
            let step = files.progress.global_step;
            if step >= total {
                break;
            }
            tch::manual_seed(step_seed(cfg.seed, step));
            let b = pair_batch(&train, idx, bos, pad, device);
            let logits = model.forward(&b.src, &b.src_len, &b.tgt_in)?;
            let loss = model.loss(&logits, &b.tgt_out, cfg.label_smoothing)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::invalid(format!(
                    "loss became {value} at step {step} (epoch {}); stopped. The last good checkpoint is {} — try a lower lr or clip_grad_norm",
                    epoch + 1,
                    files.ckpt_path.display()
                )));
            }
            opt.zero_grad();
            loss.f_backward()?;
            if let Some(n) = cfg.clip_grad_norm {
                clip_grad_norm(&groups.all, n);
            }
            groups.set_lrs(&mut opt, cfg.schedule.factor(step, total));
            opt.step()?;
            files.end_step(
                epoch,
                value,
                total,
                cfg.log_every,
                cfg.checkpoint_every,
                &model,
                &opt,
            )?;
        }
        if files.progress.step_in_epoch < batches.len() as u64 {
            // max_steps reached mid-epoch: the run's last checkpoint.
            files.save(&model, &opt)?;
            break;
        }
        validate(&mut model, epoch + 1, &mut files)?;
        files.progress.epoch += 1;
        files.progress.step_in_epoch = 0;
        files.save(&model, &opt)?;
    }
    model.set_training(false);
    crate::models::save_dir(&cfg.out, &model.config, &model, &cfg.model, cfg.save_pth)?;
    let p = &files.progress;
    Ok(Seq2SeqReport {
        steps: p.global_step,
        final_train_loss: p.train_loss_curve.last().map(|&(_, l)| l),
        valid: p.valid_curve.clone(),
        trained: groups.trained.clone(),
        frozen: groups.frozen.clone(),
        out: cfg.out.clone(),
    })
}
