#!/usr/bin/env bash
# Overload measurement: POST /api/v1/orders (a whole checkout saga each) from
# wrk at the engine's admission capacity and far beyond it, on the embedded
# SQLite default with a release build. Prints, per run, what wrk saw and what
# the engine's own metrics say about admitted (201) and shed (503) requests,
# plus the slowest /healthz probe taken during the run.
#
# Usage: benches/overload.sh [MAX_IN_FLIGHT] [DURATION_S]
# Needs: wrk (Debian package `wrk`), curl, python3. Builds with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MAX_IN_FLIGHT=${1:-64}
DURATION=${2:-20}
PORT=18090
BASE="http://127.0.0.1:$PORT"
export NO_PROXY="127.0.0.1,localhost"

command -v wrk >/dev/null || { echo "benches/overload.sh: wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/orderflow

curl_json() { curl -sf --noproxy '*' "$@"; }
ENGINE_PID=
trap '[ -z "$ENGINE_PID" ] || kill "$ENGINE_PID" 2>/dev/null || true' EXIT

run() {
  local connections=$1 workdir
  workdir=$(mktemp -d)
  (cd "$workdir" && ORDERFLOW_CONFIG_DIR="$ROOT/config" \
    ORDERFLOW__HTTP__PORT=$PORT \
    ORDERFLOW__HTTP__MAX_IN_FLIGHT="$MAX_IN_FLIGHT" \
    ORDERFLOW__RATE_LIMITS__WRITES_PER_USER=0 \
    ORDERFLOW__RATE_LIMITS__WRITES_PER_IP=0 \
    ORDERFLOW__TELEMETRY__LOG_LEVEL=error \
    ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_EMAIL=bench@orderflow.test \
    ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password \
    exec "$ROOT/$BIN" serve >"$workdir/out" 2>"$workdir/err") &
  ENGINE_PID=$!
  for _ in $(seq 100); do curl -sf --noproxy '*' "$BASE/healthz" >/dev/null && break; sleep 0.1; done
  local admin customer
  admin=$(curl_json -XPOST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@orderflow.test","password":"bench-admin-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl_json -XPOST "$BASE/api/v1/products" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
    -d '{"sku":"BENCH-1","name":"Bench","price":100,"currency":"USD","initial_stock":1000000000}' >/dev/null
  customer=$(curl_json -XPOST "$BASE/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"buyer@orderflow.test","password":"bench-buyer-password","name":"Buyer"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  cat >"$workdir/order.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"items":[{"sku":"BENCH-1","quantity":1}],"payment":{"token":"tok_ok"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $customer"
LUA
  # Health probes all through the run: the slowest answer.
  (worst=0; end=$((SECONDS + DURATION)); while [ $SECONDS -lt $end ]; do
     t=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "$BASE/healthz")
     case "$t" in 200\ *) ;; *) echo "healthz failed: $t" ;; esac
     worst=$(python3 -c "print(max($worst, ${t#* }))"); sleep 0.2
   done; echo "slowest /healthz during the run: ${worst}s") >"$workdir/health" &
  local probe=$!
  echo "== $connections connections, http.max_in_flight=$MAX_IN_FLIGHT, ${DURATION}s"
  wrk -t2 -c"$connections" -d"${DURATION}s" --latency -s "$workdir/order.lua" "$BASE/api/v1/orders" \
    | grep -E 'Requests/sec|Non-2xx|requests in|Latency|50%|99%'
  wait "$probe"; cat "$workdir/health"
  curl_json "$BASE/metrics" | python3 -c '
import re, sys
rows = {}
for line in sys.stdin:
    m = re.match(r"http_server_requests_seconds(_count|_sum|)\{(.*)\} (\S+)", line)
    if not m or "uri=\"/api/v1/orders\"" not in m.group(2) or "method=\"POST\"" not in m.group(2):
        continue
    status = re.search(r"status=\"(\d+)\"", m.group(2)).group(1)
    q = re.search(r"quantile=\"([\d.]+)\"", m.group(2))
    key = m.group(1) or ("q" + q.group(1) if q else "")
    rows.setdefault(status, {})[key] = float(m.group(3))
for status, r in sorted(rows.items()):
    n = r.get("_count", 0)
    mean = 1000 * r.get("_sum", 0) / max(n, 1)
    p50, p99 = 1000 * r.get("q0.5", 0), 1000 * r.get("q0.99", 0)
    print(f"  engine: {status}: {int(n)} requests, mean {mean:.1f} ms, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
'
  kill "$ENGINE_PID"; wait "$ENGINE_PID" 2>/dev/null || true
  rm -rf "$workdir"
}

run "$MAX_IN_FLIGHT"
run $((MAX_IN_FLIGHT * 8))
