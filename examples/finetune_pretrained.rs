//! PyTorch's fine-tuning loop, line by line, with rnnkit: a model pretrained in Python (an
//! Embedding and an LSTM saved with `torch.save(model.state_dict())` under the user's own
//! names), a new `Linear` head, the pretrained parameters frozen, Adam (lr=1e-3),
//! CrossEntropyLoss, an epoch loop, and the fine-tuned `state_dict` saved as a `.pth` that the
//! same Python class loads with `strict=True`.
//!
//! ```sh
//! .venv/bin/python scripts/finetune_pretrained.py pretrain runs/ft   # the Python side
//! cargo run --release --example finetune_pretrained -- runs/ft
//! .venv/bin/python scripts/finetune_pretrained.py check runs/ft      # strict load, same bits
//! ```
//!
//! The PyTorch code each step mirrors is in the comments.

use anyhow::{ensure, Context, Result};
use rnnkit::prelude::*;
use rnnkit::train::optim::{Optimizer, OptimizerConfig, ParamGroup};
use std::path::PathBuf;
use tch::{Device, Kind, Reduction, Tensor};

const VOCAB: i64 = 50;
const EMB: i64 = 16;
const HIDDEN: i64 = 32;
const CLASSES: i64 = 2;
const BATCH: i64 = 32;
const EPOCHS: usize = 5;

/// class Classifier(nn.Module): embed, rnn, head — the fields are the state_dict names.
struct Classifier {
    embed: Embedding,
    rnn: Lstm,
    head: Linear,
}
rnnkit::module!(Classifier { embed, rnn, head });

impl Classifier {
    fn new() -> rnnkit::Result<Self> {
        Ok(Self {
            embed: Embedding::new(VOCAB, EMB, None, Kind::Float, Device::Cpu)?,
            rnn: Lstm::new(RnnConfig::new(EMB, HIDDEN))?, // batch_first=false, as in PyTorch
            head: Linear::new(HIDDEN, CLASSES, true, Kind::Float, Device::Cpu)?,
        })
    }

    /// `_, (h_n, _) = self.rnn(self.embed(ids)); return self.head(h_n[-1])`: (L, N) -> (N, C).
    fn forward(&self, ids: &Tensor) -> rnnkit::Result<Tensor> {
        let (_, state) = self.rnn.forward(&self.embed.forward(ids)?, None)?;
        self.head.forward(&state.h.get(-1))
    }
}

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: finetune_pretrained DIR")?,
    );
    tch::manual_seed(0);

    // model = Classifier()
    // missing, unexpected = model.load_state_dict(torch.load("pretrained.pth"), strict=False)
    let mut model = Classifier::new()?;
    let pretrained = StateDict::load(dir.join("pretrained.pth"))?;
    let report = model.load_state_dict_partial(&pretrained, false)?;
    ensure!(
        report.missing_keys == ["head.weight", "head.bias"] && report.unexpected_keys.is_empty(),
        "unexpected load report: {report:?}"
    );
    // The head's starting values (copies: state_dict() shares storage with the module).
    let head_init: Vec<(String, Tensor)> = model
        .head
        .state_dict()
        .iter()
        .map(|(k, v)| (k.clone(), v.copy()))
        .collect();

    // for name, p in model.named_parameters(): p.requires_grad_(name.startswith("head."))
    let mut trainable = Vec::new();
    for (name, p) in model.named_parameters() {
        let train = name.starts_with("head.");
        let _ = p.set_requires_grad(train);
        if train {
            trainable.push((name, p));
        }
    }
    // opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    let group = ParamGroup {
        name: "head".into(),
        params: trainable,
        lr: 1e-3,
    };
    let mut opt = Optimizer::new(OptimizerConfig::adam(), vec![group])?;

    let data = StateDict::load(dir.join("data.safetensors"))?;
    let (train_ids, train_labels) = (data.require("train_ids")?, data.require("train_labels")?);
    let n = train_ids.size()[0];

    // model.train(); for epoch in range(EPOCHS): for each batch in order:
    model.train();
    let mut losses = Vec::new();
    for epoch in 0..EPOCHS {
        for start in (0..n).step_by(BATCH as usize) {
            let len = BATCH.min(n - start);
            let ids = train_ids.narrow(0, start, len).tr(); // (L, N)
            let labels = train_labels.narrow(0, start, len);
            // loss = nn.CrossEntropyLoss()(model(ids), labels)
            let loss = model.forward(&ids)?.f_cross_entropy_loss::<Tensor>(
                &labels,
                None,
                Reduction::Mean,
                -100,
                0.0,
            )?;
            opt.zero_grad(); // opt.zero_grad()
            loss.backward(); // loss.backward()
            opt.step()?; // opt.step()
            losses.push(loss.double_value(&[]));
        }
        println!(
            "epoch {epoch}: last loss {:.4}",
            losses.last().unwrap_or(&f64::NAN)
        );
    }

    // torch.save(model.state_dict(), "finetuned.pth")
    model.eval();
    model.state_dict().save(dir.join("finetuned.pth"))?;

    // The logits the Python side must reproduce bit for bit, the head's starting point and the
    // losses for its replay of this loop.
    let logits = tch::no_grad(|| model.forward(&data.require("test_ids")?.tr()))?;
    let mut out = StateDict::new();
    out.insert("test_logits".into(), logits)?;
    out.insert("losses".into(), Tensor::from_slice(&losses))?;
    for (k, v) in head_init {
        out.insert(format!("head.{k}"), v)?;
    }
    out.save(dir.join("rust_outputs.safetensors"))?;
    println!(
        "fine-tuned {} steps; wrote {}/finetuned.pth and rust_outputs.safetensors",
        losses.len(),
        dir.display()
    );
    Ok(())
}
