//! The Open Inference Protocol v2 over HTTP/REST (KServe's "V2" protocol, Triton's HTTP API),
//! served next to `/v1` by [`crate::serve::http`]: one model, named by
//! [`ServeOptions::model_name`](crate::serve::app::ServeOptions), version `1`.
//!
//! ```text
//! GET  /v2                                         {"name": "rnnkit", "version", "extensions": []}
//! GET  /v2/health/live                             200 {"live": true} while the process serves
//! GET  /v2/health/ready                            200 {"ready": true} once warmed up; 503 before and while draining
//! GET  /v2/models/{name}[/versions/1]              {"name", "versions": ["1"], "platform", "inputs", "outputs"}
//! GET  /v2/models/{name}[/versions/1]/ready        200 / 503, as the server's readiness
//! POST /v2/models/{name}[/versions/1]/infer        {"id"?, "parameters"?, "inputs": [...], "outputs"?: [...]}
//! ```
//! Tensors travel as JSON (`"data"` row-major, nested lists flattened); the binary tensor data
//! extension is refused with a 400 that says so. One input: `TEXT` (BYTES, shape `[N]` or
//! `[N, 1]`, UTF-8 strings), or for a ctc model `AUDIO` (FP32, shape `[S]` or `[1, S]`: one
//! utterance's mono samples in [-1, 1], at the request parameter `sample_rate` Hz, default the
//! model's); the outputs, all by default or those the request names:
//! ```text
//! classifier  PROBABILITIES FP32 [N, C]   LABEL BYTES [N]   LABEL_ID INT64 [N]
//! seq2seq     TRANSLATION BYTES [N]       SCORE FP64 [N]
//! ctc         TRANSCRIPT BYTES [1]        SCORE FP64 [1]
//! ```
//! A translator reads the request's `"parameters"` as `/v1/translate` reads its settings
//! (`beam`, `alpha`, `n_best`, `greedy`, `sample`, …), a ctc model `sample_rate` and `beam`
//! (0-256, 0 greedy) as `/v1/transcribe`'s query; the answers are `/v1`'s, number for number
//! (FP32 values are the f32 probabilities, written exactly; a transcript is the one
//! `/v1/transcribe` gives for a WAV file holding the same samples). Errors are JSON
//! `{"error": "..."}`: 400 a malformed request, 404 an unknown model or version, 413, 503 and
//! 504 as on `/v1`.

use crate::serve::app::{
    check_texts, counted, error, model_error, read_json, translate_options, App, Backend, Served,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// The `/v2` routes, for [`crate::serve::http`]'s router.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
}

async fn server_metadata(State(app): State<Arc<App>>) -> Json<Value> {
    let extensions: Vec<&str> = if app.models.has_repository() {
        vec!["model_repository"]
    } else {
        vec![]
    };
    Json(json!({"name": "rnnkit", "version": env!("CARGO_PKG_VERSION"), "extensions": extensions}))
}

/// `POST /v2/repository/index`: every model of the repository, loaded or not.
async fn repository_index(State(app): State<Arc<App>>) -> Response {
    if !app.models.has_repository() {
        return no_repository();
    }
    Json(Value::Array(app.models.index())).into_response()
}

/// `POST /v2/repository/models/{name}/load`: (re)loads the highest version on disk, warmed up
/// before it takes requests; on failure the version served before keeps serving (400, why).
async fn repository_load(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    if !app.models.has_repository() {
        return no_repository();
    }
    match app.models.load(&name).await {
        Ok(v) => Json(json!({"name": name, "version": v.to_string()})).into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("model {name:?} not loaded: {e}"),
        ),
    }
}

/// `POST /v2/repository/models/{name}/unload`: takes the model out of service; its in-flight
/// requests finish.
async fn repository_unload(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    if !app.models.has_repository() {
        return no_repository();
    }
    if app.models.unload(&name) {
        Json(json!({})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("model {name:?} is not loaded"),
        )
    }
}

fn no_repository() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "this server has no model repository (rnnkit serve --model-repository DIR)",
    )
}

fn readiness(app: &App) -> Response {
    let ready = app.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready}))).into_response()
}

async fn server_ready(State(app): State<Arc<App>>) -> Response {
    readiness(&app)
}

/// The loaded model `name` (at `version`, if given); else the 404 naming what is loaded, or
/// why `name` is not.
fn resolve(app: &App, name: &str, version: Option<&str>) -> Result<Arc<Served>, Response> {
    let Some(served) = app.models.get(name) else {
        let why = app
            .models
            .failure(name)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let loaded: Vec<String> = app.models.all().into_iter().map(|m| m.0).collect();
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no model {name:?}{why}: this server serves {loaded:?}"),
        ));
    };
    match version {
        Some(v) if v != served.version.to_string() => Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "model {name:?} has no version {v:?} loaded: it serves version \"{}\"",
                served.version
            ),
        )),
        _ => Ok(served),
    }
}

/// The tensors of the served model: (inputs, outputs), each `(name, datatype, shape)`.
fn signature(
    backend: &Backend,
) -> (
    Vec<(&'static str, &'static str, Vec<i64>)>,
    Vec<(&'static str, &'static str, Vec<i64>)>,
) {
    let inputs = match backend {
        Backend::Transcriber(_) => vec![("AUDIO", "FP32", vec![-1])],
        _ => vec![("TEXT", "BYTES", vec![-1])],
    };
    let outputs = match backend {
        Backend::Classifier(p) => {
            let c = p.config().num_classes.unwrap_or(0) as i64;
            vec![
                ("PROBABILITIES", "FP32", vec![-1, c]),
                ("LABEL", "BYTES", vec![-1]),
                ("LABEL_ID", "INT64", vec![-1]),
            ]
        }
        Backend::Translator(_) => vec![
            ("TRANSLATION", "BYTES", vec![-1]),
            ("SCORE", "FP64", vec![-1]),
        ],
        Backend::Transcriber(_) => vec![
            ("TRANSCRIPT", "BYTES", vec![-1]),
            ("SCORE", "FP64", vec![-1]),
        ],
    };
    (inputs, outputs)
}

fn metadata(app: &App, name: &str, version: Option<&str>) -> Response {
    let served = match resolve(app, name, version) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let platform = match &served.backend {
        Backend::Classifier(_) => "rnnkit_classifier",
        Backend::Translator(_) => "rnnkit_seq2seq",
        Backend::Transcriber(_) => "rnnkit_ctc",
    };
    let (inputs, outputs) = signature(&served.backend);
    let t = |v: Vec<(&str, &str, Vec<i64>)>| -> Vec<Value> {
        v.into_iter()
            .map(|(n, d, s)| json!({"name": n, "datatype": d, "shape": s}))
            .collect()
    };
    Json(
        json!({"name": name, "versions": [served.version.to_string()], "platform": platform,
                "inputs": t(inputs), "outputs": t(outputs)}),
    )
    .into_response()
}

async fn model_metadata(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    metadata(&app, &name, None)
}

async fn model_metadata_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&app, &name, Some(&version))
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    resolve(&app, &name, None).map_or_else(|r| r, |_| readiness(&app))
}

async fn model_ready_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    resolve(&app, &name, Some(&version)).map_or_else(|r| r, |_| readiness(&app))
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    req: Request<Body>,
) -> Response {
    counted(&app, infer_inner(&app, name, None, req)).await
}

async fn infer_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    counted(&app, infer_inner(&app, name, Some(version), req)).await
}

fn bad(msg: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// The strings of a BYTES tensor's `"data"` (nested lists flattened, row-major).
fn flatten_strings(v: &Value, out: &mut Vec<String>) -> std::result::Result<(), Response> {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => {
            for x in a {
                flatten_strings(x, out)?;
            }
        }
        _ => {
            return Err(bad(
                "input \"TEXT\": BYTES data must be strings (or lists of them)",
            ))
        }
    }
    Ok(())
}

/// The texts of the request's `TEXT` input, checked against its datatype and shape.
fn request_texts(body: &Value) -> std::result::Result<Vec<String>, Response> {
    let (input, n) = single_input(body, "TEXT", "BYTES", Layout::Rows)?;
    let mut texts = Vec::new();
    flatten_strings(
        input
            .get("data")
            .ok_or_else(|| bad("input \"TEXT\" has no \"data\""))?,
        &mut texts,
    )?;
    if texts.len() as u64 != n {
        return Err(bad(format!(
            "input \"TEXT\" has shape {} but {} strings",
            input.get("shape").unwrap_or(&Value::Null),
            texts.len()
        )));
    }
    Ok(texts)
}

/// The outputs the request names (all when it names none); an unknown one is a 400.
fn requested<'a>(
    body: &Value,
    all: &[(&'a str, &'a str, Vec<i64>)],
) -> std::result::Result<Vec<&'a str>, Response> {
    let Some(list) = body.get("outputs") else {
        return Ok(all.iter().map(|o| o.0).collect());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("\"outputs\" must be a list"))?;
    list.iter()
        .map(|o| {
            let n = o.get("name").and_then(Value::as_str).unwrap_or("");
            if o.get("parameters")
                .and_then(|p| p.get("binary_data"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                return Err(bad(format!(
                    "output {n:?}: binary tensor data is not supported (tritonclient: binary_data=False)"
                )));
            }
            all.iter().find(|a| a.0 == n).map(|a| a.0).ok_or_else(|| {
                bad(format!(
                    "unknown output {n:?}: the model's outputs are {:?}",
                    all.iter().map(|a| a.0).collect::<Vec<_>>()
                ))
            })
        })
        .collect()
}

fn tensor(name: &str, datatype: &str, shape: Vec<usize>, data: Value) -> Value {
    json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
}

async fn infer_inner(
    app: &App,
    name: String,
    version: Option<String>,
    req: Request<Body>,
) -> Response {
    let served = match resolve(app, &name, version.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if req
        .headers()
        .contains_key("inference-header-content-length")
    {
        return bad(
            "binary tensor data is not supported: send the request as JSON (tritonclient: binary_data=False)",
        );
    }
    let body = match read_json(app, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let outputs: Vec<Value> = match &served.backend {
        Backend::Transcriber(service) => {
            match transcript_outputs(app, &served, service, &body).await {
                Ok(o) => o,
                Err(r) => return r,
            }
        }
        Backend::Classifier(p) => {
            let (texts, wanted) = match text_request(app, &served, &body) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let n = texts.len();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let preds = match tokio::time::timeout(app.opts.request_timeout, p.predict_async(&refs))
                .await
            {
                Err(_) => return model_error(app, None),
                Ok(Err(e)) => return model_error(app, Some(e)),
                Ok(Ok(preds)) => preds,
            };
            let c = preds.first().map_or(0, |x| x.probabilities.len());
            wanted
                .iter()
                .map(|&o| match o {
                    "PROBABILITIES" => tensor(
                        o,
                        "FP32",
                        vec![n, c],
                        preds
                            .iter()
                            .flat_map(|x| x.probabilities.iter().map(|&v| f64::from(v)))
                            .collect(),
                    ),
                    "LABEL" => tensor(
                        o,
                        "BYTES",
                        vec![n],
                        preds.iter().map(|x| x.label.clone()).collect(),
                    ),
                    _ => tensor(
                        o,
                        "INT64",
                        vec![n],
                        preds.iter().map(|x| x.label_id).collect(),
                    ),
                })
                .collect()
        }
        Backend::Translator(t) => {
            let (texts, wanted) = match text_request(app, &served, &body) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let n = texts.len();
            let params = body.get("parameters").cloned().unwrap_or(json!({}));
            let opts = match translate_options(t.defaults(), &params) {
                Ok(o) => o,
                Err(m) => return bad(format!("parameters: {m}")),
            };
            let ids = match t.encode(&texts) {
                Ok(ids) => ids,
                Err(e) => return bad(e),
            };
            let out =
                match tokio::time::timeout(app.opts.request_timeout, t.translate_async(ids, opts))
                    .await
                {
                    Err(_) => return model_error(app, None),
                    Ok(Err(e)) => return model_error(app, Some(e)),
                    Ok(Ok(out)) => out,
                };
            wanted
                .iter()
                .map(|&o| match o {
                    "TRANSLATION" => tensor(
                        o,
                        "BYTES",
                        vec![n],
                        out.iter().map(|h| h[0].text.clone()).collect(),
                    ),
                    _ => tensor(
                        o,
                        "FP64",
                        vec![n],
                        out.iter().map(|h| h[0].hypothesis.score).collect(),
                    ),
                })
                .collect()
        }
    };
    let mut resp = json!({"model_name": name, "model_version": served.version.to_string(),
                          "outputs": outputs});
    if let Some(id) = body.get("id") {
        resp["id"] = id.clone();
    }
    Json(resp).into_response()
}

/// The shapes an input may have.
#[derive(Clone, Copy)]
enum Layout {
    /// `[N]` or `[N, 1]`: N texts.
    Rows,
    /// `[S]` or `[1, S]`: one utterance of S samples.
    Utterance,
}

/// The one input tensor of a request, checked to be `want` with datatype `datatype`, a shape of
/// `layout` and JSON data; returns it and N (rows) or S (samples).
fn single_input<'a>(
    body: &'a Value,
    want: &str,
    datatype: &str,
    layout: Layout,
) -> std::result::Result<(&'a Value, u64), Response> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected \"inputs\": a list of tensors"))?;
    let [input] = inputs.as_slice() else {
        return Err(bad(format!(
            "expected one input, {want:?}, got {}",
            inputs.len()
        )));
    };
    let name = input.get("name").and_then(Value::as_str).unwrap_or("");
    if name != want {
        return Err(bad(format!(
            "unknown input {name:?}: the model's input is {want:?}"
        )));
    }
    let got = input.get("datatype").and_then(Value::as_str).unwrap_or("");
    if got != datatype {
        return Err(bad(format!(
            "input {want:?} must have datatype {datatype:?}, got {got:?}"
        )));
    }
    if input
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"))
        .is_some()
    {
        return Err(bad(
            "binary tensor data is not supported: send \"data\" as JSON (tritonclient: binary_data=False)",
        ));
    }
    let shape: Vec<u64> = input
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| {
            bad(format!(
                "input {want:?}: \"shape\" must be a list of non-negative integers"
            ))
        })?;
    match (layout, &shape[..]) {
        (Layout::Rows, &[n] | &[n, 1]) | (Layout::Utterance, &[n] | &[1, n]) => Ok((input, n)),
        (Layout::Rows, _) => Err(bad(format!(
            "input {want:?} must have shape [N] or [N, 1], got {shape:?}"
        ))),
        (Layout::Utterance, _) => Err(bad(format!(
            "input {want:?} must have shape [S] or [1, S] (one utterance), got {shape:?}"
        ))),
    }
}

/// A text model's request: its texts (checked against the limits) and the outputs it wants.
fn text_request(
    app: &App,
    served: &Served,
    body: &Value,
) -> std::result::Result<(Vec<String>, Vec<&'static str>), Response> {
    let texts = request_texts(body)?;
    check_texts(app, &texts)?;
    let (_, all) = signature(&served.backend);
    Ok((texts, requested(body, &all)?))
}

/// A ctc model's infer outputs: `AUDIO` → TRANSCRIPT and SCORE, through the same features,
/// model and decoder as `/v1/transcribe` (at most `--max-audio-seconds` of samples).
async fn transcript_outputs(
    app: &App,
    served: &Served,
    service: &crate::serve::transcription::TranscriptionService,
    body: &Value,
) -> std::result::Result<Vec<Value>, Response> {
    let (input, len) = single_input(body, "AUDIO", "FP32", Layout::Utterance)?;
    let params = body.get("parameters").cloned().unwrap_or(json!({}));
    let params = params
        .as_object()
        .ok_or_else(|| bad("\"parameters\" must be an object"))?;
    if let Some(k) = params
        .keys()
        .find(|k| !["sample_rate", "beam"].contains(&k.as_str()))
    {
        return Err(bad(format!("unknown parameter {k:?} (sample_rate, beam)")));
    }
    let rate = match params.get("sample_rate") {
        None => service.sample_rate(),
        Some(r) => match r.as_i64() {
            Some(r) if (1..=384_000).contains(&r) => r,
            _ => {
                return Err(bad(format!(
                    "parameters: sample_rate must be an integer 1..=384000 Hz, got {r}"
                )))
            }
        },
    };
    let beam = match params.get("beam") {
        None => 0,
        Some(b) => match b.as_u64() {
            Some(b) if b <= 256 => b as usize,
            _ => {
                return Err(bad(format!(
                    "parameters: beam must be an integer 0..=256 (0: greedy), got {b}"
                )))
            }
        },
    };
    if len as f64 > app.opts.max_audio_seconds * rate as f64 {
        return Err(bad(format!(
            "input \"AUDIO\": {len} samples at {rate} Hz are over --max-audio-seconds {}",
            app.opts.max_audio_seconds
        )));
    }
    let mut samples = Vec::with_capacity(len as usize);
    flatten_numbers(input.get("data").unwrap_or(&Value::Null), &mut samples)?;
    if samples.len() as u64 != len {
        return Err(bad(format!(
            "input \"AUDIO\" has shape [{len}] but {} numbers",
            samples.len()
        )));
    }
    let audio = crate::models::ctc::audio::Audio {
        samples: tch::Tensor::from_slice(&samples),
        sample_rate: rate,
    };
    let feats = service
        .features_of_audio(audio)
        .map_err(|e| bad(format!("input \"AUDIO\": {e}")))?;
    let (_, all) = signature(&served.backend);
    let wanted = requested(body, &all)?;
    let t = match tokio::time::timeout(
        app.opts.request_timeout,
        service.transcribe_async(feats, beam),
    )
    .await
    {
        Err(_) => return Err(model_error(app, None)),
        Ok(Err(e)) => return Err(model_error(app, Some(e))),
        Ok(Ok(t)) => t,
    };
    Ok(wanted
        .iter()
        .map(|&o| match o {
            "TRANSCRIPT" => tensor(o, "BYTES", vec![1], json!([t.text])),
            _ => tensor(o, "FP64", vec![1], json!([t.score])),
        })
        .collect())
}

/// The numbers of an FP32 tensor's `"data"` (nested lists flattened, row-major), as f32.
fn flatten_numbers(v: &Value, out: &mut Vec<f32>) -> std::result::Result<(), Response> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| flatten_numbers(x, out)),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            if !x.is_finite() {
                return Err(bad(format!("input \"AUDIO\": {n} is not a finite f32")));
            }
            out.push(x);
            Ok(())
        }
        _ => Err(bad(
            "input \"AUDIO\": FP32 data must be numbers (or lists of them)",
        )),
    }
}
