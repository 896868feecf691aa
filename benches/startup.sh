#!/usr/bin/env bash
# Figures of start-up: RSS of `portico run` idle with N calendar configurations, and the time
# from process start until all N are Running (polled on /status every 10 ms).
#
#   benches/startup.sh [N]          # default 1000; builds portico in release mode first
#   PORTICO_BENCH_SMOKE=1 benches/startup.sh   # a few seconds: checks the script still works
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
[ -n "${PORTICO_BENCH_SMOKE:-}" ] && N=20
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
profile=release
[ -n "${PORTICO_BENCH_SMOKE:-}" ] && profile=debug
if [ "$profile" = release ]; then cargo build -q --release -p portico-cli; else cargo build -q -p portico-cli; fi
bin="$CARGO_TARGET_DIR/$profile/portico"

dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
file="$dir/gateway.yaml"
{
  printf 'apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: bench\nspec:\n  type: calendar\n  configMap: bench-cm\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-cm\ndata:\n'
  for i in $(seq 1 "$N"); do printf '  c%05d: "interval: 1h"\n' "$i"; done
} > "$file"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start=$(date +%s%N)
"$bin" run "$file" --transformer-port "$port" --log warn >/dev/null 2>"$dir/log" &
pid=$!
running=0
for _ in $(seq 1 3000); do
  running=$(curl -s "http://127.0.0.1:$port/status" 2>/dev/null | grep -o '"phase":"Running"' | wc -l || true)
  [ "$running" -ge "$N" ] && break
  sleep 0.01
done
end=$(date +%s%N)
[ "$running" -ge "$N" ] || { echo "only $running of $N configurations Running" >&2; cat "$dir/log" >&2; exit 1; }
sleep 1
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
printf '| configurations | profile | start → all Running | RSS idle | RSS peak |\n|---|---|---|---|---|\n'
printf '| %d | %s | %d ms | %.1f MB | %.1f MB |\n' "$N" "$profile" $(( (end - start) / 1000000 )) \
  "$(echo "$rss_kb/1024" | bc -l)" "$(echo "$hwm_kb/1024" | bc -l)"
