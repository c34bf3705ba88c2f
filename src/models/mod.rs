//! The two model families and their directory format (`config.json` + weights + tokenizer),
//! shared with `scripts/rnnkit_models.py`.
//!
//! ```text
//! classifier:     ids (N, L) → Embedding → (N, L, E) → encoder (packed by lengths) → out (N, L, D*H)
//!                 → pooling → (N, P) → Dropout → head Linear → logits (N, C)
//!   pooling  last:      [h_n[-2], h_n[-1]] if bidirectional else h_n[-1]          P = D*H
//!            mean/max:  over the real steps only                                   P = D*H
//!            concat:    [last, max, mean] (ULMFiT)                                 P = 3*D*H
//!            attention: additive attention, masked at padding                      P = D*H
//! language_model: ids (N, L) → Embedding → encoder → Dropout → decoder Linear → logits (N, L, V)
//!                 decoder.weight may be tied to embedding.weight
//! ```
//! The encoder always runs batch-first. `prefixes` in the config maps each submodule to its
//! state_dict key prefix, so a user's own attribute names load without renaming.

pub mod parity;
pub mod tokenizer;

use crate::nn::attention::AdditiveAttention;
use crate::nn::dropout::Dropout;
use crate::nn::embedding::Embedding;
use crate::error::{Error, Result};
use crate::nn::linear::Linear;
use crate::nn::module::{Module, ModuleExt};
use crate::nn::rnn::{Mode, RnnBase, RnnConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Classifier,
    LanguageModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Last,
    Mean,
    Max,
    Concat,
    Attention,
}

/// The recurrent encoder's configuration: `mode` plus `torch.nn.LSTM`'s arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub mode: Mode,
    #[serde(flatten)]
    pub rnn: RnnConfig,
}

/// `config.json` of a model directory. Field names and defaults match `rnnkit_models.py`.
/// Unknown fields are refused: a misspelt one (`max_lenght`) would otherwise fall back to its
/// default without a word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default = "one")]
    pub format_version: u32,
    pub family: Family,
    pub vocab_size: i64,
    pub embedding_dim: i64,
    #[serde(default)]
    pub padding_idx: Option<i64>,
    pub encoder: EncoderConfig,
    /// Dropout before the head (classifier) or decoder (language model).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub pooling: Pooling,
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
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Token sequences longer than this are truncated.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Submodule → state_dict key prefix (`embedding`, `encoder`, `attention`, `head`, `decoder`).
    #[serde(default)]
    pub prefixes: BTreeMap<String, String>,
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

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::format(path, format!("invalid model config: {msg}"));
        let value: serde_json::Value =
            crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // serde cannot refuse unknown keys through `flatten`, and loses the key path there:
        // check the encoder's keys by hand, against the fields RnnConfig serialises (so the
        // list cannot drift), and its values as an RnnConfig of their own.
        if let Some(enc) = value.get("encoder").and_then(|e| e.as_object()) {
            let known = serde_json::to_value(RnnConfig::new(1, 1)).expect("config serialises");
            let known = known.as_object().expect("a struct");
            if let Some(k) = enc.keys().find(|k| *k != "mode" && !known.contains_key(*k)) {
                return Err(bad(format!(
                    "unknown field `encoder.{k}`, expected `mode` or one of {}",
                    known
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let mut rnn = enc.clone();
            rnn.remove("mode");
            crate::json::from_value::<RnnConfig>(rnn.into())
                .map_err(|e| bad(crate::json::under("encoder", &e.to_string())))?;
        }
        let cfg: ModelConfig = crate::json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.format != "rnnkit-model" || self.format_version != 1 {
            return Err(Error::config(format!(
                "format {:?} version {} is not rnnkit-model version 1",
                self.format, self.format_version
            )));
        }
        const PARTS: [&str; 5] = ["embedding", "encoder", "attention", "head", "decoder"];
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

/// Embedding + recurrent encoder: what both families share and what fine-tuning keeps.
#[derive(Debug)]
pub struct Backbone {
    pub embedding: Embedding,
    pub encoder: RnnBase,
}

/// The encoder's result for a padded batch.
pub struct Encoded {
    /// `(N, L, D*H_out)`, zero past each length.
    pub out: Tensor,
    /// `(D*num_layers, N, H_out)`, taken at each sequence's true last step.
    pub h_n: Tensor,
}

/// `(N, L)` bool, true at the real steps of each sequence.
pub fn step_mask(lengths: &[i64], l: i64, device: Device) -> Tensor {
    let lengths_t = Tensor::from_slice(lengths).to_device(device);
    Tensor::arange(l, (Kind::Int64, device))
        .unsqueeze(0)
        .lt_tensor(&lengths_t.unsqueeze(1))
}

impl Backbone {
    fn new(cfg: &ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        let mut rnn = cfg.encoder.rnn.clone();
        rnn.batch_first = true;
        Ok(Self {
            embedding: Embedding::new(
                cfg.vocab_size,
                cfg.embedding_dim,
                cfg.padding_idx,
                kind,
                device,
            )?,
            encoder: RnnBase::new(cfg.encoder.mode, rnn, kind, device)?,
        })
    }

    /// `ids (N, L)`, `lengths` (N values in 1..=L).
    pub fn encode(&self, ids: &Tensor, lengths: &[i64]) -> Result<Encoded> {
        if ids.dim() != 2 {
            return Err(Error::shape("token ids", "(N, L)", &ids.size()));
        }
        let x = self.embedding.forward(ids)?;
        let (out, state) = self.encoder.forward_padded(&x, lengths, None)?;
        Ok(Encoded { out, h_n: state.h })
    }
}

/// `embedding → encoder → pooling → dropout → head`.
#[derive(Debug)]
pub struct SequenceClassifier {
    pub config: ModelConfig,
    pub backbone: Backbone,
    pub attention: Option<AdditiveAttention>,
    pub dropout: Dropout,
    pub head: Linear,
}

impl SequenceClassifier {
    /// A freshly initialised classifier (PyTorch's initialisation for every part).
    pub fn new(config: ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        config.validate()?;
        let backbone = Backbone::new(&config, kind, device)?;
        Self::with_backbone(config, backbone, kind, device)
    }

    /// Keeps a pretrained backbone and creates fresh pooling and head layers for `config`.
    pub fn with_backbone(
        config: ModelConfig,
        backbone: Backbone,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let d = config.encoder_output_size();
        let attention = match config.pooling {
            Pooling::Attention => Some(AdditiveAttention::new(
                d,
                config.attention_size,
                kind,
                device,
            )?),
            _ => None,
        };
        let pooled = if config.pooling == Pooling::Concat {
            3 * d
        } else {
            d
        };
        let classes = config
            .num_classes
            .ok_or_else(|| Error::config("a classifier needs num_classes"))?;
        let dropout = Dropout::new(config.dropout)?;
        let head = Linear::new(pooled, classes, true, kind, device)?;
        let mut m = Self {
            config,
            backbone,
            attention,
            dropout,
            head,
        };
        m.set_training(true);
        Ok(m)
    }

    /// `ids (N, L)`, `lengths` → logits `(N, num_classes)`.
    pub fn forward(&self, ids: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        let e = self.backbone.encode(ids, lengths)?;
        self.classify(&e, lengths)
    }

    /// The part after the encoder: pooling → dropout → head, logits `(N, num_classes)`.
    pub fn classify(&self, e: &Encoded, lengths: &[i64]) -> Result<Tensor> {
        let size = e.out.size();
        let (n, l) = match size[..] {
            [n, l, _] => (n, l),
            _ => {
                return Err(Error::shape(
                    "classify: encoder outputs",
                    "(N, L, D)",
                    &size,
                ))
            }
        };
        if lengths.len() as i64 != n || lengths.iter().any(|&x| x < 1 || x > l) {
            return Err(Error::invalid(format!(
                "classify: {} lengths for encoder outputs {size:?}; need one per row, each in 1..={l}",
                lengths.len()
            )));
        }
        let pooled = self.pool(e, lengths)?;
        self.head.forward(&self.dropout.forward(&pooled)?)
    }

    fn pool(&self, e: &Encoded, lengths: &[i64]) -> Result<Tensor> {
        let bidirectional = self.config.encoder.rnn.bidirectional;
        let last = || {
            let n = e.h_n.size()[0];
            if bidirectional {
                Tensor::cat(&[e.h_n.get(n - 2), e.h_n.get(n - 1)], 1)
            } else {
                e.h_n.get(n - 1)
            }
        };
        // The padding mask only for the poolings that read every step (not `last`).
        let mask = match self.config.pooling {
            Pooling::Last => None,
            _ => Some(step_mask(lengths, e.out.size()[1], e.out.device())),
        };
        let mask = || mask.as_ref().expect("built for every pooling but last");
        let m = || mask().unsqueeze(-1);
        let mean = || {
            let len = Tensor::from_slice(lengths)
                .to_device(e.out.device())
                .to_kind(e.out.kind())
                .unsqueeze(1);
            (&e.out * m()).sum_dim_intlist([1i64].as_slice(), false, None::<Kind>) / len
        };
        let max = || {
            e.out
                .masked_fill(&m().logical_not(), f64::NEG_INFINITY)
                .amax([1i64].as_slice(), false)
        };
        Ok(match self.config.pooling {
            Pooling::Last => last(),
            Pooling::Mean => mean(),
            Pooling::Max => max(),
            Pooling::Concat => Tensor::cat(&[last(), max(), mean()], 1),
            Pooling::Attention => self
                .attention
                .as_ref()
                .expect("built with attention")
                .forward(&e.out, mask())?,
        })
    }
}

impl Module for SequenceClassifier {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        self.backbone.embedding.visit(&p("embedding"), f);
        self.backbone.encoder.visit(&p("encoder"), f);
        if let Some(a) = &self.attention {
            a.visit(&p("attention"), f);
        }
        self.head.visit(&p("head"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |part: &str| format!("{prefix}{}", self.config.prefix(part));
        let (emb, enc, att, head) = (p("embedding"), p("encoder"), p("attention"), p("head"));
        self.backbone.embedding.visit_mut(&emb, f);
        self.backbone.encoder.visit_mut(&enc, f);
        if let Some(a) = &mut self.attention {
            a.visit_mut(&att, f);
        }
        self.head.visit_mut(&head, f);
    }
    fn set_training(&mut self, training: bool) {
        self.backbone.encoder.set_training(training);
        self.dropout.set_training(training);
    }
    fn is_training(&self) -> bool {
        self.dropout.is_training()
    }
}

/// `embedding → encoder → dropout → decoder`, decoder optionally tied to the embedding.
#[derive(Debug)]
pub struct LanguageModel {
    pub config: ModelConfig,
    pub backbone: Backbone,
    pub dropout: Dropout,
    pub decoder: Linear,
}

impl LanguageModel {
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

/// Either family, as read from a model directory.
#[derive(Debug)]
pub enum Model {
    Classifier(SequenceClassifier),
    LanguageModel(LanguageModel),
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Classifier(m) => &m.config,
            Model::LanguageModel(m) => &m.config,
        }
    }
    pub fn forward(&self, ids: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        match self {
            Model::Classifier(m) => m.forward(ids, lengths),
            Model::LanguageModel(m) => m.forward(ids, lengths),
        }
    }
    pub fn module(&self) -> &dyn Module {
        match self {
            Model::Classifier(m) => m,
            Model::LanguageModel(m) => m,
        }
    }
    pub fn module_mut(&mut self) -> &mut dyn Module {
        match self {
            Model::Classifier(m) => m,
            Model::LanguageModel(m) => m,
        }
    }
    pub fn into_backbone(self) -> Backbone {
        match self {
            Model::Classifier(m) => m.backbone,
            Model::LanguageModel(m) => m.backbone,
        }
    }

    /// A fresh model of `config`'s family.
    pub fn new(config: ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        Ok(match config.family {
            Family::Classifier => Model::Classifier(SequenceClassifier::new(config, kind, device)?),
            Family::LanguageModel => {
                Model::LanguageModel(LanguageModel::new(config, kind, device)?)
            }
        })
    }

    /// Reads `dir/config.json` and the weights (`model.safetensors`, else `model.pth`), strictly.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config = ModelConfig::read(&cfg_path)?;
        // Sizes that only the layers check (dropout, num_layers, proj_size…): name the file.
        let mut model = Model::new(config.clone(), Kind::Float, device).map_err(|e| match e {
            Error::Config(m) => Error::format(&cfg_path, m),
            e => e,
        })?;
        let sd = load_weights(dir)?;
        let file = sd
            .source()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
        // In f32: libtorch's isfinite does not take every float kind (float8 e4m3).
        let as_f32 = |t: &Tensor| t.f_to_kind(Kind::Float);
        for (key, t) in sd.iter() {
            if t.is_floating_point() {
                let bad = as_f32(t)?
                    .f_isfinite()?
                    .logical_not()
                    .sum(Kind::Int64)
                    .int64_value(&[]);
                if bad > 0 {
                    return Err(Error::format(
                        &file,
                        format!("{key} {:?} holds {bad} NaN or infinite values", t.size()),
                    ));
                }
            }
        }
        if config.tie_weights {
            let (e, d) = (
                format!("{}weight", config.prefix("embedding")),
                format!("{}weight", config.prefix("decoder")),
            );
            if let (Some(a), Some(b)) = (sd.get(&e), sd.get(&d)) {
                let (a, b) = (as_f32(a)?, as_f32(b)?);
                if a.size() == b.size() && !a.equal(&b) {
                    return Err(Error::format(
                        &file,
                        format!(
                            "config.json says tie_weights, but {e} and {d} differ \
                             (max |difference| {})",
                            (&a - &b).abs().max().double_value(&[])
                        ),
                    ));
                }
            }
        }
        model.module_mut().load_state_dict(&sd)?;
        Ok(model)
    }
}

/// Writes a model directory — `config.json`, `model.safetensors`, optionally `model.pth`, and
/// the tokenizer copied from `tokenizer_from` — each file atomically.
pub fn save_dir(
    dir: &Path,
    config: &ModelConfig,
    model: &dyn Module,
    tokenizer_from: &Path,
    save_pth: bool,
) -> Result<()> {
    use crate::checkpoint::atomic::{write_atomic, write_err};
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    let json = serde_json::to_string_pretty(config).expect("config serialises");
    write_atomic(&cfg_path, |w| {
        w.write_all(json.as_bytes()).map_err(write_err(&cfg_path))
    })?;
    let sd = model.state_dict();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    crate::checkpoint::safetensors::save_state_dict(dir.join("model.safetensors"), &sd, &meta)?;
    if save_pth {
        crate::checkpoint::save_pth_state_dict(&dir.join("model.pth"), &sd)?;
    }
    let (src, dst) = (
        tokenizer_from.join(&config.tokenizer),
        dir.join(&config.tokenizer),
    );
    if src.exists() && src != dst {
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        write_atomic(&dst, |w| w.write_all(&bytes).map_err(write_err(&dst)))?;
    }
    Ok(())
}

/// The state_dict of a model directory: `model.safetensors`, else `model.pth`.
pub fn load_weights(dir: &Path) -> Result<crate::StateDict> {
    for name in ["model.safetensors", "model.pth"] {
        let path = dir.join(name);
        if path.exists() {
            return crate::checkpoint::load_state_dict(&path, None);
        }
    }
    Err(Error::invalid(format!(
        "{}: no model.safetensors or model.pth",
        dir.display()
    )))
}
