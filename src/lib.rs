//! rnnkit: recurrent networks (RNN, LSTM, GRU) on libtorch that interoperate exactly with PyTorch.
//!
//! Layers take PyTorch's constructor arguments and defaults and name their parameters with
//! PyTorch's state_dict keys, so a `state_dict` saved in Python loads by name, and they call the
//! same fused libtorch kernels, so they compute the same numbers.

pub mod attention;
pub mod bench;
pub mod cell;
pub mod checkpoint;
pub mod cli;
pub mod convert;
pub mod data;
pub mod device;
pub mod doctor;
pub mod dropout;
pub mod embedding;
pub mod error;
pub mod finetune;
pub mod fused;
pub mod inference;
pub mod inspect;
pub mod io;
pub mod json;
pub mod layer_norm;
pub mod linear;
pub mod lm_finetune;
pub mod metrics;
pub mod model;
pub mod module;
pub mod optim;
pub mod packed;
pub mod parity;
pub mod pickle;
pub mod predictor;
pub mod pth;
pub mod raw;
pub mod rnn;
pub mod safetensors;
pub mod schedule;
pub mod serve;
pub mod state_dict;
pub mod tokenizer;

pub use cell::{GruCell, LstmCell, RnnCell};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use module::{LoadReport, Module, ModuleExt};
pub use rnn::{Gru, Lstm, Mode, Nonlinearity, Rnn, RnnBase, RnnConfig, RnnState};
pub use state_dict::StateDict;
