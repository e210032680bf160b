#!/usr/bin/env python3
"""Generate the committed protobuf modules from their .proto files: the gRPC stubs of the escalation service
and the Sparkplug B payload (``proto/sparkplug_b/sparkplug_b.proto``, no service).

    python scripts/gen_proto.py            # rewrite agent/wire/escalation_pb2*, agent/wire/sparkplug_b_pb2*
    python scripts/gen_proto.py --out DIR  # write them into DIR instead (the stubs tests compare the two)

Runs protoc from ``grpcio-tools`` (the ``dev`` extra; its version must equal the
installed ``grpcio``, see pyproject). protoc writes the sibling import in
``escalation_pb2_grpc.py`` as an absolute import that mirrors the .proto's path
(``from edge_agent.v1 import escalation_pb2``); no protoc flag changes that, so it
is rewritten here to the package the stubs live in (``agent.wire``).
"""

from __future__ import annotations

import argparse
import importlib.resources
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PROTO_FILE = "edge_agent/v1/escalation.proto"
SPARKPLUG_FILE = "sparkplug_b/sparkplug_b.proto"
PACKAGE = "agent.wire"
OUT_DIR = REPO / "agent" / "wire"
GENERATED = ("escalation_pb2.py", "escalation_pb2.pyi", "escalation_pb2_grpc.py")
SPARKPLUG_GENERATED = ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi")

_PROTOC_IMPORT = "from edge_agent.v1 import escalation_pb2 as"
_PACKAGE_IMPORT = f"from {PACKAGE} import escalation_pb2 as"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc into ``out_dir`` (created if missing); return the generated files."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("gen_proto: grpcio-tools is not installed; run `pip install -e '.[dev]'`") from None

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", str(PROTO_ROOT / PROTO_FILE)]
        if protoc.main(args) != 0:
            raise SystemExit(f"gen_proto: protoc failed on {PROTO_ROOT / PROTO_FILE} (its message is above)")
        produced = pathlib.Path(tmp) / pathlib.Path(PROTO_FILE).parent
        written = []
        for name in GENERATED:
            text = (produced / name).read_text(encoding="utf-8")
            if name.endswith("_grpc.py"):
                if _PROTOC_IMPORT not in text:
                    raise SystemExit(f"gen_proto: {name} has no line {_PROTOC_IMPORT!r}; protoc's output changed, "
                                     "update the import rewrite in scripts/gen_proto.py")
                text = text.replace(_PROTOC_IMPORT, _PACKAGE_IMPORT)
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
        written += _generate_sparkplug(protoc, well_known, pathlib.Path(tmp), out_dir)
    return written


def _generate_sparkplug(protoc: object, well_known: object, tmp: pathlib.Path,
                        out_dir: pathlib.Path) -> list[pathlib.Path]:
    """The Sparkplug B payload module (messages only: nothing imports a sibling, so no rewrite)."""
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={tmp}", f"--pyi_out={tmp}",
            str(PROTO_ROOT / SPARKPLUG_FILE)]
    if protoc.main(args) != 0:  # type: ignore[attr-defined]
        raise SystemExit(f"gen_proto: protoc failed on {PROTO_ROOT / SPARKPLUG_FILE} (its message is above)")
    written = []
    for name in SPARKPLUG_GENERATED:
        target = out_dir / name
        target.write_text((tmp / "sparkplug_b" / name).read_text(encoding="utf-8"), encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
