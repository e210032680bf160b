"""Generated gRPC/protobuf code for ``proto/edge_agent/v1/escalation.proto``; do not edit.

Regenerate with ``python scripts/gen_proto.py`` (tests/escalation/test_stubs.py fails when
these files and the .proto disagree).
"""
