#!/usr/bin/env bash
# Figures of many configurations in one process, in a (fake) cluster: `portico run` of a
# calendar gateway whose ConfigMap holds N configurations (`interval: 1h`), served by the fake
# Kubernetes API server (crates/fake-kube: real list and watch over loopback). For each N:
#
# - start → all Running: from process start until the log has said "configuration running"
#   for every configuration;
# - settling CPU: user + system CPU-seconds of the process from all Running until SETTLE
#   seconds after (default 35): the first status write of every node, and the heap's free
#   memory given back 3 s and 30 s after the map was applied (a one-off after each change);
# - idle CPU: user + system CPU of the process over IDLE seconds (default 60) from there, in
#   % of a core: what the configurations cost while every one waits for its next tick (the
#   window never holds one: they fall on the hour);
# - RSS idle, at the end of that window (what the map's parsing and the status write freed
#   has been given back);
# - one key changed: a merge patch of one key of the ConfigMap (its interval 1h ↔ 2h); 5
#   changes, median and max of two times: in Portico, from the log's "the configuration map
#   changed" (the watch delivered the new ConfigMap) to its "configuration running" of that
#   key (old one stopped, new one validated and started), both read off the log's own
#   timestamps; and end to end, from just before the patch is sent until that line is read
#   (this adds the fake API server's own work on the patch and the watch: at 100,000 keys,
#   most of it).
#
#   benches/density.sh [N…]        # default 10000 100000; builds release binaries first
#   benches/density.sh --smoke     # a few seconds, debug build: checks the script still works
#
# PORTICO=PATH measures that portico binary instead of the plain release build (load.sh passes
# the shipped one, built by scripts/release), PORTICO_BUILD=NAME names it in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
smoke=
sizes=()
for a in "$@"; do
  if [ "$a" = --smoke ]; then smoke=1; else sizes+=("$a"); fi
done
if [ -n "$smoke" ]; then
  profile=debug
  sizes=(200)
  cargo build -q -p portico-cli -p fake-kube
else
  profile=release
  [ ${#sizes[@]} -eq 0 ] && sizes=(10000 100000)
  cargo build -q --release -p portico-cli -p fake-kube
fi
dir=$(mktemp -d)
trap 'pkill -KILL -f "$dir/" 2>/dev/null || true; rm -rf "$dir"' EXIT

build_name=$profile
portico="$CARGO_TARGET_DIR/$profile/portico"
if [ -n "${PORTICO:-}" ]; then
  portico=$PORTICO
  build_name=${PORTICO_BUILD:-$PORTICO}
fi

PORTICO_BIN="$portico" FAKE_KUBE="$CARGO_TARGET_DIR/$profile/fake-kube" \
BENCH_DIR="$dir" SMOKE="$smoke" PROFILE="$build_name" IDLE="${IDLE:-60}" SETTLE="${SETTLE:-35}" python3 - "${sizes[@]}" <<'EOF'
import json, os, queue, re, statistics, subprocess, sys, threading, time, urllib.request

bin, fake_bin, work = os.environ["PORTICO_BIN"], os.environ["FAKE_KUBE"], os.environ["BENCH_DIR"]
smoke, profile = bool(os.environ["SMOKE"]), os.environ["PROFILE"]
idle_window = 2 if smoke else int(os.environ["IDLE"])
settle = 2 if smoke else int(os.environ["SETTLE"])
ticks = os.sysconf("SC_CLK_TCK")
running_line = re.compile(r'^(\S+)Z .*configuration running.*\bsrc=(\S+)')
changed_line = re.compile(r'^(\S+)Z .*the configuration map changed')

def stamp(text):
    day, clock = text.split("T")
    h, m, sec = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)

kubeconfig = os.path.join(work, "kubeconfig")
fake = subprocess.Popen([fake_bin, "--port", "0"], stdout=open(kubeconfig, "w"), stderr=subprocess.PIPE, text=True)
fake.stderr.readline()  # "fake-kube: serving …" once the kubeconfig is written
api = re.search(r"server: (\S+)", open(kubeconfig).read()).group(1)

def call(method, path, body=None, content_type="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def seconds_to_the_hour():
    now = time.time()
    return 3600 - now % 3600

print(f"| configurations | build | start → all Running | CPU settling (all Running → +{settle} s) | idle CPU (% of a core) | RSS idle | one key changed, in Portico: median / max | one key changed, end to end: median / max |")
print("|---|---|---|---|---|---|---|---|")
try:
    for n in map(int, sys.argv[1:]):
        ns = f"d{n}"
        cm = f"bench-cm"
        call("POST", f"/apis/portico.dev/v1alpha1/namespaces/{ns}/gateways", {
            "apiVersion": "portico.dev/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "bench", "namespace": ns},
            "spec": {"type": "calendar", "configMap": cm}})
        call("POST", f"/api/v1/namespaces/{ns}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": ns},
            "data": {f"c{i:06d}": "interval: 1h" for i in range(n)}})
        # The ticks fall on the hour: keep the measurement out of the minute around it.
        if seconds_to_the_hour() < settle + idle_window + 120 and not smoke:
            time.sleep(seconds_to_the_hour() + 30)
        lines = queue.Queue()
        start = time.monotonic()
        p = subprocess.Popen([bin, "run", "--log", "info", "--transformer-port", "0"],
                             env={**os.environ, "KUBECONFIG": kubeconfig, "GATEWAY_NAMESPACE": ns,
                                  "GATEWAY_NAME": "bench", "GATEWAY_PROCESSOR_CONFIG_MAP": cm,
                                  "PORTICO_OUTBOX_DIR": os.path.join(work, f"outbox-{n}"), "NO_COLOR": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        changed_at = []
        def read(stream=p.stderr):
            for line in stream:
                m = running_line.search(line)
                if m:
                    lines.put((time.monotonic(), stamp(m.group(1)), m.group(2)))
                m = changed_line.search(line)
                if m:
                    changed_at.append(stamp(m.group(1)))
        threading.Thread(target=read, daemon=True).start()
        def wait_running(want, within=300):
            seen = 0
            deadline = time.monotonic() + within
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    sys.exit(f"density.sh: {want}: not within {within} s")
                try:
                    at, logged, src = lines.get(timeout=left)
                except queue.Empty:
                    continue
                seen += 1
                if (isinstance(want, int) and seen >= want) or src == want:
                    return at, logged
        try:
            running_at = wait_running(n)[0]
            all_running = running_at - start
            at_running = cpu_seconds(p.pid)
            time.sleep(max(0, running_at + settle - time.monotonic()))
            before = cpu_seconds(p.pid)
            settling = before - at_running
            t0 = time.monotonic()
            time.sleep(idle_window)
            idle = (cpu_seconds(p.pid) - before) / (time.monotonic() - t0) * 100
            rss = rss_mb(p.pid)
            inside, end_to_end = [], []
            for k in range(5):
                value = "interval: 2h" if k % 2 == 0 else "interval: 1h"
                sent = time.monotonic()
                call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{cm}",
                     {"data": {"c000001": value}}, "application/merge-patch+json")
                at, logged = wait_running("c000001", 60)
                end_to_end.append((at - sent) * 1000)
                inside.append((logged - changed_at[-1]) * 1000)
                time.sleep(0.5)
            print(f"| {n} | {profile} | {all_running * 1000:.0f} ms | {settling:.2f} s | {idle:.2f} | {rss:.1f} MB | "
                  f"{statistics.median(inside):.1f} / {max(inside):.1f} ms | "
                  f"{statistics.median(end_to_end):.1f} / {max(end_to_end):.1f} ms |", flush=True)
        finally:
            p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
finally:
    fake.terminate()
    fake.wait()
EOF
