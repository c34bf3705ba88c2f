//! `rnnkit serve` as a user runs it: the real binary on a loopback port, a minimal HTTP/1.1
//! client, bounded request counts. Checks agreement with `rnnkit predict`, the error statuses
//! (400, 413, 503), 64 concurrent clients, graceful shutdown on SIGTERM, and /metrics parsed as
//! the Prometheus text format, its counters, histograms and gauges moving with the requests.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models/clf_tokenizer_attention")
}

struct Server {
    child: Child,
    addr: String,
}

/// The server's warm-up: one forward pass of one sequence before it reports ready, counted in
/// `rnnkit_batch_size` like any other.
const WARM_UP: f64 = 1.0;

impl Server {
    /// A server on the golden classifier, ready (its warm-up batch has run).
    fn start(extra: &[&str]) -> Server {
        Self::start_model(&model_dir(), extra)
    }
    fn start_model(model: &std::path::Path, extra: &[&str]) -> Server {
        let srv = Self::spawn(model, extra);
        let start = std::time::Instant::now();
        while !matches!(
            http(&srv.addr, "GET", "/v2/health/ready", b""),
            Ok((200, _))
        ) {
            assert!(start.elapsed() < Duration::from_secs(30), "never ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        srv
    }
    /// A server, listening but perhaps not ready yet.
    fn spawn(model: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
            .args([
                "serve",
                "--model",
                model.to_str().unwrap(),
                "--addr",
                "127.0.0.1:0",
                "--device",
                "cpu",
            ])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "server exited before listening"
            );
            if let Some(a) = line.trim().strip_prefix("listening on http://") {
                break a.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        Server { child, addr }
    }
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_with_head(addr, method, path, body).map(|(code, _, body)| (code, body))
}

/// One request on a fresh connection; returns (status, response head, body).
fn http_with_head(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_string(), body.to_string()))
}

/// A parsed `/metrics` scrape: sample values by series (`name{labels}` exactly as written),
/// and the `# TYPE` of each metric family.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    /// The value of one series; panics naming the series if it is absent.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// A histogram's buckets in order: (`le` label, cumulative count).
    fn buckets(&self, name: &str) -> Vec<(String, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (le, value) = rest.split_once("\"} ").expect("bucket line");
                (le.to_string(), value.parse().expect("bucket count"))
            })
            .collect()
    }
}

/// GETs /metrics and parses the Prometheus text format (version 0.0.4): `# HELP` and `# TYPE`
/// lines, then `series value` lines.
fn scrape(addr: &str) -> Scrape {
    let (code, head, text) = http_with_head(addr, "GET", "/metrics", b"").unwrap();
    assert_eq!(code, 200, "{text}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: value not a number: {e}"));
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "series {series} twice"
            );
        }
    }
    Scrape {
        samples,
        types,
        text,
    }
}

const LATENCY_LE: [&str; 13] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "5",
    "+Inf",
];
const BATCH_LE: [&str; 9] = ["1", "2", "4", "8", "16", "32", "64", "128", "+Inf"];

/// The metric families, their types and the histograms' bucket bounds are those dashboards use.
fn check_layout(m: &Scrape) {
    for (name, kind) in [
        ("rnnkit_requests_total", "counter"),
        ("rnnkit_request_duration_seconds", "histogram"),
        ("rnnkit_batch_size", "histogram"),
        ("rnnkit_queue_depth", "gauge"),
        ("rnnkit_requests_in_flight", "gauge"),
    ] {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "{}",
            m.text
        );
    }
    for (name, les) in [
        ("rnnkit_request_duration_seconds", &LATENCY_LE[..]),
        ("rnnkit_batch_size", &BATCH_LE[..]),
    ] {
        let buckets = m.buckets(name);
        let got: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(got, les, "{name} bucket bounds");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name} buckets not cumulative: {buckets:?}"
        );
        assert_eq!(
            buckets.last().map(|b| b.1),
            Some(m.get(&format!("{name}_count"))),
            "{name}: +Inf bucket != _count"
        );
    }
}

fn requests(m: &Scrape, code: u16) -> f64 {
    m.get(&format!("rnnkit_requests_total{{code=\"{code}\"}}"))
}

fn post(addr: &str, v: &Value) -> (u16, Value) {
    post_to(addr, "/v1/predict", v)
}

fn post_to(addr: &str, path: &str, v: &Value) -> (u16, Value) {
    let (code, body) = http(addr, "POST", path, v.to_string().as_bytes()).unwrap();
    (
        code,
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{code} non-JSON body {body:?}: {e}")),
    )
}

const TEXTS: [&str; 4] = [
    "a gripping , funny movie",
    "the plot is thin and the acting is worse .",
    "",
    "nothing much happens , but beautifully",
];

#[test]
fn predictions_equal_rnnkit_predict_and_errors_are_json() {
    let srv = Server::start(&["--max-body-bytes", "4096", "--max-text-chars", "500"]);
    let (code, body) = http(&srv.addr, "GET", "/healthz", b"").unwrap();
    assert_eq!((code, body.contains("ok")), (200, true));

    let (code, v) = post(&srv.addr, &json!({"texts": TEXTS}));
    assert_eq!(code, 200, "{v}");
    let served = v["predictions"].as_array().unwrap().clone();
    let (code, one) = post(&srv.addr, &json!({"text": TEXTS[1]}));
    assert_eq!(code, 200);
    assert_eq!(one["predictions"][0]["label"], served[1]["label"]);

    let input = std::env::temp_dir().join(format!("rnnkit-serve-{}.jsonl", std::process::id()));
    std::fs::write(
        &input,
        TEXTS
            .iter()
            .map(|t| json!({"text": t}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args([
            "predict",
            "--model",
            model_dir().to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&input);
    let cli: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cli.len(), served.len());
    for (c, s) in cli.iter().zip(&served) {
        assert_eq!(c["label"], s["label"]);
        for (k, p) in c["probabilities"].as_object().unwrap() {
            assert!(
                (p.as_f64().unwrap() - s["probabilities"][k].as_f64().unwrap()).abs() < 1e-6,
                "{k}"
            );
        }
    }

    let (code, body) = http(&srv.addr, "POST", "/v1/predict", b"{\"text\": ").unwrap();
    assert_eq!(code, 400);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let (code, v) = post(&srv.addr, &json!({"txt": "x"}));
    assert_eq!((code, v["error"].is_string()), (400, true));
    let (code, v) = post(&srv.addr, &json!({"text": "y".repeat(501)}));
    assert_eq!(code, 400, "{v}");
    let (code, v) = post(&srv.addr, &json!({"text": "z".repeat(5000)}));
    assert_eq!(code, 413, "{v}");

    let m = scrape(&srv.addr);
    check_layout(&m);
    for (code, n) in [
        (200, 2.0),
        (400, 3.0),
        (413, 1.0),
        (503, 0.0),
        (504, 0.0),
        (500, 0.0),
    ] {
        assert_eq!(requests(&m, code), n, "code {code}:\n{}", m.text);
    }
    assert_eq!(m.get("rnnkit_request_duration_seconds_count"), 6.0);
    assert!(m.get("rnnkit_request_duration_seconds_sum") > 0.0);
    // The warm-up, then two requests one after the other: batches of 1, 4 and 1 sequences.
    assert_eq!(m.get("rnnkit_batch_size_count"), 3.0);
    assert_eq!(m.get("rnnkit_batch_size_sum"), 5.0 + WARM_UP);
    let batches: Vec<f64> = m.buckets("rnnkit_batch_size").iter().map(|b| b.1).collect();
    assert_eq!(batches, [2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
    assert_eq!(m.get("rnnkit_queue_depth"), 0.0);
    assert_eq!(m.get("rnnkit_requests_in_flight"), 0.0);
}

#[test]
fn metrics_count_each_request() {
    let srv = Server::start(&[]);
    let m = scrape(&srv.addr);
    check_layout(&m);
    // Every status has its series from the start; nothing counted yet.
    for code in [200, 400, 408, 413, 503, 504, 500] {
        assert_eq!(requests(&m, code), 0.0, "code {code}");
    }
    assert_eq!(m.get("rnnkit_request_duration_seconds_count"), 0.0);
    assert_eq!(m.get("rnnkit_batch_size_count"), WARM_UP);
    for n in 1..=5 {
        let (code, v) = post(&srv.addr, &json!({"texts": &TEXTS[..2]}));
        assert_eq!(code, 200, "{v}");
        let m = scrape(&srv.addr);
        assert_eq!(requests(&m, 200), n as f64);
        assert_eq!(requests(&m, 400), 0.0);
        assert_eq!(m.get("rnnkit_request_duration_seconds_count"), n as f64);
        assert_eq!(m.get("rnnkit_batch_size_count"), n as f64 + WARM_UP);
        assert_eq!(m.get("rnnkit_batch_size_sum"), 2.0 * n as f64 + WARM_UP);
        assert_eq!(
            m.buckets("rnnkit_batch_size")[1].1,
            n as f64 + WARM_UP,
            "all batches of 2 (and the warm-up's 1)"
        );
        assert_eq!(m.get("rnnkit_requests_in_flight"), 0.0);
    }
    let (code, _) = post(&srv.addr, &json!({"texts": []}));
    assert_eq!(code, 400);
    let m = scrape(&srv.addr);
    check_layout(&m);
    assert_eq!((requests(&m, 200), requests(&m, 400)), (5.0, 1.0));
    assert_eq!(m.get("rnnkit_request_duration_seconds_count"), 6.0);
    assert_eq!(
        m.get("rnnkit_batch_size_count"),
        5.0 + WARM_UP,
        "a 400 never reaches the predictor"
    );
}

#[test]
fn a_full_queue_answers_503() {
    let srv = Server::start(&["--queue-capacity", "2", "--max-batch", "1"]);
    // More sequences than the queue can ever hold: refused at once.
    let (code, v) = post(&srv.addr, &json!({"texts": ["a", "b", "c"]}));
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("overloaded"));
    // Bursts of concurrent requests: some get 503, the rest 200, nothing else.
    let codes: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|_| s.spawn(|| post(&srv.addr, &json!({"texts": ["x y z", "w"]})).0))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    let m = scrape(&srv.addr);
    check_layout(&m);
    let ok = codes.iter().filter(|&&c| c == 200).count() as f64;
    assert_eq!(requests(&m, 200), ok);
    assert_eq!(requests(&m, 503), 33.0 - ok);
    assert_eq!(m.get("rnnkit_request_duration_seconds_count"), 33.0);
    // Only accepted requests reach a worker, two sequences each.
    assert_eq!(m.get("rnnkit_batch_size_sum"), 2.0 * ok + WARM_UP);
    assert_eq!(m.get("rnnkit_queue_depth"), 0.0);
}

#[test]
fn sixty_four_concurrent_clients_all_answered() {
    let srv = Server::start(&["--max-batch", "32"]);
    let codes: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|i| {
                let addr = &srv.addr;
                s.spawn(move || {
                    (0..5)
                        .map(|j| post(addr, &json!({"text": TEXTS[(i + j) % 4]})).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.len(), 320);
    assert!(
        codes.iter().all(|&c| c == 200),
        "{:?}",
        codes.iter().filter(|&&c| c != 200).collect::<Vec<_>>()
    );
    let m = scrape(&srv.addr);
    check_layout(&m);
    assert_eq!(requests(&m, 200), 320.0);
    assert_eq!(m.get("rnnkit_request_duration_seconds_count"), 320.0);
    assert_eq!(m.get("rnnkit_batch_size_sum"), 320.0 + WARM_UP);
    let batches = m.get("rnnkit_batch_size_count");
    assert!((1.0..=320.0).contains(&batches), "{batches} batches");
    assert_eq!(m.get("rnnkit_requests_in_flight"), 0.0);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    // Requests wait up to 2 s for a micro-batch, so they are in flight when SIGTERM lands.
    let mut srv = Server::start(&["--max-batch", "64", "--max-wait-ms", "2000"]);
    let addr = srv.addr.clone();
    let results = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let addr = addr.clone();
                s.spawn(move || post(&addr, &json!({"text": TEXTS[i % 4]})).0)
            })
            .collect();
        // Until all 8 have reached the handler (a fixed sleep could lose the race on a busy machine).
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            if scrape(&addr).get("rnnkit_requests_in_flight") == 8.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Command::new("kill")
            .args(["-TERM", &srv.pid()])
            .status()
            .unwrap()
            .success());
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        results,
        vec![200; 8],
        "in-flight requests must complete after SIGTERM"
    );
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "server exit status {status:?}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "new connections must be refused after shutdown"
    );
}

/// A seq2seq directory is served on `/v1/translate`: one request with the 10 texts of the
/// golden `translate.json` gets PyTorch's translations and scores (the same batch of 10 as
/// `rnnkit_seq2seq.translate_texts`); concurrent requests with the same settings are
/// micro-batched and all answered; bad settings are a 400 and `/v1/predict` a 404.
#[test]
fn translate_route_answers_with_pytorchs_translations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seq2seq/s2s_tokenizer_wordpiece");
    let want: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("translate.json")).unwrap())
            .unwrap();
    let server = Server::start_model(&dir, &["--max-wait-ms", "20"]);
    let texts: Vec<&Value> = want.iter().map(|w| &w["text"]).collect();
    let (code, v) = post_to(&server.addr, "/v1/translate", &json!({ "texts": texts }));
    assert_eq!(code, 200, "{v}");
    let got = v["translations"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["translation"], w["translation"], "{:?}", w["text"]);
        assert_eq!(
            g["score"].as_f64().unwrap().to_bits(),
            w["score_bits"].as_u64().unwrap()
        );
    }
    let (code, v) = post_to(
        &server.addr,
        "/v1/translate",
        &json!({"text": "hello", "beam": 3, "n_best": 2}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["translations"][0]["n_best"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                post_to(
                    &addr,
                    "/v1/translate",
                    &json!({"text": format!("message {i}"), "greedy": true}),
                )
            })
        })
        .collect();
    for c in clients {
        let (code, v) = c.join().unwrap();
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["translations"].as_array().unwrap().len(), 1);
    }
    let (code, v) = post_to(
        &server.addr,
        "/v1/translate",
        &json!({"text": "x", "beam": 0}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("beam"), "{v}");
    let (code, v) = post_to(
        &server.addr,
        "/v1/translate",
        &json!({"text": "x", "sample": 1, "temperature": 0}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("temperature"), "{v}");
    let long = "word ".repeat(300);
    let (code, v) = post_to(
        &server.addr,
        "/v1/translate",
        &json!({"texts": ["ok", long]}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("text 1 has"), "{v}");
    let (code, v) = post_to(
        &server.addr,
        "/v1/translate",
        &json!({"texts": ["ok", "  "]}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("text 1 is empty"),
        "{v}"
    );
    let (code, v) = post_to(&server.addr, "/v1/predict", &json!({"text": "x"}));
    assert_eq!(code, 404, "{v}");
}

/// Open Inference Protocol v2 readiness: not ready until the warm-up batch has run (here it
/// waits 1.5 s for its micro-batch to fill), live all along; ready after; and not ready once
/// SIGTERM starts the drain, while in-flight requests still finish. The protocol itself is
/// checked with a third-party client by `scripts/oip_client_check.py` (tritonclient).
#[test]
fn v2_readiness_follows_the_warm_up_and_the_drain() {
    let mut srv = Server::spawn(
        &model_dir(),
        &["--max-batch", "64", "--max-wait-ms", "1500"],
    );
    let addr = srv.addr.clone();
    let get = |path: &str| http(&addr, "GET", path, b"").map(|(c, _)| c);
    assert_eq!(
        get("/v2/health/ready").unwrap(),
        503,
        "ready before the warm-up ran"
    );
    assert_eq!(get("/v2/health/live").unwrap(), 200);
    let name = model_dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&format!("/v2/models/{name}/ready")).unwrap(), 503);
    let start = std::time::Instant::now();
    while get("/v2/health/ready").unwrap() != 200 {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ready after {:?}", start.elapsed());
    assert_eq!(
        get(&format!("/v2/models/{name}/versions/1/ready")).unwrap(),
        200
    );
    assert_eq!(get("/v2/models/other/ready").unwrap(), 404);
    let results = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let addr = addr.clone();
                s.spawn(move || post(&addr, &json!({"text": TEXTS[i]})).0)
            })
            .collect();
        let start = std::time::Instant::now();
        while scrape(&addr).get("rnnkit_requests_in_flight") < 4.0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "requests not in flight"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Command::new("kill")
            .args(["-TERM", &srv.pid()])
            .status()
            .unwrap()
            .success());
        // Draining: a new readiness probe is refused (the listener is closed) or answered 503,
        // while the requests are still in flight (they wait up to 1.5 s for their micro-batch).
        while get("/v2/health/ready").is_ok_and(|c| c == 200) {
            assert!(
                hs.iter().all(|h| !h.is_finished()),
                "still ready when the in-flight requests were answered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            hs.iter().any(|h| !h.is_finished()),
            "readiness went only after every in-flight request was answered"
        );
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        results,
        vec![200; 4],
        "in-flight requests finish while draining"
    );
    assert!(srv.child.wait().unwrap().success());
}

/// `/v2/.../infer` refuses what is not the protocol's JSON with a 400 naming the problem.
#[test]
fn v2_infer_refuses_malformed_tensors() {
    let srv = Server::start(&["--model-name", "sentiment"]);
    let infer = |body: Value| post_to(&srv.addr, "/v2/models/sentiment/infer", &body);
    let text = |shape: Value, data: Value| json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": shape, "data": data}]});
    let (code, v) = infer(text(json!([2, 1]), json!([["a film"], ["dull"]])));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"][0], 2, "{v}");
    for (body, words) in [
        (json!({}), "\"inputs\""),
        (json!({"inputs": []}), "one input"),
        (
            text(json!([3]), json!(["a", "b"])),
            "shape [3] but 2 strings",
        ),
        (
            text(json!([1, 2]), json!(["a", "b"])),
            "shape [N] or [N, 1]",
        ),
        (text(json!([1]), json!([5])), "must be strings"),
        (text(json!([0]), json!([])), "between 1 and"),
        (
            json!({"inputs": [{"name": "IDS", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}),
            "unknown input \"IDS\"",
        ),
        (
            json!({"inputs": text(json!([1]), json!(["a"]))["inputs"], "outputs": [{"name": "X"}]}),
            "unknown output \"X\"",
        ),
    ] {
        let (code, v) = infer(body.clone());
        assert_eq!(code, 400, "{body}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(words),
            "{body}: {v} should say {words}"
        );
    }
    let (code, v) = post_to(
        &srv.addr,
        "/v2/models/other/infer",
        &text(json!([1]), json!(["a"])),
    );
    assert_eq!(code, 404, "{v}");
    let (code, _) = http(
        &srv.addr,
        "POST",
        "/v2/models/sentiment/infer",
        b"{not json",
    )
    .unwrap();
    assert_eq!(code, 400);
}

/// A body over `--max-body-bytes` gets a 413 the client can read, whether it declares its
/// length or streams it chunked (2 MiB against the default 1 MiB, written in full before the
/// answer is read); a body that stops arriving gets 408 after `--timeout`; the server keeps
/// serving.
#[test]
fn oversize_and_slow_bodies_get_readable_answers() {
    let srv = Server::start(&["--timeout", "1"]);
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(2 << 20));
    let (code, body) = http(&srv.addr, "POST", "/v1/predict", big.as_bytes())
        .expect("the client could send its 2 MiB and read the answer");
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("over the 1048576-byte limit"), "{body}");
    // The same, chunked: no Content-Length to refuse it by.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    for chunk in big.as_bytes().chunks(64 << 10) {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"error\""), "{resp}");
    // A body promised but not sent: 408 within the timeout (1 s), not a connection held forever.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"text\""
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let (code, v) = post(&srv.addr, &json!({"text": "still serving"}));
    assert_eq!(code, 200, "{v}");
    let m = scrape(&srv.addr);
    assert_eq!((requests(&m, 413), requests(&m, 408)), (2.0, 1.0));
}

/// `GET /openapi.json` documents the routes the server answers: every documented (method,
/// path) reaches a handler (a JSON or text answer, never the router's empty 404 or a 405), and
/// every route docs/SERVING.md lists is documented.
#[test]
fn openapi_document_matches_the_routes() {
    let srv = Server::start(&["--model-name", "sentiment"]);
    let (code, body) = http(&srv.addr, "GET", "/openapi.json", b"").unwrap();
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let url = path
                .replace("{name}", "sentiment")
                .replace("{version}", "1");
            let body: &[u8] = if method == "post" { b"{}" } else { b"" };
            let (code, answer) = http(&srv.addr, &method.to_uppercase(), &url, body).unwrap();
            assert!(
                code != 405 && !answer.is_empty(),
                "{method} {url}: {code} {answer:?} (no handler?)"
            );
            if code == 404 {
                assert!(answer.contains("\"error\""), "{method} {url}: {answer}");
            }
        }
    }
    // The router's own 404 for a route that does not exist: empty, unlike every handler's.
    let (code, answer) = http(&srv.addr, "GET", "/v3/nothing", b"").unwrap();
    assert_eq!((code, answer.as_str()), (404, ""));
    for route in [
        "POST /v1/predict",
        "POST /v1/translate",
        "POST /v1/transcribe",
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /v2",
        "GET /v2/health/live",
        "GET /v2/health/ready",
        "GET /v2/models/{name}",
        "GET /v2/models/{name}/ready",
        "POST /v2/models/{name}/infer",
        "GET /v2/models/{name}/versions/{version}",
        "GET /v2/models/{name}/versions/{version}/ready",
        "POST /v2/models/{name}/versions/{version}/infer",
        "POST /v2/repository/index",
        "POST /v2/repository/models/{name}/load",
        "POST /v2/repository/models/{name}/unload",
    ] {
        assert!(
            documented.iter().any(|d| d == route),
            "{route} undocumented"
        );
    }
    assert_eq!(documented.len(), 18, "{documented:?}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A model repository (`--model-repository`): a classifier and a translator served side by
/// side; under load from 5 clients for 12 s, a new version of the classifier is dropped in and
/// loaded mid-run, then a broken one: no request fails, answers move from version 1 to 2 and
/// stay there, the broken load is refused naming the file and reported in the index and the
/// metrics; unloading the translator takes it out (404).
#[test]
fn repository_reload_under_load_drops_nothing() {
    let repo = std::env::temp_dir().join(format!("rnnkit-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    let s2s = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seq2seq/s2s_tokenizer_wordpiece");
    copy_dir(&model_dir(), &repo.join("sentiment/1"));
    copy_dir(&s2s, &repo.join("translator/1"));
    std::fs::create_dir_all(repo.join("sentiment/notes")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(["serve", "--model-repository", repo.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    std::thread::spawn(move || for _ in err.lines() {});
    let srv = Server { child, addr };
    let start = std::time::Instant::now();
    while !matches!(
        http(&srv.addr, "GET", "/v2/health/ready", b""),
        Ok((200, _))
    ) {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let index = |addr: &str| post_to(addr, "/v2/repository/index", &json!({})).1;
    let v = index(&srv.addr);
    assert_eq!(v[0]["name"], "sentiment", "{v}");
    assert_eq!(
        (v[0]["version"].as_str(), v[0]["state"].as_str()),
        (Some("1"), Some("READY")),
        "{v}"
    );
    assert_eq!(v[1]["name"], "translator", "{v}");
    // /v1 with two models must be told which.
    let (code, v) = post(&srv.addr, &json!({"text": "a film"}));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"model\""), "{v}");
    let (code, v) = post(&srv.addr, &json!({"text": "a film", "model": "sentiment"}));
    assert_eq!(code, 200, "{v}");

    let infer = |addr: &str, model: &str, text: &str| {
        post_to(
            addr,
            &format!("/v2/models/{model}/infer"),
            &json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [text]}]}),
        )
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (per_client, reload, broken) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..5)
            .map(|i| {
                let (addr, stop) = (srv.addr.clone(), &stop);
                s.spawn(move || {
                    let model = if i == 4 { "translator" } else { "sentiment" };
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let (code, v) = infer(&addr, model, TEXTS[i % 2]);
                        seen.push((
                            model,
                            code,
                            v["model_version"].as_str().unwrap_or("").to_string(),
                            v,
                        ));
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        copy_dir(&model_dir(), &repo.join("sentiment/2"));
        let reload = post_to(
            &srv.addr,
            "/v2/repository/models/sentiment/load",
            &json!({}),
        );
        std::thread::sleep(Duration::from_secs(3));
        copy_dir(&model_dir(), &repo.join("sentiment/3"));
        std::fs::write(repo.join("sentiment/3/config.json"), "{ not json").unwrap();
        let broken = post_to(
            &srv.addr,
            "/v2/repository/models/sentiment/load",
            &json!({}),
        );
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let per_client: Vec<Vec<_>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (per_client, reload, broken)
    });
    let answers: Vec<_> = per_client.iter().flatten().collect();
    assert_eq!(reload.0, 200, "{}", reload.1);
    assert_eq!(reload.1["version"], "2", "{}", reload.1);
    assert_eq!(broken.0, 400, "{}", broken.1);
    let why = broken.1["error"].as_str().unwrap();
    assert!(
        why.contains("sentiment/3") && why.contains("config.json"),
        "{why}"
    );
    let failed: Vec<_> = answers.iter().filter(|a| a.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(3)]
    );
    let versions: Vec<&str> = answers
        .iter()
        .filter(|a| a.0 == "sentiment")
        .map(|a| a.2.as_str())
        .collect();
    assert!(
        versions.contains(&"1") && versions.contains(&"2"),
        "versions seen: {:?}",
        versions.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(!versions.contains(&"3"));
    // Each client, once answered by version 2, is never answered by version 1 again.
    for client in per_client.iter().filter(|c| c[0].0 == "sentiment") {
        if let Some(k) = client.iter().position(|a| a.2 == "2") {
            assert!(client[k..].iter().all(|a| a.2 == "2"), "version 1 after 2");
        }
    }
    println!(
        "{} requests in 12 s, none failed; sentiment answered by version 1 then 2 ({} and {})",
        answers.len(),
        versions.iter().filter(|v| **v == "1").count(),
        versions.iter().filter(|v| **v == "2").count()
    );
    let (code, v) = infer(&srv.addr, "sentiment", "after");
    assert_eq!((code, v["model_version"].as_str()), (200, Some("2")), "{v}");
    let v = index(&srv.addr);
    assert_eq!(
        (v[0]["version"].as_str(), v[0]["state"].as_str()),
        (Some("2"), Some("READY")),
        "{v}"
    );
    assert!(
        v[0]["reason"].as_str().unwrap().contains("config.json"),
        "{v}"
    );
    let m = scrape(&srv.addr);
    assert_eq!(
        m.get("rnnkit_model_loads_total{model=\"sentiment\",result=\"ok\"}"),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get("rnnkit_model_loads_total{model=\"sentiment\",result=\"failed\"}"),
        1.0
    );
    // Unload: out of service, and said so.
    let (code, _) = post_to(
        &srv.addr,
        "/v2/repository/models/translator/unload",
        &json!({}),
    );
    assert_eq!(code, 200);
    let (code, v) = infer(&srv.addr, "translator", "x");
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unloaded"), "{v}");
    assert_eq!(index(&srv.addr)[1]["state"], "UNAVAILABLE");
    let _ = std::fs::remove_dir_all(&repo);
}

/// The golden ctc model the transcription tests serve, PyTorch's transcripts of its WAVs
/// (`transcribe.json`), the WAVs' names in that file's order and their bytes.
fn ctc_golden() -> (PathBuf, Value, Vec<String>, Vec<Vec<u8>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ctc");
    let model = dir.join("ctc_lstm_bi_l2_conv1");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("transcribe.json")).unwrap())
            .unwrap();
    let files: Vec<String> = want["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 7, "regenerate with scripts/make_ctc_golden.py");
    let wavs = files
        .iter()
        .map(|f| std::fs::read(dir.join("wav").join(f)).unwrap())
        .collect();
    (model, want, files, wavs)
}

/// Every body posted to `/v1/transcribe` at once, one thread each; the answers in order, each
/// a 200.
fn transcribe_at_once(addr: &str, bodies: &[Vec<u8>]) -> Vec<Value> {
    let handles: Vec<_> = bodies
        .iter()
        .map(|b| {
            let (addr, body) = (addr.to_string(), b.clone());
            std::thread::spawn(move || http(&addr, "POST", "/v1/transcribe", &body).unwrap())
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            let (code, body) = h.join().unwrap();
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect()
}

/// `POST /v1/transcribe` on a golden ctc model: each golden WAV, alone (`--max-batch 1`),
/// gets PyTorch's transcript of that file alone (text, words and times; the score to the f64
/// bit), greedy and with `?beam=8`; 7 concurrent requests micro-batched (`--max-batch 8`) all
/// answer 200 with the same texts; bad bodies and parameters get 400 naming the problem, and
/// the classifier's route answers 404.
#[test]
fn transcribe_route_gives_pytorchs_transcripts() {
    let (model, want, files, wavs) = ctc_golden();
    let srv = Server::start_model(&model, &["--max-batch", "1"]);
    for beam in [0, 8] {
        for (i, f) in files.iter().enumerate() {
            let (code, body) = http(
                &srv.addr,
                "POST",
                &format!("/v1/transcribe?beam={beam}"),
                &wavs[i],
            )
            .unwrap();
            assert_eq!(code, 200, "{f}: {body}");
            let got: Value = serde_json::from_str(&body).unwrap();
            let w = &want[format!("single_beam{beam}")][i];
            assert_eq!(got["text"], w["text"], "{f} beam {beam}");
            assert_eq!(got["words"], w["words"], "{f} beam {beam}");
            assert_eq!(
                got["score"].as_f64().unwrap().to_bits(),
                w["score_bits"].as_u64().unwrap(),
                "{f} beam {beam}: score {} vs PyTorch {}",
                got["score"],
                w["score"]
            );
        }
    }
    for (path, body, want) in [
        (
            "/v1/transcribe",
            b"not audio".to_vec(),
            "the request body: not a WAV file",
        ),
        (
            "/v1/transcribe",
            Vec::new(),
            "the request body: not a WAV file",
        ),
        (
            "/v1/transcribe?beam=x",
            wavs[0].clone(),
            "beam must be an integer",
        ),
        (
            "/v1/transcribe?language=en",
            wavs[0].clone(),
            "unknown query parameter \\\"language\\\"",
        ),
    ] {
        let (code, answer) = http(&srv.addr, "POST", path, &body).unwrap();
        assert_eq!(code, 400, "{path}: {answer}");
        assert!(answer.contains(want), "{path}: {answer}");
    }
    let (code, answer) = http(&srv.addr, "POST", "/v1/predict", br#"{"text": "hi"}"#).unwrap();
    assert_eq!(code, 404, "{answer}");
    drop(srv);

    let srv = Server::start_model(&model, &["--max-batch", "8", "--max-wait-ms", "50"]);
    for (i, got) in transcribe_at_once(&srv.addr, &wavs).iter().enumerate() {
        assert_eq!(
            got["text"], want["single_beam0"][i]["text"],
            "{} micro-batched",
            files[i]
        );
    }
}

/// `rnnkit serve --fused-transcription`: the same golden model and WAVs, each alone and 7 at
/// once micro-batched into one padded batch (whose padding the fused kernel's input projection
/// skips): texts, words and times identical to PyTorch's per-file transcripts, scores within
/// 1e-4 (not bits: the fused kernel rounds differently).
#[test]
fn fused_transcription_gives_pytorchs_texts() {
    let (model, want, files, wavs) = ctc_golden();
    let check = |got: &Value, i: usize, what: &str| {
        let w = &want["single_beam0"][i];
        assert_eq!(got["text"], w["text"], "{what}");
        assert_eq!(got["words"], w["words"], "{what}");
        let d = (got["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
        assert!(d <= 1e-4, "{what}: score differs from PyTorch's by {d:e}");
    };
    let srv = Server::start_model(
        &model,
        &[
            "--fused-transcription",
            "--max-batch",
            "8",
            "--max-wait-ms",
            "200",
        ],
    );
    for (i, (f, body)) in files.iter().zip(&wavs).enumerate() {
        let (code, answer) = http(&srv.addr, "POST", "/v1/transcribe", body).unwrap();
        assert_eq!(code, 200, "{f}: {answer}");
        check(
            &serde_json::from_str(&answer).unwrap(),
            i,
            &format!("{f} alone"),
        );
    }
    for (i, got) in transcribe_at_once(&srv.addr, &wavs).iter().enumerate() {
        check(got, i, &format!("{} micro-batched", files[i]));
    }
}

/// A demo-sized classifier directory (the sentiment language model's encoder, LSTM 512 with
/// projection 160, vocabulary 8000, its tokenizer) with `pooling`, seeded random weights.
fn demo_sized_classifier(pooling: &str) -> PathBuf {
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/sentiment");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(weights.join("config.json")).unwrap())
            .unwrap();
    cfg["family"] = json!("classifier");
    cfg["num_classes"] = json!(3);
    cfg["labels"] = json!(["negative", "neutral", "positive"]);
    cfg["pooling"] = json!(pooling);
    cfg["tie_weights"] = json!(false);
    let dir = std::env::temp_dir().join(format!(
        "rnnkit-invariance-{pooling}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let config = rnnkit::models::ModelConfig::read(&dir.join("config.json")).unwrap();
    tch::manual_seed(7);
    let model =
        rnnkit::models::SequenceClassifier::new(config.clone(), tch::Kind::Float, tch::Device::Cpu)
            .unwrap();
    rnnkit::models::save_dir(&dir, &config, &model, &weights, false).unwrap();
    dir
}

/// Texts of 1 to 79 words (so the batches mix short and long rows), from a fixed word list.
fn invariance_texts(n: usize) -> Vec<String> {
    let words = [
        "the",
        "film",
        "is",
        "a",
        "gripping",
        "dull",
        "story",
        "of",
        "love",
        "and",
        "loss",
        ",",
        "beautifully",
        "acted",
        "but",
        "thin",
        ".",
        "nothing",
        "happens",
        "worse",
    ];
    (0..n)
        .map(|i| {
            let len = 1 + (i * 37) % 79;
            (0..len)
                .map(|k| words[(i * 7 + k * k + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Each text's probabilities in the order of the model's labels.
fn probabilities(v: &Value) -> Vec<Vec<f64>> {
    v["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions in {v}"))
        .iter()
        .map(|p| {
            p["probabilities"]
                .as_object()
                .unwrap()
                .values()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Batch invariance over HTTP (issue: "Batching changes answers"): 40 texts of 1-79 words, each
/// asked alone, then all in one request, then in 8 concurrent requests of 5 (micro-batched
/// together, in another order): every probability's bits equal the alone answer's (JSON
/// numbers are f32's shortest decimal, so equal numbers mean equal bits). Three classifiers:
/// demo-sized LSTM with projection and `last` pooling (the demo's shape), the same with `mean`
/// pooling, and the golden bidirectional LSTM with attention pooling.
#[test]
fn answers_do_not_depend_on_the_batch() {
    let texts = invariance_texts(40);
    let owned = [demo_sized_classifier("last"), demo_sized_classifier("mean")];
    for model in owned.iter().chain(std::iter::once(&model_dir())) {
        let srv = Server::start_model(model, &["--max-batch", "64", "--max-wait-ms", "50"]);
        let alone: Vec<Vec<f64>> = texts
            .iter()
            .map(|t| {
                let (code, v) = post(&srv.addr, &json!({ "text": t }));
                assert_eq!(code, 200, "{v}");
                probabilities(&v).remove(0)
            })
            .collect();
        let (code, v) = post(&srv.addr, &json!({ "texts": texts }));
        assert_eq!(code, 200, "{v}");
        let together = probabilities(&v);
        let mut shuffled: Vec<usize> = (0..texts.len()).collect();
        shuffled.sort_by_key(|&i| (i * 13) % 40);
        let concurrent: Vec<(usize, Vec<f64>)> = std::thread::scope(|s| {
            let hs: Vec<_> = shuffled
                .chunks(5)
                .map(|part| {
                    let (addr, texts) = (&srv.addr, &texts);
                    s.spawn(move || {
                        let mine: Vec<&String> = part.iter().map(|&i| &texts[i]).collect();
                        let (code, v) = post(addr, &json!({ "texts": mine }));
                        assert_eq!(code, 200, "{v}");
                        part.iter()
                            .copied()
                            .zip(probabilities(&v))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let m = scrape(&srv.addr);
        let (mut differ, mut max_diff) = (0, 0f64);
        for (i, got) in together
            .iter()
            .enumerate()
            .chain(concurrent.iter().map(|(i, p)| (*i, p)))
        {
            let d = got
                .iter()
                .zip(&alone[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            if got != &alone[i] {
                differ += 1;
                max_diff = max_diff.max(d);
            }
        }
        println!(
            "{}: {} texts alone vs in one batch and in 8 concurrent requests ({} batches formed): \
             {differ} answers differ in any bit (max abs diff {max_diff:e})",
            model.file_name().unwrap().to_string_lossy(),
            texts.len(),
            m.get("rnnkit_batch_size_count"),
        );
        assert_eq!(
            differ, 0,
            "batch-invariant answers differ from the alone answers"
        );
    }
    for d in owned {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Slow request headers (slowloris): a connection that sends nothing, and one that dribbles a
/// header a byte every 100 ms, each get a JSON 408 within the timeout (1 s) and are closed; a
/// normal request on a third connection meanwhile, and one after, get 200.
#[test]
fn slow_headers_get_408_and_the_server_keeps_serving() {
    let srv = Server::start(&["--timeout", "1"]);
    let start = std::time::Instant::now();
    let silent = std::thread::spawn({
        let addr = srv.addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            resp
        }
    });
    let dribble = std::thread::spawn({
        let addr = srv.addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ";
            for b in head.bytes().chain(std::iter::repeat(b'a')).take(200) {
                if s.write_all(&[b]).is_err() {
                    break; // closed by the server
                }
                std::thread::sleep(Duration::from_millis(100));
                if start.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            (resp, start.elapsed())
        }
    });
    let (code, v) = post(&srv.addr, &json!({"text": "served meanwhile"}));
    assert_eq!(code, 200, "{v}");
    let resp = silent.join().unwrap();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    assert!(
        resp.contains("\"error\"") && resp.contains("did not arrive"),
        "{resp}"
    );
    let (resp, took) = dribble.join().unwrap();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    assert!(
        took < Duration::from_secs(4),
        "the dribbling client was cut after {took:?}"
    );
    let (code, v) = post(&srv.addr, &json!({"text": "still serving"}));
    assert_eq!(code, 200, "{v}");
}
