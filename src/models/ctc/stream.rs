//! Streaming transcription: audio pushed in pieces of any size through a unidirectional ctc
//! model, each stage handing on a step as soon as every input it depends on has arrived, the
//! encoder carrying its recurrent state from piece to piece.
//!
//! ```text
//! stage       step t needs (input index)                     padding, as for the whole file
//! resample    x[t·o − w, t·o + o + w)   → n samples            w zeros before, w + o after
//! features    x[t·hop − n_fft/2, t·hop + n_fft/2)  → 1 frame   reflect n_fft/2 at both ends
//! conv k      z[t·s − p, t·s − p + kernel)         → 1 step    p = kernel/2 zeros at both ends
//! encoder     z_t and the state after step t − 1              (h, c) carried
//! output      log_softmax(output(h_t)) → greedy decoding at once; beam search keeps the rows
//! ```
//! The padding at the end is added by [`CtcStream::end`], when the length is known. Every step
//! is computed from the same inputs as the whole file's, by the same operations, but on fewer
//! rows at a time, and libtorch's matrix products (the mel filterbank, the convolutions, the
//! encoder's input projection, the output layer) may round a row differently with the number
//! of rows in the call: log-probabilities agree with the whole file's to about 1e-6, not bit
//! for bit, and texts and word times are the same unless two classes tie that closely
//! (`tests/ctc_stream.rs` states the tolerance it checks). Utterance normalisation needs the
//! whole recording and a bidirectional encoder reads it from its end: both are refused.
//! Memory: what the next step needs (a window of samples or frames, the state); greedy keeps
//! its tokens, beam search the log-probabilities (8·V bytes per step).

use super::audio::Resampler;
use super::config::Normalize;
use super::decode::Greedy;
use super::transcribe::{DecodeOptions, Transcriber, Transcript};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Input arriving in pieces along its last dimension, cut into windows of `span` steps every
/// `stride` steps, as a convolution over the whole input sees them.
struct Windows {
    span: i64,
    stride: i64,
    held: Option<Tensor>,
    /// Inputs still to drop before the next window starts (when `stride > span`).
    skip: i64,
}

impl Windows {
    fn new(span: i64, stride: i64, held: Option<Tensor>) -> Self {
        Self {
            span,
            stride,
            held,
            skip: 0,
        }
    }

    /// Appends `x` (…, L); returns the input of every window completed by it,
    /// (…, (k − 1)·stride + span) for k ≥ 1 windows, and keeps what the next window needs.
    fn push(&mut self, x: &Tensor) -> Result<Option<Tensor>> {
        let dim = x.dim() as i64 - 1;
        let mut x = x.shallow_clone();
        if self.skip > 0 {
            let l = x.size()[dim as usize];
            let drop = self.skip.min(l);
            self.skip -= drop;
            x = x.narrow(dim, drop, l - drop);
        }
        let all = match self.held.take() {
            Some(h) => Tensor::f_cat(&[h, x], dim)?,
            None => x,
        };
        let l = all.size()[dim as usize];
        if l < self.span {
            self.held = Some(all);
            return Ok(None);
        }
        let k = (l - self.span) / self.stride + 1;
        let next = k * self.stride;
        self.skip = (next - l).max(0);
        let kept = (l - next).max(0);
        self.held = Some(all.narrow(dim, next.min(l), kept).copy());
        Ok(Some(all.narrow(dim, 0, (k - 1) * self.stride + self.span)))
    }
}

/// The zeros a convolution's `padding` adds at one end: `(1, C_in, padding)`.
fn zero_padding(conv: &crate::nn::conv::Conv1d, device: Device) -> Tensor {
    Tensor::zeros(
        [1, conv.weight.size()[1], conv.padding],
        (Kind::Float, device),
    )
}

/// One recording being transcribed as it arrives (see the module doc).
pub struct CtcStream<'a> {
    tr: &'a Transcriber,
    opts: DecodeOptions,
    /// Resampling to the model's rate: the resampler, its windows, the input samples seen and
    /// the resampled samples handed on.
    resample: Option<(Resampler, Windows, i64, i64)>,
    /// Samples at the model's rate until more than n_fft/2 have come (the reflection at the
    /// start needs them), then empty.
    head: Option<Vec<f32>>,
    /// The last n_fft/2 + 1 samples at the model's rate (the reflection at the end).
    tail: Vec<f32>,
    frames: Windows,
    convs: Vec<Windows>,
    encoder: crate::nn::rnn::Stream<'a>,
    greedy: Greedy,
    rows: Option<Vec<Vec<f64>>>,
    steps: i64,
    ended: bool,
}

impl Transcriber {
    /// Starts transcribing a recording at `sample_rate` Hz pushed in pieces; refuses a model
    /// with utterance normalisation or a bidirectional encoder, and a rate it cannot resample.
    pub fn stream(&self, sample_rate: i64, opts: &DecodeOptions) -> Result<CtcStream<'_>> {
        let cfg = &self.model.config;
        if cfg.features.normalize != Normalize::None {
            return Err(Error::invalid(
                "ctc model: streaming needs features.normalize = \"none\" (utterance \
                 normalisation needs the whole recording's mean and deviation); transcribe \
                 whole files or independent pieces (--chunk-seconds) instead",
            ));
        }
        if self.model.encoder.config().bidirectional {
            return Err(Error::invalid(
                "ctc model: streaming needs a unidirectional encoder (this one is \
                 bidirectional: its reverse direction reads the recording from the end); \
                 transcribe whole files or independent pieces (--chunk-seconds) instead",
            ));
        }
        let f = &cfg.features;
        let resample = Resampler::new(sample_rate, f.sample_rate)?.map(|r| {
            let (span, stride) = r.window();
            let zeros = Tensor::zeros([1, r.pads().0], (Kind::Float, Device::Cpu));
            (r, Windows::new(span, stride, Some(zeros)), 0, 0)
        });
        let device = self.model.output.weight.device();
        let convs = self
            .model
            .subsampling
            .iter()
            .map(|c| Windows::new(c.kernel_size(), c.stride, Some(zero_padding(c, device))))
            .collect();
        Ok(CtcStream {
            tr: self,
            opts: opts.clone(),
            resample,
            head: Some(Vec::new()),
            tail: Vec::new(),
            frames: Windows::new(f.n_fft, f.hop_length, None),
            convs,
            encoder: self.model.encoder.stream(None)?,
            greedy: Greedy::default(),
            rows: (opts.beam > 0).then(Vec::new),
            steps: 0,
            ended: false,
        })
    }
}

impl CtcStream<'_> {
    /// Pushes the next mono samples `(L,)` f32 at the stream's rate; returns the
    /// log-probabilities `(V)` of the encoder steps they completed.
    pub fn push(&mut self, samples: &Tensor) -> Result<Vec<Vec<f64>>> {
        if self.ended {
            return Err(Error::invalid("ctc stream: samples pushed after its end"));
        }
        let _guard = tch::no_grad_guard();
        let x = samples.to_kind(Kind::Float).view([1, -1]);
        let y = match &mut self.resample {
            None => x,
            Some((r, windows, seen, passed)) => {
                *seen += x.size()[1];
                match windows.push(&x)? {
                    None => return Ok(Vec::new()),
                    Some(padded) => {
                        let y = r.apply(&padded.view([-1]))?;
                        *passed += y.size()[0];
                        y.view([1, -1])
                    }
                }
            }
        };
        self.samples(y, false)
    }

    /// Ends the recording: adds the padding at its end and returns the log-probabilities of
    /// the last steps. An error if the recording was too short for one step.
    pub fn end(&mut self) -> Result<Vec<Vec<f64>>> {
        if self.ended {
            return Err(Error::invalid("ctc stream: ended twice"));
        }
        let _guard = tch::no_grad_guard();
        let y = match &mut self.resample {
            None => Tensor::zeros([1, 0], (Kind::Float, Device::Cpu)),
            Some((r, windows, seen, passed)) => {
                let zeros = Tensor::zeros([1, r.pads().1], (Kind::Float, Device::Cpu));
                let target = r.output_len(*seen);
                match windows.push(&zeros)? {
                    Some(padded) if target > *passed => {
                        let y = r.apply(&padded.view([-1]))?;
                        let y = y.narrow(0, 0, (target - *passed).min(y.size()[0]));
                        *passed += y.size()[0];
                        y.view([1, -1])
                    }
                    _ => Tensor::zeros([1, 0], (Kind::Float, Device::Cpu)),
                }
            }
        };
        self.ended = true;
        let rows = self.samples(y, true)?;
        if self.steps == 0 {
            return Err(Error::invalid(format!(
                "the recording is too short for the model's feature frames and subsampling (×{})",
                self.tr.model.config.time_reduction()
            )));
        }
        Ok(rows)
    }

    /// The transcript so far (after [`CtcStream::end`]: of the whole recording). Greedy
    /// decoding runs as the steps come; beam search runs here, over every step so far.
    pub fn transcript(&self) -> Transcript {
        match &self.rows {
            Some(rows) => self.tr.decode(rows, &self.opts),
            None => self.tr.transcript_of(&self.greedy.hypothesis),
        }
    }

    /// Samples `(1, L)` at the model's rate → features → [`CtcStream::frames`].
    fn samples(&mut self, y: Tensor, ending: bool) -> Result<Vec<Vec<f64>>> {
        let pad = self.tr.frontend.config.n_fft / 2;
        // Only the samples the reflections need come to host memory.
        let len = y.size()[1];
        let last = len.min(pad + 1);
        self.tail.extend(Vec::<f32>::try_from(
            y.narrow(1, len - last, last).reshape([-1]),
        )?);
        let cut = self.tail.len().saturating_sub(pad as usize + 1);
        self.tail.drain(..cut);
        let mut x = y;
        if let Some(head) = &mut self.head {
            head.extend(Vec::<f32>::try_from(x.reshape([-1]))?);
            if head.len() <= pad as usize {
                if ending {
                    return Err(Error::invalid(format!(
                        "{} samples is too short: more than n_fft / 2 = {pad} samples are needed",
                        head.len()
                    )));
                }
                return Ok(Vec::new());
            }
            // The reflection at the start: x[pad], …, x[1].
            let mut padded: Vec<f32> = head[1..=pad as usize].iter().rev().copied().collect();
            padded.extend_from_slice(head);
            self.head = None;
            x = Tensor::from_slice(&padded).view([1, -1]);
        }
        if ending {
            // The reflection at the end: x[L − 2], …, x[L − 1 − pad].
            let n = self.tail.len();
            let right: Vec<f32> = self.tail[..n - 1].iter().rev().copied().collect();
            x = Tensor::f_cat(&[x, Tensor::from_slice(&right).view([1, -1])], 1)?;
        }
        let feats = match self.frames.push(&x)? {
            Some(padded) => Some(self.tr.frontend.frames(&padded.view([-1]))?),
            None => None,
        };
        self.frames_to_steps(feats, ending)
    }

    /// Feature frames `(k, n_mels)` (None: no new frame) → subsampling → encoder → output.
    fn frames_to_steps(&mut self, feats: Option<Tensor>, ending: bool) -> Result<Vec<Vec<f64>>> {
        let model = &self.tr.model;
        let device = model.output.weight.device();
        let mut z = feats.map(|f| f.to_device(device).transpose(0, 1).unsqueeze(0));
        for (conv, windows) in model.subsampling.iter().zip(&mut self.convs) {
            let mut input = z.take();
            if ending {
                let zeros = zero_padding(conv, device);
                input = Some(match input {
                    Some(x) => Tensor::f_cat(&[x, zeros], 2)?,
                    None => zeros,
                });
            }
            z = match input {
                Some(x) => match windows.push(&x)? {
                    Some(w) => Some(conv.forward_unpadded(&w)?.f_relu()?),
                    None => None,
                },
                None => None,
            };
        }
        let Some(z) = z else {
            return Ok(Vec::new());
        };
        let h = self.encoder.feed(&z.transpose(1, 2))?;
        let logits = model.output.forward(&model.dropout.forward(&h)?)?;
        let lp = logits
            .f_log_softmax(-1, Kind::Float)?
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .squeeze_dim(0);
        let v = lp.size()[1] as usize;
        let flat = Vec::<f64>::try_from(lp.contiguous().view([-1]))?;
        let rows: Vec<Vec<f64>> = flat.chunks(v).map(<[f64]>::to_vec).collect();
        for row in &rows {
            self.greedy.push(row);
        }
        if let Some(kept) = &mut self.rows {
            kept.extend(rows.iter().cloned());
        }
        self.steps += rows.len() as i64;
        Ok(rows)
    }
}
