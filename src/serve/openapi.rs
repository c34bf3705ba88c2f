//! `GET /openapi.json`: the OpenAPI 3.1 document of the routes `rnnkit serve` answers, built with
//! utoipa's builders from [`ROUTES`], one entry per (method, path). `tests/serve.rs` calls every
//! documented route and checks that a handler answers it (not the router's empty 404/405), and
//! that the routes SERVING.md lists are all documented.
//!
//! ```text
//! ROUTES: (method, path, summary, [(status, meaning)])  →  paths./v1/predict.post … (JSON)
//! ```

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required, ResponseBuilder,
};

/// A route: method, path (`{name}` and `{version}` are path parameters), summary, answers.
pub type Route = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const JSON_ERRORS: [(&str, &str); 5] = [
    (
        "400",
        "malformed JSON or texts over their limits: {\"error\": \"...\"}",
    ),
    ("408", "the body did not arrive within the timeout"),
    ("413", "the body is over --max-body-bytes"),
    ("503", "the queue is full, or the server is shutting down"),
    ("504", "no answer within --timeout"),
];

/// Every route `rnnkit serve` answers.
pub const ROUTES: &[Route] = &[
    ("post", "/v1/predict", "Classify texts: {\"text\"} or {\"texts\"} → {\"predictions\": [{\"label\", \"label_id\", \"probabilities\"}]}", &[("200", "the predictions, in order"), ("404", "the model is not a classifier"), JSON_ERRORS[0], JSON_ERRORS[1], JSON_ERRORS[2], JSON_ERRORS[3], JSON_ERRORS[4]]),
    ("post", "/v1/translate", "Translate texts: {\"text\"} or {\"texts\"} with search settings → {\"translations\": [{\"translation\", \"score\", \"tokens\"}]}", &[("200", "the translations, in order"), ("404", "the model is not a seq2seq model"), JSON_ERRORS[0], JSON_ERRORS[1], JSON_ERRORS[2], JSON_ERRORS[3], JSON_ERRORS[4]]),
    ("post", "/v1/transcribe", "Transcribe a WAV file (the body; ?beam=N for prefix beam search, ?model=NAME) → {\"text\", \"score\", \"words\": [{\"word\", \"start\", \"end\"}]}", &[("200", "the transcript"), ("400", "not a WAV file rnnkit reads, too long or too short, or a bad query parameter"), ("404", "the model is not a ctc model"), JSON_ERRORS[1], JSON_ERRORS[2], JSON_ERRORS[3], JSON_ERRORS[4]]),
    ("get", "/healthz", "Liveness: {\"status\": \"ok\"}", &[("200", "the process serves")]),
    ("get", "/metrics", "Prometheus text format (0.0.4)", &[("200", "the metrics")]),
    ("get", "/openapi.json", "This document", &[("200", "OpenAPI 3.1 JSON")]),
    ("get", "/v2", "Open Inference Protocol v2: server metadata", &[("200", "{\"name\", \"version\", \"extensions\"}")]),
    ("get", "/v2/health/live", "Open Inference Protocol v2: liveness", &[("200", "{\"live\": true}")]),
    ("get", "/v2/health/ready", "Open Inference Protocol v2: readiness (after the warm-up batch, not while draining)", &[("200", "{\"ready\": true}"), ("503", "{\"ready\": false}")]),
    ("get", "/v2/models/{name}", "Open Inference Protocol v2: model metadata", &[("200", "{\"name\", \"versions\", \"platform\", \"inputs\", \"outputs\"}"), ("404", "no such model")]),
    ("get", "/v2/models/{name}/ready", "Open Inference Protocol v2: model readiness", &[("200", "ready"), ("503", "not ready"), ("404", "no such model")]),
    ("post", "/v2/models/{name}/infer", "Open Inference Protocol v2: inference (JSON tensors: TEXT BYTES in)", &[("200", "{\"model_name\", \"model_version\", \"outputs\"}"), ("404", "no such model"), JSON_ERRORS[0], JSON_ERRORS[1], JSON_ERRORS[2], JSON_ERRORS[3], JSON_ERRORS[4]]),
    ("get", "/v2/models/{name}/versions/{version}", "Open Inference Protocol v2: model metadata of a version", &[("200", "as /v2/models/{name}"), ("404", "no such model or version")]),
    ("get", "/v2/models/{name}/versions/{version}/ready", "Open Inference Protocol v2: readiness of a version", &[("200", "ready"), ("503", "not ready"), ("404", "no such model or version")]),
    ("post", "/v2/models/{name}/versions/{version}/infer", "Open Inference Protocol v2: inference on a version", &[("200", "as /v2/models/{name}/infer"), ("404", "no such model or version"), JSON_ERRORS[0], JSON_ERRORS[1], JSON_ERRORS[2], JSON_ERRORS[3], JSON_ERRORS[4]]),
    ("post", "/v2/repository/index", "Model repository: every model, its version, READY or UNAVAILABLE and why", &[("200", "[{\"name\", \"version\", \"state\", \"reason\"}]"), ("400", "no model repository (--model-repository)")]),
    ("post", "/v2/repository/models/{name}/load", "Model repository: (re)load the highest version on disk; the old one serves until the new one is warmed up, and on failure", &[("200", "{\"name\", \"version\"}"), ("400", "the load failed (why); the version served before keeps serving")]),
    ("post", "/v2/repository/models/{name}/unload", "Model repository: take a model out of service (in-flight requests finish)", &[("200", "unloaded"), ("404", "not loaded"), ("400", "no model repository")]),
];

/// The OpenAPI document of [`ROUTES`].
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for &(method, path, summary, answers) in ROUTES {
        let mut op = OperationBuilder::new().summary(Some(summary));
        for param in ["name", "version"] {
            if path.contains(&format!("{{{param}}}")) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(param)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .description(Some(if param == "name" {
                            "the model's name (--model-name, or its repository directory)"
                        } else {
                            "the model's version (1 for --model; the loaded one of a repository)"
                        })),
                );
            }
        }
        if method == "post" {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        if path == "/v1/transcribe" {
                            "audio/wav"
                        } else {
                            "application/json"
                        },
                        ContentBuilder::new().build(),
                    )
                    .build(),
            ));
        }
        for &(status, meaning) in answers {
            op = op.response(status, ResponseBuilder::new().description(meaning).build());
        }
        let m = if method == "post" {
            HttpMethod::Post
        } else {
            HttpMethod::Get
        };
        paths = paths.path(path, PathItem::new(m, op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("rnnkit serve")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Recurrent-network models (classifiers, translators) pretrained in PyTorch, served from Rust. See docs/SERVING.md.",
                )),
        )
        .paths(paths)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_method() {
        let doc: serde_json::Value = serde_json::from_str(&document().to_json().unwrap()).unwrap();
        assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), ROUTES.len(), "a path listed twice in ROUTES");
        for &(method, path, _, _) in ROUTES {
            assert!(paths[path][method].is_object(), "{method} {path}");
            let params = paths[path][method]["parameters"]
                .as_array()
                .map_or(0, Vec::len);
            assert_eq!(params, path.matches('{').count(), "{path}: path parameters");
        }
    }
}
