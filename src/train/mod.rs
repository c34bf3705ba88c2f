//! Training (the `train` feature): optimizers ([`optim`]), learning-rate schedules
//! ([`schedule`]), JSONL data and batching ([`data`]), classification metrics ([`metrics`]), speech error rates ([`speech_metrics`]) and
//! evaluation ([`eval`]), the training chart ([`chart`]), the classifier fine-tuning loop
//! ([`finetune`], configured by [`config`], resumed by [`resume`]) and the language-model loop
//! ([`lm_finetune`]). What both loops share is in [`common`] and [`run_dir`].

pub mod chart;
pub mod common;
pub mod config;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod lm_finetune;
pub mod metrics;
pub mod optim;
pub mod resume;
pub mod run_dir;
pub mod schedule;
pub mod seq2seq_finetune;
pub mod speech_metrics;
pub mod translation_eval;
pub mod translation_metrics;
