//! `use rnnkit::prelude::*;` brings what a fine-tuning or inference program needs: the layers,
//! [`Module`]/[`ModuleExt`], [`StateDict`], the error type, and the [`module!`](crate::module)
//! macro for a user's own composite modules.

pub use crate::checkpoint::StateDict;
pub use crate::device::parse_device;
pub use crate::error::{Error, Result};
pub use crate::nn::{
    Dropout, Embedding, Gru, GruCell, LayerNorm, Linear, Lstm, LstmCell, Module, ModuleExt,
    Nonlinearity, Rnn, RnnCell, RnnConfig, RnnState,
};
