"""A Portico gRPC-style gateway in Python: a GatewayProcessor server (proto/portico/v1/gateway.proto).

Each configuration is YAML or JSON:

    interval: 500ms        # required: how often to emit (ms, s, m)
    message: hello         # optional: put in every event
    count: 10              # optional: end the stream (Completed) after this many events

Every event is JSON {"src", "n", "message"} with content type application/json and the
extension `producer: python`. The framework starts it with `portico run FILE -- python server.py`,
which sets GATEWAY_PROCESSOR_GRPC_SERVER_PORT. If PORTICO_EXAMPLE_LOG names a file, the server
appends one line per start, validation and cancellation there (tests read it).
"""

import json
import logging
import os
import re
import signal
import sys
import threading
from concurrent import futures

import grpc
import yaml

import stubs

pb, pb_grpc = stubs.load("portico/v1/gateway.proto", "portico.v1.gateway")

log = logging.getLogger("python-grpc")
_log_lock = threading.Lock()


def record(*words):
    """Appends one line to PORTICO_EXAMPLE_LOG (if set) and logs it."""
    line = " ".join(str(w) for w in words)
    log.info(line)
    path = os.environ.get("PORTICO_EXAMPLE_LOG")
    if path:
        with _log_lock, open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def parse_interval(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*", str(text))
    if not m:
        raise ValueError(f"interval: `{text}` is not a duration like 500ms, 2s or 1m")
    value, unit = float(m.group(1)), m.group(2)
    seconds = value / 1000 if unit == "ms" else value * 60 if unit == "m" else value
    if seconds <= 0:
        raise ValueError("interval: must be more than zero")
    return seconds


def parse_config(request):
    """The configuration as a dict; raises ValueError with a reason when it is not valid."""
    try:
        config = yaml.safe_load(request.config) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"configuration `{request.src}` is not YAML or JSON: {e}")
    if not isinstance(config, dict):
        raise ValueError(f"configuration `{request.src}` must be a mapping")
    if "interval" not in config:
        raise ValueError("interval: missing (e.g. `interval: 1s`)")
    config["interval"] = parse_interval(config["interval"])
    if "count" in config and (not isinstance(config["count"], int) or config["count"] < 0):
        raise ValueError("count: must be a whole number")
    return config


class Processor(pb_grpc.GatewayProcessorServicer):
    def ValidateGateway(self, request, context):
        try:
            parse_config(request)
        except ValueError as e:
            record("invalid", request.src, e)
            return pb.Validation(valid=False, reason=str(e))
        return pb.Validation(valid=True)

    def RunGateway(self, request, context):
        try:
            config = parse_config(request)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        done = threading.Event()
        completed = []

        def on_end():
            done.set()
            if not completed:
                record("cancelled", request.src, request.id)

        context.add_callback(on_end)
        # Answer the headers at once, so the framework sees the stream open (node Running)
        # before the first event.
        context.send_initial_metadata(())
        record("started", request.src, request.id)
        n = 0
        while not done.is_set():
            if done.wait(config["interval"]):
                break
            n += 1
            body = {"src": request.src, "n": n, "message": config.get("message", "")}
            yield pb.Event(
                data=json.dumps(body).encode(),
                content_type="application/json",
                extensions={"producer": "python"},
            )
            if "count" in config and n >= config["count"]:
                completed.append(True)
                record("completed", request.src, request.id)
                return


def main():
    logging.basicConfig(level=logging.INFO, format="python-grpc: %(message)s", stream=sys.stderr)
    port = os.environ.get("GATEWAY_PROCESSOR_GRPC_SERVER_PORT")
    if not port:
        sys.exit("error: GATEWAY_PROCESSOR_GRPC_SERVER_PORT is not set: run me with `portico run FILE -- python server.py`")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    pb_grpc.add_GatewayProcessorServicer_to_server(Processor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    record("listening", port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
