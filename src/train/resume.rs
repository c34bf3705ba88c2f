//! A fine-tuning run's files in `out`, and resuming it: `checkpoint.safetensors` holds the
//! model (`model.*`), the optimizer state (`optim.*`) and the trainer's progress (metadata key
//! `trainer`, JSON), and `metrics.jsonl` holds one line per step and per epoch.
//!
//! A run writes its checkpoint at step 0, at every epoch's end (and every `checkpoint_every`
//! steps), always atomically and only while every parameter is finite. Resuming loads the
//! checkpoint, refuses it if it was made with a different configuration (the trainer's
//! fingerprint: every setting but `resume`, `device` and `log_every`), and cuts the log back to
//! the lines the checkpoint had seen; since dropout masks are seeded per step
//! ([`crate::train::common::step_seed`]) the resumed run continues bit-identically. The same
//! files serve the classifier ([`crate::train::finetune`]) and seq2seq
//! ([`crate::train::seq2seq_finetune`]) trainers.

use crate::checkpoint::atomic::{write_atomic, write_err};
use crate::error::{Error, Result};
use crate::nn::module::ModuleExt;
use crate::train::common::log_line;
use crate::train::optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Trainer state stored in checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Progress {
    pub epoch: u64,
    /// Batches of `epoch` already trained.
    pub step_in_epoch: u64,
    pub global_step: u64,
    pub best: Option<f64>,
    pub bad_epochs: u64,
    pub log_lines: u64,
    pub train_loss_curve: Vec<(u64, f64)>,
    pub valid_curve: Vec<(u64, f64, f64)>,
    /// The configuration that produced the checkpoint (resume refuses a different one).
    pub config: serde_json::Value,
}

/// The open run: its progress, its log (open for appending) and the paths of both files.
pub(crate) struct RunFiles {
    pub progress: Progress,
    pub ckpt_path: PathBuf,
    pub log_path: PathBuf,
    log: std::fs::File,
}

impl RunFiles {
    /// Creates `out` and starts the run there (empty log, checkpoint of step 0), or, with
    /// `resume` and a checkpoint present, loads it into `model` and `opt` and continues.
    /// `fingerprint` is the run's configuration as a resumed run must find it.
    pub fn open<M: ModuleExt>(
        out: &Path,
        resume: bool,
        fingerprint: serde_json::Value,
        model: &mut M,
        opt: &mut Optimizer,
    ) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let ckpt_path = out.join("checkpoint.safetensors");
        let log_path = out.join("metrics.jsonl");
        let config_json = fingerprint;
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
        if resume && ckpt_path.exists() {
            progress = load_checkpoint(&ckpt_path, model, opt)?;
            check_same_config(&ckpt_path, &progress.config, &config_json)?;
            truncate_lines(&log_path, progress.log_lines)?;
        } else {
            std::fs::write(&log_path, b"").map_err(|e| Error::io(&log_path, e))?;
            // Step 0: there is always a good checkpoint to fall back on.
            save_checkpoint(&ckpt_path, model, opt, &progress)?;
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        Ok(RunFiles {
            progress,
            ckpt_path,
            log_path,
            log,
        })
    }

    /// Appends a line to `metrics.jsonl` and counts it in the progress.
    pub fn log(&mut self, line: &serde_json::Value) -> Result<()> {
        log_line(&mut self.log, &self.log_path, line)?;
        self.progress.log_lines += 1;
        Ok(())
    }

    /// Records a finished optimizer step of `epoch` (from 0) with its loss: the progress, a
    /// `{"step", "epoch", "loss"}` log line, a line on stderr every `log_every` steps, and a
    /// checkpoint every `checkpoint_every` steps.
    #[allow(clippy::too_many_arguments)]
    pub fn end_step<M: ModuleExt>(
        &mut self,
        epoch: u64,
        loss: f64,
        total: u64,
        log_every: u64,
        checkpoint_every: Option<u64>,
        model: &M,
        opt: &Optimizer,
    ) -> Result<()> {
        let p = &mut self.progress;
        p.global_step += 1;
        p.step_in_epoch += 1;
        p.train_loss_curve.push((p.global_step, loss));
        let step = p.global_step;
        self.log(&serde_json::json!({"step": step, "epoch": epoch + 1, "loss": loss}))?;
        if log_every > 0 && step.is_multiple_of(log_every) {
            eprintln!("epoch {} step {step}/{total} loss {loss:.4}", epoch + 1);
        }
        if checkpoint_every.is_some_and(|k| k > 0 && step.is_multiple_of(k)) {
            self.save(model, opt)?;
        }
        Ok(())
    }

    /// Writes the checkpoint of the current progress.
    pub fn save<M: ModuleExt>(&self, model: &M, opt: &Optimizer) -> Result<()> {
        save_checkpoint(&self.ckpt_path, model, opt, &self.progress)
    }
}

/// Refuses a checkpoint made with another configuration, naming each differing key.
fn check_same_config(
    ckpt_path: &Path,
    was: &serde_json::Value,
    now: &serde_json::Value,
) -> Result<()> {
    if was == now {
        return Ok(());
    }
    let mut keys: Vec<&String> = was
        .as_object()
        .into_iter()
        .chain(now.as_object())
        .flat_map(|o| o.keys())
        .filter(|k| was.get(k.as_str()) != now.get(k.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    Err(Error::config(format!(
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
    )))
}

/// Writes the checkpoint atomically — unless a parameter is not finite, in which case the
/// checkpoint on disk stays and training stops with an error naming the parameter.
fn save_checkpoint<M: ModuleExt>(
    path: &Path,
    model: &M,
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
        tensors.push((
            format!("model.{k}"),
            crate::checkpoint::raw::RawTensor::from_tch(t)?,
        ));
    }
    for (k, t) in opt.state_dict().iter() {
        tensors.push((
            format!("optim.{k}"),
            crate::checkpoint::raw::RawTensor::from_tch(t)?,
        ));
    }
    let meta = BTreeMap::from([(
        "trainer".to_string(),
        serde_json::to_string(progress).expect("progress serialises"),
    )]);
    crate::checkpoint::safetensors::write(path, &tensors, &meta)
}

fn load_checkpoint<M: ModuleExt>(
    path: &Path,
    model: &mut M,
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

/// Keeps the first `keep` lines of the log (a missing log counts as empty).
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
