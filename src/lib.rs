//! rnnkit: recurrent networks (RNN, LSTM, GRU) on libtorch that interoperate exactly with PyTorch.
//!
//! Layers take PyTorch's constructor arguments and defaults and name their parameters with
//! PyTorch's state_dict keys, so a `state_dict` saved in Python loads by name, and they call the
//! same fused libtorch kernels, so they compute the same numbers.
//!
//! The modules are layers of one house; each imports only those above it in this list:
//! - [`checkpoint`]: `.pth` (the `weights_only` pickle subset, zip and legacy) and safetensors,
//!   read and written without Python; parsing needs no libtorch. [`StateDict`] crosses to tch.
//! - [`nn`]: [`Module`] and the layers; the recurrent kernels live under [`nn::rnn`].
//! - [`models`]: model families, model directories (`config.json` + weights + tokenizer).
//! - `train` (feature `train`) and [`serve`] (the predictor, and the HTTP server with feature
//!   `serve`).
//!
//! The binary (`src/main.rs`, `src/cli/`, feature `cli`) sits on top of all of them.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
pub mod error;
#[doc(hidden)]
pub mod json;
pub mod models;
pub mod nn;
pub mod prelude;
pub mod rng;
pub mod serve;
#[cfg(feature = "train")]
pub mod train;

/// The tch version rnnkit is built on, for users' own tensors (`rnnkit::tch::Tensor`).
pub use tch;

pub use checkpoint::StateDict;
pub use error::{Error, Result};
pub use nn::{
    AdditiveAttention, Dropout, Embedding, Gru, GruCell, LayerNorm, Linear, LoadReport, Lstm,
    LstmCell, Mode, Module, ModuleExt, Nonlinearity, Rnn, RnnBase, RnnCell, RnnConfig, RnnState,
};
