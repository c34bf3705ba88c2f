//! Serving: the [`predictor::Predictor`] (texts in, probabilities out, micro-batched across
//! threads; no HTTP dependency), the [`translation::TranslationService`] (texts in, translations
//! out, micro-batched) and, with the `serve` feature, the HTTP server (`http`).

pub mod predictor;
pub mod translation;

#[cfg(feature = "serve")]
pub mod http;

pub use predictor::{Prediction, Predictor, PredictorOptions};
pub use translation::TranslationService;
