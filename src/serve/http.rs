//! `rnnkit serve`: an HTTP JSON API over a [`Predictor`](crate::serve::Predictor) (a classifier),
//! a [`TranslationService`](crate::serve::TranslationService) (a seq2seq model) or a
//! [`TranscriptionService`](crate::serve::TranscriptionService) (a ctc model).
//!
//! - `POST /v1/predict` (classifier) with `{"text": "..."}` or `{"texts": ["...", ...]}` →
//!   `{"predictions": [{"label", "label_id", "probabilities": {label: p}}]}`
//! - `POST /v1/translate` (seq2seq) with `{"text"}` or `{"texts"}` and optionally `"beam"`,
//!   `"n_best"`, `"alpha"`, `"greedy": true`, `"sample": seed` with `"temperature"`, `"top_k"`,
//!   `"top_p"`, and `"max_len_a"`, `"max_len_b"`, `"max_len"` →
//!   `{"translations": [{"translation", "score", "tokens", "n_best": [...]}]}`; requests with the
//!   same settings are micro-batched together. The other family's route answers 404. A request
//!   may name its model (`"model": name`); it must when a repository serves several.
//! - `POST /v1/transcribe` (ctc) with a WAV file as the body (any rate rnnkit resamples, any
//!   channel count, at most `--max-seconds`), and optionally `?beam=N` (prefix beam search;
//!   default greedy) and `?model=NAME` → `{"text", "score", "words": [{"word", "start", "end"}]}`;
//!   requests with the same beam are micro-batched together.
//! - `GET /healthz` → `{"status": "ok"}` while the process serves (liveness)
//! - `GET /openapi.json` → the OpenAPI document of every route ([`crate::serve::openapi`])
//! - the Open Inference Protocol v2 next to `/v1` ([`crate::serve::oip`]): `/v2/health/ready`
//!   answers 200 only once the model has run a warm-up batch, and 503 again while draining
//! - `GET /metrics` → the Prometheus text format (version 0.0.4, `text/plain; version=0.0.4;
//!   charset=utf-8`), encoded by `prometheus-client` from one registry per router:
//!   `rnnkit_requests_total{code}` (prediction requests by HTTP status),
//!   `rnnkit_request_duration_seconds` (latency histogram), `rnnkit_batch_size` (sequences per
//!   forward pass, read from the predictor's
//!   [`PredictorStats`](crate::serve::predictor::PredictorStats) at scrape time),
//!   `rnnkit_queue_depth` and `rnnkit_requests_in_flight` (gauges).
//!
//! Errors are JSON `{"error": "..."}`: 400 malformed JSON or a text/list over its limit, 413 a
//! body over `max_body_bytes` (read to its end up to 8 times the limit, so the client reads the
//! answer), 408 a body slower than the timeout (and a connection whose first request header
//! is: `listener`), 503 a full queue, 504 a request past its timeout. SIGTERM (or Ctrl-C) stops accepting connections, makes `/v2/health/ready` answer
//! 503, and lets in-flight requests finish. The shared steps are [`crate::serve::app`]'s.

use crate::error::{Error, Result};
use crate::serve::app::{
    check_texts, counted, error, model_error, read_body, read_json, translate_options, App,
    Metrics, Served,
};
pub use crate::serve::app::{Backend, ServeOptions};
use crate::serve::predictor::prediction_json;
use crate::serve::repository::Models;
pub use crate::serve::repository::Repository;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::prometheus_text;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn predict(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    counted(&app, predict_inner(&app, req)).await
}

async fn translate(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    counted(&app, translate_inner(&app, req)).await
}

async fn transcribe(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    counted(&app, transcribe_inner(&app, req)).await
}

async fn transcribe_inner(app: &App, req: Request<Body>) -> Response {
    let mut params = serde_json::Map::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k.to_string(), json!(v));
    }
    let params = serde_json::Value::Object(params);
    if let Some(k) = params
        .as_object()
        .and_then(|o| o.keys().find(|k| !["beam", "model"].contains(&k.as_str())))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown query parameter {k:?} (beam, model)"),
        );
    }
    let beam = match params.get("beam").and_then(|b| b.as_str()) {
        None => 0,
        Some(b) => match b.parse::<usize>() {
            Ok(n) if n <= 256 => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("beam must be an integer 0..=256 (0: greedy), got {b:?}"),
                )
            }
        },
    };
    let served = match app.v1_model(&params) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Backend::Transcriber(service) = &served.backend else {
        return error(
            StatusCode::NOT_FOUND,
            "the model does not transcribe: POST /v1/predict or /v1/translate",
        );
    };
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let feats = match service.features(&body, "the request body", app.opts.max_audio_seconds) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match tokio::time::timeout(app.opts.request_timeout, service.transcribe_async(feats, beam)).await
    {
        Err(_) => model_error(app, None),
        Ok(Err(e)) => model_error(app, Some(e)),
        Ok(Ok(t)) => Json(json!({
            "text": t.text,
            "score": t.score,
            "words": t.words.iter().map(|w| json!({"word": w.word, "start": w.start, "end": w.end})).collect::<Vec<_>>(),
        }))
        .into_response(),
    }
}

/// The body's JSON and its texts, within the limits; or the error response.
async fn read_texts(
    app: &App,
    req: Request<Body>,
) -> std::result::Result<(Vec<String>, serde_json::Value), Response> {
    let v = read_json(app, req).await?;
    let texts: Vec<String> = match (v.get("text"), v.get("texts")) {
        (Some(serde_json::Value::String(t)), None) => vec![t.clone()],
        (None, Some(serde_json::Value::Array(a))) => match a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            Some(t) => t,
            None => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "\"texts\" must be a list of strings",
                ))
            }
        },
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "expected {\"text\": \"...\"} or {\"texts\": [\"...\", ...]}",
            ))
        }
    };
    check_texts(app, &texts)?;
    Ok((texts, v))
}

/// A `/v1` request's texts, body and model; or the error response.
async fn read_v1(
    app: &App,
    req: Request<Body>,
) -> std::result::Result<(Vec<String>, serde_json::Value, Arc<Served>), Response> {
    let (texts, v) = read_texts(app, req).await?;
    let served = app.v1_model(&v)?;
    Ok((texts, v, served))
}

async fn predict_inner(app: &App, req: Request<Body>) -> Response {
    let (texts, _, served) = match read_v1(app, req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Backend::Classifier(predictor) = &served.backend else {
        return error(
            StatusCode::NOT_FOUND,
            "the model translates: POST /v1/translate",
        );
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    match tokio::time::timeout(app.opts.request_timeout, predictor.predict_async(&refs)).await {
        Err(_) => model_error(app, None),
        Ok(Err(e)) => model_error(app, Some(e)),
        Ok(Ok(preds)) => {
            let cfg = predictor.config();
            Json(json!({"predictions": preds.iter().map(|p| prediction_json(cfg, p)).collect::<Vec<_>>()})).into_response()
        }
    }
}

async fn translate_inner(app: &App, req: Request<Body>) -> Response {
    let (texts, v, served) = match read_v1(app, req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Backend::Translator(service) = &served.backend else {
        return error(
            StatusCode::NOT_FOUND,
            "the model classifies: POST /v1/predict",
        );
    };
    let opts = match translate_options(service.defaults(), &v) {
        Ok(o) => o,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let ids = match service.encode(&texts) {
        Ok(ids) => ids,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match tokio::time::timeout(app.opts.request_timeout, service.translate_async(ids, opts)).await {
        Err(_) => model_error(app, None),
        Ok(Err(e)) => model_error(app, Some(e)),
        Ok(Ok(out)) => {
            let items: Vec<serde_json::Value> = out
                .iter()
                .map(|hyps| {
                    let best = &hyps[0];
                    let mut item = json!({"translation": best.text, "score": best.hypothesis.score,
                        "tokens": best.hypothesis.tokens});
                    if hyps.len() > 1 {
                        item["n_best"] = hyps
                            .iter()
                            .map(|h| {
                                json!({"translation": h.text, "score": h.hypothesis.score,
                                "raw_score": h.hypothesis.raw_score, "tokens": h.hypothesis.tokens})
                            })
                            .collect();
                    }
                    item
                })
                .collect();
            Json(json!({"translations": items})).into_response()
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

/// The shared state of a server for `models`, not yet warmed up.
fn app(models: Models, opts: ServeOptions) -> Arc<App> {
    let models = Arc::new(models);
    Arc::new(App {
        metrics: Metrics::new(models.clone()),
        models,
        opts,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    })
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/translate", post(translate))
        .route("/v1/transcribe", post(transcribe))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::serve::openapi::document()) }),
        )
        .merge(crate::serve::oip::routes())
        .with_state(app)
}

/// Builds the router of one model, `opts.model_name` (for in-process use); it reports ready at
/// once, without a warm-up batch.
pub fn router(backend: impl Into<Backend>, opts: ServeOptions) -> Router {
    let app = app(Models::single(&opts.model_name, backend.into()), opts);
    app.ready.store(true, Ordering::SeqCst);
    routes(app)
}

/// Warms the models up (one short text each, greedy for a translator) or, from a repository,
/// loads each name's latest version (warmed up as it loads); the server reports ready only
/// after that. A model that fails is printed; a single model that fails leaves the server not
/// ready, a repository with at least one model loaded is ready.
async fn start_models(app: Arc<App>) {
    if app.models.has_repository() {
        match app.models.names() {
            Ok(names) => {
                for name in names {
                    let _ = app.models.load(&name).await;
                }
            }
            Err(e) => eprintln!("not ready: {e}"),
        }
        if app.models.all().is_empty() {
            eprintln!("not ready: no model could be loaded from the repository");
            return;
        }
    } else {
        for (name, served) in app.models.all() {
            if let Err(e) = served.backend.warm_up().await {
                eprintln!("not ready: model {name} failed its warm-up batch: {e}");
                return;
            }
        }
    }
    app.ready.store(true, Ordering::SeqCst);
    eprintln!("ready: the warm-up batch ran");
}

/// Serves one model until SIGTERM or Ctrl-C, then drains in-flight requests. Prints the bound
/// address (`listening on http://…`) to stderr once it listens, and `ready: …` once warmed up.
pub fn serve(backend: impl Into<Backend>, opts: ServeOptions) -> Result<()> {
    let models = Models::single(&opts.model_name, backend.into());
    run(models, opts)
}

/// Serves a model repository ([`crate::serve::repository`]) as [`serve`] serves one model.
pub fn serve_repository(repository: Repository, opts: ServeOptions) -> Result<()> {
    if !repository.dir.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a model repository directory",
            repository.dir.display()
        )));
    }
    run(Models::repository(repository), opts)
}

fn run(models: Models, opts: ServeOptions) -> Result<()> {
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
        let listener = super::listener::DeadlineListener {
            inner: listener,
            timeout: opts.request_timeout,
        };
        let state = app(models, opts);
        tokio::spawn(start_models(state.clone()));
        let draining = state.clone();
        axum::serve(listener, routes(state))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                draining.draining.store(true, Ordering::SeqCst);
            })
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
