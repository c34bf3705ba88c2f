//! `config.json` of a model directory ([`ModelConfig`]): the family, the embedding, the
//! recurrent encoder's `torch.nn.LSTM` arguments, pooling, head or decoder, tokenizer and the
//! state_dict key prefixes. Field names and defaults match `scripts/rnnkit_models.py`.

use super::seq2seq::config::Seq2SeqConfig;
use crate::error::{Error, Result};
use crate::nn::rnn::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Which model a directory holds (`family` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `classifier`: embedding → encoder → pooling → dropout → head.
    Classifier,
    /// `language_model`: embedding → encoder → dropout → decoder.
    LanguageModel,
    /// `seq2seq`: an encoder-decoder with attention (`seq2seq` holds the target side).
    Seq2seq,
}

/// How a classifier turns the encoder's outputs `(N, L, D*H)` into one vector per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The final state of the last layer (both directions when bidirectional).
    #[default]
    Last,
    /// Mean over the real (unpadded) steps.
    Mean,
    /// Maximum over the real steps.
    Max,
    /// `[last, max, mean]`, ULMFiT's concat pooling.
    Concat,
    /// Additive attention, masked at padding.
    Attention,
}

/// The recurrent encoder's configuration: `mode` plus `torch.nn.LSTM`'s arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `RNN_TANH`, `RNN_RELU`, `LSTM` or `GRU`.
    pub mode: Mode,
    /// `torch.nn.LSTM`'s arguments, flattened into the same JSON object.
    #[serde(flatten)]
    pub rnn: RnnConfig,
}

/// `config.json` of a model directory. Field names and defaults match `rnnkit_models.py`.
/// Unknown fields are refused: a misspelt one (`max_lenght`) would otherwise fall back to its
/// default without a word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Always `rnnkit-model`.
    #[serde(default = "default_format")]
    pub format: String,
    /// The schema's version (1).
    #[serde(default = "one")]
    pub format_version: u32,
    /// Classifier or language model.
    pub family: Family,
    /// Rows of the embedding.
    pub vocab_size: i64,
    /// Width of the embedding (the encoder's `input_size`).
    pub embedding_dim: i64,
    /// The embedding's padding row, also the id of padding in batches.
    #[serde(default)]
    pub padding_idx: Option<i64>,
    /// The recurrent encoder.
    pub encoder: EncoderConfig,
    /// Dropout before the head (classifier) or decoder (language model).
    #[serde(default)]
    pub dropout: f64,
    /// Classifier only: how outputs become one vector.
    #[serde(default)]
    pub pooling: Pooling,
    /// Width of the attention score layer (`pooling: attention`).
    #[serde(default = "default_attention_size")]
    pub attention_size: i64,
    /// Classifier only.
    #[serde(default)]
    pub num_classes: Option<i64>,
    /// Class names, index = class id.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Language model only: `decoder.weight` is `embedding.weight`.
    #[serde(default)]
    pub tie_weights: bool,
    /// The tokenizer file inside the directory.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Token sequences longer than this are truncated.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Submodule → state_dict key prefix (`embedding`, `encoder`, `attention`, `head`, `decoder`;
    /// seq2seq also `tgt_embedding`, `bridge`, `output`).
    #[serde(default)]
    pub prefixes: BTreeMap<String, String>,
    /// Seq2seq only: the target side, decoder and attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq2seq: Option<Seq2SeqConfig>,
}

fn default_format() -> String {
    "rnnkit-model".into()
}
fn one() -> u32 {
    1
}
fn default_attention_size() -> i64 {
    64
}
fn default_tokenizer() -> String {
    "tokenizer.json".into()
}
fn default_max_length() -> usize {
    256
}

impl ModelConfig {
    /// The key prefix of a submodule (`"encoder"` → `"encoder."` unless renamed).
    pub fn prefix(&self, part: &str) -> String {
        self.prefixes
            .get(part)
            .cloned()
            .unwrap_or_else(|| format!("{part}."))
    }

    /// Reads and validates `config.json`; errors name the file and the key path of the bad value.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::format(path, format!("invalid model config: {msg}"));
        let value: serde_json::Value =
            crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if value.get("family").and_then(|f| f.as_str()) == Some("ctc") {
            return Err(bad(
                "family ctc has its own schema: read it with rnnkit::models::ctc::CtcConfig::read \
                 (or load it with CtcModel::load_dir)"
                    .into(),
            ));
        }
        check_encoder_object(&value).map_err(bad)?;
        let cfg: ModelConfig = crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Checks the sizes, the family's required fields and the encoder's arguments against each other.
    pub fn validate(&self) -> Result<()> {
        if self.format != "rnnkit-model" || self.format_version != 1 {
            return Err(Error::config(format!(
                "format {:?} version {} is not rnnkit-model version 1",
                self.format, self.format_version
            )));
        }
        const PARTS: [&str; 8] = [
            "embedding",
            "encoder",
            "attention",
            "head",
            "decoder",
            "tgt_embedding",
            "bridge",
            "output",
        ];
        if let Some(k) = self.prefixes.keys().find(|k| !PARTS.contains(&k.as_str())) {
            return Err(Error::config(format!(
                "prefixes: unknown submodule {k:?} (expected one of {})",
                PARTS.join(", ")
            )));
        }
        if self.max_length == 0 {
            return Err(Error::config("max_length must be at least 1"));
        }
        if self.tie_weights && self.family != Family::LanguageModel {
            return Err(Error::config(
                "tie_weights applies to language models (decoder.weight = embedding.weight), not classifiers",
            ));
        }
        if let Some(labels) = &self.labels {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
                return Err(Error::config(format!(
                    "label {dup:?} appears twice in labels"
                )));
            }
        }
        if self.vocab_size < 0 || self.embedding_dim < 0 {
            return Err(Error::config(format!(
                "vocab_size ({}) and embedding_dim ({}) must be non-negative",
                self.vocab_size, self.embedding_dim
            )));
        }
        if self.encoder.rnn.input_size != self.embedding_dim {
            return Err(Error::config(format!(
                "encoder.input_size ({}) must equal embedding_dim ({})",
                self.encoder.rnn.input_size, self.embedding_dim
            )));
        }
        match (&self.seq2seq, self.family) {
            (Some(s), Family::Seq2seq) => s.validate(
                self.vocab_size,
                self.embedding_dim,
                self.encoder_output_size(),
            )?,
            (None, Family::Seq2seq) => {
                return Err(Error::config(
                    "family seq2seq needs a \"seq2seq\" object (target side, decoder, attention)",
                ))
            }
            (Some(_), family) => {
                return Err(Error::config(format!(
                    "\"seq2seq\" applies to family seq2seq, not {family:?}"
                )))
            }
            (None, _) => {}
        }
        if self.family == Family::Classifier {
            let c = self
                .num_classes
                .ok_or_else(|| Error::config("a classifier needs num_classes"))?;
            if c < 1 {
                return Err(Error::config(format!(
                    "num_classes must be positive, got {c}"
                )));
            }
            if let Some(labels) = &self.labels {
                if labels.len() as i64 != c {
                    return Err(Error::config(format!(
                        "{} labels for num_classes = {c}",
                        labels.len()
                    )));
                }
            }
        }
        if self.tie_weights && self.encoder_output_size() != self.embedding_dim {
            return Err(Error::config(format!(
                "tie_weights needs the encoder output size ({}) to equal embedding_dim ({})",
                self.encoder_output_size(),
                self.embedding_dim
            )));
        }
        Ok(())
    }

    /// The weights this config ties, as (flag, key, key): one tensor saved under both keys, which
    /// a file must hold equal.
    pub fn tied_weights(&self) -> Vec<(&'static str, String, String)> {
        let w = |part: &str| format!("{}weight", self.prefix(part));
        let mut out = Vec::new();
        if self.tie_weights {
            out.push(("tie_weights", w("embedding"), w("decoder")));
        }
        if let Some(s) = &self.seq2seq {
            if s.share_embeddings {
                out.push(("share_embeddings", w("embedding"), w("tgt_embedding")));
            }
            if s.tie_output {
                out.push(("tie_output", w("tgt_embedding"), w("output")));
            }
        }
        out
    }

    /// D * H_out of the encoder.
    pub fn encoder_output_size(&self) -> i64 {
        self.encoder.rnn.output_hidden_size() * self.encoder.rnn.num_directions()
    }

    /// The name of class `i`.
    pub fn label(&self, i: i64) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(i as usize).cloned())
            .unwrap_or_else(|| i.to_string())
    }
}

/// serde cannot refuse unknown keys through `flatten`, and loses the key path there: checks
/// `value["encoder"]`'s keys by hand, against the fields RnnConfig serialises (so the list cannot
/// drift), and its values as an RnnConfig of their own. Shared by every family's config.
pub(crate) fn check_encoder_object(value: &serde_json::Value) -> std::result::Result<(), String> {
    if let Some(enc) = value.get("encoder").and_then(|e| e.as_object()) {
        let known = serde_json::to_value(RnnConfig::new(1, 1)).expect("config serialises");
        let known = known.as_object().expect("a struct");
        if let Some(k) = enc.keys().find(|k| *k != "mode" && !known.contains_key(*k)) {
            return Err(format!(
                "unknown field `encoder.{k}`, expected `mode` or one of {}",
                known
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut rnn = enc.clone();
        rnn.remove("mode");
        crate::json::from_value::<RnnConfig>(rnn.into())
            .map_err(|e| crate::json::under("encoder", &e.to_string()))?;
    }
    Ok(())
}
