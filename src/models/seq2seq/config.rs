//! The `seq2seq` object of `config.json` ([`Seq2SeqConfig`]): the target side, the decoder, the
//! attention and the bridge. Field names and defaults match `scripts/rnnkit_seq2seq.py`.

use crate::error::{Error, Result};
pub use crate::nn::global_attention::AttentionKind;
use crate::nn::rnn::Mode;
use serde::{Deserialize, Serialize};

/// How the encoder's final state starts the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Bridge {
    /// `h_0 = tanh(bridge.h([h_n of the top layer, both directions]))`, and `c_0` likewise from
    /// `c_n` when encoder and decoder are both LSTMs (else zeros).
    #[default]
    Linear,
    /// Zeros.
    None,
}

/// The decoder's recurrent layers: unidirectional, no `proj_size`; `input_size` is derived
/// (target embedding width, plus the hidden size with input feeding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// `RNN_TANH`, `RNN_RELU`, `LSTM` or `GRU`.
    pub mode: Mode,
    /// `hidden_size`.
    pub hidden_size: i64,
    /// `num_layers`.
    #[serde(default = "one")]
    pub num_layers: i64,
    /// Dropout between the decoder's layers (`dropout` of `torch.nn.LSTM`).
    #[serde(default)]
    pub dropout: f64,
    /// `bias`.
    #[serde(default = "yes")]
    pub bias: bool,
}

/// `config.json`'s `seq2seq` object (family `seq2seq`); the source side is the shared fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqConfig {
    /// Rows of the target embedding and of the output projection.
    pub tgt_vocab_size: i64,
    /// Width of the target embedding (default: the source `embedding_dim`).
    #[serde(default)]
    pub tgt_embedding_dim: Option<i64>,
    /// The target embedding is the source embedding (same vocabulary and width).
    #[serde(default)]
    pub share_embeddings: bool,
    /// The decoder's recurrent layers.
    pub decoder: DecoderConfig,
    /// The score function.
    #[serde(default)]
    pub attention: AttentionKind,
    /// Width of the additive score layer (default: the decoder's hidden size).
    #[serde(default)]
    pub attention_size: Option<i64>,
    /// Feed the previous attentional state into the decoder with the token (Luong et al.).
    #[serde(default = "yes")]
    pub input_feeding: bool,
    /// How the encoder's final state starts the decoder.
    #[serde(default)]
    pub bridge: Bridge,
    /// `output.weight` is `tgt_embedding.weight` (needs `tgt_embedding_dim` = decoder hidden size).
    #[serde(default)]
    pub tie_output: bool,
    /// The target id that starts every output.
    #[serde(default = "one")]
    pub bos_id: i64,
    /// The target id that ends an output.
    #[serde(default = "two")]
    pub eos_id: i64,
    /// The target tokenizer file in the model directory (default: the source `tokenizer`).
    #[serde(default)]
    pub tgt_tokenizer: Option<String>,
}

fn one() -> i64 {
    1
}
fn two() -> i64 {
    2
}
fn yes() -> bool {
    true
}

impl Seq2SeqConfig {
    /// The target embedding's width, given the source's.
    pub fn tgt_dim(&self, embedding_dim: i64) -> i64 {
        self.tgt_embedding_dim.unwrap_or(embedding_dim)
    }

    /// The additive score layer's width.
    pub fn score_size(&self) -> i64 {
        self.attention_size.unwrap_or(self.decoder.hidden_size)
    }

    /// The decoder's `input_size`.
    pub fn decoder_input_size(&self, embedding_dim: i64) -> i64 {
        self.tgt_dim(embedding_dim)
            + if self.input_feeding {
                self.decoder.hidden_size
            } else {
                0
            }
    }

    /// Checks the sizes against each other and the source side (`vocab_size`, `embedding_dim`,
    /// `memory`: the encoder's output width).
    pub fn validate(&self, vocab_size: i64, embedding_dim: i64, memory: i64) -> Result<()> {
        let d = &self.decoder;
        let tgt_dim = self.tgt_dim(embedding_dim);
        let bad = |m: String| Err(Error::config(format!("seq2seq: {m}")));
        if self.tgt_vocab_size < 1 || tgt_dim < 1 || d.hidden_size < 1 || d.num_layers < 1 {
            return bad(format!(
                "tgt_vocab_size ({}), tgt_embedding_dim ({tgt_dim}), decoder.hidden_size ({}) and \
                 decoder.num_layers ({}) must be positive",
                self.tgt_vocab_size, d.hidden_size, d.num_layers
            ));
        }
        if !(0.0..1.0).contains(&d.dropout) {
            return bad(format!(
                "decoder.dropout must be in [0, 1), got {}",
                d.dropout
            ));
        }
        if self.score_size() < 1 {
            return bad(format!(
                "attention_size must be positive, got {}",
                self.score_size()
            ));
        }
        for (name, id) in [("bos_id", self.bos_id), ("eos_id", self.eos_id)] {
            if !(0..self.tgt_vocab_size).contains(&id) {
                return bad(format!(
                    "{name} {id} is outside the target vocabulary 0..{}",
                    self.tgt_vocab_size
                ));
            }
        }
        if self.share_embeddings && (self.tgt_vocab_size != vocab_size || tgt_dim != embedding_dim)
        {
            return bad(format!(
                "share_embeddings needs equal vocabularies and widths: source ({vocab_size}, \
                 {embedding_dim}), target ({}, {tgt_dim})",
                self.tgt_vocab_size
            ));
        }
        if self.tie_output && tgt_dim != d.hidden_size {
            return bad(format!(
                "tie_output needs tgt_embedding_dim ({tgt_dim}) to equal decoder.hidden_size ({})",
                d.hidden_size
            ));
        }
        if self.attention == AttentionKind::Dot && memory != d.hidden_size {
            return bad(format!(
                "dot attention needs the encoder's output width ({memory}) to equal \
                 decoder.hidden_size ({}); use \"general\" or \"additive\"",
                d.hidden_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Seq2SeqConfig {
        serde_json::from_value(serde_json::json!({
            "tgt_vocab_size": 20,
            "decoder": {"mode": "LSTM", "hidden_size": 8}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_those_of_rnnkit_seq2seq_py() {
        let c = cfg();
        assert_eq!(c.attention, AttentionKind::General);
        assert_eq!(c.bridge, Bridge::Linear);
        assert!(c.input_feeding && !c.tie_output && !c.share_embeddings);
        assert_eq!((c.bos_id, c.eos_id), (1, 2));
        assert_eq!(
            (c.decoder.num_layers, c.decoder.dropout, c.decoder.bias),
            (1, 0.0, true)
        );
        assert_eq!(
            (c.tgt_dim(6), c.score_size(), c.decoder_input_size(6)),
            (6, 8, 14)
        );
        c.validate(30, 6, 16).unwrap();
    }

    #[test]
    fn inconsistent_sizes_are_refused_with_the_sizes() {
        let err =
            |c: Seq2SeqConfig, v: i64, e: i64, m: i64| c.validate(v, e, m).unwrap_err().to_string();
        let dot = err(cfg_dot(), 30, 6, 16);
        assert!(
            dot.contains("output width (16)") && dot.contains("decoder.hidden_size (8)"),
            "{dot}"
        );
        let mut c = cfg();
        c.tie_output = true;
        assert!(err(c, 30, 6, 16).contains("tie_output needs tgt_embedding_dim (6)"));
        let mut c = cfg();
        c.share_embeddings = true;
        assert!(err(c, 30, 6, 16).contains("share_embeddings needs equal vocabularies"));
        let mut c = cfg();
        c.eos_id = 20;
        assert!(err(c, 30, 6, 16).contains("eos_id 20 is outside the target vocabulary 0..20"));
        let mut c = cfg();
        c.decoder.dropout = 1.0;
        assert!(err(c, 30, 6, 16).contains("decoder.dropout"));
        let unknown = serde_json::from_value::<Seq2SeqConfig>(serde_json::json!({
            "tgt_vocab_size": 20, "decoder": {"mode": "LSTM", "hidden_size": 8}, "beam": 4
        }));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `beam`"));
    }

    fn cfg_dot() -> Seq2SeqConfig {
        let mut c = cfg();
        c.attention = AttentionKind::Dot;
        c
    }
}
