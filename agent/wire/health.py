"""What the gateway's gRPC health answer carries beyond the standard status: one trailing metadata key.

The gateway (:mod:`agent.gateway.health`) writes its short NOT_SERVING phrase under this key; the agent's
escalation client and ``edge-agent doctor`` read it. One definition, so the two programs cannot drift apart.
"""

from __future__ import annotations

__all__ = ["REASON_KEY"]

REASON_KEY = "edge-health-reason-bin"
