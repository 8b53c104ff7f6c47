"""Python stubs for arbor.v1 (and grpc.health.v1), generated at test time from
proto/ the way a user's client would generate them.

Generation tries `python3 -m grpc_tools.protoc` first; Debian's
python3-grpc-tools 1.14 bundles a protoc too old for proto3 `optional`, so it
falls back to the system protoc with grpc_python_plugin (same output).
"""
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BINARY_DIR = os.environ.get("ARBOR_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))

_PROTO_SETS = [
    (os.path.join(SOURCE_DIR, "proto"),
     ["arbor/v1/common.proto", "arbor/v1/generator.proto", "arbor/v1/verifier.proto",
      "arbor/v1/reasoning.proto"]),
]
# grpc.health.v1 is generated from a copy under another path: a generated
# package named `grpc` would collide with the grpc library itself.
_HEALTH_PROTO = os.path.join(SOURCE_DIR, "rpc", "proto", "grpc", "health", "v1", "health.proto")


def _generate(out_dir):
    health_dir = os.path.join(out_dir, "_health_src")
    os.makedirs(os.path.join(health_dir, "arbor_health"))
    shutil.copy(_HEALTH_PROTO, os.path.join(health_dir, "arbor_health", "health.proto"))
    for include, files in _PROTO_SETS + [(health_dir, ["arbor_health/health.proto"])]:
        base = ["-I" + include, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir]
        tools = subprocess.run([sys.executable, "-m", "grpc_tools.protoc"] + base + files,
                               cwd=include, capture_output=True, text=True)
        if tools.returncode == 0:
            continue
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin")
        if protoc is None or plugin is None:
            raise RuntimeError("grpc_tools.protoc failed and no protoc/grpc_python_plugin: "
                               + tools.stderr)
        subprocess.run([protoc, "--plugin=protoc-gen-grpc_python=" + plugin] + base + files,
                       cwd=include, check=True)
    # Namespace packages need no __init__.py; add them anyway for older importers.
    for root, _, _ in os.walk(out_dir):
        init = os.path.join(root, "__init__.py")
        if root != out_dir and "_health_src" not in root and not os.path.exists(init):
            open(init, "w").close()


_OUT_DIR = None


def load():
    """Generates the stubs once per process and returns a namespace of modules."""
    global _OUT_DIR
    if _OUT_DIR is None:
        _OUT_DIR = tempfile.mkdtemp(prefix="arbor_stubs_")
        _generate(_OUT_DIR)
        sys.path.insert(0, _OUT_DIR)

    class Stubs:
        pass

    s = Stubs()
    for name in ["common", "generator", "verifier", "reasoning"]:
        setattr(s, name + "_pb2", importlib.import_module("arbor.v1." + name + "_pb2"))
        if name != "common":
            setattr(s, name + "_pb2_grpc", importlib.import_module("arbor.v1." + name + "_pb2_grpc"))
    s.health_pb2 = importlib.import_module("arbor_health.health_pb2")
    s.health_pb2_grpc = importlib.import_module("arbor_health.health_pb2_grpc")
    return s


def cleanup():
    if _OUT_DIR is not None:
        shutil.rmtree(_OUT_DIR, ignore_errors=True)
