//! The models a server answers for: one directory (`rnnkit serve --model DIR`, served as
//! version 1) or a model repository (`--model-repository DIR`, Triton's layout):
//!
//! ```text
//! DIR/<name>/<version>/config.json, weights, tokenizer files     version: a positive integer
//! ```
//!
//! Each name serves its highest version. Loading a name (at start, or by
//! `POST /v2/repository/models/<name>/load`) reads that version's directory on a blocking
//! thread, runs a warm-up batch through it, and only then swaps it in: requests that started on
//! the old version hold it (an `Arc`) and finish on it; the old model's workers stop when the
//! last such request is answered. A load that fails leaves the old version serving and records
//! why (the repository index, `rnnkit_model_loads_total{model, result}`, stderr). Unloading
//! takes a name out; its in-flight requests still finish.

use crate::error::{Error, Result};
use crate::models::seq2seq::translate::Search;
use crate::models::{Family, ModelConfig};
use crate::serve::predictor::{Predictor, PredictorOptions};
use crate::serve::transcription::TranscriptionService;
use crate::serve::translation::TranslationService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tch::Device;

/// What answers for a model.
#[derive(Clone)]
pub enum Backend {
    /// A classifier: `/v1/predict`.
    Classifier(Predictor),
    /// A seq2seq model: `/v1/translate`.
    Translator(TranslationService),
    /// A ctc model: `/v1/transcribe`.
    Transcriber(TranscriptionService),
}

impl Backend {
    /// Loads a model directory as its family's backend (a classifier's [`Predictor`], a seq2seq
    /// model's [`TranslationService`]); other families are refused, naming them.
    pub fn load(dir: &Path, device: Device, opts: PredictorOptions) -> Result<Self> {
        if crate::models::family_of(dir)? == "ctc" {
            return Ok(TranscriptionService::load(dir, device, opts)?.into());
        }
        let family = ModelConfig::read(&dir.join("config.json"))?.family;
        match family {
            Family::Seq2seq => {
                Ok(TranslationService::load(dir, device, opts, Default::default())?.into())
            }
            Family::Classifier => Ok(Predictor::load(dir, device, opts)?.into()),
            other => Err(Error::invalid(format!(
                "{}: a {other:?} model cannot be served (classifier, seq2seq or ctc)",
                dir.display()
            ))),
        }
    }

    /// Runs one short text through the model (greedy, for a translator; a second of silence,
    /// greedy, for a transcriber).
    pub(super) async fn warm_up(&self) -> Result<()> {
        match self {
            Backend::Classifier(p) => p.predict_async(&["warm up"]).await.map(|_| ()),
            Backend::Translator(t) => {
                let ids = t.encode(&["warm up".to_string()])?;
                let mut o = *t.defaults();
                o.search = Search::Greedy;
                t.translate_async(ids, o).await.map(|_| ())
            }
            Backend::Transcriber(t) => {
                let silence =
                    tch::Tensor::zeros([t.sample_rate()], (tch::Kind::Float, Device::Cpu));
                let audio = crate::models::ctc::audio::Audio {
                    samples: silence,
                    sample_rate: t.sample_rate(),
                };
                let f = t.features_of_audio(audio)?;
                t.transcribe_async(f, 0).await.map(|_| ())
            }
        }
    }
}

impl From<Predictor> for Backend {
    fn from(p: Predictor) -> Self {
        Backend::Classifier(p)
    }
}

impl From<TranscriptionService> for Backend {
    fn from(t: TranscriptionService) -> Self {
        Backend::Transcriber(t)
    }
}

impl From<TranslationService> for Backend {
    fn from(t: TranslationService) -> Self {
        Backend::Translator(t)
    }
}

/// A loaded model version.
pub struct Served {
    /// Its version (1 for `--model`).
    pub version: u64,
    /// What answers for it.
    pub backend: Backend,
}

/// A repository: where it is and how its models are loaded.
#[derive(Clone)]
pub struct Repository {
    /// The repository's directory.
    pub dir: PathBuf,
    /// Where the models run.
    pub device: Device,
    /// The micro-batching of each model's workers.
    pub predictor: PredictorOptions,
}

/// The `model` and `result` labels of `rnnkit_model_loads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LoadLabel {
    model: String,
    result: String,
}

/// A name's last load, for the repository index: why it failed (empty: it did not).
struct Status {
    reason: String,
}

/// The served models, and the repository they come from (if any).
pub(super) struct Models {
    loaded: RwLock<BTreeMap<String, Arc<Served>>>,
    status: Mutex<BTreeMap<String, Status>>,
    repository: Option<Repository>,
    /// Loads by model and result (`ok`, `failed`).
    pub(super) loads: MetricFamily<LoadLabel, Counter>,
}

impl Models {
    /// One model, `name`, version 1.
    pub(super) fn single(name: &str, backend: Backend) -> Self {
        let loaded = BTreeMap::from([(
            name.to_string(),
            Arc::new(Served {
                version: 1,
                backend,
            }),
        )]);
        Models {
            loaded: RwLock::new(loaded),
            status: Mutex::new(BTreeMap::new()),
            repository: None,
            loads: MetricFamily::default(),
        }
    }

    /// A repository's models, none loaded yet ([`Models::load`] each of [`Models::names`]).
    pub(super) fn repository(repo: Repository) -> Self {
        Models {
            loaded: RwLock::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
            repository: Some(repo),
            loads: MetricFamily::default(),
        }
    }

    /// Whether the models come from a repository.
    pub(super) fn has_repository(&self) -> bool {
        self.repository.is_some()
    }

    /// The model `name`'s loaded version.
    pub(super) fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.loaded.read().expect("models lock").get(name).cloned()
    }

    /// The loaded model, when exactly one is.
    pub(super) fn only(&self) -> Option<Arc<Served>> {
        let loaded = self.loaded.read().expect("models lock");
        match loaded.len() {
            1 => loaded.values().next().cloned(),
            _ => None,
        }
    }

    /// Every loaded model, by name.
    pub(super) fn all(&self) -> Vec<(String, Arc<Served>)> {
        let loaded = self.loaded.read().expect("models lock");
        loaded.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Why `name` is not loaded, if a load of it failed.
    pub(super) fn failure(&self, name: &str) -> Option<String> {
        let status = self.status.lock().expect("status lock");
        status
            .get(name)
            .map(|s| s.reason.clone())
            .filter(|r| !r.is_empty())
    }

    /// The model names in the repository (its subdirectories), sorted.
    pub(super) fn names(&self) -> Result<Vec<String>> {
        let Some(repo) = &self.repository else {
            return Ok(self.all().into_iter().map(|(k, _)| k).collect());
        };
        let entries = std::fs::read_dir(&repo.dir).map_err(|e| Error::io(&repo.dir, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The highest numbered version directory of `name` in the repository.
    fn latest(repo: &Repository, name: &str) -> Result<(u64, PathBuf)> {
        let dir = repo.dir.join(name);
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u64>().ok()?;
                (v > 0).then(|| (v, e.path()))
            })
            .max_by_key(|(v, _)| *v)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no version directory (1, 2, …) in it",
                    dir.display()
                ))
            })
    }

    /// Loads `name`'s highest version, warms it up and swaps it in; the version on success. On
    /// failure the version served before (if any) keeps serving, and the reason is recorded.
    pub(super) async fn load(&self, name: &str) -> std::result::Result<u64, String> {
        let result = self.try_load(name).await;
        let label = |r: &str| LoadLabel {
            model: name.to_string(),
            result: r.into(),
        };
        let mut status = self.status.lock().expect("status lock");
        match &result {
            Ok(v) => {
                self.loads.get_or_create(&label("ok")).inc();
                status.insert(
                    name.to_string(),
                    Status {
                        reason: String::new(),
                    },
                );
                eprintln!("model {name}: version {v} loaded and warmed up");
            }
            Err(e) => {
                self.loads.get_or_create(&label("failed")).inc();
                let was = self.get(name).map(|s| s.version);
                status.insert(name.to_string(), Status { reason: e.clone() });
                match was {
                    Some(v) => {
                        eprintln!("model {name}: load failed, version {v} still serving: {e}")
                    }
                    None => eprintln!("model {name}: load failed: {e}"),
                }
            }
        }
        result
    }

    async fn try_load(&self, name: &str) -> std::result::Result<u64, String> {
        let repo = self
            .repository
            .clone()
            .ok_or("this server has no model repository (rnnkit serve --model-repository DIR)")?;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("{name:?} is not a model name"));
        }
        let n = name.to_string();
        let (version, backend) = tokio::task::spawn_blocking(move || {
            let (version, dir) = Models::latest(&repo, &n)?;
            Ok::<_, Error>((version, Backend::load(&dir, repo.device, repo.predictor)?))
        })
        .await
        .map_err(|e| format!("the loading thread failed: {e}"))?
        .map_err(|e| e.to_string())?;
        backend
            .warm_up()
            .await
            .map_err(|e| format!("version {version} failed its warm-up batch: {e}"))?;
        let served = Arc::new(Served { version, backend });
        self.loaded
            .write()
            .expect("models lock")
            .insert(name.to_string(), served);
        Ok(version)
    }

    /// Takes `name` out of service; false when it was not loaded.
    pub(super) fn unload(&self, name: &str) -> bool {
        let gone = self.loaded.write().expect("models lock").remove(name);
        if gone.is_some() {
            self.status.lock().expect("status lock").insert(
                name.to_string(),
                Status {
                    reason: "unloaded".into(),
                },
            );
            eprintln!("model {name}: unloaded");
        }
        gone.is_some()
    }

    /// The repository index: every name in the repository or loaded, its version, `READY` or
    /// `UNAVAILABLE`, and why not ready.
    pub(super) fn index(&self) -> Vec<serde_json::Value> {
        let mut names = self.names().unwrap_or_default();
        names.extend(self.all().into_iter().map(|(k, _)| k));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| match self.get(&n) {
                Some(s) => serde_json::json!({"name": n, "version": s.version.to_string(),
                    "state": "READY", "reason": self.failure(&n).unwrap_or_default()}),
                None => serde_json::json!({"name": n, "state": "UNAVAILABLE",
                    "reason": self.failure(&n).unwrap_or_else(|| "not loaded".into())}),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_numbered_version_is_chosen() {
        let dir = std::env::temp_dir().join(format!("rnnkit-repo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for v in ["1", "2", "10", "notes", "0"] {
            std::fs::create_dir_all(dir.join("m").join(v)).unwrap();
        }
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        let repo = Repository {
            dir: dir.clone(),
            device: Device::Cpu,
            predictor: PredictorOptions::default(),
        };
        assert_eq!(Models::latest(&repo, "m").unwrap().0, 10);
        let e = Models::latest(&repo, "empty").unwrap_err().to_string();
        assert!(e.contains("no version directory"), "{e}");
        let models = Models::repository(repo);
        assert_eq!(models.names().unwrap(), ["empty", "m"]);
        assert!(models.failure("m").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
