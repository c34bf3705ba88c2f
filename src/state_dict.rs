//! `StateDict`: an ordered map from PyTorch state_dict keys to tensors, as
//! `model.state_dict()` returns it, with the usual edits (strip a prefix, rename, select).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

#[derive(Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// The file it was read from, for error messages.
    source: Option<PathBuf>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds one from (key, tensor) pairs; a repeated key is an error.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Tensor)>) -> Result<Self> {
        let mut sd = Self::new();
        for (k, t) in pairs {
            sd.insert(k, t)?;
        }
        Ok(sd)
    }

    /// Records the file this came from, named in later errors.
    pub fn with_source(mut self, path: impl AsRef<Path>) -> Self {
        self.source = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Adds a key; a key that is already there is an error (never silently replaced).
    pub fn insert(&mut self, key: String, t: Tensor) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(Error::invalid(format!("duplicate state_dict key {key:?}")));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, t));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// The tensor under `key`, or an error naming the key and the file.
    pub fn require(&self, key: &str) -> Result<&Tensor> {
        self.get(key).ok_or_else(|| {
            let file = self
                .source
                .as_ref()
                .map(|p| format!("{}: ", p.display()))
                .unwrap_or_default();
            Error::invalid(format!("{file}missing key {key:?}"))
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k, t))
    }

    pub fn into_pairs(self) -> Vec<(String, Tensor)> {
        self.entries
    }

    /// Keys under `prefix` with the prefix removed (`select("encoder.")`); others dropped.
    pub fn select(&self, prefix: &str) -> StateDict {
        let pairs = self.entries.iter().filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|s| (s.to_string(), t.shallow_clone()))
        });
        let mut sd = StateDict {
            source: self.source.clone(),
            ..Default::default()
        };
        for (k, t) in pairs {
            // Stripping one prefix from unique keys keeps them unique.
            let _ = sd.insert(k, t);
        }
        sd
    }

    /// Removes `prefix` from every key that has it (`module.`, `_orig_mod.`); other keys stay.
    /// Two keys that become equal are an error.
    pub fn strip_prefix(self, prefix: &str) -> Result<StateDict> {
        self.rename(|k| k.strip_prefix(prefix).unwrap_or(k).to_string())
    }

    /// Renames every key with `f`; two keys that become equal are an error.
    pub fn rename(self, f: impl Fn(&str) -> String) -> Result<StateDict> {
        let source = self.source.clone();
        let mut sd = StateDict::from_pairs(self.entries.into_iter().map(|(k, t)| (f(&k), t)))?;
        sd.source = source;
        Ok(sd)
    }
}
