"""Escalation of uncertain frames to a vision-language model over gRPC.

Agent side (in the camera box): :mod:`.escalator` (the escalation thread:
intake, deadlines, publication, revision 2), :mod:`.client` (the gRPC channel and
the status mapping), :mod:`.request` (the Describe request: JPEG, crops), and pure
logic: :mod:`.breaker`, :mod:`.ratelimit`, :mod:`.dedupe`, :mod:`.merge`.

The gateway (``edge-agent gateway``, next to Ollama) is a program of its own in
:mod:`agent.gateway`; the two share only the wire contract, :mod:`agent.wire` (the stubs
generated from ``proto/edge_agent/v1/escalation.proto`` and the health metadata key).
"""
