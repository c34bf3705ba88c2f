//! A bounded HTTP load generator for `rnnkit serve` (loopback only): N concurrent clients each
//! send M `POST /v1/predict` requests (one sentence each) and the latencies are reported.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8080 --clients 8 --requests 200

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
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let (mut lat, mut errors) = (Vec::with_capacity(requests), 0);
                    for i in 0..requests {
                        if Instant::now() > deadline {
                            break;
                        }
                        let body =
                            serde_json::json!({"text": SENTENCES[(c + i) % SENTENCES.len()]})
                                .to_string();
                        let t = Instant::now();
                        match request(addr, &body) {
                            Ok(200) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let errors: usize = results.iter().map(|r| r.1).sum();
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
        serde_json::json!({"clients": clients, "ok": lat.len(), "errors": errors, "seconds": wall,
                           "throughput_rps": lat.len() as f64 / wall, "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
    );
    Ok(())
}

fn request(addr: SocketAddr, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    write!(s, "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut resp = Vec::with_capacity(512);
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    Ok(text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}
