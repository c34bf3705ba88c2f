//! The `seq2seq` family: an RNN encoder-decoder with attention (Luong et al. 2015, with
//! Bahdanau's additive score as an option), the same model as `Seq2Seq` in
//! `scripts/rnnkit_seq2seq.py`, operation for operation.
//!
//! ```text
//! src (N, S) int64, src_len (N,), tgt_in (N, T) = [bos, y_1 .. y_{T-1}]; M = encoder output
//! width (D * H_out), H = decoder hidden size, V = tgt_vocab_size
//! memory, (h_n[, c_n]) = encoder(embedding(src))   packed by src_len; memory (N, S, M), 0 past S_n
//! bridge linear:  h_0 = tanh(bridge.h([h_n of the top layer, both directions]))   (N, layers·H)
//!                 viewed (N, layers, H), transposed → (layers, N, H)
//!                 c_0 likewise from c_n with bridge.c (LSTM encoder and decoder), else zeros
//! step t:  x_t = tgt_embedding(y_{t-1}) [; a_{t-1}]      (input feeding; a_0 = 0)
//!          s_t, state = decoder(x_t, state)             one step, s_t (N, H)
//!          a_t, α_t = attention(s_t, memory, mask)      crate::nn::global_attention
//!          logits_t = output(dropout(a_t))              (N, V)
//! loss = cross_entropy(logits (N·T, V), tgt_out (N·T), ignore_index = padding_idx,
//!        label_smoothing), the mean over non-padding target tokens
//! ```
//! state_dict keys (each prefix renameable in `prefixes`): `embedding.`, `tgt_embedding.`,
//! `encoder.`, `bridge.h.`, `bridge.c.`, `decoder.`, `attention.`, `output.`. With
//! `share_embeddings`, `tgt_embedding.weight` is `embedding.weight`; with `tie_output`,
//! `output.weight` is `tgt_embedding.weight` (both keys are saved, as torch does).
//! Decoding: [`decode`]; text in and out: [`translate`].

pub mod config;
pub mod decode;
pub mod translate;

pub use config::{AttentionKind, Bridge, DecoderConfig, Seq2SeqConfig};

use super::classifier::{step_mask, Backbone};
use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::dropout::Dropout;
use crate::nn::embedding::Embedding;
use crate::nn::global_attention::GlobalAttention;
use crate::nn::linear::Linear;
use crate::nn::module::Module;
use crate::nn::rnn::fused::PackedLinear;
use crate::nn::rnn::{Mode, RnnBase, RnnConfig, RnnState};
use tch::{Device, Kind, Reduction, Tensor};

/// The encoder-decoder (see the module doc).
#[derive(Debug)]
pub struct Seq2Seq {
    /// The `config.json` this model was built from (`seq2seq` is present).
    pub config: ModelConfig,
    /// The source embedding and the encoder.
    pub backbone: Backbone,
    /// `tgt_embedding`: target ids → vectors (the source embedding's weight when shared).
    pub tgt_embedding: Embedding,
    /// `bridge.h`: `Linear(M, layers·H)`, with `bridge: "linear"`.
    pub bridge_h: Option<Linear>,
    /// `bridge.c`: `Linear(D·H_enc, layers·H)`, when encoder and decoder are LSTMs.
    pub bridge_c: Option<Linear>,
    /// `decoder`: unidirectional recurrent layers, run one step at a time, batch-first.
    pub decoder: RnnBase,
    /// `attention`: scores, context and the attentional state.
    pub attention: GlobalAttention,
    /// Dropout before the output projection (`config.dropout`).
    pub dropout: Dropout,
    /// `output`: attentional state → target logits.
    pub output: Linear,
    /// `output` packed for rnnkit's own product, while [`Seq2Seq::set_fused_inference`] is on.
    packed_output: Option<PackedLinear>,
}

/// The encoder's result, as every decoder step reads it.
pub struct Memory {
    /// `(N, S, M)`, zero past each source length.
    pub memory: Tensor,
    /// [`GlobalAttention::keys`] of the memory.
    pub keys: Tensor,
    /// `(N, S)` bool, true at real source steps.
    pub mask: Tensor,
}

/// The decoder's recurrent state and the attentional state fed into the next step.
pub struct DecoderState {
    /// `(layers, N, H)` (and `c` for an LSTM decoder).
    pub rnn: RnnState,
    /// `a_{t-1}` `(N, H)`: zeros before the first step.
    pub feed: Tensor,
}

impl DecoderState {
    /// The rows `index` (int64 on the state's device), in that order: a beam's reordering.
    pub fn select(&self, index: &Tensor) -> Result<Self> {
        let rnn = RnnState::new(
            self.rnn.h.f_index_select(1, index)?,
            match &self.rnn.c {
                Some(c) => Some(c.f_index_select(1, index)?),
                None => None,
            },
        );
        Ok(Self {
            rnn,
            feed: self.feed.f_index_select(0, index)?,
        })
    }
}

impl Memory {
    /// The rows `index`, in that order (each sentence repeated for its beam).
    pub fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            memory: self.memory.f_index_select(0, index)?,
            keys: self.keys.f_index_select(0, index)?,
            mask: self.mask.f_index_select(0, index)?,
        })
    }
}

/// One decoder step's outputs.
pub struct Step {
    /// `(N, V)`.
    pub logits: Tensor,
    /// Attention weights over the source `(N, S)`.
    pub alpha: Tensor,
}

impl Seq2Seq {
    /// The `seq2seq` object of `config` (present once the config validated).
    pub fn s2s(&self) -> &Seq2SeqConfig {
        self.config
            .seq2seq
            .as_ref()
            .expect("validated seq2seq config")
    }

    /// A freshly initialised model (PyTorch's initialisation for every part, in the order
    /// `rnnkit_seq2seq.Seq2Seq` creates them).
    pub fn new(config: ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        config.validate()?;
        let s = config
            .seq2seq
            .clone()
            .ok_or_else(|| Error::config("family seq2seq needs a \"seq2seq\" object"))?;
        let backbone = Backbone::new(&config, kind, device)?;
        let tgt_dim = s.tgt_dim(config.embedding_dim);
        let tgt_embedding = if s.share_embeddings {
            backbone.embedding.shared()
        } else {
            Embedding::new(s.tgt_vocab_size, tgt_dim, config.padding_idx, kind, device)?
        };
        let enc = &config.encoder;
        let (m, h, layers) = (
            config.encoder_output_size(),
            s.decoder.hidden_size,
            s.decoder.num_layers,
        );
        let (bridge_h, bridge_c) = match s.bridge {
            Bridge::None => (None, None),
            Bridge::Linear => {
                let bh = Linear::new(m, layers * h, true, kind, device)?;
                let bc = if enc.mode == Mode::Lstm && s.decoder.mode == Mode::Lstm {
                    let width = enc.rnn.hidden_size * enc.rnn.num_directions();
                    Some(Linear::new(width, layers * h, true, kind, device)?)
                } else {
                    None
                };
                (Some(bh), bc)
            }
        };
        let d = &s.decoder;
        let rnn = RnnConfig::new(s.decoder_input_size(config.embedding_dim), h)
            .num_layers(layers)
            .bias(d.bias)
            .dropout(d.dropout)
            .batch_first(true);
        let decoder = RnnBase::new(d.mode, rnn, kind, device)?;
        let attention = GlobalAttention::new(s.attention, h, m, s.score_size(), kind, device)?;
        let dropout = Dropout::new(config.dropout)?;
        let mut output = Linear::new(h, s.tgt_vocab_size, true, kind, device)?;
        if s.tie_output {
            output.weight = tgt_embedding.weight.shallow_clone();
        }
        let mut model = Self {
            config,
            backbone,
            tgt_embedding,
            bridge_h,
            bridge_c,
            decoder,
            attention,
            dropout,
            output,
            packed_output: None,
        };
        model.set_training(true);
        Ok(model)
    }

    /// Inference on rnnkit's fused kernels (eval mode, f32 on the CPU; training and other
    /// devices keep libtorch's): the encoder and decoder on [`RnnBase::set_fused_inference`]'s
    /// kernel where it is faster, the output layer on [`PackedLinear`] (W packed now; loading
    /// or moving the weights drops it: call this again after). Faster; the logits are then no
    /// longer PyTorch's bits (tests/seq2seq_parity.rs bounds the difference and compares the
    /// decoded tokens). `false` returns to libtorch's kernels, the default.
    pub fn set_fused_inference(&mut self, on: bool) -> Result<()> {
        self.backbone.encoder.set_fused_inference(on);
        self.decoder.set_fused_inference(on);
        self.packed_output = if on {
            PackedLinear::new(&self.output.weight, self.output.bias.as_ref())?
        } else {
            None
        };
        Ok(())
    }

    /// Runs the encoder over `src` (N, S) with `src_len` (N values in 1..=S) and returns the
    /// memory and the decoder's initial state.
    pub fn encode(&self, src: &Tensor, src_len: &[i64]) -> Result<(Memory, DecoderState)> {
        if src.dim() != 2 {
            return Err(Error::shape("seq2seq source ids", "(N, S)", &src.size()));
        }
        let (n, steps) = (src.size()[0], src.size()[1]);
        let x = self.backbone.embedding.forward(src)?;
        let (memory, state) = self.backbone.encoder.forward_padded(&x, src_len, None)?;
        let mask = step_mask(src_len, steps, memory.device());
        let keys = self.attention.keys(&memory)?;
        let s = self.s2s();
        let (h, layers) = (s.decoder.hidden_size, s.decoder.num_layers);
        let bidirectional = self.config.encoder.rnn.bidirectional;
        let spread = |x: Tensor| -> Result<Tensor> {
            Ok(x.f_view([n, layers, h])?
                .f_transpose(0, 1)?
                .f_contiguous()?)
        };
        let opts = (memory.kind(), memory.device());
        let zeros = || memory.f_new_zeros([layers, n, h], opts);
        let lstm = s.decoder.mode == Mode::Lstm;
        let rnn = match &self.bridge_h {
            None => RnnState::new(zeros()?, if lstm { Some(zeros()?) } else { None }),
            Some(bh) => {
                let h0 = spread(bh.forward(&last_state(&state.h, bidirectional))?.f_tanh()?)?;
                let c0 = match (&self.bridge_c, &state.c) {
                    (Some(bc), Some(c_n)) => Some(spread(
                        bc.forward(&last_state(c_n, bidirectional))?.f_tanh()?,
                    )?),
                    _ if lstm => Some(zeros()?),
                    _ => None,
                };
                RnnState::new(h0, c0)
            }
        };
        let feed = memory.f_new_zeros([n, h], opts)?;
        Ok((Memory { memory, keys, mask }, DecoderState { rnn, feed }))
    }

    /// One decoder step from the previous target ids `y_prev` (N,).
    pub fn step(
        &self,
        y_prev: &Tensor,
        state: &DecoderState,
        mem: &Memory,
    ) -> Result<(Step, DecoderState)> {
        let mut x = self.tgt_embedding.forward(y_prev)?;
        if self.s2s().input_feeding {
            x = Tensor::f_cat(&[&x, &state.feed], 1)?;
        }
        let (out, rnn) = self.decoder.forward(&x.f_unsqueeze(1)?, Some(&state.rnn))?;
        let att =
            self.attention
                .forward(&out.f_squeeze_dim(1)?, &mem.memory, &mem.keys, &mem.mask)?;
        let logits = match &self.packed_output {
            Some(p)
                if !self.is_training()
                    && !crate::nn::inference::grad_enabled()
                    && att.state.device() == Device::Cpu =>
            {
                p.forward(&att.state)?
            }
            _ => self.output.forward(&self.dropout.forward(&att.state)?)?,
        };
        Ok((
            Step {
                logits,
                alpha: att.alpha,
            },
            DecoderState {
                rnn,
                feed: att.state,
            },
        ))
    }

    /// Teacher forcing: logits `(N, T, V)` for `tgt_in` (N, T).
    pub fn forward(&self, src: &Tensor, src_len: &[i64], tgt_in: &Tensor) -> Result<Tensor> {
        let ts = tgt_in.size();
        if ts.len() != 2 || ts[0] != src.size().first().copied().unwrap_or(-1) {
            return Err(Error::invalid(format!(
                "seq2seq: target ids {ts:?} must be (N, T) with the N of the source ids {:?}",
                src.size()
            )));
        }
        let (mem, mut state) = self.encode(src, src_len)?;
        let mut logits = Vec::with_capacity(ts[1] as usize);
        for t in 0..ts[1] {
            let (step, next) = self.step(&tgt_in.f_select(1, t)?, &state, &mem)?;
            logits.push(step.logits);
            state = next;
        }
        Ok(Tensor::f_stack(&logits, 1)?)
    }

    /// The attention weights `(T, S)` of one sentence `src` (1, S) of length `src_len` while the
    /// decoder reads `tokens` (an output, EOS included): row t is α when `tokens[t]` was produced.
    pub fn attention(&self, src: &Tensor, src_len: i64, tokens: &[i64]) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let (mem, mut state) = self.encode(src, &[src_len])?;
        let device = src.device();
        let mut prev = self.s2s().bos_id;
        let mut rows = Vec::with_capacity(tokens.len());
        for &tok in tokens {
            let y = Tensor::from_slice(&[prev]).to_device(device);
            let (step, next) = self.step(&y, &state, &mem)?;
            rows.push(step.alpha.f_squeeze_dim(0)?);
            state = next;
            prev = tok;
        }
        if rows.is_empty() {
            return Ok(Tensor::zeros(
                [0, src.size()[1]],
                (tch::Kind::Float, device),
            ));
        }
        Ok(Tensor::f_stack(&rows, 0)?)
    }

    /// Cross-entropy of `logits` (N, T, V) against `tgt_out` (N, T), padding ignored, with
    /// label smoothing; the mean over the non-padding target tokens.
    pub fn loss(&self, logits: &Tensor, tgt_out: &Tensor, label_smoothing: f64) -> Result<Tensor> {
        let v = self.s2s().tgt_vocab_size;
        let ignore = self.config.padding_idx.unwrap_or(-100);
        Ok(logits.f_reshape([-1, v])?.f_cross_entropy_loss(
            &tgt_out.f_reshape([-1])?,
            None::<Tensor>,
            Reduction::Mean,
            ignore,
            label_smoothing,
        )?)
    }
}

/// The final state of the top layer, both directions concatenated: `(N, D·H)`.
fn last_state(state: &Tensor, bidirectional: bool) -> Tensor {
    let n = state.size()[0];
    if bidirectional {
        Tensor::cat(&[state.get(n - 2), state.get(n - 1)], 1)
    } else {
        state.get(n - 1)
    }
}

impl Module for Seq2Seq {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        self.backbone.embedding.visit(&p("embedding"), f);
        self.tgt_embedding.visit(&p("tgt_embedding"), f);
        self.backbone.encoder.visit(&p("encoder"), f);
        if let Some(b) = &self.bridge_h {
            b.visit(&format!("{}h.", p("bridge")), f);
        }
        if let Some(b) = &self.bridge_c {
            b.visit(&format!("{}c.", p("bridge")), f);
        }
        self.decoder.visit(&p("decoder"), f);
        self.attention.visit(&p("attention"), f);
        self.output.visit(&p("output"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        let (emb, tgt, enc, bridge) = (
            p("embedding"),
            p("tgt_embedding"),
            p("encoder"),
            p("bridge"),
        );
        let (dec, att, out) = (p("decoder"), p("attention"), p("output"));
        let (share, tie) = (self.s2s().share_embeddings, self.s2s().tie_output);
        self.backbone.embedding.visit_mut(&emb, f);
        self.tgt_embedding.visit_mut(&tgt, f);
        self.backbone.encoder.visit_mut(&enc, f);
        if let Some(b) = &mut self.bridge_h {
            b.visit_mut(&format!("{bridge}h."), f);
        }
        if let Some(b) = &mut self.bridge_c {
            b.visit_mut(&format!("{bridge}c."), f);
        }
        self.decoder.visit_mut(&dec, f);
        self.attention.visit_mut(&att, f);
        self.output.visit_mut(&out, f);
        // The packed output is a snapshot of weights that may have just changed.
        self.packed_output = None;
        // A dtype or device move replaced each handle on its own: tie them again.
        if share {
            self.tgt_embedding.weight = self.backbone.embedding.weight.shallow_clone();
        }
        if tie {
            self.output.weight = self.tgt_embedding.weight.shallow_clone();
        }
    }
    fn set_training(&mut self, training: bool) {
        self.backbone.encoder.set_training(training);
        self.decoder.set_training(training);
        self.dropout.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.dropout.is_training()
    }
}
