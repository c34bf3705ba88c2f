//! Files in, text out: WAV files → features → the model in batches → decoding, as
//! `scripts/rnnkit_ctc.py`'s `transcribe_files` does it.
//!
//! ```text
//! per file:  audio::read_wav → audio::resample (to features.sample_rate) → Frontend::features
//! batch:     features zero-padded to (N, T_max, n_mels) in the order given → CtcModel::forward
//!            (eval mode, no autograd) → log_softmax (f32) → rows 0..T'_n as f64 → decode
//! streamed:  a file of any length pushed in pieces through a unidirectional model, its state
//!            carried ([`super::stream`]): the whole file's result
//! chunked:   a file of any length as consecutive pieces (audio::read_wav_chunked), each piece
//!            transcribed alone as a file of its own: texts joined by a space, scores summed,
//!            word times shifted by the piece's start; memory for one piece
//! ```

use super::audio::{read_wav, read_wav_chunked, resample};
use super::decode::{self, Hypothesis, Word, WordList};
use super::features::{pad_features, Frontend};
use super::CtcModel;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// How to decode.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Prefix beam search with this many prefixes; 0 = greedy.
    pub beam: usize,
    /// Words the output may contain (beam search only).
    pub words: Option<std::sync::Arc<WordList>>,
}

/// One utterance's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The text.
    pub text: String,
    /// Greedy: the best path's log-probability; beam: log P(text) over the kept paths.
    pub score: f64,
    /// The words with start and end times in seconds.
    pub words: Vec<Word>,
}

/// Features of decoded audio for a model of `config` (resampled to its rate), refusing audio
/// too short for its subsampling; errors name `path`.
pub fn features_of(
    frontend: &Frontend,
    config: &super::CtcConfig,
    audio: super::audio::Audio,
    path: &Path,
) -> Result<Tensor> {
    let x = resample(
        &audio.samples,
        audio.sample_rate,
        frontend.config.sample_rate,
    )
    .map_err(|e| Error::format(path, e.to_string()))?;
    let feats = frontend
        .features(&x)
        .map_err(|e| Error::format(path, e.to_string()))?;
    let frames = feats.size()[0];
    if config.output_length(frames) < 1 {
        return Err(Error::format(
            path,
            format!(
                "{frames} feature frames are too few for the model's subsampling (×{})",
                config.time_reduction()
            ),
        ));
    }
    Ok(feats)
}

/// Logits `(N, T', V)` → per utterance its rows `0..T'_n` of `log_softmax` (f32) as f64.
pub fn log_prob_rows(logits: &Tensor, out_lens: &[i64]) -> Result<Vec<Vec<Vec<f64>>>> {
    let lp = logits
        .f_log_softmax(-1, Kind::Float)?
        .to_device(Device::Cpu)
        .to_kind(Kind::Double);
    let mut out = Vec::with_capacity(out_lens.len());
    for (i, &len) in out_lens.iter().enumerate() {
        let rows = lp.get(i as i64).narrow(0, 0, len);
        let v = rows.size()[1] as usize;
        let flat = Vec::<f64>::try_from(rows.contiguous().view([-1]))?;
        out.push(flat.chunks(v).map(<[f64]>::to_vec).collect());
    }
    Ok(out)
}

/// A loaded model with its front end.
#[derive(Debug)]
pub struct Transcriber {
    /// The acoustic model (eval mode).
    pub model: CtcModel,
    /// Its feature extractor.
    pub frontend: Frontend,
}

impl Transcriber {
    /// Reads a ctc model directory.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        Ok(Self::new(CtcModel::load_dir(dir, device)?))
    }

    /// Wraps a model (switched to eval mode).
    pub fn new(mut model: CtcModel) -> Self {
        use crate::nn::module::ModuleExt;
        model.eval();
        Self {
            frontend: Frontend::new(&model.config.features),
            model,
        }
    }

    /// Runs the encoder on rnnkit's fused kernel (`on`) or on libtorch's own kernels (the
    /// default): fused is faster (a padded batch's padding is skipped), and its
    /// log-probabilities agree with PyTorch's to about 1e-6 rather than bit for bit
    /// (`tests/ctc_parity.rs` states the tolerance it checks).
    pub fn set_fused_inference(&mut self, on: bool) {
        self.model.encoder.set_fused_inference(on);
    }

    /// Features of mono samples `x` at `rate` Hz (resampled to the model's rate).
    pub fn features(&self, x: &Tensor, rate: i64) -> Result<Tensor> {
        let x = resample(x, rate, self.frontend.config.sample_rate)?;
        self.frontend.features(&x)
    }

    /// Features of a WAV file of at most `max_seconds`; errors name the file.
    pub fn file_features(&self, path: &Path, max_seconds: f64) -> Result<Tensor> {
        self.audio_features(read_wav(path, max_seconds)?, path)
    }

    /// Features of decoded audio; errors name `path`.
    pub fn audio_features(&self, audio: super::audio::Audio, path: &Path) -> Result<Tensor> {
        features_of(&self.frontend, &self.model.config, audio, path)
    }

    /// Log-probabilities `(T'_n, V)` as f64 rows, one list per utterance, for features
    /// `(T_n, n_mels)` run as one batch.
    pub fn log_probs(&self, feats: &[Tensor]) -> Result<Vec<Vec<Vec<f64>>>> {
        if feats.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let device = self.model.output.weight.device();
        let (batch, lengths) = pad_features(&feats.iter().collect::<Vec<_>>());
        let (logits, out_lens) = self.model.forward(&batch.to_device(device), &lengths)?;
        log_prob_rows(&logits, &out_lens)
    }

    /// Decodes one utterance's log-probabilities.
    pub fn decode(&self, lp: &[Vec<f64>], opts: &DecodeOptions) -> Transcript {
        let cfg = &self.model.config;
        let h: Hypothesis = if opts.beam == 0 {
            decode::greedy(lp)
        } else {
            decode::prefix_beam_search(lp, opts.beam, 1, opts.words.as_deref(), cfg.space_class())
                .swap_remove(0)
        };
        self.transcript_of(&h)
    }

    /// The text, score and timed words of a decoded hypothesis.
    pub fn transcript_of(&self, h: &Hypothesis) -> Transcript {
        let cfg = &self.model.config;
        Transcript {
            text: decode::text(&h.tokens, &cfg.alphabet),
            score: h.score,
            words: decode::words(h, &cfg.alphabet, cfg.seconds_per_step()),
        }
    }

    /// Transcribes features run as one batch.
    pub fn transcribe_features(
        &self,
        feats: &[Tensor],
        opts: &DecodeOptions,
    ) -> Result<Vec<Transcript>> {
        Ok(self
            .log_probs(feats)?
            .iter()
            .map(|lp| self.decode(lp, opts))
            .collect())
    }

    /// Transcribes a WAV file of any length in pieces of `chunk_seconds` (bounded memory): each
    /// piece exactly as [`Transcriber::transcribe_features`] transcribes a file holding only that
    /// piece, alone in its batch; the text is the pieces' non-empty texts joined by a space, the
    /// score their sum (in order), the words' times shifted by each piece's start. A word
    /// spoken across a boundary comes out cut in two, and a bidirectional model does not see
    /// past a boundary.
    pub fn transcribe_chunked(
        &self,
        path: &Path,
        chunk_seconds: f64,
        opts: &DecodeOptions,
    ) -> Result<Transcript> {
        let mut all = Transcript {
            text: String::new(),
            score: 0.0,
            words: Vec::new(),
        };
        read_wav_chunked(path, chunk_seconds, |audio, start| {
            let offset = start as f64 / audio.sample_rate as f64;
            let feats = self.audio_features(audio, path)?;
            let t = self.transcribe_features(&[feats], opts)?.swap_remove(0);
            if !t.text.is_empty() {
                if !all.text.is_empty() {
                    all.text.push(' ');
                }
                all.text.push_str(&t.text);
            }
            all.score += t.score;
            all.words.extend(t.words.into_iter().map(|w| Word {
                start: w.start + offset,
                end: w.end + offset,
                ..w
            }));
            Ok(())
        })?;
        Ok(all)
    }

    /// Transcribes a WAV file of any length as a stream ([`Transcriber::stream`]): read and
    /// pushed in pieces of `piece_seconds`, the encoder's state carried across them, so the
    /// result is the whole file's (see [`super::stream`] for how exactly); memory for one piece.
    /// Errors name `path`.
    pub fn transcribe_streamed(
        &self,
        path: &Path,
        piece_seconds: f64,
        opts: &DecodeOptions,
    ) -> Result<Transcript> {
        let named = |e: Error| match e {
            Error::Invalid(m) => Error::format(path, m),
            e => e,
        };
        let rate = super::audio::wav_info(path)?.sample_rate as i64;
        let mut stream = self.stream(rate, opts).map_err(named)?;
        read_wav_chunked(path, piece_seconds, |audio, _| {
            stream.push(&audio.samples).map(drop).map_err(named)
        })?;
        stream.end().map_err(named)?;
        Ok(stream.transcript())
    }

    /// Reads a word list (one word per line, blank lines skipped) spelled in the model's
    /// alphabet; a character outside it is an error naming the line.
    pub fn read_word_list(&self, path: &Path) -> Result<WordList> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let alphabet = &self.model.config.alphabet;
        let mut words = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let w = line.trim();
            if w.is_empty() {
                continue;
            }
            let mut ids = Vec::new();
            for ch in w.chars() {
                let s = ch.to_string();
                match alphabet.iter().position(|a| *a == s) {
                    Some(k) if s != " " => ids.push(k + 1),
                    _ => {
                        return Err(Error::format(
                            path,
                            format!(
                                "line {}: {w:?} has {ch:?}, which is not in the model's alphabet",
                                i + 1
                            ),
                        ))
                    }
                }
            }
            words.push(ids);
        }
        if words.is_empty() {
            return Err(Error::format(path, "the word list holds no words"));
        }
        Ok(WordList::new(&words))
    }
}
