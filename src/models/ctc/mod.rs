//! The `ctc` family: a recurrent acoustic model trained with connectionist temporal
//! classification (Graves et al. 2006), the same model as `CtcModel` in `scripts/rnnkit_ctc.py`,
//! operation for operation.
//!
//! ```text
//! wav → mono → resample to sample_rate → log-mel x (T, M)             [audio], [features]
//! batch: x (N, T, M) zero-padded, lengths (N,)
//! subsampling (optional), layer k = 0..K−1:
//!     z = relu(conv_k(z (N, C_k, T_k)))   Conv1d(kernel, stride, padding = kernel / 2)
//!     T_{k+1} = ⌊(T_k + 2·(kernel/2) − kernel) / stride⌋ + 1, per row from its own length;
//!     z[n, :, t] = 0 for t ≥ T_{k+1, n}      (padding never leaks into the next layer)
//! encoder: RNN/GRU/LSTM (bidirectional, proj_size allowed), packed by the lengths, batch-first
//!     h (N, T', D·H_out), 0 past each length
//! logits = output(dropout(h))              (N, T', 1 + |alphabet|), class 0 = blank
//! loss   = ctc_loss(log_softmax(logits) (T', N, V), targets, T'_n, S_n, blank 0,
//!                   reduction mean, zero_infinity)          mean over the batch of loss_n / S_n
//! ```
//! state_dict keys (each prefix renameable in `prefixes`): `subsampling.{k}.weight|bias`,
//! `encoder.` (torch.nn.LSTM's), `output.weight|bias`.
//! Audio: [`audio`]; features: [`features`]; decoding: [`decode`]; files in, text out:
//! [`transcribe`]; audio as it arrives: [`stream`].

pub mod audio;
pub mod config;
pub mod decode;
pub mod features;
pub mod stream;
pub mod transcribe;

pub use config::{CtcConfig, FeatureConfig, Normalize, SubsamplingConfig};

use crate::checkpoint::ReadOptions;
use crate::error::{Error, Result};
use crate::nn::conv::Conv1d;
use crate::nn::dropout::Dropout;
use crate::nn::linear::Linear;
use crate::nn::module::{Module, ModuleExt};
use crate::nn::rnn::RnnBase;
use std::path::Path;
use tch::{Device, Kind, Reduction, Tensor};

/// The acoustic model (see the module doc).
#[derive(Debug)]
pub struct CtcModel {
    /// The `config.json` it was built from.
    pub config: CtcConfig,
    /// `subsampling.{k}`: the convolutions (empty without subsampling).
    pub subsampling: Vec<Conv1d>,
    /// `encoder`: the recurrent layers, run batch-first.
    pub encoder: RnnBase,
    /// Dropout before the output layer.
    pub dropout: Dropout,
    /// `output`: encoder features → class logits (blank first).
    pub output: Linear,
}

impl CtcModel {
    /// A freshly initialised model of `config` (PyTorch's initialisation of each layer).
    pub fn new(config: CtcConfig, kind: Kind, device: Device) -> Result<Self> {
        config.validate()?;
        let mut subsampling = Vec::new();
        if let Some(s) = &config.subsampling {
            for k in 0..s.num_layers {
                let input = if k == 0 {
                    config.features.n_mels
                } else {
                    s.channels
                };
                subsampling.push(Conv1d::new(
                    input,
                    s.channels,
                    s.kernel_size,
                    s.stride,
                    s.kernel_size / 2,
                    true,
                    kind,
                    device,
                )?);
            }
        }
        let rnn = config.encoder.rnn.clone().batch_first(true);
        let encoder = RnnBase::new(config.encoder.mode, rnn, kind, device)?;
        let width = encoder.config().output_hidden_size() * encoder.config().num_directions();
        let output = Linear::new(width, config.num_classes(), true, kind, device)?;
        Ok(Self {
            dropout: Dropout::new(config.dropout)?,
            config,
            subsampling,
            encoder,
            output,
        })
    }

    /// Reads `dir/config.json` and the weights (`model.safetensors`, else `model.pth`), strictly.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self> {
        Self::load_dir_with(dir, device, &ReadOptions::default())
    }

    /// [`CtcModel::load_dir`] with other reading options.
    pub fn load_dir_with(dir: &Path, device: Device, opts: &ReadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config = CtcConfig::read(&cfg_path)?;
        let mut model = Self::new(config, Kind::Float, device).map_err(|e| match e {
            Error::Config(m) => Error::format(&cfg_path, m),
            e => e,
        })?;
        let sd = super::load_weights_with(dir, opts)?;
        let file = sd
            .source()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
        super::check_finite(&sd, &file)?;
        model.load_state_dict(&sd)?;
        model.eval();
        Ok(model)
    }

    /// Writes `dir/config.json`, `model.safetensors` and optionally `model.pth`, each atomically.
    pub fn save_dir(&self, dir: &Path, save_pth: bool) -> Result<()> {
        use crate::checkpoint::atomic::{write_atomic, write_err};
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&self.config).expect("config serialises");
        write_atomic(&cfg_path, |w| {
            w.write_all(json.as_bytes()).map_err(write_err(&cfg_path))
        })?;
        let sd = self.state_dict();
        let meta = std::collections::BTreeMap::from([("format".to_string(), "pt".to_string())]);
        crate::checkpoint::safetensors::save_state_dict(dir.join("model.safetensors"), &sd, &meta)?;
        if save_pth {
            crate::checkpoint::save_pth_state_dict(&dir.join("model.pth"), &sd)?;
        }
        Ok(())
    }

    /// Encoder steps for `frames` feature frames (0 when subsampling leaves nothing).
    pub fn output_length(&self, frames: i64) -> i64 {
        self.config.output_length(frames)
    }

    /// Features `(N, T, n_mels)` zero-padded with per-row `lengths` → logits `(N, T', V)` and
    /// the output lengths `T'_n`.
    pub fn forward(&self, x: &Tensor, lengths: &[i64]) -> Result<(Tensor, Vec<i64>)> {
        let size = x.size();
        let m = self.config.features.n_mels;
        if size.len() != 3 || size[2] != m || size[0] != lengths.len() as i64 {
            return Err(Error::shape(
                "ctc model features",
                format!("(N, T, {m}) with N = {} lengths", lengths.len()),
                &size,
            ));
        }
        if let Some((i, &l)) = lengths
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 1 || l > size[1])
        {
            return Err(Error::invalid(format!(
                "ctc model: lengths[{i}] = {l} is outside 1..={} (features {size:?})",
                size[1]
            )));
        }
        let mut lens = lengths.to_vec();
        let mut z = x.shallow_clone();
        if !self.subsampling.is_empty() {
            z = z.transpose(1, 2);
            for conv in &self.subsampling {
                z = conv.forward(&z)?.f_relu()?;
                for l in &mut lens {
                    *l = conv.out_len(*l);
                }
                let t = z.size()[2];
                let steps = Tensor::arange(t, (Kind::Int64, z.device())).unsqueeze(0);
                let lens_t = Tensor::from_slice(&lens).to_device(z.device()).unsqueeze(1);
                let pad = steps.f_ge_tensor(&lens_t)?.unsqueeze(1);
                z = z.f_masked_fill(&pad, 0.0)?;
            }
            z = z.transpose(1, 2);
        }
        if let Some((i, _)) = lens.iter().enumerate().find(|(_, &l)| l < 1) {
            return Err(Error::invalid(format!(
                "ctc model: utterance {i} has {} feature frames, which subsampling reduces to none",
                lengths[i]
            )));
        }
        let (h, _) = self.encoder.forward_padded(&z, &lens, None)?;
        let logits = self.output.forward(&self.dropout.forward(&h)?)?;
        Ok((logits, lens))
    }

    /// CTC loss of logits `(N, T', V)` against `targets` (class ids 1.., one list per row):
    /// `ctc_loss(log_softmax(logits).transpose(0, 1), …, blank=0, reduction='mean',
    /// zero_infinity=True)`, as `torch.nn.CTCLoss(zero_infinity=True)` computes it.
    pub fn loss(logits: &Tensor, out_lengths: &[i64], targets: &[Vec<i64>]) -> Result<Tensor> {
        if targets.len() != out_lengths.len() {
            return Err(Error::invalid(format!(
                "ctc loss: {} targets for {} utterances",
                targets.len(),
                out_lengths.len()
            )));
        }
        let flat: Vec<i64> = targets.iter().flatten().copied().collect();
        let target_lengths: Vec<i64> = targets.iter().map(|t| t.len() as i64).collect();
        let log_probs = logits.f_log_softmax(-1, Kind::Float)?.transpose(0, 1);
        let targets = Tensor::from_slice(&flat).to_device(logits.device());
        Ok(Tensor::f_ctc_loss_tensor(
            &log_probs,
            &targets,
            &Tensor::from_slice(out_lengths),
            &Tensor::from_slice(&target_lengths),
            0,
            Reduction::Mean,
            true,
        )?)
    }
}

impl Module for CtcModel {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        self.subsampling.visit(&p("subsampling"), f);
        self.encoder.visit(&p("encoder"), f);
        self.output.visit(&p("output"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        let (s, e, o) = (p("subsampling"), p("encoder"), p("output"));
        self.subsampling.visit_mut(&s, f);
        self.encoder.visit_mut(&e, f);
        self.output.visit_mut(&o, f);
    }
    fn set_training(&mut self, training: bool) {
        self.subsampling.set_training(training);
        self.encoder.set_training(training);
        self.dropout.set_training(training);
        self.output.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.dropout.is_training()
    }
}
