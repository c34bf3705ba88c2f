//! Serving: the [`predictor::Predictor`] (texts in, probabilities out, micro-batched across
//! threads; no HTTP dependency), the [`translation::TranslationService`] (texts in, translations
//! out, micro-batched), the [`transcription::TranscriptionService`] (WAV in, text out,
//! micro-batched) and, with the `serve` feature, the HTTP server (`http`, the `/v1` routes and
//! the server's life) with its Open Inference Protocol v2 routes (`oip`), what both share (`app`),
//! the OpenAPI document of them all (`openapi`) and the listener that times out slow request
//! headers (`listener`).

pub mod predictor;
pub mod transcription;
pub mod translation;

#[cfg(feature = "serve")]
pub mod app;
#[cfg(feature = "serve")]
pub mod http;
#[cfg(feature = "serve")]
mod listener;
#[cfg(feature = "serve")]
pub mod oip;
#[cfg(feature = "serve")]
pub mod openapi;
#[cfg(feature = "serve")]
pub mod repository;

pub use predictor::{Prediction, Predictor, PredictorOptions};
pub use transcription::TranscriptionService;
pub use translation::TranslationService;
