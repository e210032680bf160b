"""The committed gRPC stubs are what protoc makes from the committed .proto."""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
WIRE = REPO / "agent" / "wire"
GENERATED = ("escalation_pb2.py", "escalation_pb2.pyi", "escalation_pb2_grpc.py", "sparkplug_b_pb2.py",
             "sparkplug_b_pb2.pyi")


def test_committed_stubs_match_the_proto(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stale = [name for name in GENERATED
             if (tmp_path / name).read_text(encoding="utf-8") != (WIRE / name).read_text(encoding="utf-8")]
    assert not stale, (f"{', '.join(stale)} differ from what proto/ (escalation.proto, sparkplug_b.proto) generates; "
                       "run `python scripts/gen_proto.py` and commit the result")


def test_the_stubs_import_as_a_package() -> None:
    # protoc writes `from edge_agent.v1 import escalation_pb2`; gen_proto.py makes it the package path
    from agent.wire import escalation_pb2, escalation_pb2_grpc

    assert escalation_pb2_grpc.edge__agent_dot_v1_dot_escalation__pb2 is escalation_pb2
    assert escalation_pb2.DESCRIPTOR.services_by_name["Escalation"].full_name == "edge_agent.v1.Escalation"
    assert "import escalation_pb2" not in (WIRE / "escalation_pb2_grpc.py").read_text().replace(
        "from agent.wire import escalation_pb2", "")
