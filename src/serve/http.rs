//! `rnnkit serve`: an HTTP JSON API over a [`Predictor`].
//!
//! - `POST /v1/predict` with `{"text": "..."}` or `{"texts": ["...", ...]}` →
//!   `{"predictions": [{"label", "label_id", "probabilities": {label: p}}]}`
//! - `GET /healthz` → `{"status": "ok"}`
//! - `GET /metrics` → the Prometheus text format (version 0.0.4, `text/plain; version=0.0.4;
//!   charset=utf-8`), encoded by `prometheus-client` from one registry per router:
//!   `rnnkit_requests_total{code}` (prediction requests by HTTP status),
//!   `rnnkit_request_duration_seconds` (latency histogram), `rnnkit_batch_size` (sequences per
//!   forward pass, read from the predictor's [`PredictorStats`] at scrape time),
//!   `rnnkit_queue_depth` and `rnnkit_requests_in_flight` (gauges).
//!
//! Errors are JSON `{"error": "..."}`: 400 malformed JSON or a text/list over its limit, 413 a
//! body over `max_body_bytes`, 503 a full queue, 504 a request past its timeout. SIGTERM (or
//! Ctrl-C) stops accepting connections and lets in-flight requests finish.

use crate::error::{Error, Result};
use crate::serve::predictor::{prediction_json, Predictor, PredictorStats, BATCH_SIZE_BOUNDS};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's address and the limits of a `/v1/predict` request.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port` to listen on (default `127.0.0.1:8080`; port 0 picks a free port).
    pub addr: String,
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            max_text_chars: 10_000,
            max_texts: 256,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Latency histogram bounds in seconds.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// The statuses `/v1/predict` answers with; each has a `rnnkit_requests_total` series from the
/// start (at 0), so rates exist before the first error.
const CODES: [u16; 6] = [200, 400, 413, 503, 504, 500];

/// The `code` label of `rnnkit_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// The server-side metrics and the registry that encodes them (with [`PredictorCollector`]).
struct Metrics {
    registry: Registry,
    requests: Family<CodeLabel, Counter>,
    latency: Histogram,
    in_flight: Gauge,
}

impl Metrics {
    fn new(predictor: Predictor) -> Self {
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
            "Prediction requests by HTTP status",
            requests.clone(),
        );
        registry.register(
            "rnnkit_request_duration_seconds",
            "Prediction request latency",
            latency.clone(),
        );
        registry.register_collector(Box::new(PredictorCollector(predictor)));
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

/// `rnnkit_batch_size` and `rnnkit_queue_depth`, read from the predictor at each scrape: the
/// predictor keeps plain atomics ([`PredictorStats`]) and does not depend on prometheus-client.
struct PredictorCollector(Predictor);

impl std::fmt::Debug for PredictorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PredictorCollector")
    }
}

impl Collector for PredictorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let st: &PredictorStats = self.0.stats();
        // Per-bucket (not cumulative) counts; the last is the +Inf bucket. `_count` is their
        // sum so that it always equals the +Inf bucket, whatever a worker records meanwhile.
        let buckets: Vec<(f64, u64)> = st
            .batch_size_buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let le = BATCH_SIZE_BOUNDS
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64);
                (le, n.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = st.sequences.load(Ordering::Relaxed) as f64;
        // A collector's help text is written as given (the registry appends no `.` here).
        encoder
            .encode_descriptor(
                "rnnkit_batch_size",
                "Sequences per forward pass.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        let depth = ConstGauge::new(i64::try_from(self.0.queue_depth()).unwrap_or(i64::MAX));
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

struct App {
    predictor: Predictor,
    opts: ServeOptions,
    metrics: Metrics,
}

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": msg.to_string()}))).into_response()
}

async fn predict(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    let start = Instant::now();
    let in_flight = InFlight::enter(&app.metrics.in_flight);
    let resp = predict_inner(&app, req).await;
    drop(in_flight);
    let code = resp.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&CodeLabel { code })
        .inc();
    app.metrics.latency.observe(start.elapsed().as_secs_f64());
    resp
}

async fn predict_inner(app: &App, req: Request<Body>) -> Response {
    let limit = app.opts.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the {limit}-byte limit"),
        );
    }
    let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the {limit}-byte limit"),
            )
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let texts: Vec<String> = match (v.get("text"), v.get("texts")) {
        (Some(serde_json::Value::String(t)), None) => vec![t.clone()],
        (None, Some(serde_json::Value::Array(a))) => match a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            Some(t) => t,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "\"texts\" must be a list of strings",
                )
            }
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"text\": \"...\"} or {\"texts\": [\"...\", ...]}",
            )
        }
    };
    if texts.is_empty() || texts.len() > app.opts.max_texts {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "between 1 and {} texts per request, got {}",
                app.opts.max_texts,
                texts.len()
            ),
        );
    }
    if let Some((i, t)) = texts
        .iter()
        .enumerate()
        .find(|(_, t)| t.chars().count() > app.opts.max_text_chars)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "text {i} has {} characters, over the limit of {}",
                t.chars().count(),
                app.opts.max_text_chars
            ),
        );
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    match tokio::time::timeout(app.opts.request_timeout, app.predictor.predict_async(&refs)).await {
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {:?}", app.opts.request_timeout),
        ),
        Ok(Err(Error::QueueFull { queued: n })) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("overloaded: {n} sequences queued; retry later"),
        ),
        Ok(Err(Error::Closed)) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Ok(Ok(preds)) => {
            let cfg = app.predictor.config();
            Json(json!({"predictions": preds.iter().map(|p| prediction_json(cfg, p)).collect::<Vec<_>>()})).into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    match prometheus_text::encode(&mut body, &app.metrics.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

/// Builds the router (exposed for in-process tests).
pub fn router(predictor: Predictor, opts: ServeOptions) -> Router {
    let app = Arc::new(App {
        metrics: Metrics::new(predictor.clone()),
        predictor,
        opts,
    });
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Serves until SIGTERM or Ctrl-C, then drains in-flight requests. Prints the bound address
/// (`listening on http://…`) to stderr once ready.
pub fn serve(predictor: Predictor, opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&opts.addr)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", opts.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::invalid(e.to_string()))?;
        eprintln!("listening on http://{local}");
        let app = router(predictor, opts);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| Error::invalid(format!("server error: {e}")))?;
        eprintln!("shut down cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    eprintln!("shutting down: finishing in-flight requests");
}
