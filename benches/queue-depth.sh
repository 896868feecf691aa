#!/usr/bin/env bash
# What a full watcher queue costs. wrk POSTs the ingest body of benches/load.sh on 64
# connections to `portico run` (no configuration, one URL watcher: the sink, atMostOnce) with
# the watcher's `queueSize` at each SIZE, beside the relay (benches/src/bin/relay.rs ingest).
#
#   benches/queue-depth.sh [SIZE…]     # default: 4096 (the default queueSize) 512 256 128 64
#   benches/queue-depth.sh --smoke     # debug builds, 1 s, sizes 4096 and 64: checks it runs
#
# Settings (environment): PORTICO_BENCH_SECONDS (5), PORTICO_BENCH_REPS (3),
# PORTICO_BENCH_CONNECTIONS (64). Pinned as load.sh pins: the server under test on CPU 0, wrk
# and the sink on CPU 1. Release builds (`cargo build --release`); Portico runs with the
# GLIBC_TUNABLES of deploy/Dockerfile.
#
# An atMostOnce gateway answers once an event is queued, so under a load it cannot keep up
# with the queue fills and stays full: every event waits there for queueSize ÷ events/s, and
# its memory has left the CPU's caches when it is delivered and freed. The table says, per
# size, the depth read halfway through the run, events/s (wrk's 2xx per second) and the
# server's CPU per event (utime + stime over the events the sink received), median (min–max)
# of the repetitions, and events/s over the relay's in the same repetition.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SECS="${PORTICO_BENCH_SECONDS:-5}"
REPS="${PORTICO_BENCH_REPS:-3}"
CONNS="${PORTICO_BENCH_CONNECTIONS:-64}"
WARM=2
DEADLINE=30
profile=release
sizes=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SECS=1; REPS=1; WARM=1; profile=debug ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *)
      [[ "$arg" =~ ^[1-9][0-9]*$ ]] || { echo "benches/queue-depth.sh: $arg is not a queue size (see --help)" >&2; exit 2; }
      sizes+=("$arg") ;;
  esac
done
if [ ${#sizes[@]} -eq 0 ]; then
  if [ "$profile" = debug ]; then sizes=(4096 64); else sizes=(4096 512 256 128 64); fi
fi
command -v wrk >/dev/null || { echo "benches/queue-depth.sh needs wrk: apt-get install -y wrk" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "benches/queue-depth.sh needs 2 CPUs (server and load apart)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
if [ "$profile" = release ]; then
  cargo build -q --release --locked -p portico-cli -p portico-benches
else
  cargo build -q --locked -p portico-cli -p portico-benches
fi
bin="$CARGO_TARGET_DIR/$profile"
tunables=$(sed -n 's/^ENV GLIBC_TUNABLES=//p' "$root/deploy/Dockerfile")
TCK=$(getconf CLK_TCK)

dir=$(mktemp -d)
# Every process this script starts is one of its background jobs.
cleanup() {
  local jobs
  jobs=$(jobs -p)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    kill $jobs 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "benches/queue-depth.sh: $*" >&2; exit 1; }

# until_ok WHAT CMD…: runs CMD until it succeeds, for at most DEADLINE seconds.
until_ok() {
  local what=$1 end=$((SECONDS + DEADLINE)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "$what"
    sleep 0.02
  done
}
listening() { sed -n 's/^listening //p' "$dir/$1.out" | head -n 1; }
has_listened() { [ -n "$(listening "$1")" ]; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
sink_count() { curl -sf "http://$SINK/count"; }
sink_has() { [ "$(sink_count)" -ge "$1" ]; }

json=$(printf '{"pad":"%s"}' "$(head -c 502 /dev/zero | tr '\0' x)")
cat > "$dir/ingest.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"src":"bench","payload":"$(printf '%s' "$json" | base64 -w0)","contentType":"application/json"}'
wrk.headers["Content-Type"] = "application/json"
LUA

taskset -c 1 "$bin/bench-sink" 0 > "$dir/sink.out" 2>&1 &
until_ok "the sink did not start" has_listened sink
SINK=$(listening sink)

# measure KEY PID URL [METRICS_URL]: warm-up, then one measured wrk run; appends events/s,
# CPU µs per event and (from METRICS_URL) the queue depth halfway through to $dir/KEY.
measure() {
  local key=$1 pid=$2 url=$3 metrics=${4:-} n0 c0 ok depth=- wpid
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${WARM}s" -s "$dir/ingest.lua" "$url" > "$dir/wrk.out"
  ok=$(awk '/requests in/ {print $1}' "$dir/wrk.out")
  until_ok "the sink did not get the warm-up's events" sink_has "$ok"
  n0=$(sink_count); c0=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$dir/ingest.lua" "$url" > "$dir/wrk.out" &
  wpid=$!
  if [ -n "$metrics" ]; then
    sleep "$(awk -v s="$SECS" 'BEGIN {print s / 2}')"
    depth=$(curl -sf "$metrics" | awk '/^portico_watcher_queue_depth/ {print $2}')
  fi
  wait "$wpid"
  ok=$(awk '/requests in/ {print $1}' "$dir/wrk.out")
  ! grep -q "Non-2xx" "$dir/wrk.out" || die "$key: answers other than 2xx: $(grep Non-2xx "$dir/wrk.out")"
  [ "${ok:-0}" -gt 0 ] || die "$key: no request was answered"
  until_ok "$key: the sink did not get every event" sink_has $((n0 + ok))
  awk -v n=$(($(sink_count) - n0)) -v c=$(($(cpu_ticks "$pid") - c0)) -v t="$TCK" \
    -v r="$(awk '/^Requests\/sec/ {print $2}' "$dir/wrk.out")" -v d="$depth" \
    'BEGIN {printf "%.0f %.2f %s\n", r, c / t / n * 1e6, d}' >> "$dir/$key"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

for rep in $(seq 1 "$REPS"); do
  echo "==> repetition $rep of $REPS" >&2
  taskset -c 0 "$bin/relay" ingest "$SINK" > "$dir/relay.out" 2>&1 &
  relay=$!
  until_ok "the relay did not start" has_listened relay
  measure relay "$relay" "http://$(listening relay)/"
  stop "$relay"
  for size in "${sizes[@]}"; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: bench\nspec:\n  type: bench\n  watchers:\n    urls: ["http://%s/"]\n  delivery:\n    mode: atMostOnce\n    queueSize: %s\n' \
      "$SINK" "$size" > "$dir/gateway.yaml"
    env "GLIBC_TUNABLES=$tunables" taskset -c 0 "$bin/portico" run "$dir/gateway.yaml" \
      --transformer-port "$port" --log warn > "$dir/portico.out" 2>&1 &
    gw=$!
    until_ok "the gateway did not become ready: $(cat "$dir/portico.out")" \
      curl -sf "http://127.0.0.1:$port/readiness"
    measure "q$size" "$gw" "http://127.0.0.1:$port/" "http://127.0.0.1:$port/metrics"
    stop "$gw"
    echo "    queueSize $size: $(tail -n 1 "$dir/q$size")" >&2
  done
done

# median COLUMN FILE: "median (min–max)" of a column.
median() {
  cut -d' ' -f"$1" "$2" | sort -n | awk '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%s (%s–%s)", m, v[1], v[NR] }'
}
echo "| watcher | queue depth, mid-run | events/s | events/s ÷ relay's | CPU µs per event |"
echo "|---|---|---|---|---|"
echo "| relay (no queue) | — | $(median 1 "$dir/relay") | 1 | $(median 2 "$dir/relay") |"
for size in "${sizes[@]}"; do
  # Each repetition's events/s over the relay's in the same repetition.
  paste -d' ' "$dir/q$size" "$dir/relay" | awk '{printf "%.2f\n", $1 / $4}' > "$dir/ratio"
  echo "| queueSize $size | $(median 3 "$dir/q$size") | $(median 1 "$dir/q$size") | $(median 1 "$dir/ratio") | $(median 2 "$dir/q$size") |"
done
