"""Escalation of uncertain frames to a vision-language model over gRPC.

Agent side (in the camera box): :mod:`.escalator` (the escalation thread:
intake, deadlines, publication, revision 2), :mod:`.client` (the gRPC channel and
the status mapping), :mod:`.request` (the Describe request: JPEG, crops), and pure
logic: :mod:`.breaker`, :mod:`.ratelimit`, :mod:`.dedupe`, :mod:`.merge`.

Gateway side (``edge-agent gateway``, next to Ollama): :mod:`.server` (the gRPC
server: :func:`~agent.escalation.server.serve`), :mod:`.service` (the Describe
handler, admission), :mod:`.health`, :mod:`.vlm` (Ollama), :mod:`.images` and
:mod:`.templates` (pure checks and prompts), :mod:`.stats`. Wire types are
generated into :mod:`.wire` from ``proto/edge_agent/v1/escalation.proto``
(``python scripts/gen_proto.py``).
"""
