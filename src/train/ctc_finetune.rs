//! Fine-tuning (or training from scratch) a ctc acoustic model on transcribed audio
//! (`rnnkit finetune-ctc`): CTC loss, SpecAugment, parameters frozen by glob, layer groups with
//! gradual unfreezing and discriminative rates, schedules, clipping, checkpoints and `--resume`.
//! The same loop in plain PyTorch is `scripts/ctc_finetune_reference.py`.
//!
//! Data: JSONL lines `{"wav": path, "text": transcript}`, a relative path taken from the JSONL
//! file's folder. Each text is spelled in the model's alphabet (a character outside it, or an
//! empty text, is an error naming the line); features are computed once, before the first step
//! ([`crate::models::ctc::transcribe::Transcriber::file_features`]).
//! One step at global step t, for a batch cut by feature length ([`epoch_batches`]):
//! ```text
//! manual_seed(seed · 1000003 + t)                        dropout masks depend on (seed, t) only
//! x = features zero-padded (N, T, M); SpecAugment with SplitMix64(seed · 1000003 + t), row by row:
//!     freq_masks × { w = next % (freq_width + 1); f0 = next % (M − w + 1); x[n, :, f0..f0+w] = 0 }
//!     time_masks × { w = next % (min(time_width, T_n) + 1); t0 = next % (T_n − w + 1); x[n, t0..t0+w, :] = 0 }
//! loss = CtcModel::loss(model(x, T_n), targets)          (mean over the batch of loss_n / S_n)
//! zero_grad; loss.backward(); clip_grad_norm; lr_t = lr · schedule(t, T); step
//! ```
//! Layer groups, bottom to top (G = K + 2 for K encoder layers):
//! `subsampling | encoder.l0 … encoder.l{K-1} | output`. Group g learns at
//! `lr / discriminative_factor^(G-1-g)`; with `gradual_unfreezing`, epoch e (from 0) trains
//! groups g ≥ G-1-e. `from_scratch` re-initialises every parameter (PyTorch's initialisation,
//! under `manual_seed(seed)`) before the first step. After each epoch: the validation CTC loss
//! and greedy WER/CER ([`crate::train::speech_metrics`]).

use crate::error::{Error, Result};
use crate::models::ctc::features::pad_features;
use crate::models::ctc::transcribe::{log_prob_rows, DecodeOptions, Transcriber};
use crate::models::ctc::CtcModel;
use crate::nn::module::{Module, ModuleExt};
use crate::train::common::{check_positive, check_run_length, step_seed};
use crate::train::data::{epoch_batches, total_steps, Batching, SplitMix64};
use crate::train::groups::{encoder_layer, Groups, LayerGroups};
use crate::train::optim::{clip_grad_norm, OptimizerConfig};
use crate::train::resume::RunFiles;
use crate::train::run_dir::{check_no_earlier_run, check_out_is_not_input};
use crate::train::schedule::Schedule;
use crate::train::speech_metrics::error_rates;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn d_epochs() -> u64 {
    1
}
fn d_batch() -> usize {
    16
}
fn d_opt() -> OptimizerConfig {
    OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}
fn d_max_seconds() -> f64 {
    120.0
}

/// SpecAugment's masks (Park et al. 2019), without time warping.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpecAugment {
    /// Frequency masks per utterance.
    pub freq_masks: u64,
    /// Widest frequency mask, in mel bands.
    pub freq_width: u64,
    /// Time masks per utterance.
    pub time_masks: u64,
    /// Widest time mask, in frames.
    pub time_width: u64,
}

/// Everything `rnnkit finetune-ctc` does, as a JSON file with these field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CtcFinetuneConfig {
    /// The ctc model directory to start from (its weights, or only its config with `from_scratch`).
    pub model: PathBuf,
    /// Transcribed audio: JSONL with "wav" and "text".
    pub train: PathBuf,
    /// Held-out audio; loss, WER and CER are reported after every epoch.
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Output: the trained model directory, and `metrics.jsonl`.
    pub out: PathBuf,
    /// Passes over the training utterances (default 1).
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    /// Stop after this many steps in total (default: none).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Utterances per step (default 16).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Base learning rate (default 1e-3).
    #[serde(default = "crate::train::common::d_lr")]
    pub lr: f64,
    /// The optimizer (default `torch.optim.Adam`'s defaults).
    #[serde(default = "d_opt")]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over the run's steps (default `constant`).
    #[serde(default)]
    pub schedule: Schedule,
    /// Clip the gradients' total 2-norm to this (default: none).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Parameters to keep fixed: globs over state_dict keys (`subsampling.*`, `encoder.*_l0*`).
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Dropout before the output layer (default: the model's).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// SpecAugment masks on the training features (default: none).
    #[serde(default)]
    pub spec_augment: Option<SpecAugment>,
    /// Re-initialise every parameter before training (default false).
    #[serde(default)]
    pub from_scratch: bool,
    /// Seeds the data order, dropout masks, SpecAugment and `from_scratch` (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Shuffle every epoch (default true).
    #[serde(default = "crate::train::common::d_true")]
    pub shuffle: bool,
    /// Batch utterances of similar length together (default true).
    #[serde(default = "crate::train::common::d_true")]
    pub bucket: bool,
    /// Longer audio files are refused (default 120 s).
    #[serde(default = "d_max_seconds")]
    pub max_seconds: f64,
    /// `auto` (the default), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "crate::train::common::d_device")]
    pub device: String,
    /// Print a line on stderr every this many steps (default 0: none).
    #[serde(default)]
    pub log_every: u64,
    /// Write `model.pth` next to `model.safetensors` (default true).
    #[serde(default = "crate::train::common::d_true")]
    pub save_pth: bool,
    /// ULMFiT's gradual unfreezing: epoch 1 trains `output` only, each later epoch one more
    /// layer group downwards (default false).
    #[serde(default)]
    pub gradual_unfreezing: bool,
    /// Discriminative learning rates: group g learns at lr / factor^(G-1-g) (default: none).
    #[serde(default)]
    pub discriminative_factor: Option<f64>,
    /// Also write a checkpoint every this many steps (default: none; always at each epoch's end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Continue from `out/checkpoint.safetensors` (default false).
    #[serde(default)]
    pub resume: bool,
}

impl CtcFinetuneConfig {
    fn fingerprint(&self) -> serde_json::Value {
        serde_json::to_value(CtcFinetuneConfig {
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
pub struct CtcReport {
    /// Optimizer steps taken, those before a resume included.
    pub steps: u64,
    /// Loss of the last step.
    pub final_train_loss: Option<f64>,
    /// (epoch, validation loss, WER), before training (epoch 0) and after each epoch (CER is
    /// in `metrics.jsonl`).
    pub valid: Vec<(u64, f64, f64)>,
    /// Parameters trained.
    pub trained: Vec<String>,
    /// Parameters frozen.
    pub frozen: Vec<String>,
    /// The output directory.
    pub out: PathBuf,
}

/// One utterance: features `(T, n_mels)`, target classes and the text.
pub struct Utterance {
    /// Log-mel features.
    pub features: Tensor,
    /// Class ids (1..) of the text.
    pub target: Vec<i64>,
    /// The transcript.
    pub text: String,
    /// The line's `"numbers"` flag (the digits-and-numbers subset); false when absent.
    pub numbers: bool,
}

/// Reads a JSONL file of `{"wav", "text"}` and computes the features; every problem names
/// the file and the line.
pub fn read_utterances(tr: &Transcriber, path: &Path, max_seconds: f64) -> Result<Vec<Utterance>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let alphabet = &tr.model.config.alphabet;
    let mut out = Vec::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| Error::format(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value = crate::json::from_str(line).map_err(|e| at(e.to_string()))?;
        let wav = v
            .get("wav")
            .and_then(|w| w.as_str())
            .ok_or_else(|| at("no \"wav\" (a path) ".into()))?;
        let t = v
            .get("text")
            .and_then(|w| w.as_str())
            .ok_or_else(|| at("no \"text\" (a string)".into()))?;
        if t.is_empty() {
            return Err(at("\"text\" is empty".into()));
        }
        let mut target = Vec::with_capacity(t.len());
        for ch in t.chars() {
            let s = ch.to_string();
            let k = alphabet
                .iter()
                .position(|a| *a == s)
                .ok_or_else(|| at(format!("{ch:?} in {t:?} is not in the model's alphabet")))?;
            target.push(k as i64 + 1);
        }
        let features = tr
            .file_features(&base.join(wav), max_seconds)
            .map_err(|e| at(e.to_string()))?;
        out.push(Utterance {
            features,
            target,
            text: t.to_string(),
            numbers: v.get("numbers").and_then(|b| b.as_bool()).unwrap_or(false),
        });
    }
    if out.is_empty() {
        return Err(Error::format(path, "no utterances"));
    }
    Ok(out)
}

/// The utterances `idx` as a zero-padded batch `(N, T, M)` with their lengths.
pub fn feature_batch(utts: &[Utterance], idx: &[usize]) -> (Tensor, Vec<i64>) {
    pad_features(&idx.iter().map(|&i| &utts[i].features).collect::<Vec<_>>())
}

/// SpecAugment's masks on `x (N, T, M)` in place (see the module doc).
pub fn spec_augment(x: &Tensor, lengths: &[i64], s: &SpecAugment, rng: &mut SplitMix64) {
    let m = x.size()[2] as u64;
    for (n, &len) in lengths.iter().enumerate() {
        let row = x.get(n as i64);
        for _ in 0..s.freq_masks {
            let w = rng.next_u64() % (s.freq_width.min(m) + 1);
            let f0 = rng.next_u64() % (m - w + 1);
            let _ = row.narrow(1, f0 as i64, w as i64).fill_(0.0);
        }
        let len = len as u64;
        for _ in 0..s.time_masks {
            let w = rng.next_u64() % (s.time_width.min(len) + 1);
            let t0 = rng.next_u64() % (len - w + 1);
            let _ = row.narrow(0, t0 as i64, w as i64).fill_(0.0);
        }
    }
}

/// Validation CTC loss (mean over batches weighted by their size) and greedy WER/CER.
pub fn evaluate(tr: &mut Transcriber, utts: &[Utterance], batch: usize) -> Result<(f64, f64, f64)> {
    let (loss, hyps) = loss_and_transcripts(tr, utts, batch, &DecodeOptions::default())?;
    let refs: Vec<&str> = utts.iter().map(|u| u.text.as_str()).collect();
    let hyps: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let r = error_rates(&refs, &hyps)?;
    Ok((loss, r.wer, r.cer))
}

/// The mean CTC loss over `utts` and each utterance's transcript (decoded with `opts`), in
/// eval mode, batches of similar length.
pub fn loss_and_transcripts(
    tr: &mut Transcriber,
    utts: &[Utterance],
    batch: usize,
    opts: &DecodeOptions,
) -> Result<(f64, Vec<String>)> {
    let was = tr.model.is_training();
    tr.model.set_training(false);
    let _g = tch::no_grad_guard();
    let device = tr.model.output.weight.device();
    let lengths: Vec<usize> = utts.iter().map(|u| u.features.size()[0] as usize).collect();
    let (mut total, mut hyps) = (0.0, vec![String::new(); utts.len()]);
    for idx in epoch_batches(&lengths, Batching::for_eval(batch), 0) {
        let (x, lens) = feature_batch(utts, &idx);
        let (logits, out_lens) = tr.model.forward(&x.to_device(device), &lens)?;
        let targets: Vec<Vec<i64>> = idx.iter().map(|&i| utts[i].target.clone()).collect();
        total += CtcModel::loss(&logits, &out_lens, &targets)?.double_value(&[]) * idx.len() as f64;
        for (&i, lp) in idx.iter().zip(log_prob_rows(&logits, &out_lens)?) {
            hyps[i] = tr.decode(&lp, opts).text;
        }
    }
    tr.model.set_training(was);
    Ok((total / utts.len() as f64, hyps))
}

fn layer_groups(model: &CtcModel) -> Groups {
    let cfg = &model.config;
    let mut groups: Groups = vec![("subsampling".into(), vec![])];
    groups.extend((0..cfg.encoder.rnn.num_layers).map(|k| (format!("encoder.l{k}"), vec![])));
    groups.push(("output".into(), vec![]));
    let top = groups.len() - 1;
    let (enc, out) = (cfg.prefix("encoder"), cfg.prefix("output"));
    for (name, t) in model.named_parameters() {
        let g = if name.starts_with(&out) {
            top
        } else if let Some(rest) = name.strip_prefix(&enc) {
            1 + encoder_layer(rest)
        } else {
            0
        };
        groups[g].1.push((name, t));
    }
    groups
}

fn check(cfg: &CtcFinetuneConfig) -> Result<Device> {
    let device = crate::device::parse_device(&cfg.device)?;
    check_run_length(cfg.batch_size, cfg.epochs, cfg.lr)?;
    cfg.schedule.validate()?;
    check_positive("clip_grad_norm", cfg.clip_grad_norm)?;
    check_positive("discriminative_factor", cfg.discriminative_factor)?;
    check_positive("max_seconds", Some(cfg.max_seconds))?;
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

/// Runs the training as configured; every input is checked before the first step.
pub fn run(cfg: &CtcFinetuneConfig) -> Result<CtcReport> {
    let device = check(cfg)?;
    let mut model = if cfg.from_scratch {
        let config = crate::models::ctc::CtcConfig::read(&cfg.model.join("config.json"))?;
        tch::manual_seed(cfg.seed as i64);
        CtcModel::new(config, Kind::Float, device)?
    } else {
        CtcModel::load_dir(&cfg.model, device)?
    };
    if let Some(p) = cfg.dropout {
        model.config.dropout = p;
        model.dropout = crate::nn::dropout::Dropout::new(p)?;
    }
    let mut tr = Transcriber::new(model);
    let train = read_utterances(&tr, &cfg.train, cfg.max_seconds)?;
    let valid = cfg
        .valid
        .as_deref()
        .map(|p| read_utterances(&tr, p, cfg.max_seconds))
        .transpose()?;

    let groups = LayerGroups::new(
        layer_groups(&tr.model),
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
    let lengths: Vec<usize> = train
        .iter()
        .map(|u| u.features.size()[0] as usize)
        .collect();
    let total = total_steps(&lengths, batching, cfg.epochs, cfg.max_steps);

    let mut files = RunFiles::open(
        &cfg.out,
        cfg.resume,
        cfg.fingerprint(),
        &mut tr.model,
        &mut opt,
    )?;
    let validate = |tr: &mut Transcriber, epoch: u64, files: &mut RunFiles| -> Result<()> {
        if let Some(v) = &valid {
            let (loss, wer, cer) = evaluate(tr, v, cfg.batch_size)?;
            eprintln!("epoch {epoch}: valid loss {loss:.4}, WER {wer:.4}, CER {cer:.4}");
            files.log(&serde_json::json!({"epoch": epoch, "valid_loss": loss, "valid_wer": wer, "valid_cer": cer}))?;
            files.progress.valid_curve.push((epoch, loss, wer));
        }
        Ok(())
    };
    if files.progress.global_step == 0 && files.progress.log_lines == 0 {
        validate(&mut tr, 0, &mut files)?;
        files.save(&tr.model, &opt)?;
    }
    while files.progress.epoch < cfg.epochs && files.progress.global_step < total {
        let epoch = files.progress.epoch;
        groups.set_trainable(epoch);
        tr.model.set_training(true);
        let batches = epoch_batches(&lengths, batching, epoch);
        for idx in batches.iter().skip(files.progress.step_in_epoch as usize) {
            let step = files.progress.global_step;
            if step >= total {
                break;
            }
            tch::manual_seed(step_seed(cfg.seed, step));
            let (x, lens) = feature_batch(&train, idx);
            if let Some(s) = &cfg.spec_augment {
                spec_augment(
                    &x,
                    &lens,
                    s,
                    &mut SplitMix64(step_seed(cfg.seed, step) as u64),
                );
            }
            let (logits, out_lens) = tr.model.forward(&x.to_device(device), &lens)?;
            let targets: Vec<Vec<i64>> = idx.iter().map(|&i| train[i].target.clone()).collect();
            let loss = CtcModel::loss(&logits, &out_lens, &targets)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::invalid(format!(
                    "loss became {value} at step {step} (epoch {}); stopped. The last good checkpoint is {}",
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
                &tr.model,
                &opt,
            )?;
        }
        if files.progress.step_in_epoch < batches.len() as u64 {
            files.save(&tr.model, &opt)?;
            break;
        }
        validate(&mut tr, epoch + 1, &mut files)?;
        files.progress.epoch += 1;
        files.progress.step_in_epoch = 0;
        files.save(&tr.model, &opt)?;
    }
    tr.model.set_training(false);
    tr.model.save_dir(&cfg.out, cfg.save_pth)?;
    let p = &files.progress;
    Ok(CtcReport {
        steps: p.global_step,
        final_train_loss: p.train_loss_curve.last().map(|&(_, l)| l),
        valid: p.valid_curve.clone(),
        trained: groups.trained.clone(),
        frozen: groups.frozen.clone(),
        out: cfg.out.clone(),
    })
}
