#!/usr/bin/env python3
"""An HTTP-style calendar gateway for Portico, in Python with only the standard library.

Portico (HTTP style) POSTs {"id", "src", "config"} to this server's /start and /stop.
For each started configuration this server emits an event every `interval` and POSTs it to the
framework's /event as {"src", "payload": "<base64>"}; it tells the framework once a
configuration runs (/activated) and when it cannot run (/error).

Every port and path comes from the variables of the gateway environment (docs/contract.md), with their defaults:
GATEWAY_PROCESSOR_SERVER_HTTP_PORT (this server), GATEWAY_PROCESSOR_CLIENT_HTTP_PORT (the
framework's), GATEWAY_HTTP_CONFIG_START/STOP/EVENT/RUNNING/ERROR.

A configuration is JSON or flat YAML (`key: value` lines):

    interval: 2s              # required: 250ms, 2s, 5m, 1h
    userPayload: '{"a": 1}'   # optional JSON, copied into every event

GET /configurations answers {"running": {src: id}, "stops": [{"src", "id"}, …]}, which the
end-to-end tests read.
"""

import base64
import datetime
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def env(name, default):
    value = os.environ.get(name, "").strip()
    return value if value else default


SERVER_PORT = int(env("GATEWAY_PROCESSOR_SERVER_HTTP_PORT", "9696"))
CLIENT_PORT = int(env("GATEWAY_PROCESSOR_CLIENT_HTTP_PORT", "9393"))
START = env("GATEWAY_HTTP_CONFIG_START", "/start")
STOP = env("GATEWAY_HTTP_CONFIG_STOP", "/stop")
EVENT = env("GATEWAY_HTTP_CONFIG_EVENT", "/event")
RUNNING = env("GATEWAY_HTTP_CONFIG_RUNNING", "/activated")
ERROR = env("GATEWAY_HTTP_CONFIG_ERROR", "/error")
FRAMEWORK = f"http://127.0.0.1:{CLIENT_PORT}"

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_config(text):
    """JSON, or flat YAML `key: value` lines (values may be quoted)."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    config = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise ValueError(f"line {number}: expected `key: value`, got {line!r}")
        key, value = line.split(":", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        config[key.strip()] = value
    return config


def parse_interval(value):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", str(value))
    if not match:
        raise ValueError(f"interval: {value!r} is not a duration like 250ms, 2s, 5m or 1h")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"interval: {value!r} must be more than zero")
    return seconds


def post(path, body):
    """POSTs JSON to the framework; returns the status code (0 when it cannot be reached)."""
    request = urllib.request.Request(
        FRAMEWORK + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        log(f"POST {path} answered {e.code}: {e.read().decode(errors='replace')}")
        return e.code
    except (urllib.error.URLError, OSError) as e:
        log(f"POST {path} failed: {e}")
        return 0


class Calendar(threading.Thread):
    """One running configuration."""

    def __init__(self, body):
        super().__init__(daemon=True)
        self.id = body.get("id", "")
        self.src = body.get("src", "")
        self.body = body
        self.stopped = threading.Event()

    def run(self):
        try:
            config = parse_config(self.body.get("config", ""))
            if "interval" not in config:
                raise ValueError("interval is missing: say how often to emit, like 2s")
            interval = parse_interval(config["interval"])
            user_payload = config.get("userPayload")
            if isinstance(user_payload, str) and user_payload:
                user_payload = json.loads(user_payload)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            post(ERROR, {"src": self.src, "id": self.id, "error": str(e)})
            return
        post(RUNNING, {"id": self.id, "src": self.src, "config": self.body.get("config", "")})
        while not self.stopped.wait(interval):
            now = datetime.datetime.now(datetime.timezone.utc)
            payload = {"eventTime": now.isoformat(), "userPayload": user_payload}
            status = post(EVENT, {
                "src": self.src,
                "id": self.id,
                "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
                "contentType": "application/json",
            })
            if status == 404:
                # The framework no longer runs this configuration.
                return


calendars = {}
stops = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, text=""):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/configurations":
            return self.reply(404, f"no such endpoint: {self.path}")
        with lock:
            state = {
                "running": {src: c.id for src, c in calendars.items()},
                "stops": list(stops),
            }
        data = json.dumps(state).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            return self.reply(400, f"body is not JSON: {e}")
        if not isinstance(body, dict) or not body.get("src"):
            return self.reply(400, 'expected {"id", "src", "config"}')
        src = body["src"]
        if self.path == START:
            calendar = Calendar(body)
            with lock:
                old = calendars.pop(src, None)
                calendars[src] = calendar
            if old:
                old.stopped.set()
            calendar.start()
            log(f"started {src} ({calendar.id})")
            return self.reply(200)
        if self.path == STOP:
            with lock:
                calendar = calendars.get(src)
                if calendar and calendar.id == body.get("id", calendar.id):
                    del calendars[src]
                else:
                    calendar = None
                stops.append({"src": src, "id": body.get("id", "")})
            if calendar:
                calendar.stopped.set()
            log(f"stopped {src} ({body.get('id', '')})")
            return self.reply(200)
        return self.reply(404, f"no such endpoint: {self.path}")

    def log_message(self, format, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", SERVER_PORT), Handler)
    log(f"http-calendar listening on 127.0.0.1:{server.server_address[1]}, framework at {FRAMEWORK}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
