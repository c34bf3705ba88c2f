//! Inference for services: [`Predictor`] loads a classifier directory once (eval mode,
//! inference mode) and maps texts → token ids → logits → probabilities and labels.
//!
//! It is `Send + Sync` and cheap to clone: callers tokenize on their own threads and hand
//! sequences to worker threads through a bounded MPMC queue (no global lock on the hot path).
//! Each worker owns a handle to the shared weights and micro-batches: it takes the first
//! waiting sequence, then whatever else arrives within `max_wait`, up to `max_batch`, and runs
//! forward passes over the batch sorted by length, in chunks of at most `max_batch` similar
//! lengths, on the fused inference kernel ([`crate::nn::rnn::fused`]). Padding never reaches the
//! model's computation for a sequence. Batch-invariant (the default,
//! [`PredictorOptions::batch_invariant`]): a text's probabilities are bitwise those it gets
//! alone, whatever it was batched with (tests/serve.rs compares the bits over HTTP); the chunks
//! are then at most the encoder's row-independent batch, and the head and softmax run per row.
//! Either way the probabilities are within 1e-5 of PyTorch's (tests/predictor.rs).

use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use crate::models::{Model, ModelConfig, SequenceClassifier};
use crate::nn::module::Module;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// How a [`Predictor`] batches, with how many threads, and how many sequences may wait.
#[derive(Debug, Clone, Copy)]
pub struct PredictorOptions {
    /// Largest batch a worker forms, in sequences (default 32; at least 1). A request larger
    /// than this is still one batch, run in chunks of `max_batch`.
    pub max_batch: usize,
    /// How long a worker waits for more sequences after the first one (default 2 ms).
    pub max_wait: Duration,
    /// Worker threads (default 1; 0 counts as 1). Each runs libtorch with its intra-op threads.
    pub workers: usize,
    /// Sequences waiting at most (default 4096; at least 1); beyond that, submissions fail
    /// with [`Error::QueueFull`].
    pub queue_capacity: usize,
    /// Answers that do not depend on the batch (default true): a text's probabilities are
    /// bitwise those it gets when it runs alone, whatever it was micro-batched with. Batches
    /// then run in chunks of at most [`crate::nn::rnn::RnnBase::row_independent_batch`] rows,
    /// and after the encoder each row on its own ([`SequenceClassifier::classify_rows`]);
    /// softmax per row in f64. Off: one pass per chunk of `max_batch` through libtorch's
    /// head and softmax, whose sums depend on the batch's shape in the last bits.
    pub batch_invariant: bool,
    /// ctc models only (the transcription service): the encoder on rnnkit's fused kernel
    /// ([`crate::models::ctc::transcribe::Transcriber::set_fused_inference`]; default false:
    /// libtorch's kernels, transcripts with PyTorch's bits).
    pub fused_transcription: bool,
}

impl Default for PredictorOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            workers: 1,
            queue_capacity: 4096,
            batch_invariant: true,
            fused_transcription: false,
        }
    }
}

/// One text's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// The most probable class's name (its index as text when the model has no label names).
    pub label: String,
    /// The most probable class's index (the first, on a tie).
    pub label_id: i64,
    /// Softmax probabilities, indexed by class id.
    pub probabilities: Vec<f32>,
}

/// One request: its sequences stay together in one batch.
struct Job {
    ids: Vec<Vec<i64>>,
    reply: oneshot::Sender<std::result::Result<Vec<Vec<f32>>, String>>,
}

type Reply = oneshot::Receiver<std::result::Result<Vec<Vec<f32>>, String>>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PredictorStats {
    /// Batches formed by the workers (each one or more forward passes).
    pub batches: AtomicU64,
    /// Sequences (texts) taken by the workers.
    pub sequences: AtomicU64,
    /// Histogram of batch sizes: counts for sizes ≤ 1, 2, 4, 8, 16, 32, 64, 128, +Inf.
    pub batch_size_buckets: [AtomicU64; 9],
}

/// Upper bounds of [`PredictorStats::batch_size_buckets`] but the last (`+Inf`), in sequences.
pub const BATCH_SIZE_BOUNDS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// A classifier ready to answer texts: its tokenizer, the worker threads and their queue.
/// Clones share the workers, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Predictor {
    tx: crossbeam_channel::Sender<Job>,
    tokenizer: Arc<Tokenizer>,
    config: Arc<ModelConfig>,
    stats: Arc<PredictorStats>,
    /// Sequences submitted and not yet taken by a worker.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl Predictor {
    /// Loads `dir` (config.json, weights, tokenizer.json) and starts the workers.
    pub fn load(dir: &Path, device: Device, opts: PredictorOptions) -> Result<Self> {
        let model = match Model::load_dir(dir, device)? {
            Model::Classifier(c) => c,
            other => {
                return Err(Error::invalid(format!(
                    "{}: predict needs a classifier, this is family {:?}",
                    dir.display(),
                    other.config().family
                )))
            }
        };
        // The model directory's tokenizer, checked against the embedding (naming the file).
        let tokenizer = Tokenizer::of_model(dir, &model.config, model.config.max_length)?
            .ok_or_else(|| {
                Error::format(
                    dir.join(&model.config.tokenizer),
                    "no such tokenizer file (config.json names it); predict needs one",
                )
            })?;
        Self::start(model, tokenizer, device, opts)
    }

    /// A predictor for a classifier and tokenizer already in memory.
    pub fn from_parts(
        model: SequenceClassifier,
        tokenizer: Tokenizer,
        device: Device,
        opts: PredictorOptions,
    ) -> Result<Self> {
        // One text with a piece beyond the embedding would fail every request in its batch.
        tokenizer.check_fits(model.config.vocab_size)?;
        Self::start(model, tokenizer, device, opts)
    }

    /// Starts the workers (the tokenizer already checked against the model).
    fn start(
        mut model: SequenceClassifier,
        tokenizer: Tokenizer,
        device: Device,
        opts: PredictorOptions,
    ) -> Result<Self> {
        if opts.max_batch == 0 || opts.queue_capacity == 0 {
            return Err(Error::config(format!(
                "predictor: max_batch ({}) and queue_capacity ({}) must be at least 1",
                opts.max_batch, opts.queue_capacity
            )));
        }
        model.set_training(false);
        model.backbone.encoder.set_fused_inference(true);
        let config = Arc::new(model.config.clone());
        // Unbounded channel; `queued` bounds the sequences waiting (checked in `submit`).
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let stats = Arc::new(PredictorStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let table = input_table(&model)?;
        let model = Arc::new(SharedModel { model, table });
        for i in 0..opts.workers.max(1) {
            let (rx, model, stats, config, queued) = (
                rx.clone(),
                model.clone(),
                stats.clone(),
                config.clone(),
                queued.clone(),
            );
            std::thread::Builder::new()
                .name(format!("rnnkit-predict-{i}"))
                .spawn(move || worker(&model, &config, rx, opts, device, &stats, &queued))
                .map_err(|e| Error::invalid(format!("cannot start a predictor thread: {e}")))?;
        }
        Ok(Self {
            tx,
            tokenizer: Arc::new(tokenizer),
            config,
            stats,
            queued,
            capacity: opts.queue_capacity,
        })
    }

    /// The model's `config.json` (its labels name the classes).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// The workers' counters since the predictor started.
    pub fn stats(&self) -> &PredictorStats {
        &self.stats
    }
    /// Sequences waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Tokenizes and enqueues every text; fails at once if the queue cannot take them all.
    pub fn submit(&self, texts: &[&str]) -> Result<Reply> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let n = ids.len();
        // Reserve room for the sequences; a request never waits for space.
        let queued = self.queued.fetch_add(n, Ordering::SeqCst);
        if queued + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Error::QueueFull { queued });
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { ids, reply }).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Error::Closed);
        }
        Ok(rx)
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

    fn finish(
        &self,
        r: std::result::Result<std::result::Result<Vec<Vec<f32>>, String>, oneshot::RecvError>,
    ) -> Result<Vec<Prediction>> {
        match r {
            Ok(Ok(rows)) => Ok(rows.into_iter().map(|p| self.prediction(p)).collect()),
            Ok(Err(e)) => Err(Error::invalid(e)),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Blocking: predictions for `texts`, in order.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>> {
        let rx = self.submit(texts)?;
        self.finish(rx.recv())
    }

    /// Async: the same, for an async runtime (the HTTP server awaits it).
    pub async fn predict_async(&self, texts: &[&str]) -> Result<Vec<Prediction>> {
        let rx = self.submit(texts)?;
        self.finish(rx.await)
    }
}

/// The model shared read-only by the worker threads.
struct SharedModel {
    model: SequenceClassifier,
    /// Layer 0's input projections per token id (see [`input_table`]).
    table: Option<Vec<Tensor>>,
}
// SAFETY: workers only run forward passes in inference mode, which read the parameter tensors and
// never mutate them; libtorch supports concurrent reads of a tensor from several threads. Nothing
// can reach the model mutably once it is inside the Arc.
unsafe impl Sync for SharedModel {}

fn worker(
    model: &SharedModel,
    config: &ModelConfig,
    rx: crossbeam_channel::Receiver<Job>,
    opts: PredictorOptions,
    device: Device,
    stats: &PredictorStats,
    queued: &AtomicUsize,
) {
    let _guard = crate::nn::inference::InferenceMode::enter();
    let pad = config.padding_idx.unwrap_or(0);
    while let Ok(first) = rx.recv() {
        // Whole requests only: take what is waiting now, then what arrives before the deadline,
        // until the batch holds max_batch sequences.
        let mut size = first.ids.len();
        let mut jobs = vec![first];
        let deadline = Instant::now() + opts.max_wait;
        while size < opts.max_batch {
            let next = match rx.try_recv() {
                Ok(j) => Ok(j),
                Err(_) => rx.recv_deadline(deadline),
            };
            match next {
                Ok(j) => {
                    size += j.ids.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        queued.fetch_sub(size, Ordering::SeqCst);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.sequences.fetch_add(size as u64, Ordering::Relaxed);
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| size <= b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len());
        stats.batch_size_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let seqs: Vec<&[i64]> = jobs
            .iter()
            .flat_map(|j| j.ids.iter().map(Vec::as_slice))
            .collect();
        match run_batch(model, &seqs, pad, device, &opts) {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for job in jobs {
                    let mine: Vec<Vec<f32>> = rows.by_ref().take(job.ids.len()).collect();
                    let _ = job.reply.send(Ok(mine));
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

/// The largest embedding × W_ih table the predictor builds (bytes, all directions).
pub const INPUT_TABLE_MAX_BYTES: i64 = 256 << 20;

/// `embedding.weight · W_ih_l0ᵀ + b` per direction, (V, G): at inference every token's layer-0
/// input projection becomes a row lookup instead of a product (for the demo classifier, 44% of
/// the multiply-adds). Built when the model runs on the fused kernel (f32 on CPU) and the table
/// stays under [`INPUT_TABLE_MAX_BYTES`] (demo classifier: 8000 × 2048 floats = 62.5 MiB).
fn input_table(model: &SequenceClassifier) -> Result<Option<Vec<Tensor>>> {
    let enc = &model.backbone.encoder;
    let cfg = enc.config();
    let emb = &model.backbone.embedding.weight;
    let bytes = emb.size()[0] * enc.mode().gates() * cfg.hidden_size * cfg.num_directions() * 4;
    if bytes > INPUT_TABLE_MAX_BYTES {
        return Ok(None);
    }
    enc.input_table(emb)
}

/// Probabilities for `seqs`, in order. Sequences are sorted by length and run in chunks of at
/// most `max_batch` similar lengths (batch-invariant: also at most the encoder's
/// row-independent batch), so padding (and the input projections computed for it) stays
/// small whatever order requests arrive in.
fn run_batch(
    shared: &SharedModel,
    seqs: &[&[i64]],
    pad: i64,
    device: Device,
    opts: &PredictorOptions,
) -> Result<Vec<Vec<f32>>> {
    let invariant = opts.batch_invariant;
    let encoder = &shared.model.backbone.encoder;
    let chunk = match invariant {
        true => opts
            .max_batch
            .min(encoder.row_independent_batch(shared.table.is_some())),
        false => opts.max_batch,
    };
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
    let mut rows = vec![Vec::new(); seqs.len()];
    for part in order.chunks(chunk.max(1)) {
        let n = part.len();
        let max_len = seqs[part[0]].len().max(1);
        let mut flat = Vec::with_capacity(n * max_len);
        let mut lengths = Vec::with_capacity(n);
        for &i in part {
            let s = seqs[i];
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(pad, max_len - s.len()));
            lengths.push(s.len() as i64);
        }
        let model = &shared.model;
        let (n_i, l_i) = (n as i64, max_len as i64);
        let e = match &shared.table {
            Some(tables) => {
                let (out, state) = encoder.forward_table(tables, &flat, (n_i, l_i), &lengths)?;
                crate::models::Encoded { out, h_n: state.h }
            }
            None => {
                let ids = Tensor::from_slice(&flat).view([n_i, l_i]).to_device(device);
                model.backbone.encode(&ids, &lengths)?
            }
        };
        let c = model.head.out_features() as usize;
        let all = if invariant {
            let mut logits = model.classify_rows(&e, &lengths)?;
            logits.chunks_mut(c).for_each(softmax_row);
            logits
        } else {
            let probs = model
                .classify(&e, &lengths)?
                .softmax(-1, Kind::Float)
                .to_device(Device::Cpu);
            let mut all = vec![0f32; n * c];
            probs.f_copy_data(&mut all, n * c)?;
            all
        };
        for (&i, p) in part.iter().zip(all.chunks(c)) {
            rows[i] = p.to_vec();
        }
    }
    Ok(rows)
}

/// Softmax of one row of logits in place: `exp(x_i - max) / Σ_j exp(x_j - max)`, in f64 with
/// the sum in index order, rounded to f32 at the end.
fn softmax_row(x: &mut [f32]) {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    for (v, e) in x.iter_mut().zip(&e) {
        *v = (e / sum) as f32;
    }
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
/// JSON object per input line (blank lines are empty texts) to `out`, in order. Texts go to the
/// predictor `window` at a time (at most its queue capacity), which sorts each window by length
/// into batches.
pub fn predict_stream(
    predictor: &Predictor,
    input: impl std::io::BufRead,
    out: &mut dyn std::io::Write,
    window: usize,
) -> Result<usize> {
    let mut texts = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line =
            line.map_err(|e| Error::invalid(format!("reading input line {}: {e}", i + 1)))?;
        // A byte-order mark (editors on Windows write one) is not part of the first text.
        let line = match (i, line.strip_prefix('\u{feff}')) {
            (0, Some(rest)) => rest.to_string(),
            _ => line,
        };
        // A blank line is an empty text: one output line per input line, so that outputs
        // stay aligned with their inputs (`paste`).
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
    for chunk in texts.chunks(window.clamp(1, predictor.capacity)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let preds = predictor.predict(&refs)?;
        for p in &preds {
            writeln!(out, "{}", prediction_json(predictor.config(), p))
                .map_err(|e| Error::invalid(format!("writing output: {e}")))?;
        }
    }
    Ok(texts.len())
}
