//! Translation for services: [`TranslationService`] owns a [`Translator`] on one worker thread
//! and micro-batches requests. Callers tokenize on their own threads ([`TranslationService::encode`],
//! which refuses a text over `max_length` before anything is queued); the worker takes the first waiting request, then whatever else
//! arrives within `max_wait` with the same search settings, up to `max_batch` texts, and
//! translates them together ([`Translator::translate_ids`] sorts them by length into batches).
//! Requests with other settings wait for the next batch, in arrival order.
//!
//! A text's output can depend on the texts it is batched with (see [`crate::models::seq2seq::translate`]).

use crate::error::{Error, Result};
use crate::models::seq2seq::translate::{encode_sources, Output, TranslateOptions, Translator};
use crate::models::tokenizer::Tokenizer;
use crate::serve::predictor::PredictorOptions;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

type Answer = std::result::Result<Vec<Vec<Output>>, String>;

struct Job {
    ids: Vec<Vec<i64>>,
    opts: TranslateOptions,
    reply: oneshot::Sender<Answer>,
}

/// A translator behind a queue. Clones share the worker, which stops with the last clone.
#[derive(Clone)]
pub struct TranslationService {
    tx: crossbeam_channel::Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    defaults: TranslateOptions,
    /// The source tokenizer and `max_length`: callers tokenize on their own threads.
    src: Arc<(Tokenizer, usize)>,
}

impl TranslationService {
    /// Loads a seq2seq directory (with its tokenizers) and starts the worker; `defaults` are
    /// the settings of requests that give none. `opts.workers` is ignored (one worker).
    pub fn load(
        dir: &Path,
        device: Device,
        opts: PredictorOptions,
        defaults: TranslateOptions,
    ) -> Result<Self> {
        let translator = Translator::load(dir, device)?;
        Self::start(translator, opts, defaults)
    }

    /// Starts the worker on a translator already in memory.
    pub fn start(
        translator: Translator,
        opts: PredictorOptions,
        defaults: TranslateOptions,
    ) -> Result<Self> {
        if opts.max_batch == 0 || opts.queue_capacity == 0 {
            return Err(Error::config(format!(
                "translation service: max_batch ({}) and queue_capacity ({}) must be at least 1",
                opts.max_batch, opts.queue_capacity
            )));
        }
        let c = &translator.model.config;
        let src = Arc::new((translator.src_tokenizer.clone(), c.max_length));
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new()
            .name("rnnkit-translate".into())
            .spawn(move || worker(translator, rx, opts, &q))
            .map_err(|e| Error::invalid(format!("cannot start the translation thread: {e}")))?;
        Ok(Self {
            tx,
            queued,
            capacity: opts.queue_capacity,
            defaults,
            src,
        })
    }

    /// The settings of a request that gives none.
    pub fn defaults(&self) -> &TranslateOptions {
        &self.defaults
    }

    /// Source ids of `texts` ([`encode_sources`]), on the caller's thread; a text over
    /// `max_length` tokens is an error naming it (bad input, not a failure of the model).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        encode_sources(&self.src.0, self.src.1, texts)
    }

    /// Texts waiting for the worker now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Translations of source ids from [`Self::encode`] with `opts`, in order; fails at once
    /// when the queue is full.
    pub async fn translate_async(
        &self,
        ids: Vec<Vec<i64>>,
        opts: TranslateOptions,
    ) -> Result<Vec<Vec<Output>>> {
        let n = ids.len();
        let queued = self.queued.fetch_add(n, Ordering::SeqCst);
        if queued + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Error::QueueFull { queued });
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { ids, opts, reply }).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Error::Closed);
        }
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Error::invalid(e)),
            Err(_) => Err(Error::Closed),
        }
    }
}

fn worker(
    tr: Translator,
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
        let mut size = first.ids.len();
        let mut jobs = vec![first];
        // Same settings only; the others keep their place for the next batch.
        let mut kept = VecDeque::new();
        while let Some(j) = later.pop_front() {
            if j.opts == jobs[0].opts && size + j.ids.len() <= opts.max_batch {
                size += j.ids.len();
                jobs.push(j);
            } else {
                kept.push_back(j);
            }
        }
        later = kept;
        let deadline = Instant::now() + opts.max_wait;
        while size < opts.max_batch {
            match rx.recv_deadline(deadline) {
                Ok(j) if j.opts == jobs[0].opts => {
                    size += j.ids.len();
                    jobs.push(j);
                }
                Ok(j) => later.push_back(j),
                Err(_) => break,
            }
        }
        queued.fetch_sub(size, Ordering::SeqCst);
        let ids: Vec<Vec<i64>> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
        match tr.translate_ids(&ids, &jobs[0].opts) {
            Ok(out) => {
                let mut out = out.into_iter();
                for job in jobs {
                    let mine: Vec<Vec<Output>> = out.by_ref().take(job.ids.len()).collect();
                    let _ = job.reply.send(Ok(mine));
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
