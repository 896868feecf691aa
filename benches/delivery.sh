#!/usr/bin/env bash
# Figures of issue 8: events/s through ingest → outbox → HTTP watcher in atLeastOnce beside
# atMostOnce, and the outbox's fsyncs per event (portico_outbox_fsyncs / portico_outbox_appends).
#
#   benches/delivery.sh [SECONDS] [CONNECTIONS]   # default 10 s, 32 connections; release build
#   PORTICO_BENCH_SMOKE=1 benches/delivery.sh     # 2 s, debug build: checks the script works
#
# Load: wrk POSTs the original ingest body ({"src","payload"}, 64-byte JSON payload) on
# CONNECTIONS keep-alive connections. "ingest/s" counts 200 answers per second of load;
# "end to end/s" counts events the watcher (bench-sink, 200 to everything) received per second,
# from the start of the load until the last accepted event arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONNS="${2:-32}"
profile=release
if [ -n "${PORTICO_BENCH_SMOKE:-}" ]; then SECS=2; profile=debug; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build -q $flag -p portico-cli -p portico-benches --bin portico --bin bench-sink
bin="$CARGO_TARGET_DIR/$profile"
command -v wrk >/dev/null || { echo "benches/delivery.sh needs wrk (apt-get install wrk)" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sink_port=$(free_port)
"$bin/bench-sink" "$sink_port" & pids+=($!)
for _ in $(seq 1 500); do curl -sf "http://127.0.0.1:$sink_port/count" >/dev/null && break; sleep 0.01; done

payload=$(printf '{"order":12345,"item":"widget","qty":3,"note":"benchmark payload"}' | base64 -w0)
cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"src":"load","payload":"$payload","contentType":"application/json"}'
wrk.headers["Content-Type"] = "application/json"
LUA

printf '| mode | ingest/s (200s) | 503s | end to end/s | fsyncs | events in outbox | fsyncs per event |\n|---|---|---|---|---|---|---|\n'
for mode in atMostOnce atLeastOnce; do
  port=$(free_port)
  cat > "$dir/$mode.yaml" <<YAML
apiVersion: portico.dev/v1alpha1
kind: Gateway
metadata:
  name: bench-$mode
spec:
  type: ingest
  watchers:
    urls: ["http://127.0.0.1:$sink_port/events"]
  delivery:
    mode: $mode
    outbox: {path: "$dir/outbox-$mode"}
YAML
  "$bin/portico" run "$dir/$mode.yaml" --transformer-port "$port" --log warn >/dev/null 2>"$dir/$mode.log" &
  pid=$!; pids+=($pid)
  for _ in $(seq 1 1000); do curl -sf "http://127.0.0.1:$port/readiness" >/dev/null && break; sleep 0.01; done
  curl -sf "http://127.0.0.1:$sink_port/reset" >/dev/null
  start=$(date +%s%N)
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$dir/post.lua" "http://127.0.0.1:$port/")
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
  accepted=$((total - non2xx))
  for _ in $(seq 1 6000); do
    got=$(curl -sf "http://127.0.0.1:$sink_port/count")
    [ "$got" -ge "$accepted" ] && break
    sleep 0.01
  done
  end=$(date +%s%N)
  metrics=$(curl -sf "http://127.0.0.1:$port/metrics")
  fsyncs=$(echo "$metrics" | awk '/^portico_outbox_fsyncs_total/ {print $2}')
  appends=$(echo "$metrics" | awk '/^portico_outbox_appends_total/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v m="$mode" -v a="$accepted" -v s="$SECS" -v n="$non2xx" -v g="$got" -v t=$(( (end - start) / 1000000 )) -v f="${fsyncs:-0}" -v p="${appends:-0}" 'BEGIN {
    fpe = (p > 0) ? sprintf("%.3f", f / p) : "-";
    printf "| %s | %.0f | %d | %.0f | %d | %d | %s |\n", m, a / s, n, g / (t / 1000), f, p, fpe }'
done
