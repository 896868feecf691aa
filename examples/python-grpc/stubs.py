"""Generates the Python gRPC stubs of a Portico proto file at start-up, so that nothing
generated is checked in: grpcio-tools (PyPI) compiles the proto into a temporary directory
that is put on sys.path. The manual equivalent, for any language, is in README.md.
"""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

from grpc_tools import protoc

# The repository's proto/ directory (examples/python-grpc/ is two levels below the root),
# unless PORTICO_PROTO_DIR says where it is.
PROTO_DIR = os.environ.get(
    "PORTICO_PROTO_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto"),
)


def load(proto, module):
    """Compiles `proto` (a path under proto/, e.g. "portico/v1/gateway.proto") and returns
    the (messages, services) modules, imported as `module` (e.g. "portico.v1.gateway")."""
    out = tempfile.mkdtemp(prefix="portico-stubs-")
    atexit.register(shutil.rmtree, out, True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.join(PROTO_DIR, proto),
        ]
    )
    if code != 0:
        sys.exit(f"error: cannot compile {proto} from {PROTO_DIR} (grpc_tools.protoc exit {code})")
    sys.path.insert(0, out)
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")
