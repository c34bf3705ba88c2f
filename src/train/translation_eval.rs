//! Evaluating a seq2seq model directory on parallel text (`rnnkit eval` on a `seq2seq`
//! directory): the model translates every source with [`Translator`], and the outputs are scored
//! against the references with corpus BLEU and chrF as `sacrebleu` computes them
//! ([`crate::train::translation_metrics`]); the teacher-forced loss per target token comes with
//! them.
//!
//! ```text
//! hyps = translate(src_1..N)                          beam search, TranslateOptions
//! BLEU = corpus_bleu(hyps, [tgt_1..N])                 13a tokenisation, exp smoothing
//! chrF = corpus_chrf(hyps, [tgt_1..N])                 character 6-grams, β = 2
//! loss = Σ CE(model(src, y_in), y_out) / Σ |y|         plain cross-entropy, no smoothing
//! ```

use crate::error::{Error, Result};
use crate::models::seq2seq::translate::{encode_sources_named, TranslateOptions, Translator};
use crate::train::seq2seq_finetune::{evaluate, Pair};
use crate::train::translation_metrics::{corpus_bleu, corpus_chrf};
use serde::Serialize;
use std::path::Path;
use tch::Device;

/// What `rnnkit eval` reports for a seq2seq model.
#[derive(Debug, Clone, Serialize)]
pub struct TranslationMetrics {
    /// Pairs evaluated.
    pub sentences: usize,
    /// Corpus BLEU (0-100).
    pub bleu: f64,
    /// Corpus chrF (0-100).
    pub chrf: f64,
    /// Cross-entropy per target token, EOS included.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// The first translations, for a look.
    pub examples: Vec<(String, String, String)>,
}

/// Reads `data` (JSONL with text "src" and "tgt"), translates and scores it.
pub fn eval_translation(
    dir: &Path,
    data: &Path,
    opts: &TranslateOptions,
    device: Device,
) -> Result<TranslationMetrics> {
    let mut tr = Translator::load(dir, device)?;
    let text = std::fs::read_to_string(data).map_err(|e| Error::io(data, e))?;
    let (mut srcs, mut refs, mut line_no) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = crate::json::from_str(line)
            .map_err(|e| Error::format(data, format!("line {}: {e}", i + 1)))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::format(
                        data,
                        format!(
                            "line {}: no text {k:?} (eval needs \"src\" and \"tgt\")",
                            i + 1
                        ),
                    )
                })
        };
        srcs.push(field("src")?);
        refs.push(field("tgt")?);
        line_no.push(i + 1);
    }
    if srcs.is_empty() {
        return Err(Error::format(data, "no pairs"));
    }
    // Each text tokenized once: the source ids serve the translation and the loss.
    let shown = data.display().to_string();
    let src_ids =
        encode_sources_named(&tr.src_tokenizer, tr.model.config.max_length, &srcs, |k| {
            format!("{shown} line {}: \"src\"", line_no[k])
        })?;
    let outputs = tr.translate_ids(&src_ids, opts)?;
    let hyps: Vec<String> = outputs
        .iter()
        .map(|o| o.first().map(|h| h.text.clone()).unwrap_or_default())
        .collect();
    let hyp_refs: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let ref_stream: Vec<&str> = refs.iter().map(String::as_str).collect();
    let bleu = corpus_bleu(&hyp_refs, std::slice::from_ref(&ref_stream))?;
    let chrf = corpus_chrf(&hyp_refs, std::slice::from_ref(&ref_stream))?;
    let (max, eos) = (tr.model.config.max_length, tr.model.s2s().eos_id);
    let pairs = src_ids
        .into_iter()
        .zip(&refs)
        .map(|(src, r)| {
            // As PairReader reads a target: cut to max_length - 1, then EOS.
            let mut tgt: Vec<i64> = tr
                .tgt_tokenizer
                .encode_raw(r)?
                .into_iter()
                .map(i64::from)
                .collect();
            tgt.truncate(max.saturating_sub(1));
            tgt.push(eos);
            Ok(Pair { src, tgt })
        })
        .collect::<Result<Vec<_>>>()?;
    let loss = evaluate(&mut tr.model, &pairs, opts.batch_size.max(1), device)?;
    Ok(TranslationMetrics {
        sentences: srcs.len(),
        bleu: bleu.score,
        chrf: chrf.score,
        loss,
        perplexity: loss.exp(),
        examples: srcs
            .iter()
            .zip(&hyps)
            .zip(&refs)
            .take(5)
            .map(|((s, h), r)| (s.clone(), h.clone(), r.clone()))
            .collect(),
    })
}
