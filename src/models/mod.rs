//! The model families and their directory format (`config.json` + weights + tokenizer),
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
//! ctc:            wav → log-mel → [Conv1d subsampling] → encoder → output Linear → CTC
//!                 (see [`ctc`]; its own config.json schema, [`ctc::CtcConfig`])
//! seq2seq:        src → Embedding → encoder → memory; per target step: tgt_embedding →
//!                 decoder → attention over the memory → output Linear (see [`seq2seq`])
//! ```
//! The encoder always runs batch-first. `prefixes` in the config maps each submodule to its
//! state_dict key prefix, so a user's own attribute names load without renaming.

mod classifier;
mod config;
pub mod ctc;
mod language_model;
pub mod parity;
pub mod seq2seq;
pub mod tokenizer;

pub use classifier::{step_mask, Backbone, Encoded, SequenceClassifier};
pub use config::{EncoderConfig, Family, ModelConfig, Pooling};
pub use language_model::LanguageModel;
pub use seq2seq::Seq2Seq;
pub use tokenizer::Tokenizer;

use crate::checkpoint::ReadOptions;
use crate::error::{Error, Result};
use crate::nn::module::{Module, ModuleExt};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A model of any family, as read from a model directory.
#[derive(Debug)]
pub enum Model {
    /// `family: "classifier"`.
    Classifier(SequenceClassifier),
    /// `family: "language_model"`.
    LanguageModel(LanguageModel),
    /// `family: "seq2seq"`.
    Seq2Seq(Seq2Seq),
}

impl Model {
    /// The directory's `config.json`.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Classifier(m) => &m.config,
            Model::LanguageModel(m) => &m.config,
            Model::Seq2Seq(m) => &m.config,
        }
    }
    /// Logits for padded ids `(N, L)` with per-row `lengths`: `(N, C)` for a classifier, `(N, L, V)` for a language model.
    /// A seq2seq model needs target ids too: [`Seq2Seq::forward`].
    pub fn forward(&self, ids: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        match self {
            Model::Classifier(m) => m.forward(ids, lengths),
            Model::LanguageModel(m) => m.forward(ids, lengths),
            Model::Seq2Seq(_) => Err(Error::invalid(
                "a seq2seq model's forward takes source and target ids: Seq2Seq::forward(src, src_len, tgt_in)",
            )),
        }
    }
    /// The model as a [`Module`] (parameters, state_dict).
    pub fn module(&self) -> &dyn Module {
        match self {
            Model::Classifier(m) => m,
            Model::LanguageModel(m) => m,
            Model::Seq2Seq(m) => m,
        }
    }
    /// The model as a mutable [`Module`] (loading, train/eval).
    pub fn module_mut(&mut self) -> &mut dyn Module {
        match self {
            Model::Classifier(m) => m,
            Model::LanguageModel(m) => m,
            Model::Seq2Seq(m) => m,
        }
    }
    /// The embedding and encoder, without head or decoder (what fine-tuning keeps).
    pub fn into_backbone(self) -> Backbone {
        match self {
            Model::Classifier(m) => m.backbone,
            Model::LanguageModel(m) => m.backbone,
            Model::Seq2Seq(m) => m.backbone,
        }
    }

    /// A fresh model of `config`'s family.
    pub fn new(config: ModelConfig, kind: Kind, device: Device) -> Result<Self> {
        Ok(match config.family {
            Family::Classifier => Model::Classifier(SequenceClassifier::new(config, kind, device)?),
            Family::LanguageModel => {
                Model::LanguageModel(LanguageModel::new(config, kind, device)?)
            }
            Family::Seq2seq => Model::Seq2Seq(Seq2Seq::new(config, kind, device)?),
        })
    }

    /// Reads `dir/config.json` and the weights (`model.safetensors`, else `model.pth`), strictly,
    /// within the default reading budget.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self> {
        Self::load_dir_with(dir, device, &ReadOptions::default())
    }

    /// [`Model::load_dir`] with other reading options (a larger `max_bytes` for a trusted model
    /// over the default budget).
    pub fn load_dir_with(dir: &Path, device: Device, opts: &ReadOptions) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config = ModelConfig::read(&cfg_path)?;
        // Sizes that only the layers check (dropout, num_layers, proj_size…): name the file.
        let mut model = Model::new(config.clone(), Kind::Float, device).map_err(|e| match e {
            Error::Config(m) => Error::format(&cfg_path, m),
            e => e,
        })?;
        let mut sd = load_weights_with(dir, opts)?;
        let file = sd
            .source()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
        // A tied matrix may be stored once (safetensors cannot hold one tensor under two keys;
        // `rnnkit_seq2seq.file_state_dict` drops the copies): the missing key is the same tensor.
        for (_, a, b) in config.tied_weights() {
            match (sd.get(&a).is_some(), sd.get(&b).is_some()) {
                (true, false) => sd.insert(b, sd.get(&a).expect("present").shallow_clone())?,
                (false, true) => sd.insert(a, sd.get(&b).expect("present").shallow_clone())?,
                _ => {}
            }
        }
        check_finite(&sd, &file)?;
        let as_f32 = |t: &Tensor| t.f_to_kind(Kind::Float);
        for (flag, e, d) in config.tied_weights() {
            if let (Some(a), Some(b)) = (sd.get(&e), sd.get(&d)) {
                let (a, b) = (as_f32(a)?, as_f32(b)?);
                if a.size() == b.size() && !a.equal(&b) {
                    return Err(Error::format(
                        &file,
                        format!(
                            "config.json says {flag}, but {e} and {d} differ \
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
/// the tokenizer (and a seq2seq model's target tokenizer) copied from `tokenizer_from` — each
/// file atomically.
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
    let tgt = config
        .seq2seq
        .as_ref()
        .and_then(|s| s.tgt_tokenizer.as_ref());
    for name in std::iter::once(&config.tokenizer).chain(tgt) {
        let (src, dst) = (tokenizer_from.join(name), dir.join(name));
        if src.exists() && src != dst {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            write_atomic(&dst, |w| w.write_all(&bytes).map_err(write_err(&dst)))?;
        }
    }
    Ok(())
}

/// Refuses a state_dict with a NaN or infinite value, naming `file`, the key and its shape.
pub(crate) fn check_finite(sd: &crate::StateDict, file: &Path) -> Result<()> {
    for (key, t) in sd.iter() {
        if t.is_floating_point() {
            // In f32: libtorch's isfinite does not take every float kind (float8 e4m3).
            let bad = t
                .f_to_kind(Kind::Float)?
                .f_isfinite()?
                .logical_not()
                .sum(Kind::Int64)
                .int64_value(&[]);
            if bad > 0 {
                return Err(Error::format(
                    file,
                    format!("{key} {:?} holds {bad} NaN or infinite values", t.size()),
                ));
            }
        }
    }
    Ok(())
}

/// The `family` string of `dir/config.json` (`classifier`, `language_model`, `seq2seq`, `ctc`),
/// read before the config's family-specific schema.
pub fn family_of(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = crate::json::from_str(&text)
        .map_err(|e| Error::format(&path, format!("invalid model config: {e}")))?;
    v.get("family")
        .and_then(|f| f.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::format(&path, "invalid model config: no \"family\" string"))
}

/// The state_dict of a model directory: `model.safetensors`, else `model.pth`.
pub fn load_weights(dir: &Path) -> Result<crate::StateDict> {
    load_weights_with(dir, &ReadOptions::default())
}

/// [`load_weights`] with other reading options.
pub fn load_weights_with(dir: &Path, opts: &ReadOptions) -> Result<crate::StateDict> {
    for name in ["model.safetensors", "model.pth"] {
        let path = dir.join(name);
        if path.exists() {
            return crate::checkpoint::load_state_dict_with(&path, None, opts);
        }
    }
    Err(Error::invalid(format!(
        "{}: no model.safetensors or model.pth",
        dir.display()
    )))
}

/// The meeting of a model directory and its tokenizer lives with the directory format, so the
/// tokenizer itself knows nothing of model configs.
impl Tokenizer {
    /// A model directory's tokenizer (`config.tokenizer` inside `dir`), if the file is there;
    /// texts are cut to `max_length` tokens.
    pub fn of_model(dir: &Path, config: &ModelConfig, max_length: usize) -> Result<Option<Self>> {
        let path = dir.join(&config.tokenizer);
        if !path.exists() {
            return Ok(None);
        }
        let tok = Self::from_file(&path, max_length, config.padding_idx.unwrap_or(0))?;
        tok.check_fits(config.vocab_size)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        Ok(Some(tok))
    }
}
