"""A server written for Argo Events' generic event source (proto/argo/generic.proto), which a
Portico gateway drives when it sets `spec.grpcProtocol: argo-generic`.

It knows nothing of Portico: StartEventSource gets {name, config} and streams {name, payload}.
The config is YAML or JSON with `interval` (seconds, a number) and `message`; every payload is
JSON {"name", "n", "message"}. Listens on GATEWAY_PROCESSOR_GRPC_SERVER_PORT.
"""

import json
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
import yaml

import stubs

pb, pb_grpc = stubs.load("argo/generic.proto", "argo.generic")


class Eventing(pb_grpc.EventingServicer):
    def StartEventSource(self, request, context):
        config = yaml.safe_load(request.config.decode()) or {}
        interval = float(config.get("interval", 1))
        done = threading.Event()
        context.add_callback(done.set)
        logging.info("started %s", request.name)
        n = 0
        while not done.wait(interval):
            n += 1
            payload = {"name": request.name, "n": n, "message": config.get("message", "")}
            yield pb.Event(name=request.name, payload=json.dumps(payload).encode())
        logging.info("cancelled %s", request.name)


def main():
    logging.basicConfig(level=logging.INFO, format="argo-generic: %(message)s", stream=sys.stderr)
    port = os.environ["GATEWAY_PROCESSOR_GRPC_SERVER_PORT"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_EventingServicer_to_server(Eventing(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
