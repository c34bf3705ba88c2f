//! Transcription for services: [`TranscriptionService`] owns a [`Transcriber`] on one worker
//! thread and micro-batches requests. Callers decode the WAV and compute its features on their
//! own threads ([`TranscriptionService::features`]); the worker takes the first waiting request,
//! then whatever else arrives within `max_wait` with the same beam width, up to `max_batch`
//! utterances, and runs them through the model as one batch (in arrival order, zero-padded).
//! Requests with another beam width wait for the next batch, in arrival order.
//!
//! An utterance's scores can depend on the utterances it is batched with (libtorch's kernels
//! choose their blocking by batch size); its text almost never does.

use crate::error::{Error, Result};
use crate::models::ctc::audio::read_wav_bytes;
use crate::models::ctc::features::Frontend;
use crate::models::ctc::transcribe::{features_of, DecodeOptions, Transcriber, Transcript};
use crate::models::ctc::CtcConfig;
use crate::serve::predictor::PredictorOptions;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

type Answer = std::result::Result<Transcript, String>;

struct Job {
    features: Tensor,
    beam: usize,
    reply: oneshot::Sender<Answer>,
}

/// A transcriber behind a queue. Clones share the worker, which stops with the last clone.
#[derive(Clone)]
pub struct TranscriptionService {
    tx: crossbeam_channel::Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// The model's config, for callers' threads: each request builds its front end (a
    /// filterbank of n_freqs × n_mels; tensors cannot be shared between threads).
    config: Arc<CtcConfig>,
}

impl TranscriptionService {
    /// Loads a ctc directory and starts the worker. `opts.workers` is ignored (one worker).
    pub fn load(dir: &Path, device: Device, opts: PredictorOptions) -> Result<Self> {
        if opts.max_batch == 0 || opts.queue_capacity == 0 {
            return Err(Error::config(format!(
                "transcription service: max_batch ({}) and queue_capacity ({}) must be at least 1",
                opts.max_batch, opts.queue_capacity
            )));
        }
        let mut worker_tr = Transcriber::load(dir, device)?;
        worker_tr.set_fused_inference(opts.fused_transcription);
        let config = Arc::new(worker_tr.model.config.clone());
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new()
            .name("rnnkit-transcribe".into())
            .spawn(move || worker(worker_tr, rx, opts, &q))
            .map_err(|e| Error::invalid(format!("cannot start the transcription thread: {e}")))?;
        Ok(Self {
            tx,
            queued,
            capacity: opts.queue_capacity,
            config,
        })
    }

    /// The model's sample rate.
    pub fn sample_rate(&self) -> i64 {
        self.config.features.sample_rate
    }

    /// Features of a WAV file in memory (at most `max_seconds`), on the caller's thread; bad
    /// audio is an error naming `name`.
    pub fn features(&self, wav: &[u8], name: &str, max_seconds: f64) -> Result<Tensor> {
        let path = Path::new(name);
        let audio = read_wav_bytes(wav, path, max_seconds)?;
        features_of(
            &Frontend::new(&self.config.features),
            &self.config,
            audio,
            path,
        )
    }

    /// Features of audio already decoded (the warm-up's silence).
    pub fn features_of_audio(&self, audio: crate::models::ctc::audio::Audio) -> Result<Tensor> {
        features_of(
            &Frontend::new(&self.config.features),
            &self.config,
            audio,
            Path::new("audio"),
        )
    }

    /// Utterances waiting for the worker now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The transcript of features from [`Self::features`] (greedy for `beam` 0); fails at once
    /// when the queue is full.
    pub async fn transcribe_async(&self, features: Tensor, beam: usize) -> Result<Transcript> {
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        if queued + 1 > self.capacity {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::QueueFull { queued });
        }
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Job {
                features,
                beam,
                reply,
            })
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Closed);
        }
        match rx.await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(Error::invalid(e)),
            Err(_) => Err(Error::Closed),
        }
    }
}

fn worker(
    tr: Transcriber,
    rx: crossbeam_channel::Receiver<Job>,
    opts: PredictorOptions,
    queued: &AtomicUsize,
) {
    let _guard = crate::nn::inference::InferenceMode::enter();
    let mut later: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match later.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let beam = first.beam;
        let mut jobs = vec![first];
        let mut kept = VecDeque::new();
        while let Some(j) = later.pop_front() {
            if j.beam == beam && jobs.len() < opts.max_batch {
                jobs.push(j);
            } else {
                kept.push_back(j);
            }
        }
        later = kept;
        let deadline = Instant::now() + opts.max_wait;
        while jobs.len() < opts.max_batch {
            match rx.recv_deadline(deadline) {
                Ok(j) if j.beam == beam => jobs.push(j),
                Ok(j) => later.push_back(j),
                Err(_) => break,
            }
        }
        queued.fetch_sub(jobs.len(), Ordering::SeqCst);
        let feats: Vec<Tensor> = jobs.iter().map(|j| j.features.shallow_clone()).collect();
        let opts = DecodeOptions { beam, words: None };
        match tr.transcribe_features(&feats, &opts) {
            Ok(out) => {
                for (job, t) in jobs.into_iter().zip(out) {
                    let _ = job.reply.send(Ok(t));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
