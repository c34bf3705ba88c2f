//! Text → token ids with a Hugging Face `tokenizer.json`, the same file and library the Python
//! side uses, so ids are identical. Sequences are truncated to `max_length`; empty texts become
//! one padding token so every sequence has length ≥ 1 (the recurrent kernels need that).

use crate::error::{Error, Result};
use std::path::Path;

/// A Hugging Face tokenizer with rnnkit's truncation and empty-text rule.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: i64,
}

impl Tokenizer {
    /// Reads `tokenizer.json`; texts become at most `max_length` ids, an empty one `[pad_id]`.
    pub fn from_file(path: &Path, max_length: usize, pad_id: i64) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::format(path, format!("cannot read tokenizer: {e}")))?;
        Ok(Self {
            inner,
            max_length: max_length.max(1),
            pad_id,
        })
    }

    /// Every id this tokenizer can produce must be a row of a `vocab_size` embedding (checked
    /// when a model and its tokenizer meet, not at the first text with a rare piece).
    pub fn check_fits(&self, vocab_size: i64) -> Result<()> {
        // Ids need not be contiguous: the largest one decides.
        let vocab = self.inner.get_vocab(true);
        if let Some((piece, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if i64::from(id) >= vocab_size {
                return Err(Error::config(format!(
                    "the tokenizer's ids go up to {id} ({piece:?}), {} pieces, but the model's \
                     vocab_size is {vocab_size}: ids from {vocab_size} on have no embedding row",
                    vocab.len()
                )));
            }
        }
        Ok(())
    }

    /// Token ids of `text` without special tokens added, truncated to `max_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("tokenizing {text:?}: {e}")))?;
        let mut ids: Vec<i64> = enc
            .get_ids()
            .iter()
            .take(self.max_length)
            .map(|&i| i as i64)
            .collect();
        if ids.is_empty() {
            ids.push(self.pad_id);
        }
        Ok(ids)
    }

    /// Untruncated ids exactly as `tokenizer.encode(text, add_special_tokens=False).ids` in Python.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped, as `tokenizer.decode(ids)` in Python (the file's
    /// decoder joins the pieces). Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| Error::invalid(format!("token id {i} is negative")))
            })
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, true)
            .map_err(|e| Error::invalid(format!("decoding {ids:?}: {e}")))
    }

    /// The piece of one id, if it has one (for labelling attention plots).
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.inner.id_to_token(i))
    }

    /// Pieces in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
