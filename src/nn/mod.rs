//! Layers with PyTorch's constructor arguments, defaults and state_dict keys: the [`Module`]
//! trait, [`Linear`], [`Embedding`], [`Dropout`], [`LayerNorm`], additive attention pooling,
//! a decoder's attention over a memory ([`GlobalAttention`]), the recurrent layers ([`rnn`]) and their cells, and libtorch's inference mode ([`inference`]).

pub mod attention;
pub mod cell;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod global_attention;
pub mod inference;
pub mod layer_norm;
pub mod linear;
pub mod module;
pub mod rnn;

pub use attention::AdditiveAttention;
pub use cell::{GruCell, LstmCell, RnnCell};
pub use conv::Conv1d;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use global_attention::{AttentionKind, GlobalAttention};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use module::{LoadReport, Module, ModuleExt};
pub use rnn::{Gru, Lstm, Mode, Nonlinearity, Rnn, RnnBase, RnnConfig, RnnState};
