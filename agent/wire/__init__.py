"""The wire contract that the agent's escalation client and the gateway share, and nothing else.

``escalation_pb2*`` are generated from ``proto/edge_agent/v1/escalation.proto``; do not edit them.
Regenerate with ``python scripts/gen_proto.py`` (tests/escalation/test_stubs.py fails when these
files and the .proto disagree). :mod:`.health` names the gRPC health answer's metadata key.
"""
