//! The language-model family: ids (N, L) → Embedding → encoder → Dropout → decoder Linear →
//! logits (N, L, V); `decoder.weight` may be tied to `embedding.weight`.

use super::classifier::Backbone;
use super::config::ModelConfig;
use crate::error::Result;
use crate::nn::dropout::Dropout;
use crate::nn::linear::Linear;
use crate::nn::module::Module;
use tch::{Device, Kind, Tensor};

/// `embedding → encoder → dropout → decoder`, decoder optionally tied to the embedding.
#[derive(Debug)]
pub struct LanguageModel {
    /// The `config.json` this model was built from.
    pub config: ModelConfig,
    /// Embedding and encoder.
    pub backbone: Backbone,
    /// Dropout before the decoder (`config.dropout`).
    pub dropout: Dropout,
    /// `decoder`: encoder outputs → vocabulary logits; shares `embedding.weight` with `tie_weights`.
    pub decoder: Linear,
}

impl LanguageModel {
    /// A freshly initialised language model for `config` (weights as PyTorch initialises them).
    pub fn new(config: ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        config.validate()?;
        let backbone = Backbone::new(&config, kind, device)?;
        let dropout = Dropout::new(config.dropout)?;
        let mut decoder = Linear::new(
            config.encoder_output_size(),
            config.vocab_size,
            true,
            kind,
            device,
        )?;
        if config.tie_weights {
            decoder.weight = backbone.embedding.weight.shallow_clone();
        }
        let mut m = Self {
            config,
            backbone,
            dropout,
            decoder,
        };
        m.set_training(true);
        Ok(m)
    }

    /// `ids (N, L)`, `lengths` → logits `(N, L, vocab_size)`.
    pub fn forward(&self, ids: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        let e = self.backbone.encode(ids, lengths)?;
        self.decoder.forward(&self.dropout.forward(&e.out)?)
    }
}

impl Module for LanguageModel {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        self.backbone.embedding.visit(&p("embedding"), f);
        self.backbone.encoder.visit(&p("encoder"), f);
        self.decoder.visit(&p("decoder"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        let (emb, enc, dec) = (p("embedding"), p("encoder"), p("decoder"));
        self.backbone.embedding.visit_mut(&emb, f);
        self.backbone.encoder.visit_mut(&enc, f);
        self.decoder.visit_mut(&dec, f);
        if self.config.tie_weights {
            // A dtype or device move replaced the embedding; keep the decoder tied to it.
            self.decoder.weight = self.backbone.embedding.weight.shallow_clone();
        }
    }
    fn set_training(&mut self, training: bool) {
        self.backbone.encoder.set_training(training);
        self.dropout.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.dropout.is_training()
    }
}
