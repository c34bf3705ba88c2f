//! Evaluating a ctc model directory on transcribed audio (`rnnkit eval` on a `ctc` directory):
//! every WAV is transcribed ([`Transcriber`], greedy or prefix beam search) and the transcripts
//! are scored against the references with corpus WER and CER as `jiwer` computes them
//! ([`crate::train::speech_metrics`]), overall and on the lines marked `"numbers": true` (the
//! digits-and-numbers subset); the CTC loss comes with them.

use crate::error::Result;
use crate::models::ctc::transcribe::{DecodeOptions, Transcriber};
use crate::train::ctc_finetune::{loss_and_transcripts, read_utterances};
use crate::train::speech_metrics::{error_rates, ErrorRates};
use serde::Serialize;
use std::path::Path;
use tch::Device;

/// What `rnnkit eval` reports for a ctc model.
#[derive(Debug, Clone, Serialize)]
pub struct SpeechMetrics {
    /// Utterances evaluated.
    pub utterances: usize,
    /// WER, CER and their counts over all utterances.
    pub all: ErrorRates,
    /// The same over the `"numbers": true` lines (None when there are none).
    pub numbers: Option<ErrorRates>,
    /// Utterances in the numbers subset.
    pub numbers_utterances: usize,
    /// Mean CTC loss per utterance.
    pub loss: f64,
    /// The first (reference, transcript) pairs, for a look.
    pub examples: Vec<(String, String)>,
}

/// Reads `data` (JSONL with "wav" and "text"), transcribes and scores it.
pub fn eval_speech(
    model: &Path,
    data: &Path,
    batch: usize,
    opts: &DecodeOptions,
    max_seconds: f64,
    device: Device,
) -> Result<SpeechMetrics> {
    let mut tr = Transcriber::load(model, device)?;
    let utts = read_utterances(&tr, data, max_seconds)?;
    let (loss, hyps) = loss_and_transcripts(&mut tr, &utts, batch.max(1), opts)?;
    let refs: Vec<&str> = utts.iter().map(|u| u.text.as_str()).collect();
    let hyp: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let all = error_rates(&refs, &hyp)?;
    let (nr, nh): (Vec<&str>, Vec<&str>) = utts
        .iter()
        .zip(&hyp)
        .filter(|(u, _)| u.numbers)
        .map(|(u, h)| (u.text.as_str(), *h))
        .unzip();
    let numbers = if nr.is_empty() {
        None
    } else {
        Some(error_rates(&nr, &nh)?)
    };
    Ok(SpeechMetrics {
        utterances: utts.len(),
        all,
        numbers,
        numbers_utterances: nr.len(),
        loss,
        examples: refs
            .iter()
            .zip(&hyp)
            .take(5)
            .map(|(r, h)| (r.to_string(), h.to_string()))
            .collect(),
    })
}
