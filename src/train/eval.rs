//! Evaluating a classifier: loss, accuracy, macro-F1 and the confusion matrix of a labelled
//! data set ([`evaluate`], after every fine-tuning epoch) and of a model directory on a data
//! file ([`eval_dir`], `rnnkit eval`).
//!
//! ```text
//! loss = Σ_b N_b · cross_entropy(model(ids_b), y_b, weight) / Σ_b N_b     (eval mode, no dropout)
//! ```
//! Batches as [`Batching::for_eval`]: file order, bucketed by length; labels only (a
//! training example's `"probs"` play no part).

use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use crate::models::{Model, SequenceClassifier};
use crate::nn::module::Module;
use crate::train::data::{epoch_batches, make_batch, read_jsonl, Batching, Dataset};
use crate::train::metrics::{Metrics, MetricsAcc};
use std::path::Path;
use tch::{Device, Reduction, Tensor};

/// Loss (mean cross-entropy), accuracy, macro-F1 and confusion matrix of `data`, in eval mode.
pub fn evaluate(
    model: &mut SequenceClassifier,
    data: &Dataset,
    batch_size: usize,
    pad: i64,
    class_weights: Option<&Tensor>,
    device: Device,
) -> Result<Metrics> {
    let was_training = model.is_training();
    model.set_training(false);
    let _guard = tch::no_grad_guard();
    let n = model.config.num_classes.unwrap_or(1) as usize;
    let mut acc = MetricsAcc::new(n);
    for indices in epoch_batches(&data.lengths(), Batching::for_eval(batch_size), 0) {
        let b = make_batch(&data.examples, &indices, pad, device);
        let logits = model.forward(&b.ids, &b.lengths)?;
        let loss = logits
            .f_cross_entropy_loss(&b.labels, class_weights, Reduction::Mean, -100, 0.0)?
            .double_value(&[]);
        let pred = Vec::<i64>::try_from(logits.argmax(1, false).to_device(Device::Cpu))
            .map_err(|e| Error::invalid(e.to_string()))?;
        let labels = Vec::<i64>::try_from(b.labels.to_device(Device::Cpu))
            .map_err(|e| Error::invalid(e.to_string()))?;
        acc.add(&labels, &pred, loss);
    }
    model.set_training(was_training);
    Ok(acc.finish())
}

/// `rnnkit eval`: a model directory on a labelled data file.
pub fn eval_dir(
    model_dir: &Path,
    data: &Path,
    batch_size: usize,
    device: Device,
) -> Result<Metrics> {
    let mut model = match Model::load_dir(model_dir, device)? {
        Model::Classifier(c) => c,
        other => {
            return Err(Error::invalid(format!(
                "{}: eval needs a classifier, this is family {:?}",
                model_dir.display(),
                other.config().family
            )))
        }
    };
    let mcfg = model.config.clone();
    let tokenizer = Tokenizer::of_model(model_dir, &mcfg, mcfg.max_length)?;
    let ds = read_jsonl(
        data,
        tokenizer.as_ref(),
        mcfg.labels.as_deref(),
        mcfg.num_classes.unwrap_or(0),
        mcfg.max_length,
    )?;
    ds.check_vocab(mcfg.vocab_size)?;
    evaluate(
        &mut model,
        &ds,
        batch_size,
        mcfg.padding_idx.unwrap_or(0),
        None,
        device,
    )
}
