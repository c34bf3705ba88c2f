#!/usr/bin/env bash
# Load benchmark of `rnnkit serve` on loopback: throughput and p50/p99 latency at 1, 8 and 64
# concurrent clients, without (--max-batch 1) and with micro-batching (--max-batch 32).
# Bounded: REQUESTS per client, at most 60 s per run.
# Every row also shows the requests answered 200 ("ok"), all others ("errors") and the count per
# HTTP status code ("codes"; "io": requests that got no status at all). No request is expected to
# fail: at most 64 sentences wait at once against a queue of 4096, and the server's 10 s timeout
# is far above any latency here. So after the table the script exits 1, naming the rows, if any
# request got anything but a 200.
# Then faults in the same run: a reload under load, SIGTERM under load, and each bad input's answer.
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

# Faults, same run: a reload under load (a model repository, version 2 loaded while 8 clients
# send; then a broken version 3), SIGTERM under load (8 clients; after the signal new connections
# are refused, which loadgen counts as "connect" transport errors, never as HTTP errors), and what
# each bad input gets.
start_server() {  # args: serve flags; sets pid, addr
  log=$(mktemp)
  ./target/release/rnnkit serve "$@" --addr 127.0.0.1:0 --device cpu --queue-capacity 4096 2>"$log" &
  pid=$!
  for _ in $(seq 300); do grep -q "^ready" "$log" && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on http:\/\///p' "$log")
}
summary() {  # loadgen JSON -> one line
  python3 - "$1" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
bad = sum(v for k, v in r["status"].items() if k != "200")
print(f"ok {r['ok']}, HTTP errors {bad}, statuses {r['status']}, no status {r['transport_errors'] or 0}, "
      f"p99 {r['p99_ms']} ms")
PY
}
# Enough requests that the load outlasts the reload and the signal (several seconds).
fault_requests=$(( requests * 10 ))
repo=$(mktemp -d)
mkdir -p "$repo/sentiment"
cp -r "$model" "$repo/sentiment/1"
start_server --model-repository "$repo"
echo
echo "reload under load (8 clients x $fault_requests requests; version 2 loaded after 1 s, a broken version 3 after 2 s):"
./target/release/examples/loadgen --addr "$addr" --clients 8 --requests "$fault_requests" --max-seconds 60 >"$repo/load.json" &
lg=$!
sleep 1
cp -r "$model" "$repo/sentiment/2"
echo "  load v2: $(curl -s -X POST "http://$addr/v2/repository/models/sentiment/load")"
sleep 1
cp -r "$model" "$repo/sentiment/3"; echo '{ broken' > "$repo/sentiment/3/config.json"
echo "  load v3: HTTP $(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/v2/repository/models/sentiment/load")"
wait "$lg"
echo "  $(summary "$(cat "$repo/load.json")")"
echo "  serving: $(curl -s -X POST "http://$addr/v2/repository/index")"
kill -TERM "$pid"; wait "$pid" || true; pid=
start_server --model "$model"
echo
echo "SIGTERM under load (8 clients x $fault_requests requests; SIGTERM after 1 s):"
./target/release/examples/loadgen --addr "$addr" --clients 8 --requests "$fault_requests" --max-seconds 60 >"$repo/term.json" &
lg=$!
sleep 1
kill -TERM "$pid"; wait "$pid"; echo "  server exit status $?"; pid=
wait "$lg"
echo "  $(summary "$(cat "$repo/term.json")")"
start_server --model "$model" --max-body-bytes 4096 --timeout 1
echo
echo "bad input (each on a fresh connection):"
bad() {  # description, then curl arguments
  local what=$1; shift
  printf '  %-44s %s\n' "$what" "$(curl -s -o /dev/null -w 'HTTP %{http_code}' "$@")"
}
u="http://$addr/v1/predict"; j='Content-Type: application/json'
bad "malformed JSON" -H "$j" -d '{"text": ' "$u"
bad "invalid UTF-8" -H "$j" --data-binary $'{"text": "\xff\xfe"}' "$u"
bad "wrong type (text: 5)" -H "$j" -d '{"text": 5}' "$u"
bad "empty list" -H "$j" -d '{"texts": []}' "$u"
bad "too many texts (300)" -H "$j" -d "{\"texts\": [$(printf '"a",%.0s' $(seq 299))\"a\"]}" "$u"
bad "body over the limit, Content-Length" -H "$j" -d "{\"text\": \"$(head -c 8000 /dev/zero | tr '\0' a)\"}" "$u"
bad "body over the limit, chunked" -H "$j" -H 'Transfer-Encoding: chunked' -d "{\"text\": \"$(head -c 8000 /dev/zero | tr '\0' a)\"}" "$u"
bad "slow client (promises 100 bytes, sends 9)" -m 5 -H "$j" -H 'Content-Length: 100' -d '{"text": ' "$u"
# A header that never ends (slowloris): bash's /dev/tcp, half a header, then wait for the answer.
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow: a' >&3
IFS= read -r -t 5 line <&3 || line="no answer within 5 s"
exec 3<&-
printf '  %-44s %s\n' "slow header (half of it, then nothing)" "$(echo "$line" | awk '/^HTTP/ {print "HTTP", $2; next} {print}')"
bad "unknown model name (/v2)" -H "$j" -d '{}' "http://$addr/v2/models/nope/infer"
bad "unknown model version (/v2)" -H "$j" -d '{}' "http://$addr/v2/models/$(basename "$(cd "$model" && pwd)")/versions/9/infer"
bad "unknown route" "http://$addr/v3"
echo "  still serving: $(curl -s -o /dev/null -w 'HTTP %{http_code}' -H "$j" -d '{"text": "fine"}' "$u")"
kill -TERM "$pid"; wait "$pid" || true; pid=; rm -rf "$repo"

if [ ${#failed[@]} -gt 0 ]; then
  echo "error: requests failed (status other than 200, or no response) in: $(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
