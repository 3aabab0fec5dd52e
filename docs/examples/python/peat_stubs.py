"""Python stubs for the peat-sidecar API, generated from proto/sidecar.proto on first use.

grpcio-tools compiles the proto into a cache directory (next to this file, or
$PEAT_SIDECAR_STUBS); nothing generated is checked in, so the stubs always match the
proto they are run against. Point $PEAT_SIDECAR_PROTO at another sidecar.proto if
this example is copied out of the repository.

The examples need the PyPI packages grpcio and grpcio-tools. Install them in a virtual
environment (Debian 12's own Python refuses `pip install`, PEP 668):

    python3 -m venv ~/peat-venv && ~/peat-venv/bin/pip install grpcio grpcio-tools
    ~/peat-venv/bin/python3 listen.py ...

In a checkout, `sudo scripts/test.sh 00-deps` makes target/venv with them.
"""

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "..", "..", "proto", "sidecar.proto")


INSTALL = (
    "this example needs the Python packages grpcio and grpcio-tools ({missing} is missing).\n"
    "Install them in a virtual environment (on Debian first: apt-get install python3-venv):\n"
    "    python3 -m venv ~/peat-venv && ~/peat-venv/bin/pip install grpcio grpcio-tools\n"
    "and run the example with ~/peat-venv/bin/python3"
)


def require_packages():
    """Exits with what to install, rather than a traceback, when a package is missing."""
    for module in ("grpc", "grpc_tools", "google.protobuf"):
        try:
            importlib.import_module(module)
        except ImportError:
            sys.exit(INSTALL.format(missing=module))


def rpc_failed(what, err):
    """Exits with one line for a failed call (no sidecar, a refused value): the
    gRPC status code and the sidecar's message, as the peat-sidecar CLI prints it."""
    sys.exit(f"{what} failed: {err.code().name}: {err.details()}")


def load():
    """Returns the modules (sidecar_pb2, sidecar_pb2_grpc)."""
    require_packages()
    proto = os.path.abspath(os.environ.get("PEAT_SIDECAR_PROTO", DEFAULT_PROTO))
    out = os.environ.get("PEAT_SIDECAR_STUBS", os.path.join(HERE, "_stubs"))
    os.makedirs(out, exist_ok=True)
    generated = os.path.join(out, "sidecar_pb2.py")
    if not os.path.exists(generated) or os.path.getmtime(generated) < os.path.getmtime(proto):
        from grpc_tools import protoc

        # A temporary name, then rename: two examples starting at once must not import
        # a half-written module.
        tmp = os.path.join(out, f".gen-{os.getpid()}")
        os.makedirs(tmp, exist_ok=True)
        status = protoc.main([
            "grpc_tools.protoc",
            f"-I{os.path.dirname(proto)}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            proto,
        ])
        if status != 0:
            sys.exit(f"protoc failed ({status}) on {proto}")
        for name in ("sidecar_pb2_grpc.py", "sidecar_pb2.py"):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
        os.rmdir(tmp)
    if out not in sys.path:
        sys.path.insert(0, out)
    return importlib.import_module("sidecar_pb2"), importlib.import_module("sidecar_pb2_grpc")


def channel(api):
    """A gRPC channel to the sidecar's API as the sidecar names it: tcp://HOST:PORT
    or unix:///PATH (the same forms as --listen and --api)."""
    import grpc

    options = []
    if api.startswith("tcp://"):
        target = api[len("tcp://"):]
    elif api.startswith("unix://"):
        target = "unix:" + api[len("unix://"):]
        # grpc-core sends the socket path as :authority, which the sidecar's HTTP/2
        # server refuses (RST_STREAM PROTOCOL_ERROR); any plain host name will do.
        options.append(("grpc.default_authority", "localhost"))
    else:
        target = api
    return grpc.insecure_channel(target, options=options)
