//! The classifier family and what both families share ([`Backbone`]: embedding + encoder).
//!
//! ```text
//! ids (N, L) → Embedding → (N, L, E) → encoder (packed by lengths) → out (N, L, D*H)
//!            → pooling → (N, P) → Dropout → head Linear → logits (N, C)
//! pooling  last:      [h_n[-2], h_n[-1]] if bidirectional else h_n[-1]          P = D*H
//!          mean/max:  over the real steps only                                   P = D*H
//!          concat:    [last, max, mean] (ULMFiT)                                 P = 3*D*H
//!          attention: additive attention, masked at padding                      P = D*H
//! ```

use super::config::{ModelConfig, Pooling};
use crate::error::{Error, Result};
use crate::nn::attention::AdditiveAttention;
use crate::nn::dropout::Dropout;
use crate::nn::embedding::Embedding;
use crate::nn::linear::Linear;
use crate::nn::module::Module;
use crate::nn::rnn::RnnBase;
use tch::{Device, Kind, Tensor};

/// Embedding + recurrent encoder: what both families share and what fine-tuning keeps.
#[derive(Debug)]
pub struct Backbone {
    /// `embedding`: ids → vectors.
    pub embedding: Embedding,
    /// `encoder`: the recurrent layers, run batch-first.
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
    pub(super) fn new(cfg: &ModelConfig, kind: Kind, device: Device) -> Result<Self> {
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
    /// The `config.json` this model was built from.
    pub config: ModelConfig,
    /// Embedding and encoder.
    pub backbone: Backbone,
    /// `attention`, only with `pooling: "attention"`.
    pub attention: Option<AdditiveAttention>,
    /// Dropout before the head (`config.dropout`).
    pub dropout: Dropout,
    /// `head`: pooled features → class logits.
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
        self.check_encoded(e, lengths)?;
        let pooled = self.pool(e, lengths)?;
        self.head.forward(&self.dropout.forward(&pooled)?)
    }

    /// [`SequenceClassifier::classify`] at inference with every row on its own: logits
    /// `(N, C)` row-major, where a row's values depend on that row's encoder outputs alone, not
    /// on the rest of the batch nor on its padded length. `last` pooling gathers `h_n` rows
    /// (exact for any batch); the other poolings run once per row on its own length, the same
    /// operations on the same shapes as for a batch of one; the head is
    /// [`Linear::forward_rows`]. Eval mode only (dropout would draw per batch).
    pub fn classify_rows(&self, e: &Encoded, lengths: &[i64]) -> Result<Vec<f32>> {
        self.check_encoded(e, lengths)?;
        if self.is_training() {
            return Err(Error::invalid(
                "classify_rows: the model is in training mode; call set_training(false) first",
            ));
        }
        let n = lengths.len();
        let pooled = if self.config.pooling == Pooling::Last {
            self.pool(e, lengths)?
        } else {
            let rows = (0..n)
                .map(|i| {
                    let (i, len) = (i as i64, lengths[i]);
                    let alone = Encoded {
                        out: e.out.f_narrow(0, i, 1)?.f_narrow(1, 0, len)?.contiguous(),
                        h_n: e.h_n.f_narrow(1, i, 1)?.contiguous(),
                    };
                    self.pool(&alone, &[len])
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::f_cat(&rows, 0)?
        };
        let pooled = pooled
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous();
        let mut x = vec![0f32; pooled.numel()];
        let len = x.len();
        pooled.f_copy_data(&mut x, len)?;
        self.head.forward_rows(&x, n)
    }

    /// `e` holds (N, L, D) outputs and `lengths` one length in 1..=L per row.
    fn check_encoded(&self, e: &Encoded, lengths: &[i64]) -> Result<()> {
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
        Ok(())
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
