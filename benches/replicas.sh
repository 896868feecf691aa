#!/usr/bin/env bash
# Figures of replicas sharing one gateway: three `portico run` processes of a calendar gateway
# with N configurations (hourly), coordinating through a NATS key-value bucket on the local
# NATS server (PORTICO_NATS_URL, default nats://127.0.0.1:4222). For each N it prints:
#
# - coordination requests per second per replica (portico_coordination_requests_total over
#   10 s: member record, the read of every record, one write per held bucket, every renew
#   period);
# - rebalance on join: from a fourth replica's transformer listening until the four run every
#   configuration between them, each once, the new one its share;
# - failover: from SIGKILL of that replica until the three others run every configuration.
#
#   benches/replicas.sh [N…]       # default 1000 10000; builds portico in release mode first
#   benches/replicas.sh --smoke    # a few seconds, debug build: checks the script still works
#   PROFILE=debug benches/replicas.sh [N…]   # the debug build (the figures are set by the
#                                            # renew period more than by the build)
#
# LEASE and RENEW (default 3s and 1s) set spec.coordination's leaseDuration and renewPeriod.
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
  sizes=(50)
  cargo build -q -p portico-cli
else
  profile="${PROFILE:-release}"
  [ ${#sizes[@]} -eq 0 ] && sizes=(1000 10000)
  if [ "$profile" = release ]; then cargo build -q --release -p portico-cli; else cargo build -q -p portico-cli; fi
fi
bin="$CARGO_TARGET_DIR/$profile/portico"
dir=$(mktemp -d)
trap 'pkill -KILL -f "$dir/" 2>/dev/null || true; rm -rf "$dir"' EXIT

PORTICO_BIN="$bin" BENCH_DIR="$dir" SMOKE="$smoke" PROFILE="$profile" LEASE="${LEASE:-3s}" RENEW="${RENEW:-1s}" \
NATS_URL="${PORTICO_NATS_URL:-nats://127.0.0.1:4222}" python3 - "${sizes[@]}" <<'EOF'
import json, os, signal, socket, subprocess, sys, time, urllib.request

bin, work, smoke = os.environ["PORTICO_BIN"], os.environ["BENCH_DIR"], bool(os.environ["SMOKE"])
profile = os.environ["PROFILE"]
lease, renew, nats = os.environ["LEASE"], os.environ["RENEW"], os.environ["NATS_URL"]
window = 2 if smoke else 10

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()

def running(port):
    try:
        nodes = json.loads(get(port, "/status"))["nodes"]
    except Exception:
        return None
    return {n["name"] for n in nodes if n["phase"] == "Running"}

def requests(port):
    for line in get(port, "/metrics").splitlines():
        if line.startswith("portico_coordination_requests_total"):
            return float(line.split()[-1])
    return 0.0

def until(what, check, within=120):
    start = time.monotonic()
    while time.monotonic() - start < within:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    sys.exit(f"replicas.sh: {what}: not within {within} s")

def shared(ports, n):
    sets = [running(p) for p in ports]
    if any(s is None or not s for s in sets):
        return False
    total = sum(len(s) for s in sets)
    return total == n and len(set().union(*sets)) == n

print(f"| configurations | profile | replicas | lease / renew | coordination requests/s per replica | rebalance on join | failover (SIGKILL) |")
print("|---|---|---|---|---|---|---|")
for n in map(int, sys.argv[1:]):
    bucket = f"bench-{os.getpid()}-{n}"
    path = os.path.join(work, f"gateway-{n}.yaml")
    with open(path, "w") as f:
        f.write("apiVersion: portico.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: bench\nspec:\n"
                f"  type: calendar\n  configMap: bench-cm\n  coordination: {{nats: {{url: \"{nats}\", bucket: {bucket}}}, "
                f"leaseDuration: {lease}, renewPeriod: {renew}}}\n"
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-cm\ndata:\n")
        for i in range(n):
            f.write(f"  c{i:05d}: \"interval: 1h\"\n")
    procs = {}
    def start(name):
        port = free_port()
        log = open(os.path.join(work, f"{name}-{n}.log"), "w")
        p = subprocess.Popen([bin, "run", path, "--transformer-port", str(port), "--log", "warn"],
                             env={**os.environ, "PORTICO_REPLICA": name,
                                  "PORTICO_OUTBOX_DIR": os.path.join(work, f"outbox-{name}-{n}")},
                             stdout=subprocess.DEVNULL, stderr=log)
        until(f"{name} listening", lambda: _up(port), 60)
        procs[name] = (p, port)
        return port
    def _up(port):
        try:
            get(port, "/healthz"); return True
        except Exception:
            return False
    try:
        for name in ("r1", "r2", "r3"):
            start(name)
        until(f"{n} configurations shared by three replicas", lambda: shared([v[1] for v in procs.values()], n))
        ports = [v[1] for v in procs.values()]
        before = [requests(p) for p in ports]
        time.sleep(window)
        rates = [(requests(p) - b) / window for p, b in zip(ports, before)]
        start("r4")
        joined = until("the fourth replica's share", lambda: shared([v[1] for v in procs.values()], n))
        victim, _ = procs.pop("r4")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        failover = until("the killed replica's share elsewhere", lambda: shared([v[1] for v in procs.values()], n))
        print(f"| {n} | {profile} | 3 (+1) | {lease} / {renew} | "
              f"{sum(rates) / len(rates):.1f} (min {min(rates):.1f}, max {max(rates):.1f}) | "
              f"{joined:.2f} s | {failover:.2f} s |")
    finally:
        for p, _ in procs.values():
            p.send_signal(signal.SIGTERM)
        for p, _ in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
EOF
