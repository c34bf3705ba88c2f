//! Serving: the [`predictor::Predictor`] (texts in, probabilities out, micro-batched across
//! threads; no HTTP dependency) and, with the `serve` feature, the HTTP server (`http`).

pub mod predictor;

#[cfg(feature = "serve")]
pub mod http;

pub use predictor::{Prediction, Predictor, PredictorOptions};
