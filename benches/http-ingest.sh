#!/usr/bin/env bash
# Figure of issue 4: requests per second and p99 latency of `POST /` (the original JSON with a
# 512-byte payload) through `portico` to an HTTP watcher, at 64 connections, beside the same
# load against a minimal hyper server that answers 200 (benches/src/bin/hyper-200.rs), in the
# same run on this machine. The watcher is another hyper-200. Uses wrk (apt-get install wrk).
#
#   benches/http-ingest.sh [SECONDS]      # default 10 s per run; release builds first
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONNS=64
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
command -v wrk >/dev/null || { echo "error: wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
cargo build -q --release -p portico-cli -p portico-benches --bin portico --bin hyper-200
bin="$CARGO_TARGET_DIR/release"

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# start_hyper NAME: starts a hyper-200 on a free port; its port is in $dir/NAME.port.
start_hyper() {
  "$bin/hyper-200" 0 > "$dir/$1.out" &
  pids+=($!)
  for _ in $(seq 1 200); do
    if grep -q listening "$dir/$1.out" 2>/dev/null; then
      sed -n 's/^listening 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/$1.out" > "$dir/$1.port"; return 0
    fi
    sleep 0.05
  done
  echo "error: hyper-200 did not start" >&2; return 1
}

start_hyper baseline
start_hyper watcher
baseline_port=$(cat "$dir/baseline.port")
watcher_port=$(cat "$dir/watcher.port")

cat > "$dir/gateway.yaml" <<YAML
apiVersion: portico.dev/v1alpha1
kind: Gateway
metadata:
  name: bench
spec:
  type: bench
  configMap: bench-cm
  watchers:
    urls: ["http://127.0.0.1:$watcher_port/"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: bench-cm
data: {}
YAML
"$bin/portico" run "$dir/gateway.yaml" --transformer-port 0 --log warn,portico::server=info --log-format json \
  > /dev/null 2> "$dir/portico.log" &
pids+=($!)
portico_port=""
for _ in $(seq 1 200); do
  portico_port=$(sed -n 's/.*"addr":"127.0.0.1:\([0-9]*\)".*transformer listening.*/\1/p; s/.*transformer listening.*"addr":"127.0.0.1:\([0-9]*\)".*/\1/p' "$dir/portico.log" | head -1)
  [ -n "$portico_port" ] && break
  sleep 0.05
done
[ -n "$portico_port" ] || { echo "error: portico did not start:" >&2; cat "$dir/portico.log" >&2; exit 1; }

payload=$(head -c 512 /dev/zero | tr "\\0" x | base64 -w0)   # 512 bytes of payload
body="{\"src\": \"bench\", \"payload\": \"$payload\"}"
cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

# run NAME URL: one wrk run; prints "NAME  req/s  2xx/s  p99". A 503 (the watcher's queue is full)
# is an answer too: 2xx/s is the rate of events accepted for delivery.
run() {
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$dir/post.lua" "$2" > "$dir/$1.wrk"
  local rps p99 total non2xx ok_rps
  rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/$1.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/$1.wrk")
  total=$(awk '/requests in/ {print $1}' "$dir/$1.wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/$1.wrk")
  ok_rps=$(awk -v t="$total" -v n="${non2xx:-0}" -v r="$rps" 'BEGIN {printf "%.0f", r * (t - n) / t}')
  printf '%-36s %10s req/s   %8s 2xx/s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$ok_rps" "$p99" "${non2xx:-0}"
}

echo "POST / with a 512-byte payload, $CONNS connections, ${SECS}s each, $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
run "hyper-200 (baseline)" "http://127.0.0.1:$baseline_port/"
run "portico -> HTTP watcher (hyper-200)" "http://127.0.0.1:$portico_port/"
delivered=$(curl -s "http://127.0.0.1:$portico_port/metrics" | awk '/^portico_events_delivered_total/ {s += $2} END {print s+0}')
echo "portico delivered $delivered events to the watcher"
