//! Inference for services: [`Predictor`] loads a classifier directory once (eval mode, no
//! autograd) and maps texts → token ids → logits → probabilities and labels.
//!
//! It is `Send + Sync` and cheap to clone: callers tokenize on their own threads and hand
//! sequences to worker threads through a bounded MPMC queue (no global lock on the hot path).
//! Each worker owns a handle to the shared weights and micro-batches: it takes the first
//! waiting sequence, then whatever else arrives within `max_wait`, up to `max_batch`, and runs
//! one forward pass over the padded batch with lengths. Padding never reaches the model's
//! computation for a sequence (packed kernels), so a text's probabilities do not depend on what
//! it was batched with beyond floating-point summation order (tested within 1e-6).

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig, SequenceClassifier};
use crate::module::Module;
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct PredictorOptions {
    /// Largest batch a worker forms.
    pub max_batch: usize,
    /// How long a worker waits for more sequences after the first one.
    pub max_wait: Duration,
    /// Worker threads (each runs libtorch with its intra-op threads).
    pub workers: usize,
    /// Sequences waiting at most; beyond that, submissions fail with [`PredictError::QueueFull`].
    pub queue_capacity: usize,
}

impl Default for PredictorOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            workers: 1,
            queue_capacity: 4096,
        }
    }
}

/// One text's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub label_id: i64,
    /// Softmax probabilities, indexed by class id.
    pub probabilities: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("the prediction queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("the predictor has shut down")]
    Closed,
    #[error(transparent)]
    Failed(#[from] Error),
}

struct Job {
    ids: Vec<i64>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Vec<f32>, String>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PredictorStats {
    pub batches: AtomicU64,
    pub sequences: AtomicU64,
    /// Histogram of batch sizes: counts for sizes ≤ 1, 2, 4, 8, 16, 32, 64, 128, +Inf.
    pub batch_size_buckets: [AtomicU64; 9],
}

pub const BATCH_SIZE_BOUNDS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

#[derive(Clone)]
pub struct Predictor {
    tx: crossbeam_channel::Sender<Job>,
    tokenizer: Arc<Tokenizer>,
    config: Arc<ModelConfig>,
    stats: Arc<PredictorStats>,
    capacity: usize,
}

impl Predictor {
    /// Loads `dir` (config.json, weights, tokenizer.json) and starts the workers.
    pub fn load(dir: &Path, device: Device, opts: PredictorOptions) -> Result<Self> {
        let model = match Model::load_dir(dir, device)? {
            Model::Classifier(c) => c,
            Model::LanguageModel(_) => {
                return Err(Error::invalid(format!(
                    "{}: predict needs a classifier, this is a language model",
                    dir.display()
                )))
            }
        };
        let config = model.config.clone();
        let tok_path = dir.join(&config.tokenizer);
        let tokenizer = Tokenizer::from_file(
            &tok_path,
            config.max_length,
            config.padding_idx.unwrap_or(0),
        )?;
        Self::from_parts(model, tokenizer, device, opts)
    }

    pub fn from_parts(
        mut model: SequenceClassifier,
        tokenizer: Tokenizer,
        device: Device,
        opts: PredictorOptions,
    ) -> Result<Self> {
        model.set_training(false);
        let config = Arc::new(model.config.clone());
        let (tx, rx) = crossbeam_channel::bounded::<Job>(opts.queue_capacity.max(1));
        let stats = Arc::new(PredictorStats::default());
        let model = Arc::new(SharedModel(model));
        for i in 0..opts.workers.max(1) {
            let (rx, model, stats, config) =
                (rx.clone(), model.clone(), stats.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("rnnkit-predict-{i}"))
                .spawn(move || worker(&model.0, &config, rx, opts, device, &stats))
                .map_err(|e| Error::invalid(format!("cannot start a predictor thread: {e}")))?;
        }
        Ok(Self {
            tx,
            tokenizer: Arc::new(tokenizer),
            config,
            stats,
            capacity: opts.queue_capacity,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn stats(&self) -> &PredictorStats {
        &self.stats
    }
    /// Sequences waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// Tokenizes and enqueues every text; fails at once if the queue cannot take them all.
    pub fn submit(
        &self,
        texts: &[&str],
    ) -> std::result::Result<
        Vec<tokio::sync::oneshot::Receiver<std::result::Result<Vec<f32>, String>>>,
        PredictError,
    > {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        if self.tx.len() + ids.len() > self.capacity {
            return Err(PredictError::QueueFull(self.tx.len()));
        }
        let mut replies = Vec::with_capacity(ids.len());
        for ids in ids {
            let (reply, rx) = tokio::sync::oneshot::channel();
            self.tx.try_send(Job { ids, reply }).map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => PredictError::QueueFull(self.tx.len()),
                crossbeam_channel::TrySendError::Disconnected(_) => PredictError::Closed,
            })?;
            replies.push(rx);
        }
        Ok(replies)
    }

    /// Turns probabilities into a [`Prediction`].
    pub fn prediction(&self, probabilities: Vec<f32>) -> Prediction {
        let (best, _) =
            probabilities
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
                );
        Prediction {
            label: self.config.label(best as i64),
            label_id: best as i64,
            probabilities,
        }
    }

    /// Blocking: predictions for `texts`, in order.
    pub fn predict(&self, texts: &[&str]) -> std::result::Result<Vec<Prediction>, PredictError> {
        let replies = self.submit(texts)?;
        replies
            .into_iter()
            .map(|rx| match rx.blocking_recv() {
                Ok(Ok(p)) => Ok(self.prediction(p)),
                Ok(Err(e)) => Err(PredictError::Failed(Error::invalid(e))),
                Err(_) => Err(PredictError::Closed),
            })
            .collect()
    }

    /// Async: the same, for use inside a tokio runtime.
    pub async fn predict_async(
        &self,
        texts: &[&str],
    ) -> std::result::Result<Vec<Prediction>, PredictError> {
        let replies = self.submit(texts)?;
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(match rx.await {
                Ok(Ok(p)) => self.prediction(p),
                Ok(Err(e)) => return Err(PredictError::Failed(Error::invalid(e))),
                Err(_) => return Err(PredictError::Closed),
            });
        }
        Ok(out)
    }
}

/// The model shared read-only by the worker threads.
struct SharedModel(SequenceClassifier);
// SAFETY: workers only run forward passes under no_grad, which read the parameter tensors and
// never mutate them; libtorch supports concurrent reads of a tensor from several threads. Nothing
// can reach the model mutably once it is inside the Arc.
unsafe impl Sync for SharedModel {}
unsafe impl Send for SharedModel {}

fn worker(
    model: &SequenceClassifier,
    config: &ModelConfig,
    rx: crossbeam_channel::Receiver<Job>,
    opts: PredictorOptions,
    device: Device,
    stats: &PredictorStats,
) {
    let _guard = tch::no_grad_guard();
    let pad = config.padding_idx.unwrap_or(0);
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + opts.max_wait;
        while jobs.len() < opts.max_batch {
            match rx.recv_deadline(deadline) {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let n = jobs.len();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.sequences.fetch_add(n as u64, Ordering::Relaxed);
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len());
        stats.batch_size_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let result = run_batch(model, &jobs, pad, device);
        match result {
            Ok(rows) => {
                for (job, row) in jobs.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(row));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

fn run_batch(
    model: &SequenceClassifier,
    jobs: &[Job],
    pad: i64,
    device: Device,
) -> Result<Vec<Vec<f32>>> {
    let max_len = jobs.iter().map(|j| j.ids.len()).max().unwrap_or(1);
    let mut flat = Vec::with_capacity(jobs.len() * max_len);
    let mut lengths = Vec::with_capacity(jobs.len());
    for j in jobs {
        flat.extend_from_slice(&j.ids);
        flat.extend(std::iter::repeat_n(pad, max_len - j.ids.len()));
        lengths.push(j.ids.len() as i64);
    }
    let ids = Tensor::from_slice(&flat)
        .view([jobs.len() as i64, max_len as i64])
        .to_device(device);
    let probs = model
        .forward(&ids, &lengths)?
        .softmax(-1, Kind::Float)
        .to_device(Device::Cpu);
    let c = probs.size()[1] as usize;
    let mut all = vec![0f32; jobs.len() * c];
    probs.f_copy_data(&mut all, jobs.len() * c)?;
    Ok(all.chunks(c).map(<[f32]>::to_vec).collect())
}

/// The JSON object `rnnkit predict` and `rnnkit serve` return for one text:
/// `{"label": "positive", "label_id": 1, "probabilities": {"negative": 0.1, "positive": 0.9}}`.
pub fn prediction_json(config: &ModelConfig, p: &Prediction) -> serde_json::Value {
    let probs: serde_json::Map<String, serde_json::Value> = p
        .probabilities
        .iter()
        .enumerate()
        .map(|(i, &x)| (config.label(i as i64), serde_json::json!(x)))
        .collect();
    serde_json::json!({"label": p.label, "label_id": p.label_id, "probabilities": probs})
}

/// `rnnkit predict`: reads plain lines or JSONL objects with "text" from `input`, writes one
/// JSON object per line to `out`, in order.
pub fn predict_stream(
    predictor: &Predictor,
    input: impl std::io::BufRead,
    out: &mut dyn std::io::Write,
    batch_size: usize,
) -> Result<usize> {
    let mut texts = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line =
            line.map_err(|e| Error::invalid(format!("reading input line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let text = if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| Error::invalid(format!("input line {}: invalid JSON: {e}", i + 1)))?;
            v.get("text")
                .and_then(|t| t.as_str())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "input line {}: JSON object without a \"text\" string",
                        i + 1
                    ))
                })?
                .to_string()
        } else {
            line
        };
        texts.push(text);
    }
    for chunk in texts.chunks(batch_size.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let preds = predictor.predict(&refs).map_err(|e| match e {
            PredictError::Failed(e) => e,
            other => Error::invalid(other.to_string()),
        })?;
        for p in &preds {
            writeln!(out, "{}", prediction_json(predictor.config(), p))
                .map_err(|e| Error::invalid(format!("writing output: {e}")))?;
        }
    }
    Ok(texts.len())
}
