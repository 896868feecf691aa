#!/usr/bin/env bash
# A framework-independent Portico gateway in a shell script: it does everything
# itself and POSTs its events to the transformer in the original format
# {"src": "...", "payload": "<base64>"}.
#
# Every INTERVAL seconds it reports the machine's load average as configuration `loadavg`.
#
#   TRANSFORMER_PORT  port of the transformer (default 9300)
#   SRC               the configuration key of the events (default loadavg)
#   INTERVAL          seconds between events (default 5)
#   COUNT             stop after this many events (default: never)
#
# Run it beside `portico transformer gateway.yaml` (see README.md).
set -euo pipefail

port="${TRANSFORMER_PORT:-9300}"
src="${SRC:-loadavg}"
interval="${INTERVAL:-5}"
count="${COUNT:-0}"
sent=0

while :; do
  read -r one five fifteen _ < /proc/loadavg
  payload=$(printf '{"load1": %s, "load5": %s, "load15": %s}' "$one" "$five" "$fifteen" | base64 -w0)
  # --fail-with-body: a 400/413/503 prints the transformer's reason and counts as an error.
  if ! curl --silent --show-error --fail-with-body \
      -H 'Content-Type: application/json' \
      --data "{\"src\": \"$src\", \"payload\": \"$payload\", \"contentType\": \"application/json\"}" \
      "http://127.0.0.1:$port/"; then
    echo "event not accepted; trying again next time" >&2
  fi
  sent=$((sent + 1))
  if [ "$count" -gt 0 ] && [ "$sent" -ge "$count" ]; then
    break
  fi
  sleep "$interval"
done
