//! `rnnkit serve`: an HTTP JSON API over a [`Predictor`].
//!
//! - `POST /v1/predict` with `{"text": "..."}` or `{"texts": ["...", ...]}` →
//!   `{"predictions": [{"label", "label_id", "probabilities": {label: p}}]}`
//! - `GET /healthz` → `{"status": "ok"}`
//! - `GET /metrics` → Prometheus text: requests by status, a latency histogram, batch sizes,
//!   queue depth, requests in flight.
//!
//! Errors are JSON `{"error": "..."}`: 400 malformed JSON or a text/list over its limit, 413 a
//! body over `max_body_bytes`, 503 a full queue, 504 a request past its timeout. SIGTERM (or
//! Ctrl-C) stops accepting connections and lets in-flight requests finish.

use crate::error::{Error, Result};
use crate::serve::predictor::{prediction_json, Predictor, BATCH_SIZE_BOUNDS};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: String,
    pub max_body_bytes: usize,
    pub max_text_chars: usize,
    pub max_texts: usize,
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
const CODES: [u16; 6] = [200, 400, 413, 503, 504, 500];

#[derive(Default)]
struct Metrics {
    requests: [AtomicU64; CODES.len()],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_us: AtomicU64,
    in_flight: AtomicI64,
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
    app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let resp = predict_inner(&app, req).await;
    app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let code = resp.status().as_u16();
    let i = CODES
        .iter()
        .position(|&c| c == code)
        .unwrap_or(CODES.len() - 1);
    app.metrics.requests[i].fetch_add(1, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let b = LATENCY_BOUNDS
        .iter()
        .position(|&x| secs <= x)
        .unwrap_or(LATENCY_BOUNDS.len());
    app.metrics.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
    app.metrics
        .latency_sum_us
        .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
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
    use std::fmt::Write;
    let m = &app.metrics;
    let mut s = String::new();
    let _ = writeln!(s, "# HELP rnnkit_requests_total Prediction requests by HTTP status.\n# TYPE rnnkit_requests_total counter");
    for (c, n) in CODES.iter().zip(&m.requests) {
        let _ = writeln!(
            s,
            "rnnkit_requests_total{{code=\"{c}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(s, "# HELP rnnkit_request_duration_seconds Prediction request latency.\n# TYPE rnnkit_request_duration_seconds histogram");
    let mut cum = 0;
    for (i, b) in m.latency_buckets.iter().enumerate() {
        cum += b.load(Ordering::Relaxed);
        let le = LATENCY_BOUNDS
            .get(i)
            .map_or("+Inf".to_string(), |x| x.to_string());
        let _ = writeln!(
            s,
            "rnnkit_request_duration_seconds_bucket{{le=\"{le}\"}} {cum}"
        );
    }
    let _ = writeln!(
        s,
        "rnnkit_request_duration_seconds_sum {}",
        m.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(s, "rnnkit_request_duration_seconds_count {cum}");
    let st = app.predictor.stats();
    let _ = writeln!(
        s,
        "# HELP rnnkit_batch_size Sequences per forward pass.\n# TYPE rnnkit_batch_size histogram"
    );
    let mut cum = 0;
    for (i, b) in st.batch_size_buckets.iter().enumerate() {
        cum += b.load(Ordering::Relaxed);
        let le = BATCH_SIZE_BOUNDS
            .get(i)
            .map_or("+Inf".to_string(), |x| x.to_string());
        let _ = writeln!(s, "rnnkit_batch_size_bucket{{le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(
        s,
        "rnnkit_batch_size_sum {}",
        st.sequences.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "rnnkit_batch_size_count {}",
        st.batches.load(Ordering::Relaxed)
    );
    let _ = writeln!(s, "# HELP rnnkit_queue_depth Sequences waiting for a worker.\n# TYPE rnnkit_queue_depth gauge");
    let _ = writeln!(s, "rnnkit_queue_depth {}", app.predictor.queue_depth());
    let _ = writeln!(s, "# HELP rnnkit_requests_in_flight Requests being answered.\n# TYPE rnnkit_requests_in_flight gauge");
    let _ = writeln!(
        s,
        "rnnkit_requests_in_flight {}",
        m.in_flight.load(Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}

/// Builds the router (exposed for in-process tests).
pub fn router(predictor: Predictor, opts: ServeOptions) -> Router {
    let app = Arc::new(App {
        predictor,
        opts,
        metrics: Metrics::default(),
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
