//! What the HTTP routes of [`crate::serve::http`] (`/v1`) and [`crate::serve::oip`] (`/v2`)
//! share: the server's options, the served models ([`crate::serve::repository`]), the request
//! metrics and their Prometheus registry, readiness, and
//! the steps every request takes: reading a bounded JSON body, checking texts, counting the
//! request, and turning a model's failure into a status.
//!
//! ```text
//! body ≤ max_body_bytes (else 413, read to its end up to 8× the limit; 408 past the timeout)
//!   → JSON (else 400) → 1..=max_texts texts of ≤ max_text_chars each (else 400)
//!   → model within request_timeout (else 504; full queue 503; failure 500)
//! ```

use crate::error::Error;
use crate::models::seq2seq::translate::{Search, TranslateOptions};
use crate::serve::predictor::{Predictor, PredictorStats, BATCH_SIZE_BOUNDS};
use crate::serve::repository::Models;
pub use crate::serve::repository::{Backend, Served};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's address, the model's name and the limits of a request.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port` to listen on (default `127.0.0.1:8080`; port 0 picks a free port).
    pub addr: String,
    /// The model's name under `/v2/models/` (default `model`).
    pub model_name: String,
    /// Largest request body in bytes (default 1 MiB); a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Longest text in characters (Unicode scalar values; default 10 000); a longer one is
    /// answered 400.
    pub max_text_chars: usize,
    /// Most texts in one request (default 256); more, or none, is answered 400.
    pub max_texts: usize,
    /// How long a request may wait for its predictions, queue and forward passes included
    /// (default 10 s); past it the answer is 504.
    pub request_timeout: Duration,
    /// Longest audio of a `/v1/transcribe` request in seconds (default 120); longer is 400.
    pub max_audio_seconds: f64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            model_name: "model".into(),
            max_body_bytes: 1 << 20,
            max_text_chars: 10_000,
            max_texts: 256,
            request_timeout: Duration::from_secs(10),
            max_audio_seconds: 120.0,
        }
    }
}

/// Latency histogram bounds in seconds.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// The statuses `/v1/predict` answers with; each has a `rnnkit_requests_total` series from the
/// start (at 0), so rates exist before the first error.
const CODES: [u16; 7] = [200, 400, 408, 413, 503, 504, 500];

/// The `code` label of `rnnkit_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// The server-side metrics and the registry that encodes them (with [`ModelsCollector`]).
pub(super) struct Metrics {
    pub(super) registry: Registry,
    requests: Family<CodeLabel, Counter>,
    latency: Histogram,
    in_flight: Gauge,
}

impl Metrics {
    /// The metrics of a server; the classifiers' counters are read at each scrape.
    pub(super) fn new(models: Arc<Models>) -> Self {
        let requests = Family::<CodeLabel, Counter>::default();
        for code in CODES {
            let _ = requests.get_or_create(&CodeLabel { code });
        }
        let latency = Histogram::new(LATENCY_BOUNDS);
        let in_flight = Gauge::default();
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counters and `.` to help texts.
        registry.register(
            "rnnkit_requests",
            "Prediction and translation requests by HTTP status",
            requests.clone(),
        );
        registry.register(
            "rnnkit_request_duration_seconds",
            "Prediction and translation request latency",
            latency.clone(),
        );
        registry.register(
            "rnnkit_model_loads",
            "Model loads from the repository by model and result (ok, failed)",
            models.loads.clone(),
        );
        registry.register_collector(Box::new(ModelsCollector(models)));
        registry.register(
            "rnnkit_requests_in_flight",
            "Requests being answered",
            in_flight.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
        }
    }
}

/// `rnnkit_batch_size` and `rnnkit_queue_depth`, read from the classifiers' predictors at each
/// scrape (summed over the loaded ones): a predictor keeps plain atomics ([`PredictorStats`]) and
/// does not depend on prometheus-client.
struct ModelsCollector(Arc<Models>);

impl std::fmt::Debug for ModelsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelsCollector")
    }
}

impl Collector for ModelsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let predictors: Vec<Predictor> = self
            .0
            .all()
            .into_iter()
            .filter_map(|(_, s)| match &s.backend {
                Backend::Classifier(p) => Some(p.clone()),
                Backend::Translator(_) | Backend::Transcriber(_) => None,
            })
            .collect();
        // Per-bucket (not cumulative) counts; the last is the +Inf bucket. `_count` is their
        // sum so that it always equals the +Inf bucket, whatever a worker records meanwhile.
        let mut buckets: Vec<(f64, u64)> = (0..=BATCH_SIZE_BOUNDS.len())
            .map(|i| {
                let le = BATCH_SIZE_BOUNDS
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64);
                (le, 0)
            })
            .collect();
        let (mut sum, mut depth) = (0.0, 0usize);
        for p in &predictors {
            let st: &PredictorStats = p.stats();
            for (b, n) in buckets.iter_mut().zip(&st.batch_size_buckets) {
                b.1 += n.load(Ordering::Relaxed);
            }
            sum += st.sequences.load(Ordering::Relaxed) as f64;
            depth += p.queue_depth();
        }
        let count = buckets.iter().map(|&(_, n)| n).sum();
        // A collector's help text is written as given (the registry appends no `.` here).
        encoder
            .encode_descriptor(
                "rnnkit_batch_size",
                "Sequences per forward pass.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        let depth = ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX));
        depth.encode(encoder.encode_descriptor(
            "rnnkit_queue_depth",
            "Sequences waiting for a worker.",
            None,
            depth.metric_type(),
        )?)
    }
}

/// Counts a request in `rnnkit_requests_in_flight` until dropped, also when the client goes
/// away and the handler's future is dropped mid-request.
struct InFlight(Gauge);

impl InFlight {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What every handler shares.
pub(super) struct App {
    /// The served models.
    pub(super) models: Arc<Models>,
    pub(super) opts: ServeOptions,
    pub(super) metrics: Metrics,
    /// Set once the models loaded at start have run their warm-up batches.
    pub(super) ready: AtomicBool,
    /// Set when SIGTERM (or Ctrl-C) starts the drain.
    pub(super) draining: AtomicBool,
}

impl App {
    /// Ready: warmed up and not draining.
    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// The model a `/v1` request names (`"model"`), or the server's only model; else a 400 or
    /// 404 naming the choices.
    pub(super) fn v1_model(
        &self,
        body: &serde_json::Value,
    ) -> std::result::Result<Arc<Served>, Response> {
        let names = || -> Vec<String> { self.models.all().into_iter().map(|m| m.0).collect() };
        match body.get("model") {
            Some(serde_json::Value::String(name)) => self.models.get(name).ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no model {name:?}; loaded: {:?}", names()),
                )
            }),
            Some(_) => Err(error(StatusCode::BAD_REQUEST, "\"model\" must be a string")),
            None => self.models.only().ok_or_else(|| {
                let names = names();
                error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "this server has {} models: name one with \"model\" ({names:?})",
                        names.len()
                    ),
                )
            }),
        }
    }
}

/// A JSON error `{"error": msg}` with status `code`.
pub(super) fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": msg.to_string()}))).into_response()
}

/// Runs a handler, counting it in the request metrics.
pub(super) async fn counted(
    app: &App,
    handler: impl std::future::Future<Output = Response>,
) -> Response {
    let start = Instant::now();
    let in_flight = InFlight::enter(&app.metrics.in_flight);
    let resp = handler.await;
    drop(in_flight);
    let code = resp.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&CodeLabel { code })
        .inc();
    app.metrics.latency.observe(start.elapsed().as_secs_f64());
    resp
}

/// Over `max_body_bytes`, a body is still read (and dropped) up to this many times the limit,
/// so that a client that sends it all, chunked or not, can read its 413 rather than meet a
/// closed connection; a larger body is cut off (the connection closes after the 413).
const DRAIN_FACTOR: usize = 8;

/// The body as JSON, within `max_body_bytes`; or the error response: 413 over the limit (also
/// for a chunked body, counted as it arrives), 408 when it does not arrive within
/// `request_timeout`, 400 when it is not JSON.
pub(super) async fn read_json(
    app: &App,
    req: Request<Body>,
) -> std::result::Result<serde_json::Value, Response> {
    let bytes = read_body(app, req).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

/// The request body's bytes, within `--max-body-bytes` and `--timeout` (413 and 408 as
/// [`read_json`] answers them).
pub(super) async fn read_body(
    app: &App,
    req: Request<Body>,
) -> std::result::Result<Vec<u8>, Response> {
    use http_body_util::BodyExt;
    let limit = app.opts.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = |n: usize| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n}+ bytes, over the {limit}-byte limit"),
        )
    };
    let drain = limit.saturating_mul(DRAIN_FACTOR);
    if let Some(n) = declared.filter(|&n| n > drain) {
        let mut r = too_large(n);
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return Err(r);
    }
    let mut body = req.into_body();
    let read = async {
        let (mut bytes, mut seen) = (Vec::new(), 0usize);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
                continue; // trailers
            };
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                bytes.extend_from_slice(&data);
            } else if seen > drain {
                break;
            }
        }
        Ok::<_, String>((bytes, seen))
    };
    let (bytes, seen) = match tokio::time::timeout(app.opts.request_timeout, read).await {
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}",
                    app.opts.request_timeout
                ),
            ))
        }
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            ))
        }
        Ok(Ok(r)) => r,
    };
    if seen > limit {
        let mut r = too_large(seen);
        if seen > drain {
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        return Err(r);
    }
    Ok(bytes)
}

/// Refuses no texts, too many, or one over `max_text_chars` (400, naming it).
pub(super) fn check_texts(app: &App, texts: &[String]) -> std::result::Result<(), Response> {
    if texts.is_empty() || texts.len() > app.opts.max_texts {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "between 1 and {} texts per request, got {}",
                app.opts.max_texts,
                texts.len()
            ),
        ));
    }
    if let Some((i, t)) = texts
        .iter()
        .enumerate()
        .find(|(_, t)| t.chars().count() > app.opts.max_text_chars)
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "text {i} has {} characters, over the limit of {}",
                t.chars().count(),
                app.opts.max_text_chars
            ),
        ));
    }
    Ok(())
}

/// The answer to a failed or late call of the model.
pub(super) fn model_error(app: &App, e: Option<Error>) -> Response {
    match e {
        None => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {:?}", app.opts.request_timeout),
        ),
        Some(Error::QueueFull { queued: n }) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("overloaded: {n} sequences queued; retry later"),
        ),
        Some(Error::Closed) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Some(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// A request's search settings over the service's defaults; a bad value is a 400.
pub(super) fn translate_options(
    d: &TranslateOptions,
    v: &serde_json::Value,
) -> std::result::Result<TranslateOptions, String> {
    let mut o = *d;
    let num = |k: &str| {
        v.get(k)
            .map(|x| x.as_f64().ok_or(format!("\"{k}\" must be a number")))
    };
    let int = |k: &str| {
        v.get(k).map(|x| {
            x.as_u64()
                .ok_or(format!("\"{k}\" must be a non-negative integer"))
        })
    };
    if let Some(a) = num("max_len_a").transpose()? {
        o.max_len.a = a;
    }
    if let Some(b) = num("max_len_b").transpose()? {
        o.max_len.b = b;
    }
    if !(o.max_len.a.is_finite() && o.max_len.b.is_finite()) {
        return Err("\"max_len_a\" and \"max_len_b\" must be finite".into());
    }
    if let Some(c) = int("max_len").transpose()? {
        o.max_len.cap = (c as usize).min(d.max_len.cap);
    }
    if v.get("greedy").and_then(|g| g.as_bool()) == Some(true) {
        o.search = Search::Greedy;
    } else if let Some(seed) = int("sample").transpose()? {
        let temperature = num("temperature").transpose()?.unwrap_or(1.0);
        let top_p = num("top_p").transpose()?.unwrap_or(1.0);
        if !(temperature > 0.0 && temperature.is_finite()) || !(top_p > 0.0 && top_p <= 1.0) {
            return Err(format!(
                "\"temperature\" must be positive and \"top_p\" in (0, 1], got {temperature} and {top_p}"
            ));
        }
        o.search = Search::Sample {
            seed,
            temperature,
            top_k: int("top_k").transpose()?.unwrap_or(0).min(i64::MAX as u64) as i64,
            top_p,
        };
    } else if let Search::Beam {
        beam,
        alpha,
        n_best,
    } = d.search
    {
        let beam = int("beam").transpose()?.map_or(beam, |b| b as usize);
        if beam == 0 || beam > 64 {
            return Err(format!("\"beam\" must be in 1..=64, got {beam}"));
        }
        let alpha = num("alpha").transpose()?.unwrap_or(alpha);
        if !alpha.is_finite() {
            return Err(format!("\"alpha\" must be finite, got {alpha}"));
        }
        o.search = Search::Beam {
            beam,
            alpha,
            n_best: int("n_best")
                .transpose()?
                .map_or(n_best, |n| n as usize)
                .clamp(1, beam),
        };
    }
    Ok(o)
}
