//! `config.json` of a `ctc` model directory ([`CtcConfig`]): the audio front end
//! ([`FeatureConfig`]), the optional convolutional subsampling, the recurrent encoder
//! (`torch.nn.LSTM`'s arguments), the output alphabet and the state_dict key prefixes.
//! Field names and defaults match `scripts/rnnkit_ctc.py`.

use crate::error::{Error, Result};
use crate::models::config::{check_encoder_object, EncoderConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Per-utterance normalisation of the log-mel features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// `(x − mean) / (std + 1e-5)` per mel band over the utterance's frames (std with correction 0).
    #[default]
    Utterance,
    /// The log-mel values as they are.
    None,
}

/// The audio front end: waveform at `sample_rate` → log-mel frames `(T, n_mels)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// The model's rate in Hz; other rates are resampled to it.
    pub sample_rate: i64,
    /// FFT size (n_freqs = n_fft / 2 + 1).
    pub n_fft: i64,
    /// Hann window length in samples (≤ n_fft; centred in the FFT frame).
    pub win_length: i64,
    /// Samples between frames.
    pub hop_length: i64,
    /// Mel bands.
    pub n_mels: i64,
    /// Lowest filter edge in Hz. Default 0.
    #[serde(default)]
    pub f_min: f64,
    /// Highest filter edge in Hz. Default: sample_rate / 2.
    #[serde(default)]
    pub f_max: Option<f64>,
    /// `log(max(mel, log_floor))`. Default 1e-6.
    #[serde(default = "default_floor")]
    pub log_floor: f64,
    /// Default `utterance`.
    #[serde(default)]
    pub normalize: Normalize,
}

fn default_floor() -> f64 {
    1e-6
}

/// Convolutional subsampling in time: `num_layers` × (Conv1d(kernel_size, stride,
/// padding = kernel_size / 2) → ReLU), the first from n_mels channels, the rest from `channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsamplingConfig {
    /// Convolution layers.
    pub num_layers: i64,
    /// Output channels of every layer (the encoder's input_size).
    pub channels: i64,
    /// Kernel width in frames. Default 3.
    #[serde(default = "three")]
    pub kernel_size: i64,
    /// Stride in frames. Default 2.
    #[serde(default = "two")]
    pub stride: i64,
}

fn three() -> i64 {
    3
}
fn two() -> i64 {
    2
}
fn one() -> u32 {
    1
}
fn default_format() -> String {
    "rnnkit-model".into()
}

/// `config.json` of a `ctc` model directory. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtcConfig {
    /// Always `rnnkit-model`.
    #[serde(default = "default_format")]
    pub format: String,
    /// The schema's version (1).
    #[serde(default = "one")]
    pub format_version: u32,
    /// Always `ctc`.
    pub family: String,
    /// The audio front end.
    pub features: FeatureConfig,
    /// Optional convolutional subsampling before the encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsampling: Option<SubsamplingConfig>,
    /// The recurrent encoder (always run batch-first); `input_size` is n_mels, or the
    /// subsampling's channels.
    pub encoder: EncoderConfig,
    /// Dropout before the output layer.
    #[serde(default)]
    pub dropout: f64,
    /// The output symbols after the blank: class 0 is the blank, class i + 1 is `alphabet[i]`.
    /// Each entry is one character; `" "` separates words.
    pub alphabet: Vec<String>,
    /// Submodule → state_dict key prefix (`subsampling`, `encoder`, `output`).
    #[serde(default)]
    pub prefixes: BTreeMap<String, String>,
}

impl CtcConfig {
    /// The key prefix of a submodule (`"encoder"` → `"encoder."` unless renamed).
    pub fn prefix(&self, part: &str) -> String {
        self.prefixes
            .get(part)
            .cloned()
            .unwrap_or_else(|| format!("{part}."))
    }

    /// Classes of the output layer: the blank plus the alphabet.
    pub fn num_classes(&self) -> i64 {
        self.alphabet.len() as i64 + 1
    }

    /// Time steps of the encoder per feature frame: the product of the strides.
    pub fn time_reduction(&self) -> i64 {
        self.subsampling
            .as_ref()
            .map_or(1, |s| s.stride.pow(s.num_layers as u32))
    }

    /// Encoder steps for `frames` feature frames: each subsampling layer maps T to
    /// `⌊(T + 2·(kernel/2) − kernel) / stride⌋ + 1` (0 when T is shorter than that allows).
    pub fn output_length(&self, frames: i64) -> i64 {
        let Some(s) = &self.subsampling else {
            return frames;
        };
        (0..s.num_layers).fold(frames, |t, _| {
            let span = t + 2 * (s.kernel_size / 2) - s.kernel_size;
            if t < 1 || span < 0 {
                0
            } else {
                span / s.stride + 1
            }
        })
    }

    /// Seconds per encoder step (hop × time_reduction / sample_rate).
    pub fn seconds_per_step(&self) -> f64 {
        (self.features.hop_length * self.time_reduction()) as f64 / self.features.sample_rate as f64
    }

    /// The class of the word separator `" "`, if the alphabet has one.
    pub fn space_class(&self) -> Option<usize> {
        self.alphabet.iter().position(|c| c == " ").map(|i| i + 1)
    }

    /// Reads and validates `config.json`; errors name the file and the key path of the bad value.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::format(path, format!("invalid ctc model config: {msg}"));
        let value: serde_json::Value =
            crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        check_encoder_object(&value).map_err(bad)?;
        let cfg: CtcConfig = crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Checks the sizes against each other.
    pub fn validate(&self) -> Result<()> {
        if self.format != "rnnkit-model" || self.format_version != 1 || self.family != "ctc" {
            return Err(Error::config(format!(
                "format {:?} version {} family {:?} is not rnnkit-model version 1, family ctc",
                self.format, self.format_version, self.family
            )));
        }
        if let Some(k) = self
            .prefixes
            .keys()
            .find(|k| !["subsampling", "encoder", "output"].contains(&k.as_str()))
        {
            return Err(Error::config(format!(
                "prefixes: unknown submodule {k:?} (expected subsampling, encoder or output)"
            )));
        }
        let f = &self.features;
        if !(1..=384_000).contains(&f.sample_rate) {
            return Err(Error::config(format!(
                "features.sample_rate {} is outside 1..=384000 Hz",
                f.sample_rate
            )));
        }
        if f.n_fft < 2 || f.win_length < 1 || f.win_length > f.n_fft || f.hop_length < 1 {
            return Err(Error::config(format!(
                "features: n_fft {} ≥ 2, 1 ≤ win_length {} ≤ n_fft and hop_length {} ≥ 1 are needed",
                f.n_fft, f.win_length, f.hop_length
            )));
        }
        let nyquist = f.sample_rate as f64 / 2.0;
        let f_max = f.f_max.unwrap_or(nyquist);
        if f.n_mels < 1 || !(0.0 <= f.f_min && f.f_min < f_max && f_max <= nyquist) {
            return Err(Error::config(format!(
                "features: n_mels {} ≥ 1 and 0 ≤ f_min {} < f_max {f_max} ≤ sample_rate / 2 are needed",
                f.n_mels, f.f_min
            )));
        }
        if f.log_floor.is_nan() || f.log_floor <= 0.0 {
            return Err(Error::config(format!(
                "features.log_floor must be positive, got {}",
                f.log_floor
            )));
        }
        let input = match &self.subsampling {
            Some(s) => {
                if s.num_layers < 1 || s.channels < 1 || s.kernel_size < 1 || s.stride < 1 {
                    return Err(Error::config(format!(
                        "subsampling: num_layers {}, channels {}, kernel_size {} and stride {} must be positive",
                        s.num_layers, s.channels, s.kernel_size, s.stride
                    )));
                }
                if s.num_layers > 8 {
                    return Err(Error::config(format!(
                        "subsampling.num_layers {} is over 8",
                        s.num_layers
                    )));
                }
                s.channels
            }
            None => f.n_mels,
        };
        if self.encoder.rnn.input_size != input {
            return Err(Error::config(format!(
                "encoder.input_size ({}) must equal {} ({input})",
                self.encoder.rnn.input_size,
                if self.subsampling.is_some() {
                    "subsampling.channels"
                } else {
                    "features.n_mels"
                }
            )));
        }
        if self.alphabet.is_empty() {
            return Err(Error::config("alphabet is empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.alphabet.iter().enumerate() {
            if c.chars().count() != 1 {
                return Err(Error::config(format!(
                    "alphabet[{i}] = {c:?} is not one character"
                )));
            }
            if !seen.insert(c) {
                return Err(Error::config(format!(
                    "alphabet[{i}] = {c:?} appears twice"
                )));
            }
        }
        Ok(())
    }
}
