//! Training (the `train` feature): optimizers ([`optim`]), learning-rate schedules
//! ([`schedule`]), JSONL data and batching ([`data`]), classification metrics and the training
//! chart ([`metrics`]), the classifier fine-tuning loop ([`finetune`]) and the language-model
//! loop ([`lm_finetune`]). What both loops share is in [`common`] and [`run_dir`].

pub mod common;
pub mod data;
pub mod finetune;
pub mod lm_finetune;
pub mod metrics;
pub mod optim;
pub mod run_dir;
pub mod schedule;
