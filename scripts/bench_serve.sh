#!/usr/bin/env bash
# Load benchmark of `rnnkit serve` on loopback: throughput and p50/p99 latency at 1, 8 and 64
# concurrent clients, without (--max-batch 1) and with micro-batching (--max-batch 32).
# Bounded: REQUESTS per client, at most 60 s per run.
# Every row also shows the requests answered 200 ("ok"), all others ("errors") and the count per
# HTTP status code ("codes"; "io": requests that got no status at all). No request is expected to
# fail: at most 64 sentences wait at once against a queue of 4096, and the server's 10 s timeout
# is far above any latency here. So after the table the script exits 1, naming the rows, if any
# request got anything but a 200.
# Usage: scripts/bench_serve.sh [MODEL_DIR] (default: the demo's fine-tuned model)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
model=${1:-runs/demo/classifier}
[ -f "$model/config.json" ] || model=tests/golden/models/clf_tokenizer_attention
requests=${REQUESTS:-200}
scripts/setup.sh >/dev/null
cargo build --release --bin rnnkit --example loadgen 2>&1 | tail -1
pid= log=
trap '[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true; [ -z "$log" ] || rm -f "$log"' EXIT
echo "model: $model; $requests requests per client"
printf '%-14s %8s %12s %10s %10s %6s %6s  %s\n' batching clients req/s p50_ms p99_ms ok errors codes
failed=()
for mb in 1 32; do
  log=$(mktemp)
  ./target/release/rnnkit serve --model "$model" --addr 127.0.0.1:0 --device cpu --max-batch "$mb" --max-wait-ms 2 --queue-capacity 4096 2>"$log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on http:\/\///p' "$log")
  if [ -z "$addr" ]; then
    echo "error: rnnkit serve --max-batch $mb did not report its address within 10 s; its output:" >&2
    cat "$log" >&2
    exit 1
  fi
  for c in 1 8 64; do
    n=$requests; [ "$c" -eq 64 ] && n=$(( requests / 4 ))
    r=$(./target/release/examples/loadgen --addr "$addr" --clients "$c" --requests "$n" --max-seconds 60)
    # Prints the row; exits 1 when a request got no 200.
    if ! python3 - "$r" "max_batch=$mb" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
codes = [f"{k}={v}" for k, v in r["status"].items()]
if r["transport_errors"]:
    codes.append(f"io={sum(r['transport_errors'].values())}")
    print(f"  requests without an HTTP status: {json.dumps(r['transport_errors'])}", file=sys.stderr)
unsent = f" (unsent, out of time: {r['unsent']})" if r["unsent"] else ""
ms = lambda x: f"{'-':>10}" if x is None else f"{x:>10.2f}"  # null: no 200 to time
print(f"{sys.argv[2]:<14} {r['clients']:>8} {r['throughput_rps']:>12.1f} {ms(r['p50_ms'])} {ms(r['p99_ms'])} "
      f"{r['ok']:>6} {r['errors']:>6}  {','.join(codes) or '-'}{unsent}")
sys.exit(1 if r["errors"] else 0)
PY
    then
      failed+=("max_batch=$mb clients=$c")
    fi
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=; rm -f "$log"; log=
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: requests failed (status other than 200, or no response) in: $(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
