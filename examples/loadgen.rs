//! A bounded HTTP load generator for `rnnkit serve` (loopback only): N concurrent clients each
//! send M `POST /v1/predict` requests (one sentence each) and the latencies are reported.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8080 --clients 8 --requests 200
//!
//! Prints one JSON object: `ok` (200 responses; the throughput and latencies are theirs),
//! `errors` (every other outcome), `status` (responses per HTTP status code, 200 included),
//! `transport_errors` (requests with no HTTP status, per cause: connect, I/O or unparseable
//! response) and `unsent` (requests not sent because `--max-seconds` ran out, not errors).
//! It exits 0 whenever it ran; judging the counts is the caller's business.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SENTENCES: [&str; 8] = [
    "a gripping , funny and moving film",
    "the plot is thin and the acting is worse .",
    "an unexpectedly moving portrait of grief , told with restraint and wit .",
    "nothing much happens , but it happens beautifully",
    "too long , too loud and far too pleased with itself",
    "one of the most original comedies in years",
    "a tedious exercise in style over substance",
    "the cast is terrific , the script less so",
];

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = arg(&args, "--addr", "127.0.0.1:8080").parse()?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "loadgen only targets loopback addresses"
    );
    let clients: usize = arg(&args, "--clients", "8").parse()?;
    let requests: usize = arg(&args, "--requests", "100").parse()?;
    let max_secs: f64 = arg(&args, "--max-seconds", "60").parse()?;
    let deadline = Instant::now() + Duration::from_secs_f64(max_secs);
    let start = Instant::now();
    let results: Vec<Client> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut r = Client::default();
                    for i in 0..requests {
                        if Instant::now() > deadline {
                            r.unsent = requests - i;
                            break;
                        }
                        let body =
                            serde_json::json!({"text": SENTENCES[(c + i) % SENTENCES.len()]})
                                .to_string();
                        let t = Instant::now();
                        match request(addr, &body) {
                            Ok(code) => {
                                if code == 200 {
                                    r.lat.push(t.elapsed().as_secs_f64() * 1e3);
                                }
                                *r.status.entry(code).or_default() += 1;
                            }
                            Err(cause) => *r.transport.entry(cause).or_default() += 1,
                        }
                    }
                    r
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.lat.iter().copied()).collect();
    let (mut status, mut transport) = (BTreeMap::<String, usize>::new(), BTreeMap::new());
    for r in &results {
        for (code, n) in &r.status {
            *status.entry(code.to_string()).or_default() += n;
        }
        for (cause, n) in &r.transport {
            *transport.entry(cause.clone()).or_default() += n;
        }
    }
    let sent: usize = status.values().chain(transport.values()).sum();
    let errors = sent - lat.len();
    let unsent: usize = results.iter().map(|r| r.unsent).sum();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(
            ((lat.len() as f64 * p).ceil() as usize)
                .saturating_sub(1)
                .min(lat.len().saturating_sub(1)),
        )
        .copied()
        .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({"clients": clients, "ok": lat.len(), "errors": errors, "status": status,
                           "transport_errors": transport, "unsent": unsent, "seconds": wall,
                           "throughput_rps": lat.len() as f64 / wall, "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
    );
    Ok(())
}

/// One client's outcomes.
#[derive(Default)]
struct Client {
    /// Latencies of the 200 responses, ms.
    lat: Vec<f64>,
    /// Responses per HTTP status code.
    status: BTreeMap<u16, usize>,
    /// Requests without an HTTP status, per cause.
    transport: BTreeMap<String, usize>,
    unsent: usize,
}

/// The response's HTTP status code, or why there is none: "connect: <io::ErrorKind>",
/// "io: <io::ErrorKind>" (writing, reading) or "no HTTP status line".
fn request(addr: SocketAddr, body: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    let io = |e: std::io::Error| format!("io: {:?}", e.kind());
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    write!(s, "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).map_err(io)?;
    let mut resp = Vec::with_capacity(512);
    s.read_to_end(&mut resp).map_err(io)?;
    // "HTTP/1.1 200 OK\r\n..."
    let text = String::from_utf8_lossy(&resp);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())
}
