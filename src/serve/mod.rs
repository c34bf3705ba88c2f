//! Serving: the [`predictor::Predictor`] (texts in, probabilities out, micro-batched across
//! threads; no HTTP dependency), the [`translation::TranslationService`] (texts in, translations
//! out, micro-batched) and, with the `serve` feature, the HTTP server (`http`) with its Open
//! Inference Protocol v2 routes (`oip`).

pub mod predictor;
pub mod translation;

#[cfg(feature = "serve")]
pub mod http;
#[cfg(feature = "serve")]
pub mod oip;

pub use predictor::{Prediction, Predictor, PredictorOptions};
pub use translation::TranslationService;
