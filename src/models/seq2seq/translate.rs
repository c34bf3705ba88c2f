//! Texts in, translations out: a [`Seq2Seq`] with its model directory's source and target
//! tokenizers, decoding batches of sentences with one of the searches of [`super::decode`].
//!
//! ```text
//! text → source tokenizer → ids (no tokens, or more than max_length: an error naming the text)
//!      → sentences sorted by length (longest first), batches of batch_size, padded
//!      → search → target ids without the final EOS → target tokenizer's decode → text
//! ```
//! Results come back in input order. A sentence's tokens can depend on the batch it shares
//! (libtorch's kernels round a row's sums differently at other batch sizes); the same texts with
//! the same batch size always give the same output.

use super::decode::{Hypothesis, MaxLength};
use super::Seq2Seq;
use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use crate::models::Model;
use std::path::Path;
use tch::{Device, Tensor};

/// How outputs are searched for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Search {
    /// The most probable token each step.
    Greedy,
    /// Beam search with GNMT's length penalty; `n_best` outputs per sentence.
    Beam {
        /// Hypotheses kept per sentence.
        beam: usize,
        /// The length penalty's α (0: none).
        alpha: f64,
        /// Outputs returned per sentence (≤ beam).
        n_best: usize,
    },
    /// Ancestral sampling (see [`Seq2Seq::sample`]).
    Sample {
        /// Seeds sentence i's stream with `seed + i` (i counted over the whole call).
        seed: u64,
        /// Softmax temperature.
        temperature: f64,
        /// Keep the k most probable tokens (0: all).
        top_k: i64,
        /// Keep the smallest set of tokens whose mass reaches p (1: all).
        top_p: f64,
    },
}

/// Settings of [`Translator::translate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TranslateOptions {
    /// The search.
    pub search: Search,
    /// How long outputs may grow.
    pub max_len: MaxLength,
    /// Sentences decoded together.
    pub batch_size: usize,
    /// Batches decoded at once on the CPU, each on its own thread running libtorch with one
    /// intra-op thread (default 1: one batch at a time on the caller's thread and libtorch's
    /// thread count). See [`Translator::translate_ids`].
    pub workers: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            search: Search::Beam {
                beam: 5,
                alpha: 0.6,
                n_best: 1,
            },
            max_len: MaxLength::default(),
            batch_size: 32,
            workers: 1,
        }
    }
}

/// One output of one sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The decoded text.
    pub text: String,
    /// Its target ids (EOS included when produced) and scores.
    pub hypothesis: Hypothesis,
}

/// A seq2seq model with its tokenizers.
pub struct Translator {
    /// The model, in eval mode.
    pub model: Seq2Seq,
    /// Source text → ids.
    pub src_tokenizer: Tokenizer,
    /// Target ids → text.
    pub tgt_tokenizer: Tokenizer,
}

/// Source ids of `texts`, each tokenized once. A text without tokens (empty or blank) is an
/// error naming it: the decoder would invent a sentence from nothing. So is a text of more than
/// `max_length` tokens (a cut source would be translated in part without a word).
pub fn encode_sources(
    tokenizer: &Tokenizer,
    max_length: usize,
    texts: &[String],
) -> Result<Vec<Vec<i64>>> {
    encode_sources_named(tokenizer, max_length, texts, |i| format!("text {i}"))
}

/// [`encode_sources`], its errors naming text i as `name(i)` (a file's line, say).
pub fn encode_sources_named(
    tokenizer: &Tokenizer,
    max_length: usize,
    texts: &[String],
    name: impl Fn(usize) -> String,
) -> Result<Vec<Vec<i64>>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let raw = tokenizer.encode_raw(t)?;
            if raw.len() > max_length {
                return Err(Error::invalid(format!(
                    "{} has {} tokens, over the model's max_length of {max_length} \
                     (config.json); split it into sentences",
                    name(i),
                    raw.len()
                )));
            }
            if raw.is_empty() {
                return Err(Error::invalid(format!(
                    "{} is empty (no tokens): there is nothing to translate",
                    name(i)
                )));
            }
            Ok(raw.into_iter().map(i64::from).collect())
        })
        .collect()
}

/// A seq2seq model directory's model and the tokenizers of both sides that are present
/// (`tokenizer`; `seq2seq.tgt_tokenizer`, else the same file), each checked against its vocabulary.
pub fn load_with_tokenizers(
    dir: &Path,
    device: Device,
) -> Result<(Seq2Seq, Option<Tokenizer>, Option<Tokenizer>)> {
    let model = match Model::load_dir(dir, device)? {
        Model::Seq2Seq(m) => m,
        other => {
            return Err(Error::config(format!(
                "{}: needs a seq2seq model, this is family {:?}",
                dir.display(),
                other.config().family
            )))
        }
    };
    let c = &model.config;
    let pad = c.padding_idx.unwrap_or(0);
    let open = |name: &str, vocab: i64| -> Result<Option<Tokenizer>> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let t = Tokenizer::from_file(&path, c.max_length, pad)?;
        t.check_fits(vocab)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        Ok(Some(t))
    };
    let s = model.s2s();
    let src = open(&c.tokenizer, c.vocab_size)?;
    let tgt = open(
        s.tgt_tokenizer.as_deref().unwrap_or(&c.tokenizer),
        s.tgt_vocab_size,
    )?;
    Ok((model, src, tgt))
}

impl Translator {
    /// Loads `dir`, which must hold both tokenizers.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let (mut model, src, tgt) = load_with_tokenizers(dir, device)?;
        let missing = |what: &str| {
            Error::invalid(format!(
                "{}: no {what} tokenizer file; translating text needs one",
                dir.display()
            ))
        };
        crate::nn::module::Module::set_training(&mut model, false);
        Ok(Self {
            model,
            src_tokenizer: src.ok_or_else(|| missing("source"))?,
            tgt_tokenizer: tgt.ok_or_else(|| missing("target"))?,
        })
    }

    /// Translates `texts`; per text, one output (greedy, sampling) or up to `n_best` (beam). A
    /// text of more than `max_length` tokens is an error naming it.
    pub fn translate(&self, texts: &[String], opts: &TranslateOptions) -> Result<Vec<Vec<Output>>> {
        self.translate_ids(&self.encode(texts)?, opts)
    }

    /// [`encode_sources`] with this model's tokenizer and `max_length`.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        let c = &self.model.config;
        encode_sources(&self.src_tokenizer, c.max_length, texts)
    }

    /// [`Translator::translate`] of source ids from [`Translator::encode`].
    ///
    /// With `opts.workers` > 1 on the CPU, that many threads take the batches in turn, each
    /// running libtorch with one intra-op thread for its batches; the calling thread's count
    /// is set back when they finish. A batch's outputs are then exactly those of decoding it
    /// with one libtorch thread (`--threads 1`; `torch.set_num_threads(1)`); libtorch's sums
    /// can round differently on more threads, so a run on more can differ in the scores'
    /// last digits (rarely in a token).
    pub fn translate_ids(
        &self,
        ids: &[Vec<i64>],
        opts: &TranslateOptions,
    ) -> Result<Vec<Vec<Output>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let chunks: Vec<&[usize]> = order.chunks(opts.batch_size.max(1)).collect();
        let device = self.model.output.weight.device();
        let workers = opts.workers.max(1).min(chunks.len());
        let results = if workers <= 1 || device != Device::Cpu {
            chunks
                .iter()
                .map(|chunk| self.translate_batch(chunk, ids, opts))
                .collect::<Result<Vec<_>>>()?
        } else {
            self.translate_parallel(&chunks, ids, opts, workers)?
        };
        let mut out: Vec<Vec<Output>> = vec![Vec::new(); ids.len()];
        for (chunk, outputs) in chunks.iter().zip(results) {
            for (&i, o) in chunk.iter().zip(outputs) {
                out[i] = o;
            }
        }
        Ok(out)
    }

    /// The batches `chunks` on `workers` threads (see [`Translator::translate_ids`]); results
    /// in the order of `chunks`.
    fn translate_parallel(
        &self,
        chunks: &[&[usize]],
        ids: &[Vec<i64>],
        opts: &TranslateOptions,
        workers: usize,
    ) -> Result<Vec<Vec<Vec<Output>>>> {
        let caller_threads = tch::get_num_threads();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let shared = SharedTranslator(self);
        let mut done: Vec<(usize, Result<Vec<Vec<Output>>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (next, shared) = (&next, &shared);
                    s.spawn(move || {
                        tch::set_num_threads(1);
                        let mut mine = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(chunk) = chunks.get(k) else { break };
                            let r = shared.0.translate_batch(chunk, ids, opts);
                            let failed = r.is_err();
                            mine.push((k, r));
                            if failed {
                                // The other workers stop at their next batch.
                                next.store(chunks.len(), std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        tch::set_num_threads(caller_threads);
        done.sort_by_key(|(k, _)| *k);
        done.into_iter().map(|(_, r)| r).collect()
    }

    /// One batch: the sentences `chunk` (indices into `ids`), padded, searched and decoded.
    fn translate_batch(
        &self,
        chunk: &[usize],
        ids: &[Vec<i64>],
        opts: &TranslateOptions,
    ) -> Result<Vec<Vec<Output>>> {
        let pad = self.model.config.padding_idx.unwrap_or(0);
        let device = self.model.output.weight.device();
        let width = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(chunk.len() * width);
        let mut lens = Vec::with_capacity(chunk.len());
        for &i in chunk {
            flat.extend_from_slice(&ids[i]);
            flat.extend(std::iter::repeat_n(pad, width - ids[i].len()));
            lens.push(ids[i].len() as i64);
        }
        let src = Tensor::from_slice(&flat)
            .view([chunk.len() as i64, width as i64])
            .to_device(device);
        let max_len = opts.max_len.of(&lens);
        let hyps: Vec<Vec<Hypothesis>> = match opts.search {
            Search::Greedy => self
                .model
                .greedy(&src, &lens, &max_len)?
                .into_iter()
                .map(|h| vec![h])
                .collect(),
            Search::Beam {
                beam,
                alpha,
                n_best,
            } => self
                .model
                .beam_search(&src, &lens, &max_len, beam, alpha, n_best)?,
            Search::Sample {
                seed,
                temperature,
                top_k,
                top_p,
            } => {
                // Each sentence keeps the stream of its position in the input.
                let mut per = Vec::with_capacity(chunk.len());
                for (row, &i) in chunk.iter().enumerate() {
                    let one = src.narrow(0, row as i64, 1);
                    let h = self.model.sample(
                        &one,
                        &lens[row..=row],
                        &max_len[row..=row],
                        seed.wrapping_add(i as u64),
                        temperature,
                        top_k,
                        top_p,
                    )?;
                    per.push(h);
                }
                per
            }
        };
        let eos = self.model.s2s().eos_id;
        hyps.into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| {
                        let body = match h.tokens.split_last() {
                            Some((&last, rest)) if last == eos => rest,
                            _ => &h.tokens[..],
                        };
                        Ok(Output {
                            text: self.tgt_tokenizer.decode(body)?,
                            hypothesis: h,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// A translator read by the worker threads of [`Translator::translate_parallel`].
struct SharedTranslator<'a>(&'a Translator);
// SAFETY: the workers only decode in no-grad mode, which reads the parameter tensors and never
// writes them; libtorch supports concurrent reads of a tensor from several threads. The
// translator is borrowed immutably for the whole scope, so nothing can change it meanwhile.
unsafe impl Sync for SharedTranslator<'_> {}
