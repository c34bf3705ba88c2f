#!/usr/bin/env bash
# Load benchmark of `rnnkit serve` on loopback: throughput and p50/p99 latency at 1, 8 and 64
# concurrent clients, without (--max-batch 1) and with micro-batching (--max-batch 32).
# Bounded: REQUESTS per client, at most 60 s per run.
# Usage: scripts/bench_serve.sh [MODEL_DIR] (default: the demo's fine-tuned model)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
model=${1:-runs/demo/classifier}
[ -f "$model/config.json" ] || model=tests/golden/models/clf_tokenizer_attention
requests=${REQUESTS:-200}
scripts/setup.sh >/dev/null
cargo build --release --bin rnnkit --example loadgen 2>&1 | tail -1
echo "model: $model; $requests requests per client"
printf '%-14s %8s %12s %10s %10s\n' batching clients req/s p50_ms p99_ms
for mb in 1 32; do
  log=$(mktemp)
  ./target/release/rnnkit serve --model "$model" --addr 127.0.0.1:0 --device cpu --max-batch "$mb" --max-wait-ms 2 --queue-capacity 4096 2>"$log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on http:\/\///p' "$log")
  for c in 1 8 64; do
    n=$requests; [ "$c" -eq 64 ] && n=$(( requests / 4 ))
    r=$(./target/release/examples/loadgen --addr "$addr" --clients "$c" --requests "$n" --max-seconds 60)
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{sys.argv[2]:<14} {r['clients']:>8} {r['throughput_rps']:>12.1f} {r['p50_ms']:>10.2f} {r['p99_ms']:>10.2f}\")" "$r" "max_batch=$mb"
  done
  kill -TERM "$pid"; wait "$pid" || true; rm -f "$log"
done
