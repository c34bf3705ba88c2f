//! Labelled text for training and evaluation: reading JSONL, tokenising, and batching with
//! padding and lengths in a seeded, reproducible order.
//!
//! A data file has one JSON object per line: `{"text": "...", "label": "positive"}` (or a class
//! index), or pre-tokenised `{"ids": [5, 17, 2], "label": 1}`. Blank lines are skipped.
//! A training example may also carry `"probs": [0.12, 0.88]`, a probability per class in the
//! model's label order (soft targets, e.g. the share of raters who chose each class): training
//! then uses PyTorch's `CrossEntropyLoss` with class probabilities as targets for its batch (see
//! [`Batch::probs`]); accuracy and the evaluation loss still use `"label"`.
//!
//! Order of an epoch (the same algorithm is in `scripts/finetune_reference.py`):
//! 1. a permutation of the examples by Fisher–Yates with SplitMix64 seeded `seed + epoch`
//!    (no shuffling: the file order);
//! 2. with bucketing, each run of `50 * batch_size` examples is stably sorted by length,
//!    longest first, so batches hold sequences of similar length (less padding);
//! 3. consecutive slices of `batch_size` form batches; with shuffling and bucketing the batch
//!    order is then permuted by the same generator.

use crate::error::{Error, Result};
use crate::models::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// One example: token ids (length ≥ 1), a class index and optionally class probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids, cut to [`read_jsonl`]'s `max_length`.
    pub ids: Vec<i64>,
    /// Class index in `0..num_classes` (0 for unlabelled text).
    pub label: i64,
    /// Soft target: one probability per class, each in [0, 1], summing to 1 (within 1e-3).
    pub probs: Option<Vec<f32>>,
}

/// The examples of one data file, in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file read (errors about an example name it).
    pub path: PathBuf,
    /// At least one example.
    pub examples: Vec<Example>,
}

/// Reads a JSONL data file. `labels` maps label strings to indices; integer labels must lie in
/// `0..num_classes` (`num_classes` 0: no labels needed, any are ignored). Every problem names the
/// file and line.
pub fn read_jsonl(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    labels: Option<&[String]>,
    num_classes: i64,
    max_length: usize,
) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        Error::format(path, format!("line {line}: not valid UTF-8 (byte {at})"))
    })?;
    // A byte-order mark (editors on Windows write one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::format(path, format!("line {}: {msg}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        // num_classes 0: unlabelled text (language-model fine-tuning); any label is ignored.
        let label = match &v["label"] {
            _ if num_classes == 0 => 0,
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| at(format!("label {n} is not an integer")))?,
            serde_json::Value::String(s) => match labels {
                Some(names) => names
                    .iter()
                    .position(|l| l == s)
                    .map(|p| p as i64)
                    .ok_or_else(|| {
                        at(format!(
                            "label {s:?} is not one of the model's labels {names:?}"
                        ))
                    })?,
                None => s
                    .parse::<i64>()
                    .map_err(|_| at(format!("label {s:?}: the model has no label names")))?,
            },
            serde_json::Value::Null => return Err(at("no \"label\"".into())),
            other => return Err(at(format!("label {other} must be a string or an integer"))),
        };
        if num_classes > 0 && (label < 0 || label >= num_classes) {
            return Err(at(format!("label {label} out of range 0..{num_classes}")));
        }
        let mut ids = if let Some(ids) = v.get("ids") {
            let arr = ids
                .as_array()
                .ok_or_else(|| at("\"ids\" must be a list of integers".into()))?;
            arr.iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| at(format!("token id {x} is not an integer")))
                })
                .collect::<Result<Vec<_>>>()?
        } else if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            let tok = tokenizer.ok_or_else(|| {
                at("has \"text\" but the model directory has no tokenizer".into())
            })?;
            tok.encode(t)?
        } else {
            return Err(at("needs \"text\" (a string) or \"ids\" (token ids)".into()));
        };
        ids.truncate(max_length.max(1));
        if ids.is_empty() {
            return Err(at("empty token sequence".into()));
        }
        let probs = match v.get("probs") {
            Some(p) if num_classes > 0 => Some(read_probs(p, num_classes as usize, &at)?),
            _ => None,
        };
        examples.push(Example { ids, label, probs });
    }
    if examples.is_empty() {
        return Err(Error::format(path, "no examples (empty data file)"));
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        examples,
    })
}

/// `"probs"`: `num_classes` finite numbers in [0, 1] that sum to 1 (within 1e-3). `at` makes
/// the error of this line of the file.
fn read_probs(
    p: &serde_json::Value,
    num_classes: usize,
    at: &dyn Fn(String) -> Error,
) -> Result<Vec<f32>> {
    let arr = p.as_array().ok_or_else(|| {
        at(format!(
            "\"probs\" must be a list of {num_classes} numbers, got {p}"
        ))
    })?;
    if arr.len() != num_classes {
        return Err(at(format!(
            "\"probs\" has {} values, the model has {num_classes} classes",
            arr.len()
        )));
    }
    let probs = arr
        .iter()
        .map(|x| match x.as_f64() {
            Some(v) if (0.0..=1.0).contains(&v) => Ok(v),
            _ => Err(at(format!("\"probs\": {x} is not a probability in [0, 1]"))),
        })
        .collect::<Result<Vec<f64>>>()?;
    let sum: f64 = probs.iter().sum();
    if (sum - 1.0).abs() > 1e-3 {
        return Err(at(format!("\"probs\" sum to {sum}, not 1")));
    }
    Ok(probs.into_iter().map(|v| v as f32).collect())
}

impl Dataset {
    /// The token count of each example, in file order.
    pub fn lengths(&self) -> Vec<usize> {
        self.examples.iter().map(|e| e.ids.len()).collect()
    }

    /// Every token id must be in `0..vocab_size`; checked before training starts.
    pub fn check_vocab(&self, vocab_size: i64) -> Result<()> {
        for (i, e) in self.examples.iter().enumerate() {
            if let Some(bad) = e.ids.iter().find(|&&t| t < 0 || t >= vocab_size) {
                return Err(Error::format(
                    &self.path,
                    format!(
                        "example {}: token id {bad} outside the vocabulary 0..{vocab_size}",
                        i + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub use crate::rng::SplitMix64;

/// How an epoch is cut into batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Examples per batch (the last batch of an epoch may hold fewer; 0 counts as 1).
    pub batch_size: usize,
    /// Permute the examples, and with `bucket` the batches, each epoch.
    pub shuffle: bool,
    /// Sort each run of `50 * batch_size` examples by length, longest first.
    pub bucket: bool,
    /// The generator of epoch e is seeded `seed + e`.
    pub seed: u64,
}

impl Batching {
    /// Evaluation order: the file's, bucketed by length (no shuffling, so no seed).
    pub fn for_eval(batch_size: usize) -> Self {
        Batching {
            batch_size,
            shuffle: false,
            bucket: true,
            seed: 0,
        }
    }
}

/// Steps in a run: `epochs` passes of [`epoch_batches`], capped at `max_steps`.
pub fn total_steps(lengths: &[usize], b: Batching, epochs: u64, max_steps: Option<u64>) -> u64 {
    let per_epoch = epoch_batches(lengths, b, 0).len() as u64;
    max_steps.unwrap_or(u64::MAX).min(per_epoch * epochs)
}

/// The batches of `epoch`, as lists of example indices (see the module doc).
pub fn epoch_batches(lengths: &[usize], b: Batching, epoch: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = SplitMix64(b.seed.wrapping_add(epoch));
    if b.shuffle {
        rng.shuffle(&mut order);
    }
    let bs = b.batch_size.max(1);
    if b.bucket {
        for chunk in order.chunks_mut(bs * 50) {
            chunk.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(bs).map(<[usize]>::to_vec).collect();
    if b.shuffle && b.bucket {
        rng.shuffle(&mut batches);
    }
    batches
}

/// A padded batch: ids `(N, L)` (padding `pad_id`), lengths, labels `(N)`.
pub struct Batch {
    /// Token ids `(N, L)`, int64, `L` the longest example's length; shorter rows padded.
    pub ids: Tensor,
    /// Each row's real length (`N` values, each ≥ 1).
    pub lengths: Vec<i64>,
    /// Class indices `(N)`, int64.
    pub labels: Tensor,
    /// (N, C) f32 class probabilities when any example of the batch has `probs`; the others
    /// contribute their label one-hot. PyTorch's `CrossEntropyLoss` then takes the probability
    /// form for the whole batch, whose mean divides by N even with class weights (the index form
    /// divides by the sum of the targets' weights).
    pub probs: Option<Tensor>,
}

/// The [`Batch`] of `examples[i]` for each `i` in `indices`, in that order, on `device`;
/// rows padded with `pad_id`.
pub fn make_batch(examples: &[Example], indices: &[usize], pad_id: i64, device: Device) -> Batch {
    let max_len = indices
        .iter()
        .map(|&i| examples[i].ids.len())
        .max()
        .unwrap_or(1);
    let mut flat = Vec::with_capacity(indices.len() * max_len);
    let mut lengths = Vec::with_capacity(indices.len());
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let e = &examples[i];
        flat.extend_from_slice(&e.ids);
        flat.extend(std::iter::repeat_n(pad_id, max_len - e.ids.len()));
        lengths.push(e.ids.len() as i64);
        labels.push(e.label);
    }
    let ids = Tensor::from_slice(&flat)
        .view([indices.len() as i64, max_len as i64])
        .to_device(device);
    let probs = indices
        .iter()
        .find_map(|&i| examples[i].probs.as_ref())
        .map(|first| {
            let c = first.len();
            let mut p = vec![0f32; indices.len() * c];
            for (r, &i) in indices.iter().enumerate() {
                match &examples[i].probs {
                    Some(q) => p[r * c..(r + 1) * c].copy_from_slice(q),
                    None => p[r * c + examples[i].label as usize] = 1.0,
                }
            }
            Tensor::from_slice(&p)
                .view([indices.len() as i64, c as i64])
                .to_device(device)
        });
    let labels = Tensor::from_slice(&labels)
        .to_kind(Kind::Int64)
        .to_device(device);
    Batch {
        ids,
        lengths,
        labels,
        probs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_example_once_and_are_reproducible() {
        let lengths: Vec<usize> = (0..103).map(|i| 1 + (i * 7) % 13).collect();
        let b = Batching {
            batch_size: 8,
            shuffle: true,
            bucket: true,
            seed: 5,
        };
        let e0 = epoch_batches(&lengths, b, 0);
        let mut all: Vec<usize> = e0.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(e0, epoch_batches(&lengths, b, 0));
        assert_ne!(e0, epoch_batches(&lengths, b, 1));
        // Bucketing: within a batch lengths are sorted descending.
        assert!(e0
            .iter()
            .all(|batch| batch.windows(2).all(|w| lengths[w[0]] >= lengths[w[1]])));
    }

    #[test]
    fn bad_data_is_reported_with_file_and_line() {
        let dir = std::env::temp_dir().join(format!("rnnkit-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        let labels = vec!["neg".to_string(), "pos".to_string()];
        for (content, want) in [
            (
                "{\"ids\": [1, 2], \"label\": 2}\n",
                "line 1: label 2 out of range",
            ),
            (
                "{\"ids\": [1], \"label\": \"neg\"}\n{\"ids\": [1], \"label\": \"meh\"}\n",
                "line 2: label \"meh\"",
            ),
            ("", "no examples"),
            ("{\"text\": \"x\", \"label\": 0}\n", "no tokenizer"),
            ("not json\n", "line 1: not JSON"),
            (
                "{\"ids\": [1], \"label\": 0, \"probs\": [1.0]}\n",
                "line 1: \"probs\" has 1 values, the model has 2 classes",
            ),
            (
                "{\"ids\": [1], \"label\": 0, \"probs\": [0.7, 0.7]}\n",
                "\"probs\" sum to 1.4",
            ),
            (
                "{\"ids\": [1], \"label\": 0, \"probs\": [-0.5, 1.5]}\n",
                "-0.5 is not a probability",
            ),
            (
                "{\"ids\": [1], \"label\": 0, \"probs\": 0.5}\n",
                "\"probs\" must be a list of 2 numbers",
            ),
        ] {
            std::fs::write(&p, content).unwrap();
            let e = read_jsonl(&p, None, Some(&labels), 2, 10)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want) && e.contains("d.jsonl"),
                "{content:?}: {e}"
            );
        }
        // Invalid UTF-8 is named by line; a byte-order mark before the first line is skipped.
        let ok = "{\"ids\": [1], \"label\": \"neg\"}\n";
        let mut bad = ok.repeat(3).into_bytes();
        bad.extend_from_slice(b"{\"ids\": [1], \"label\": \"\xff\"}\n");
        std::fs::write(&p, bad).unwrap();
        let e = read_jsonl(&p, None, Some(&labels), 2, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.jsonl: line 4: not valid UTF-8"), "{e}");
        std::fs::write(&p, format!("\u{feff}{ok}{ok}")).unwrap();
        assert_eq!(
            read_jsonl(&p, None, Some(&labels), 2, 10)
                .unwrap()
                .examples
                .len(),
            2
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn soft_targets_fill_a_probability_batch_and_one_hot_the_rest() {
        let ex = |label, probs: Option<Vec<f32>>| Example {
            ids: vec![1, 2],
            label,
            probs,
        };
        let examples = vec![ex(1, None), ex(0, Some(vec![0.25, 0.75])), ex(0, None)];
        let b = make_batch(&examples, &[0, 1, 2], 0, Device::Cpu);
        let p = Vec::<f32>::try_from(b.probs.unwrap().view([-1])).unwrap();
        assert_eq!(p, [0.0, 1.0, 0.25, 0.75, 1.0, 0.0]);
        assert!(make_batch(&examples, &[0, 2], 0, Device::Cpu)
            .probs
            .is_none());
    }
}
