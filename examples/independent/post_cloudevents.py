#!/usr/bin/env python3
"""A framework-independent Portico gateway in Python, standard library only.

It makes its own CloudEvents and POSTs them to the transformer in structured mode
(`application/cloudevents+json`); the transformer validates them and relays them to the
gateway's watchers with their own id, source and type. A 503 means the gateway is full: the
event is sent again after `Retry-After` seconds.

    TRANSFORMER_PORT  port of the transformer (default 9300)
    INTERVAL          seconds between events (default 5)
    COUNT             stop after this many events (default: never)
"""

import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

PORT = int(os.environ.get("TRANSFORMER_PORT") or "9300")
INTERVAL = float(os.environ.get("INTERVAL") or "5")
COUNT = int(os.environ.get("COUNT") or "0")


def post(event):
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/cloudevents+json"},
        method="POST",
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10):
                return True
        except urllib.error.HTTPError as e:
            reason = e.read().decode(errors="replace")
            if e.code == 503:
                wait = float(e.headers.get("Retry-After") or "1")
                print(f"gateway full ({reason}); retrying in {wait}s", file=sys.stderr)
                time.sleep(wait)
                continue
            print(f"event refused with {e.code}: {reason}", file=sys.stderr)
            return False
        except (urllib.error.URLError, OSError) as e:
            print(f"cannot reach the transformer: {e}", file=sys.stderr)
            return False


def main():
    sent = 0
    while True:
        sent += 1
        post({
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/examples/independent/python",
            "type": "dev.portico.example.tick",
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "datacontenttype": "application/json",
            "data": {"tick": sent},
        })
        if COUNT and sent >= COUNT:
            return
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
