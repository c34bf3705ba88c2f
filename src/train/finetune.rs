//! Fine-tuning a classifier with cross-entropy: the familiar PyTorch loop (load the state_dict,
//! freeze the pretrained layers, attach a new head, Adam lr=1e-3, CrossEntropyLoss, save the
//! state_dict) plus ULMFiT's gradual unfreezing, discriminative learning rates and slanted
//! triangular schedule, gradient clipping, early stopping, and checkpoints that resume
//! bit-identically ([`crate::train::resume`]).
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
//!
//! At each epoch's end: the mean training loss of its steps, validation ([`evaluate`]), the
//! best model so far in `out/best/`, a checkpoint, and early stopping. At the run's end: the
//! model in `out/`, and the chart of `metrics.jsonl` in `metrics.svg` ([`crate::train::chart`]).

use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use crate::models::{Family, Model, ModelConfig, Pooling, SequenceClassifier};
use crate::nn::module::{Module, ModuleExt};
use crate::train::chart::write_chart;
use crate::train::common::{discriminative_lrs, step_seed, Freeze, Plan};
use crate::train::config::Metric;
use crate::train::data::{epoch_batches, make_batch, read_jsonl, Batching, Dataset};
use crate::train::eval::evaluate;
use crate::train::metrics::Metrics;
use crate::train::optim::{clip_grad_norm, clip_grad_value, Optimizer, ParamGroup};
use crate::train::resume::RunFiles;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Reduction, Tensor};

/// The loop's configuration lives in [`crate::train::config`].
pub use crate::train::config::FinetuneConfig;

/// The result of a fine-tuning run.
#[derive(Debug, Serialize)]
pub struct FinetuneReport {
    /// Optimizer steps taken, those before a resume included.
    pub steps: u64,
    /// Epochs run to their end.
    pub epochs_completed: u64,
    /// Training loss of the last step (`None`: no step was taken).
    pub final_train_loss: Option<f64>,
    /// Best validation score under [`FinetuneConfig::metric`], the model in `out/best/`
    /// (`None` without validation data).
    pub best_valid: Option<f64>,
    /// Metrics of the last validation this process ran (`None` when it ran none).
    pub valid: Option<Metrics>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The output directory ([`FinetuneConfig::out`]).
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
            Model::LanguageModel(_) | Model::Seq2Seq(_) => unreachable!("family checked"),
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
            seq2seq: None,
            ..pcfg
        };
        // A language model's decoder and a seq2seq model's target side are not kept.
        for part in ["decoder", "tgt_embedding", "bridge", "output"] {
            ccfg.prefixes.remove(part);
        }
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

/// Runs fine-tuning as configured. Every input is validated before the first step.
pub fn run(cfg: &FinetuneConfig) -> Result<FinetuneReport> {
    let (device, metric) = cfg.check()?;
    let mut model = prepare_model(cfg, device)?;
    let data = TrainData::read(cfg, &model.config, device)?;
    let params = Params::new(cfg, &model)?;
    let mut opt = params.optimizer(cfg)?;
    let plan = Plan::new(&data.train, batching(cfg), cfg.epochs, cfg.max_steps);
    let fingerprint = serde_json::to_value(cfg.fingerprint()).expect("config serialises");
    let files = RunFiles::open(&cfg.out, cfg.resume, fingerprint, &mut model, &mut opt)?;
    let mut trainer = Trainer {
        cfg,
        device,
        metric,
        model,
        opt,
        data,
        params,
        plan,
        files,
        last_valid: None,
    };
    let mut stopped_early = false;
    while trainer.files.progress.epoch < cfg.epochs
        && trainer.files.progress.global_step < trainer.plan.total
    {
        if !trainer.train_epoch()? {
            break; // max_steps reached mid-epoch
        }
        if trainer.end_epoch()? {
            stopped_early = true;
            break;
        }
    }
    trainer.finish(stopped_early)
}

/// How the training set is cut into batches each epoch.
fn batching(cfg: &FinetuneConfig) -> Batching {
    Batching {
        batch_size: cfg.batch_size,
        shuffle: cfg.shuffle,
        bucket: cfg.bucket,
        seed: cfg.seed,
    }
}

/// The data of a run, read and checked against the model before training.
struct TrainData {
    train: Dataset,
    valid: Option<Dataset>,
    /// `cfg.class_weights` as a float tensor on the device, one weight per class.
    class_weights: Option<Tensor>,
    pad: i64,
}

impl TrainData {
    /// Reads the training and validation files (labels must be the model's, token ids in its
    /// vocabulary) and checks the class weights against the class count.
    fn read(cfg: &FinetuneConfig, mcfg: &ModelConfig, device: Device) -> Result<Self> {
        let num_classes = mcfg.num_classes.unwrap_or(0);
        let tokenizer = Tokenizer::of_model(&cfg.model, mcfg, mcfg.max_length)?;
        let read = |p: &Path| -> Result<Dataset> {
            let d = read_jsonl(
                p,
                tokenizer.as_ref(),
                mcfg.labels.as_deref(),
                num_classes,
                mcfg.max_length,
            )?;
            d.check_vocab(mcfg.vocab_size)?;
            Ok(d)
        };
        let train = read(&cfg.train)?;
        let valid = cfg.valid.as_deref().map(read).transpose()?;
        let class_weights = match &cfg.class_weights {
            Some(w) if w.len() as i64 != num_classes => {
                return Err(Error::config(format!(
                    "{} class weights for {num_classes} classes",
                    w.len()
                )))
            }
            Some(w) => Some(Tensor::from_slice(w).to_kind(Kind::Float).to_device(device)),
            None => None,
        };
        Ok(TrainData {
            train,
            valid,
            class_weights,
            pad: mcfg.padding_idx.unwrap_or(0),
        })
    }
}

/// The layer groups of a classifier, bottom to top, with their named parameters.
type Groups = Vec<(String, Vec<(String, Tensor)>)>;

/// The layer groups of a classifier, bottom to top (see the module doc).
fn layer_groups(model: &SequenceClassifier) -> Groups {
    let cfg = &model.config;
    let layers = cfg.encoder.rnn.num_layers;
    let mut groups: Groups = vec![("embedding".into(), vec![])];
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

/// The trained parameters: layer groups, the frozen ones, and each group's base rate.
struct Params {
    groups: Groups,
    frozen: Freeze,
    /// `lr / factor^(G-1-g)` for group g (discriminative learning rates).
    base_lrs: Vec<f64>,
    /// Every parameter, for gradient clipping.
    all: Vec<Tensor>,
    gradual_unfreezing: bool,
}

impl Params {
    /// Groups the model's parameters and refuses freeze patterns that match nothing or leave
    /// the first epoch nothing to train.
    fn new(cfg: &FinetuneConfig, model: &SequenceClassifier) -> Result<Self> {
        let names: Vec<String> = model
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let frozen = Freeze::new(&cfg.freeze, &names)?;
        let groups = layer_groups(model);
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
        if first.iter().all(|n| frozen.covers(n)) {
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
        let base_lrs = discriminative_lrs(cfg.lr, cfg.discriminative_factor, g_count);
        let all = groups
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|(_, t)| t.shallow_clone()))
            .collect();
        Ok(Params {
            groups,
            frozen,
            base_lrs,
            all,
            gradual_unfreezing: cfg.gradual_unfreezing,
        })
    }

    /// The configured optimizer with one parameter group per layer group.
    fn optimizer(&self, cfg: &FinetuneConfig) -> Result<Optimizer> {
        Optimizer::new(
            cfg.optimizer,
            self.groups
                .iter()
                .zip(&self.base_lrs)
                .map(|((name, params), &lr)| ParamGroup {
                    name: name.clone(),
                    params: params
                        .iter()
                        .map(|(n, t)| (n.clone(), t.shallow_clone()))
                        .collect(),
                    lr,
                })
                .collect(),
        )
    }

    /// Sets `requires_grad` for `epoch`: unfrozen so far (gradual unfreezing) and not frozen.
    fn set_trainable(&self, epoch: u64) {
        let g_count = self.groups.len();
        for (g, (_, params)) in self.groups.iter().enumerate() {
            let open = !self.gradual_unfreezing || (g_count - 1 - g) as u64 <= epoch;
            for (n, t) in params {
                let _ = t
                    .shallow_clone()
                    .set_requires_grad(open && !self.frozen.covers(n));
            }
        }
    }
}

/// A run in progress: everything the steps and epoch ends read and update.
struct Trainer<'a> {
    cfg: &'a FinetuneConfig,
    device: Device,
    metric: Metric,
    model: SequenceClassifier,
    opt: Optimizer,
    data: TrainData,
    params: Params,
    plan: Plan,
    files: RunFiles,
    /// The metrics of the last validation.
    last_valid: Option<Metrics>,
}

impl Trainer<'_> {
    /// Trains the rest of the current epoch; false when the run's steps ran out before its end.
    fn train_epoch(&mut self) -> Result<bool> {
        let epoch = self.files.progress.epoch;
        self.params.set_trainable(epoch);
        self.model.set_training(true);
        let batches = epoch_batches(&self.plan.lengths, self.plan.batching, epoch);
        let bar = epoch_bar(
            batches.len(),
            self.files.progress.step_in_epoch,
            epoch,
            self.cfg.epochs,
        );
        for indices in batches
            .iter()
            .skip(self.files.progress.step_in_epoch as usize)
        {
            if self.files.progress.global_step >= self.plan.total {
                break;
            }
            let loss = self.step(indices, epoch)?;
            self.record_step(loss, epoch, bar.as_ref())?;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(self.files.progress.step_in_epoch >= batches.len() as u64)
    }

    /// One optimizer step on the examples `indices` (the module doc's step t); its loss.
    fn step(&mut self, indices: &[usize], epoch: u64) -> Result<f64> {
        let (cfg, t) = (self.cfg, self.files.progress.global_step);
        tch::manual_seed(step_seed(cfg.seed, t));
        let batch = make_batch(
            &self.data.train.examples,
            indices,
            self.data.pad,
            self.device,
        );
        let logits = self.model.forward(&batch.ids, &batch.lengths)?;
        let loss = logits.f_cross_entropy_loss(
            batch.probs.as_ref().unwrap_or(&batch.labels),
            self.data.class_weights.as_ref(),
            Reduction::Mean,
            -100,
            cfg.label_smoothing,
        )?;
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Err(Error::invalid(format!(
                "loss became {loss_value} at step {t} (epoch {}); stopped. The last good checkpoint is {} — try a lower lr or --clip-grad-norm",
                epoch + 1,
                self.files.ckpt_path.display()
            )));
        }
        self.opt.zero_grad();
        loss.f_backward()?;
        if let Some(v) = cfg.clip_grad_value {
            clip_grad_value(&self.params.all, v);
        }
        if let Some(n) = cfg.clip_grad_norm {
            clip_grad_norm(&self.params.all, n);
        }
        let factor = cfg.schedule.factor(t, self.plan.total);
        for (g, lr) in self.opt.groups.iter_mut().zip(&self.params.base_lrs) {
            g.lr = lr * factor;
        }
        self.opt.step()?;
        Ok(loss_value)
    }

    /// Counts a finished step, logs it (a line in `metrics.jsonl`; the bar or, every
    /// `log_every` steps, a line on stderr) and checkpoints every `checkpoint_every` steps.
    fn record_step(
        &mut self,
        loss: f64,
        epoch: u64,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let progress = &mut self.files.progress;
        progress.global_step += 1;
        progress.step_in_epoch += 1;
        progress.train_loss_curve.push((progress.global_step, loss));
        let step = progress.global_step;
        let lr = self.opt.groups.last().map(|g| g.lr);
        self.files
            .log(&serde_json::json!({"step": step, "epoch": epoch + 1, "loss": loss, "lr": lr}))?;
        if let Some(b) = bar {
            b.inc(1);
        } else if cfg.log_every > 0 && step.is_multiple_of(cfg.log_every) {
            eprintln!("epoch {} step {step} loss {loss:.4}", epoch + 1);
        }
        if cfg
            .checkpoint_every
            .is_some_and(|k| k > 0 && step.is_multiple_of(k))
        {
            self.files.save(&self.model, &self.opt)?;
        }
        Ok(())
    }

    /// The end of a complete epoch: its mean training loss, validation, the log line, `best/`
    /// when the metric improved, and a checkpoint. True when early stopping ends the run.
    fn end_epoch(&mut self) -> Result<bool> {
        let cfg = self.cfg;
        let progress = &mut self.files.progress;
        let epoch = progress.epoch;
        // From the recorded curve, so a resumed epoch averages the steps before the restart too.
        let this_epoch = &progress.train_loss_curve
            [progress.train_loss_curve.len() - progress.step_in_epoch as usize..];
        let train_loss =
            this_epoch.iter().map(|p| p.1).sum::<f64>() / this_epoch.len().max(1) as f64;
        let mut line = serde_json::json!({"epoch": epoch + 1, "step": progress.global_step, "train_loss": train_loss});
        let mut improved = false;
        if let Some(v) = &self.data.valid {
            let m = evaluate(
                &mut self.model,
                v,
                cfg.batch_size,
                self.data.pad,
                self.data.class_weights.as_ref(),
                self.device,
            )?;
            improved = self.metric.improves(self.metric.score(&m), progress.best);
            if improved {
                progress.best = Some(self.metric.score(&m));
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
            self.last_valid = Some(m);
        } else {
            eprintln!(
                "epoch {}/{}: train loss {train_loss:.4}",
                epoch + 1,
                cfg.epochs
            );
        }
        self.files.log(&line)?;
        let progress = &mut self.files.progress;
        progress.epoch += 1;
        progress.step_in_epoch = 0;
        if improved {
            save_model_dir(&cfg.out.join("best"), &self.model, &cfg.model, cfg.save_pth)?;
        }
        self.files.save(&self.model, &self.opt)?;
        let bad_epochs = self.files.progress.bad_epochs;
        if cfg.early_stopping_patience.is_some_and(|p| bad_epochs >= p) {
            eprintln!(
                "early stopping: no improvement of {} for {bad_epochs} epoch(s)",
                cfg.metric
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// The run's end: a last checkpoint, the model in `out/`, the chart, the report.
    fn finish(self, stopped_early: bool) -> Result<FinetuneReport> {
        let cfg = self.cfg;
        self.files.save(&self.model, &self.opt)?;
        save_model_dir(&cfg.out, &self.model, &cfg.model, cfg.save_pth)?;
        write_chart(
            &cfg.out.join("metrics.svg"),
            &self.files.log_path,
            &format!("fine-tuning {}", cfg.model.display()),
        )?;
        let progress = &self.files.progress;
        Ok(FinetuneReport {
            steps: progress.global_step,
            epochs_completed: progress.epoch,
            final_train_loss: progress.train_loss_curve.last().map(|p| p.1),
            best_valid: progress.best,
            valid: self.last_valid,
            stopped_early,
            out: cfg.out.clone(),
        })
    }
}

/// The progress bar of an epoch of `len` batches, `done` of them trained, when stderr is a
/// terminal.
fn epoch_bar(len: usize, done: u64, epoch: u64, epochs: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    b.set_message(format!("{}/{epochs}", epoch + 1));
    b.set_position(done);
    Some(b)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(patterns: &[&str], names: &[&str]) -> Result<Freeze> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Freeze::new(&own(patterns), &own(names))
    }

    #[test]
    fn freeze_patterns_match_like_a_shell_across_dots() {
        let names = [
            "embedding.weight",
            "encoder.weight_ih_l0",
            "encoder.bias_hh_l1_reverse",
            "head.weight",
        ];
        let f = freeze(&["encoder.*"], &names).unwrap();
        assert!(f.covers("encoder.weight_ih_l0") && !f.covers("head.weight"));
        assert!(freeze(&["*_l1*"], &names)
            .unwrap()
            .covers("encoder.bias_hh_l1_reverse"));
        assert!(freeze(&["*.weight_ih_*"], &names)
            .unwrap()
            .covers("encoder.weight_ih_l0"));
        assert!(freeze(&["head.?eight"], &names)
            .unwrap()
            .covers("head.weight"));
        assert!(freeze(&["*"], &names)
            .unwrap()
            .covers("encoder.weight_ih_l0"));
        assert!(freeze(&["encoder.**"], &names)
            .unwrap()
            .covers("encoder.bias_hh_l1_reverse"));
        assert!(!freeze(&[], &names).unwrap().covers("head.weight"));
        let e = freeze(&["encdr.*"], &names).err().unwrap().to_string();
        assert!(e.contains("\"encdr.*\" matches no parameter"), "{e}");
        let e = freeze(&["head.[w"], &names).err().unwrap().to_string();
        assert!(e.contains("freeze pattern \"head.[w\""), "{e}");
    }

    #[test]
    fn freeze_patterns_do_not_backtrack_exponentially() {
        let long = "a".repeat(5000);
        let start = std::time::Instant::now();
        let e = freeze(&["a*a*a*a*a*a*a*a*b"], &[&long])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("matches no parameter"), "{e}");
        assert!(freeze(&["a*a*a*a*a*a*a*a*a"], &[&long]).is_ok());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
