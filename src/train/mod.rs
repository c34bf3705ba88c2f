//! Training (the `train` feature): optimizers ([`optim`]), learning-rate schedules
//! ([`schedule`]), JSONL data and batching ([`data`]), classification, translation and speech
//! metrics ([`metrics`], [`translation_metrics`], [`speech_metrics`]) and evaluation ([`eval`],
//! [`translation_eval`], [`speech_eval`]),
//! the training chart ([`chart`]), the classifier fine-tuning loop ([`finetune`], configured by
//! [`config`], resumed by [`resume`]), the language-model, seq2seq and ctc loops
//! ([`lm_finetune`], [`seq2seq_finetune`], [`ctc_finetune`]). What the loops share is in
//! [`common`] and [`run_dir`].

pub mod chart;
pub mod common;
pub mod config;
pub mod ctc_finetune;
pub mod data;
pub mod eval;
pub mod finetune;
pub(crate) mod groups;
pub mod lm_finetune;
pub mod metrics;
pub mod optim;
pub mod resume;
pub mod run_dir;
pub mod schedule;
pub mod seq2seq_finetune;
pub mod speech_eval;
pub mod speech_metrics;
pub mod translation_eval;
pub mod translation_metrics;
